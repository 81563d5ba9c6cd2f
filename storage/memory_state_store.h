// In-memory StateStore for tests: the same contract as the RocksDB backend (tests/storage share one suite),
// nothing on disk, plus fault injection so a caller can prove it acknowledges nothing before Write succeeds.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "storage/state_store.h"

namespace shoal {

class MemoryStateStore final : public StateStore {
 public:
  // What an injected failure leaves behind.
  enum class FaultMode {
    kNotApplied,        // the batch is dropped: the common case
    kAppliedThenFailed  // the batch is applied and visible, yet Write fails (as after a failed fsync)
  };
  // Called on the writer's thread at the start of every non-empty Write, before anything is applied and
  // without the store's lock held (so it may block, e.g. on a latch, to hold a write "in flight" while a
  // test looks at what the caller has already told others). A non-OK return fails that Write, nothing applied.
  using WriteHook = std::function<Status(const WriteBatch&)>;

  explicit MemoryStateStore(std::string cluster_id);

  Result<std::optional<std::string>> Get(Table table, std::string_view key) const override;
  Result<std::vector<std::pair<std::string, std::string>>> Scan(Table table,
                                                               std::string_view prefix = "") const override;
  Status Write(const WriteBatch& batch) override;
  const std::string& cluster_id() const override { return cluster_id_; }

  // Test hooks. The next `n` non-empty Writes fail with `error` (after the write hook, if any, passed).
  void FailNextWrites(int n, Status error = UnavailableError("injected write failure (MemoryStateStore)"),
                      FaultMode mode = FaultMode::kNotApplied);
  void SetWriteHook(WriteHook hook);
  // Non-empty Writes that returned OK.
  int64_t num_successful_writes() const;

 private:
  using Rows = std::map<std::string, std::string, std::less<>>;
  void ApplyLocked(const WriteBatch& batch);

  const std::string cluster_id_;
  mutable std::mutex mu_;
  std::array<Rows, kAllTables.size()> tables_;  // guarded by mu_
  int fail_next_ = 0;                            // guarded by mu_
  Status fail_error_;                            // guarded by mu_
  FaultMode fail_mode_ = FaultMode::kNotApplied; // guarded by mu_
  std::shared_ptr<const WriteHook> hook_;        // guarded by mu_; copied out before it is called
  int64_t num_successful_writes_ = 0;            // guarded by mu_
};

// The factory the rest of the code uses; tests that inject faults construct MemoryStateStore directly.
std::unique_ptr<StateStore> NewMemoryStateStore(std::string cluster_id);

}  // namespace shoal
