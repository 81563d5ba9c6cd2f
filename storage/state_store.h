// StateStore: where the coordinator keeps every durable fact (DESIGN.md §4-§6), as bytes in named tables.
// Backends: RocksDB (rocks_state_store.h, one column family per table, synced writes) and an in-memory fake
// with fault injection (memory_state_store.h). Both pass tests/storage/state_store_contract_test.cc; typed
// access over the bytes is typed_table.h. This header stays free of RocksDB so anyone may include it.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"

namespace shoal {

// The tables (RocksDB column families). Values are Cap'n Proto structs encoded by the layer above.
enum class Table : uint8_t { kWorkers, kJobs, kPlacements, kCheckpoints, kCursors, kMetrics, kEvents, kMeta };

inline constexpr std::array<Table, 8> kAllTables = {
    Table::kWorkers, Table::kJobs,    Table::kPlacements, Table::kCheckpoints,
    Table::kCursors, Table::kMetrics, Table::kEvents,     Table::kMeta,
};

// "workers", "jobs", ... (also the RocksDB column family names, so they never change).
std::string_view TableName(Table table);
std::optional<Table> TableFromName(std::string_view name);

// The key in Table::kMeta under which every store records the cluster it belongs to. It is written when the
// store is created and never again: a WriteBatch that would change or delete it is refused.
inline constexpr std::string_view kClusterIdKey = "cluster_id";

// Keys are arbitrary bytes; this renders one for a message: printable ASCII as is, anything else (and
// backslash and quote) as \xNN, cut to a readable length.
std::string PrintableKey(std::string_view key);

// An ordered list of mutations that a StateStore applies atomically: all of them, in order, or none.
class WriteBatch {
 public:
  enum class OpType : uint8_t { kPut, kDelete, kDeletePrefix };
  struct Op {
    OpType type;
    Table table;
    std::string key;    // the prefix for kDeletePrefix
    std::string value;  // kPut only
  };

  void Put(Table table, std::string_view key, std::string_view value);
  // Deleting a key that does not exist is not an error.
  void Delete(Table table, std::string_view key);
  // Deletes every key of `table` that starts with `prefix` at the moment this op applies, including keys put
  // earlier in the same batch. An empty prefix clears the table (refused for kMeta: it holds kClusterIdKey).
  void DeletePrefix(Table table, std::string_view prefix);
  // Appends `other`'s ops after this batch's.
  void Append(const WriteBatch& other);
  void Clear() { ops_.clear(); }

  const std::vector<Op>& ops() const { return ops_; }
  size_t size() const { return ops_.size(); }
  bool empty() const { return ops_.empty(); }

 private:
  std::vector<Op> ops_;
};

// Thread-safe: any thread (any actor's strand) may call any method at any time. Calls block on local I/O
// (a Write waits for fsync), so actors call them from their own strand, never from a network thread.
class StateStore {
 public:
  virtual ~StateStore() = default;
  StateStore() = default;
  StateStore(const StateStore&) = delete;
  StateStore& operator=(const StateStore&) = delete;

  // The value under `key`, or nullopt when there is none.
  virtual Result<std::optional<std::string>> Get(Table table, std::string_view key) const = 0;

  // Every (key, value) of `table` whose key starts with `prefix`, in ascending bytewise key order, read from
  // one consistent snapshot: a concurrent Write is seen entirely or not at all.
  virtual Result<std::vector<std::pair<std::string, std::string>>> Scan(Table table,
                                                                       std::string_view prefix = "") const = 0;

  // Applies `batch` atomically and returns only once it is durable (on disk, fsynced, for RocksDB). Every
  // mutation is acknowledged to anyone only after this returns OK (DESIGN.md §4). On an error the batch was
  // not acknowledged; whether it reached the disk is unknown (a failed fsync may leave it in the log), so a
  // caller reconciles on recovery rather than assuming it never happened. An empty batch is a no-op.
  // A batch that would change or delete (kMeta, kClusterIdKey) fails with InvalidArgument, applying nothing.
  virtual Status Write(const WriteBatch& batch) = 0;

  // The cluster this store belongs to (recorded when it was created).
  virtual const std::string& cluster_id() const = 0;
};

namespace internal {
// Checks what every backend refuses before applying anything: ops that touch (kMeta, kClusterIdKey).
Status ValidateWriteBatch(const WriteBatch& batch);
}  // namespace internal

}  // namespace shoal
