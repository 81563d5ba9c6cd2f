// RocksDB status -> shoal Status, keeping RocksDB's own name for the code ("rocksdb IOError: ..."). Only for
// storage/*.cc and tests: it includes a RocksDB header, so nothing widely included may include it.
#pragma once

#include <rocksdb/status.h>

#include <string_view>

#include "common/status.h"

namespace shoal {

// "NotFound", "Corruption", "IOError", ... (the enumerator's name without the k).
std::string_view RocksCodeName(rocksdb::Status::Code code);

// "<context>: rocksdb <Code>[(<SubCode>)]: <RocksDB's message>", with the code mapped:
//   NotFound -> NotFound, Corruption -> DataLoss, NotSupported -> Unimplemented, InvalidArgument ->
//   InvalidArgument, IOError -> Internal (NoSpace -> ResourceExhausted, PathNotFound -> NotFound),
//   Busy/TryAgain/ShutdownInProgress/Incomplete -> Unavailable, TimedOut/Expired -> DeadlineExceeded,
//   Aborted -> Aborted, CompactionTooLarge -> ResourceExhausted, anything else -> Internal.
// An OK rocksdb status gives OK.
Status FromRocksStatus(const rocksdb::Status& s, std::string_view context);

// Whether `s` says the database's LOCK file is held (by another process, or already by this one).
bool IsRocksLockHeld(const rocksdb::Status& s);

}  // namespace shoal
