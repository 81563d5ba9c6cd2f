// TypedTable<T>: one StateStore table seen as key -> T, with the codec (usually Cap'n Proto) given once.
// Reads decode; writes only add to a WriteBatch, so several tables' changes still commit in one Write.
// A stored value that does not decode is DataLoss naming the table and key: the state directory is damaged
// or was written by an incompatible version, and the caller must not treat it as "absent".
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/check.h"
#include "common/status.h"
#include "storage/state_store.h"

namespace shoal {

namespace internal {
// DataLoss: "table 'jobs', key 'job-1': stored value does not decode (<cause>); ...".
Status ValueDecodeError(Table table, std::string_view key, const Status& cause);
}  // namespace internal

template <typename T>
class TypedTable {
 public:
  using Encoder = std::function<std::string(const T&)>;
  using Decoder = std::function<Result<T>(std::string_view)>;

  // `store` is not owned and must outlive this table.
  TypedTable(StateStore* store, Table table, Encoder encode, Decoder decode)
      : store_(store), table_(table), encode_(std::move(encode)), decode_(std::move(decode)) {
    CHECK(store_ != nullptr) << "TypedTable(" << TableName(table) << ") needs a store";
    CHECK(encode_ && decode_) << "TypedTable(" << TableName(table) << ") needs an encoder and a decoder";
  }

  Table table() const { return table_; }

  Result<std::optional<T>> Get(std::string_view key) const {
    ASSIGN_OR_RETURN(std::optional<std::string> raw, store_->Get(table_, key));
    if (!raw.has_value()) return std::optional<T>();
    Result<T> value = decode_(*raw);
    if (!value.ok()) return internal::ValueDecodeError(table_, key, value.status());
    return std::optional<T>(std::move(value).value());
  }

  // Every (key, T) whose key starts with `prefix`, in key order. One undecodable value fails the whole scan.
  Result<std::vector<std::pair<std::string, T>>> Scan(std::string_view prefix = "") const {
    ASSIGN_OR_RETURN(auto rows, store_->Scan(table_, prefix));
    std::vector<std::pair<std::string, T>> out;
    out.reserve(rows.size());
    for (auto& [key, raw] : rows) {
      Result<T> value = decode_(raw);
      if (!value.ok()) return internal::ValueDecodeError(table_, key, value.status());
      out.emplace_back(std::move(key), std::move(value).value());
    }
    return out;
  }

  void Put(WriteBatch& batch, std::string_view key, const T& value) const {
    batch.Put(table_, key, encode_(value));
  }
  void Delete(WriteBatch& batch, std::string_view key) const { batch.Delete(table_, key); }
  void DeletePrefix(WriteBatch& batch, std::string_view prefix) const { batch.DeletePrefix(table_, prefix); }

 private:
  StateStore* store_;  // not owned
  Table table_;
  Encoder encode_;
  Decoder decode_;
};

}  // namespace shoal
