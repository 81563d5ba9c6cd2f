#include "storage/memory_state_store.h"

#include "common/check.h"

namespace shoal {

MemoryStateStore::MemoryStateStore(std::string cluster_id) : cluster_id_(std::move(cluster_id)) {
  CHECK(!cluster_id_.empty()) << "MemoryStateStore needs a cluster id";
  tables_[static_cast<size_t>(Table::kMeta)].emplace(std::string(kClusterIdKey), cluster_id_);
}

Result<std::optional<std::string>> MemoryStateStore::Get(Table table, std::string_view key) const {
  std::lock_guard<std::mutex> lock(mu_);
  const Rows& rows = tables_[static_cast<size_t>(table)];
  auto it = rows.find(key);
  if (it == rows.end()) return std::optional<std::string>();
  return std::optional<std::string>(it->second);
}

Result<std::vector<std::pair<std::string, std::string>>> MemoryStateStore::Scan(Table table,
                                                                               std::string_view prefix) const {
  std::lock_guard<std::mutex> lock(mu_);
  const Rows& rows = tables_[static_cast<size_t>(table)];
  std::vector<std::pair<std::string, std::string>> out;
  for (auto it = rows.lower_bound(prefix); it != rows.end() && it->first.starts_with(prefix); ++it) {
    out.emplace_back(it->first, it->second);
  }
  return out;
}

Status MemoryStateStore::Write(const WriteBatch& batch) {
  if (batch.empty()) return Status::OK();
  RETURN_IF_ERROR(internal::ValidateWriteBatch(batch));
  std::shared_ptr<const WriteHook> hook;
  {
    std::lock_guard<std::mutex> lock(mu_);
    hook = hook_;
  }
  if (hook) RETURN_IF_ERROR((*hook)(batch));

  std::lock_guard<std::mutex> lock(mu_);
  if (fail_next_ > 0) {
    --fail_next_;
    if (fail_mode_ == FaultMode::kAppliedThenFailed) ApplyLocked(batch);
    return fail_error_;
  }
  ApplyLocked(batch);
  ++num_successful_writes_;
  return Status::OK();
}

void MemoryStateStore::ApplyLocked(const WriteBatch& batch) {
  for (const WriteBatch::Op& op : batch.ops()) {
    Rows& rows = tables_[static_cast<size_t>(op.table)];
    switch (op.type) {
      case WriteBatch::OpType::kPut:
        rows.insert_or_assign(op.key, op.value);
        break;
      case WriteBatch::OpType::kDelete:
        rows.erase(op.key);
        break;
      case WriteBatch::OpType::kDeletePrefix: {
        auto first = rows.lower_bound(op.key);
        auto last = first;
        while (last != rows.end() && last->first.starts_with(op.key)) ++last;
        rows.erase(first, last);
        break;
      }
    }
  }
}

void MemoryStateStore::FailNextWrites(int n, Status error, FaultMode mode) {
  CHECK(n >= 0) << "FailNextWrites(" << n << ")";
  CHECK(n == 0 || !error.ok()) << "FailNextWrites needs a non-OK status to fail with";
  std::lock_guard<std::mutex> lock(mu_);
  fail_next_ = n;
  fail_error_ = std::move(error);
  fail_mode_ = mode;
}

void MemoryStateStore::SetWriteHook(WriteHook hook) {
  std::lock_guard<std::mutex> lock(mu_);
  hook_ = hook ? std::make_shared<const WriteHook>(std::move(hook)) : nullptr;
}

int64_t MemoryStateStore::num_successful_writes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return num_successful_writes_;
}

std::unique_ptr<StateStore> NewMemoryStateStore(std::string cluster_id) {
  return std::make_unique<MemoryStateStore>(std::move(cluster_id));
}

}  // namespace shoal
