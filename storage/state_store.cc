#include "storage/state_store.h"

#include <cstdio>

namespace shoal {

std::string_view TableName(Table table) {
  switch (table) {
    case Table::kWorkers: return "workers";
    case Table::kJobs: return "jobs";
    case Table::kPlacements: return "placements";
    case Table::kCheckpoints: return "checkpoints";
    case Table::kCursors: return "cursors";
    case Table::kMetrics: return "metrics";
    case Table::kEvents: return "events";
    case Table::kMeta: return "meta";
  }
  return "unknown-table";
}

std::optional<Table> TableFromName(std::string_view name) {
  for (Table t : kAllTables) {
    if (TableName(t) == name) return t;
  }
  return std::nullopt;
}

std::string PrintableKey(std::string_view key) {
  constexpr size_t kMaxShown = 120;
  std::string out;
  for (size_t i = 0; i < key.size() && i < kMaxShown; ++i) {
    unsigned char c = static_cast<unsigned char>(key[i]);
    if (c >= 0x20 && c < 0x7f && c != '\\' && c != '\'') {
      out.push_back(static_cast<char>(c));
    } else {
      char buf[5];
      std::snprintf(buf, sizeof(buf), "\\x%02x", c);
      out += buf;
    }
  }
  if (key.size() > kMaxShown) out += "...(" + std::to_string(key.size()) + " bytes)";
  return out;
}

void WriteBatch::Put(Table table, std::string_view key, std::string_view value) {
  ops_.push_back(Op{OpType::kPut, table, std::string(key), std::string(value)});
}

void WriteBatch::Delete(Table table, std::string_view key) {
  ops_.push_back(Op{OpType::kDelete, table, std::string(key), {}});
}

void WriteBatch::DeletePrefix(Table table, std::string_view prefix) {
  ops_.push_back(Op{OpType::kDeletePrefix, table, std::string(prefix), {}});
}

void WriteBatch::Append(const WriteBatch& other) {
  ops_.insert(ops_.end(), other.ops_.begin(), other.ops_.end());
}

namespace internal {

Status ValidateWriteBatch(const WriteBatch& batch) {
  for (size_t i = 0; i < batch.ops().size(); ++i) {
    const WriteBatch::Op& op = batch.ops()[i];
    if (op.table != Table::kMeta) continue;
    bool touches_marker = op.type == WriteBatch::OpType::kDeletePrefix
                              ? kClusterIdKey.starts_with(op.key)
                              : op.key == kClusterIdKey;
    if (touches_marker) {
      return InvalidArgumentError("write batch op " + std::to_string(i) + " would " +
                                  (op.type == WriteBatch::OpType::kPut ? "overwrite" : "delete") +
                                  " meta/'" + std::string(kClusterIdKey) +
                                  "', the marker naming the cluster this state belongs to; it is written once "
                                  "when the state directory is created and never changed. Nothing was written");
    }
  }
  return Status::OK();
}

}  // namespace internal
}  // namespace shoal
