// The RocksDB StateStore: the coordinator's state directory. One column family per Table, every Write one
// RocksDB WriteBatch with sync=true (the WAL is fdatasync'ed before Write returns), and a marker in the meta
// table naming the cluster the directory belongs to. RocksDB itself stays inside rocks_state_store.cc.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "common/status.h"
#include "storage/state_store.h"

namespace shoal {

// Sized for a control-plane database: megabytes of state, a few writes per second, many small reads.
struct RocksOptions {
  // When false, a missing directory is NotFound (an existing empty one is still initialised).
  bool create_if_missing = true;
  size_t memtable_bytes = 4 << 20;            // per table (write_buffer_size)
  size_t block_cache_bytes = 16 << 20;        // shared by all tables; memtables are charged to it too
  uint64_t max_total_wal_bytes = 64 << 20;    // then old tables' memtables are flushed so WAL files can go
  size_t keep_info_log_files = 3;             // RocksDB's own LOG / LOG.old.* files
  size_t max_info_log_file_bytes = 4 << 20;
};

// Opens (creating if needed) the state directory `dir` for cluster `expected_cluster_id`:
//   * a new or empty database records expected_cluster_id in meta/kClusterIdKey;
//   * a database recorded for another cluster is refused (FailedPrecondition naming both ids) before any
//     table is created or anything written;
//   * a database with data but no marker, or a non-empty directory that is not a RocksDB database, is
//     refused (FailedPrecondition): it is not a shoal state directory;
//   * a directory already open (in another process, or in this one) is Unavailable.
// RocksDB errors keep RocksDB's name for the code in the message ("rocksdb IOError: ..."); Corruption is
// DataLoss, Busy/TryAgain/lock held are Unavailable, NoSpace is ResourceExhausted.
Result<std::unique_ptr<StateStore>> OpenRocksStateStore(const std::string& dir,
                                                        const std::string& expected_cluster_id,
                                                        const RocksOptions& options = {});

}  // namespace shoal
