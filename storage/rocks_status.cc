#include "storage/rocks_status.h"

#include <string>

namespace shoal {
namespace {

std::string_view RocksSubCodeName(rocksdb::Status::SubCode sub) {
  using S = rocksdb::Status;
  switch (sub) {
    case S::kNone: return "";
    case S::kMutexTimeout: return "MutexTimeout";
    case S::kLockTimeout: return "LockTimeout";
    case S::kLockLimit: return "LockLimit";
    case S::kNoSpace: return "NoSpace";
    case S::kDeadlock: return "Deadlock";
    case S::kStaleFile: return "StaleFile";
    case S::kMemoryLimit: return "MemoryLimit";
    case S::kSpaceLimit: return "SpaceLimit";
    case S::kPathNotFound: return "PathNotFound";
    case S::KMergeOperandsInsufficientCapacity: return "MergeOperandsInsufficientCapacity";
    case S::kManualCompactionPaused: return "ManualCompactionPaused";
    case S::kOverwritten: return "Overwritten";
    case S::kTxnNotPrepared: return "TxnNotPrepared";
    case S::kIOFenced: return "IOFenced";
    default: return "UnknownSubCode";
  }
}

StatusCode MapCode(const rocksdb::Status& s) {
  using S = rocksdb::Status;
  switch (s.code()) {
    case S::kOk: return StatusCode::kOk;
    case S::kNotFound: return StatusCode::kNotFound;
    case S::kCorruption: return StatusCode::kDataLoss;
    case S::kNotSupported: return StatusCode::kUnimplemented;
    case S::kInvalidArgument: return StatusCode::kInvalidArgument;
    case S::kIOError:
      if (s.IsNoSpace()) return StatusCode::kResourceExhausted;
      if (s.IsPathNotFound()) return StatusCode::kNotFound;
      if (IsRocksLockHeld(s)) return StatusCode::kUnavailable;
      return StatusCode::kInternal;
    case S::kIncomplete:
    case S::kShutdownInProgress:
    case S::kBusy:
    case S::kTryAgain: return StatusCode::kUnavailable;
    case S::kTimedOut:
    case S::kExpired: return StatusCode::kDeadlineExceeded;
    case S::kAborted: return StatusCode::kAborted;
    case S::kCompactionTooLarge: return StatusCode::kResourceExhausted;
    default: return StatusCode::kInternal;
  }
}

}  // namespace

std::string_view RocksCodeName(rocksdb::Status::Code code) {
  using S = rocksdb::Status;
  switch (code) {
    case S::kOk: return "OK";
    case S::kNotFound: return "NotFound";
    case S::kCorruption: return "Corruption";
    case S::kNotSupported: return "NotSupported";
    case S::kInvalidArgument: return "InvalidArgument";
    case S::kIOError: return "IOError";
    case S::kMergeInProgress: return "MergeInProgress";
    case S::kIncomplete: return "Incomplete";
    case S::kShutdownInProgress: return "ShutdownInProgress";
    case S::kTimedOut: return "TimedOut";
    case S::kAborted: return "Aborted";
    case S::kBusy: return "Busy";
    case S::kExpired: return "Expired";
    case S::kTryAgain: return "TryAgain";
    case S::kCompactionTooLarge: return "CompactionTooLarge";
    case S::kColumnFamilyDropped: return "ColumnFamilyDropped";
    default: return "UnknownCode";
  }
}

bool IsRocksLockHeld(const rocksdb::Status& s) {
  if (!s.IsIOError() || s.getState() == nullptr) return false;
  std::string_view state = s.getState();
  // RocksDB's PosixFileSystem::LockFile: "While lock file: <dir>/LOCK: Resource temporarily unavailable" from
  // another process's fcntl lock, "lock hold by current process, ..." when this process already holds it.
  return state.find("While lock file") != std::string_view::npos ||
         state.find("lock hold by current process") != std::string_view::npos;
}

Status FromRocksStatus(const rocksdb::Status& s, std::string_view context) {
  if (s.ok()) return Status::OK();
  std::string message(context);
  if (!message.empty()) message += ": ";
  message += "rocksdb ";
  message += RocksCodeName(s.code());
  std::string_view sub = RocksSubCodeName(s.subcode());
  if (!sub.empty()) {
    message += "(";
    message += sub;
    message += ")";
  }
  if (s.getState() != nullptr && *s.getState() != '\0') {
    message += ": ";
    message += s.getState();
  }
  return Status(MapCode(s), std::move(message));
}

}  // namespace shoal
