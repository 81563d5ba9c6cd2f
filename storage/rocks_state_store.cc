#include "storage/rocks_state_store.h"

#include <rocksdb/cache.h>
#include <rocksdb/db.h>
#include <rocksdb/iterator.h>
#include <rocksdb/options.h>
#include <rocksdb/write_batch.h>

#include <array>
#include <filesystem>
#include <mutex>
#include <shared_mutex>
#include <system_error>
#include <vector>

#include "common/check.h"
#include "common/file_util.h"
#include "storage/rocks_status.h"

namespace shoal {
namespace {

// The smallest string greater than every string that starts with `prefix`, or nullopt when there is none
// (`prefix` empty or all 0xff bytes).
std::optional<std::string> PrefixSuccessor(std::string_view prefix) {
  std::string s(prefix);
  while (!s.empty()) {
    unsigned char last = static_cast<unsigned char>(s.back());
    if (last != 0xff) {
      s.back() = static_cast<char>(last + 1);
      return s;
    }
    s.pop_back();
  }
  return std::nullopt;
}

// Whether a file in a directory without CURRENT can be left behind by a RocksDB create that died early.
bool IsRocksDbFileName(const std::string& name) {
  auto ends_with = [&](std::string_view suffix) { return std::string_view(name).ends_with(suffix); };
  return name == "LOCK" || name == "IDENTITY" || name == "LOG" || name.starts_with("LOG.old.") ||
         name.starts_with("MANIFEST-") || name.starts_with("OPTIONS-") || ends_with(".log") ||
         ends_with(".dbtmp");
}

class RocksStateStore final : public StateStore {
 public:
  RocksStateStore(std::string dir, rocksdb::DB* db) : dir_(std::move(dir)), db_(db) {}

  ~RocksStateStore() override {
    // Handles belong to db_ and must go before it; every write was synced, so Close loses nothing.
    for (rocksdb::ColumnFamilyHandle* h : handles_) {
      if (h != nullptr) db_->DestroyColumnFamilyHandle(h).PermitUncheckedError();
    }
    for (rocksdb::ColumnFamilyHandle* h : other_handles_) db_->DestroyColumnFamilyHandle(h).PermitUncheckedError();
    db_->Close().PermitUncheckedError();
  }

  // Takes the handles DB::Open returned: ours by table name, the rest ("default", tables of a newer version)
  // kept only to be released.
  void AdoptHandles(const std::vector<rocksdb::ColumnFamilyHandle*>& handles) {
    for (rocksdb::ColumnFamilyHandle* h : handles) {
      std::optional<Table> t = TableFromName(h->GetName());
      if (t.has_value()) {
        handles_[static_cast<size_t>(*t)] = h;
      } else {
        other_handles_.push_back(h);
      }
    }
  }

  rocksdb::ColumnFamilyHandle* handle(Table t) const { return handles_[static_cast<size_t>(t)]; }
  rocksdb::DB* db() const { return db_.get(); }
  const std::string& dir() const { return dir_; }
  void set_cluster_id(std::string id) { cluster_id_ = std::move(id); }

  Result<std::optional<std::string>> Get(Table table, std::string_view key) const override {
    std::string value;
    rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), handle(table), rocksdb::Slice(key.data(), key.size()),
                                 &value);
    if (s.IsNotFound()) return std::optional<std::string>();
    if (!s.ok()) return FromRocksStatus(s, Where("get", table, key));
    return std::optional<std::string>(std::move(value));
  }

  Result<std::vector<std::pair<std::string, std::string>>> Scan(Table table,
                                                               std::string_view prefix) const override {
    rocksdb::ReadOptions ro;
    std::optional<std::string> upper = PrefixSuccessor(prefix);
    rocksdb::Slice upper_slice;
    if (upper.has_value()) {
      upper_slice = rocksdb::Slice(*upper);
      ro.iterate_upper_bound = &upper_slice;
    }
    // The iterator reads one implicit snapshot, so a concurrent batch is seen whole or not at all.
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, handle(table)));
    std::vector<std::pair<std::string, std::string>> out;
    for (it->Seek(rocksdb::Slice(prefix.data(), prefix.size())); it->Valid(); it->Next()) {
      if (!it->key().starts_with(rocksdb::Slice(prefix.data(), prefix.size()))) break;
      out.emplace_back(it->key().ToString(), it->value().ToString());
    }
    if (!it->status().ok()) return FromRocksStatus(it->status(), Where("scan", table, prefix));
    return out;
  }

  Status Write(const WriteBatch& batch) override {
    if (batch.empty()) return Status::OK();
    RETURN_IF_ERROR(internal::ValidateWriteBatch(batch));
    bool unbounded_delete = false;
    for (const WriteBatch::Op& op : batch.ops()) {
      if (op.type == WriteBatch::OpType::kDeletePrefix && !PrefixSuccessor(op.key).has_value()) {
        unbounded_delete = true;
      }
    }
    // A prefix delete with no successor (empty or all-0xff prefix) needs the table's current last key to
    // bound its range, so it must not race other writers; everything else writes concurrently (and RocksDB
    // groups concurrent synced writes into one fsync).
    if (unbounded_delete) {
      std::unique_lock<std::shared_mutex> lock(write_mu_);
      return WriteLocked(batch);
    }
    std::shared_lock<std::shared_mutex> lock(write_mu_);
    return WriteLocked(batch);
  }

  const std::string& cluster_id() const override { return cluster_id_; }

 private:
  std::string Where(std::string_view what, Table table, std::string_view key) const {
    return std::string(what) + " " + std::string(TableName(table)) + "/'" + PrintableKey(key) +
           "' in state directory " + dir_;
  }

  Status WriteLocked(const WriteBatch& batch) {
    rocksdb::WriteBatch wb;
    // Per table, the largest key put so far in this batch: an unbounded prefix delete must cover it too.
    std::array<std::optional<std::string>, kAllTables.size()> max_put;
    for (const WriteBatch::Op& op : batch.ops()) {
      rocksdb::ColumnFamilyHandle* cf = handle(op.table);
      rocksdb::Slice key(op.key.data(), op.key.size());
      rocksdb::Status s;
      switch (op.type) {
        case WriteBatch::OpType::kPut: {
          s = wb.Put(cf, key, rocksdb::Slice(op.value.data(), op.value.size()));
          auto& m = max_put[static_cast<size_t>(op.table)];
          if (!m.has_value() || *m < op.key) m = op.key;
          break;
        }
        case WriteBatch::OpType::kDelete:
          s = wb.Delete(cf, key);
          break;
        case WriteBatch::OpType::kDeletePrefix: {
          std::optional<std::string> end = PrefixSuccessor(op.key);
          if (!end.has_value()) {
            // Every key >= an empty or all-0xff prefix starts with it, so [prefix, last key + "\0") is exact.
            ASSIGN_OR_RETURN(std::optional<std::string> last, LastKey(op.table));
            const auto& m = max_put[static_cast<size_t>(op.table)];
            if (m.has_value() && (!last.has_value() || *last < *m)) last = m;
            if (!last.has_value() || *last < op.key) break;  // nothing to delete
            end = *last + std::string(1, '\0');
          }
          s = wb.DeleteRange(cf, key, rocksdb::Slice(*end));
          break;
        }
      }
      if (!s.ok()) return FromRocksStatus(s, "building write batch for state directory " + dir_);
    }
    rocksdb::WriteOptions wo;
    wo.sync = true;  // durable before anyone is told (DESIGN.md §4)
    return FromRocksStatus(db_->Write(wo, &wb),
                           "write of " + std::to_string(batch.size()) + " ops to state directory " + dir_);
  }

  Result<std::optional<std::string>> LastKey(Table table) const {
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), handle(table)));
    it->SeekToLast();
    if (!it->status().ok()) return FromRocksStatus(it->status(), Where("seek to last", table, ""));
    if (!it->Valid()) return std::optional<std::string>();
    return std::optional<std::string>(it->key().ToString());
  }

  const std::string dir_;
  std::string cluster_id_;
  mutable std::shared_mutex write_mu_;
  // Destruction order matters: the destructor releases the handles, then db_ goes.
  std::unique_ptr<rocksdb::DB> db_;
  std::array<rocksdb::ColumnFamilyHandle*, kAllTables.size()> handles_{};
  std::vector<rocksdb::ColumnFamilyHandle*> other_handles_;
};

struct RocksConfig {
  rocksdb::DBOptions db;
  rocksdb::ColumnFamilyOptions cf;
};

RocksConfig MakeConfig(const RocksOptions& options) {
  RocksConfig c;
  std::shared_ptr<rocksdb::Cache> cache = rocksdb::NewLRUCache(options.block_cache_bytes);
  c.db.OptimizeForSmallDb(&cache);  // memtables charged to the same cache
  c.db.create_if_missing = true;    // whether the directory may be created was decided before Open
  c.db.create_missing_column_families = false;  // tables are created only after the cluster check
  c.db.paranoid_checks = true;
  c.db.wal_recovery_mode = rocksdb::WALRecoveryMode::kPointInTimeRecovery;
  c.db.max_open_files = 256;
  c.db.max_background_jobs = 2;
  c.db.max_total_wal_size = options.max_total_wal_bytes;
  c.db.keep_log_file_num = options.keep_info_log_files;
  c.db.max_log_file_size = options.max_info_log_file_bytes;
  c.db.max_manifest_file_size = 16 << 20;
  c.cf.OptimizeForSmallDb(&cache);
  c.cf.write_buffer_size = options.memtable_bytes;
  c.cf.max_write_buffer_number = 2;
  return c;
}

// Checks the directory before RocksDB touches it. Returns whether a database already exists there.
Result<bool> PrepareDirectory(const std::string& dir, const RocksOptions& options) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::file_status st = fs::status(dir, ec);
  if (ec && ec != std::errc::no_such_file_or_directory) {
    return ErrnoToStatus(ec.value(), "state directory " + dir);
  }
  if (!fs::exists(st)) {
    if (!options.create_if_missing) {
      return NotFoundError("state directory " + dir + " does not exist; create it, or let shoal create it");
    }
    RETURN_IF_ERROR(MakeDirs(dir));
    return false;
  }
  if (!fs::is_directory(st)) {
    return FailedPreconditionError("state directory " + dir + " exists but is not a directory; point the " +
                                   "state directory at a new or empty directory");
  }
  if (FileExists(dir + "/CURRENT")) return true;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    std::string name = it->path().filename().string();
    if (!IsRocksDbFileName(name)) {
      return FailedPreconditionError("state directory " + dir + " is not empty (it holds '" + name +
                                     "') and is not a shoal state directory (no RocksDB CURRENT file); point " +
                                     "the state directory at a new or empty directory, or at this cluster's " +
                                     "existing one");
    }
  }
  if (ec) return ErrnoToStatus(ec.value(), "list state directory " + dir);
  return false;
}

Status OpenError(const std::string& dir, const rocksdb::Status& s) {
  if (IsRocksLockHeld(s)) {
    const std::string cause = "(" + FromRocksStatus(s, "").message() + ")";
    if (std::string_view(s.getState()).find("current process") != std::string_view::npos) {
      return UnavailableError("state directory " + dir + " is already open in this process " + cause +
                              "; open it once and share the StateStore");
    }
    return UnavailableError("state directory " + dir + " is already in use by another process " + cause +
                            ". Stop the other coordinator using it, or give this one its own state directory");
  }
  return FromRocksStatus(s, "open state directory " + dir);
}

// Whether any of our tables holds a row.
Result<bool> AnyTableHasData(RocksStateStore& store) {
  for (Table t : kAllTables) {
    if (store.handle(t) == nullptr) continue;
    std::unique_ptr<rocksdb::Iterator> it(store.db()->NewIterator(rocksdb::ReadOptions(), store.handle(t)));
    it->SeekToFirst();
    if (!it->status().ok()) {
      return FromRocksStatus(it->status(), "scan " + std::string(TableName(t)) + " in state directory " +
                                               store.dir());
    }
    if (it->Valid()) return true;
  }
  return false;
}

}  // namespace

Result<std::unique_ptr<StateStore>> OpenRocksStateStore(const std::string& dir,
                                                        const std::string& expected_cluster_id,
                                                        const RocksOptions& options) {
  if (dir.empty()) return InvalidArgumentError("the state directory path is empty");
  if (expected_cluster_id.empty()) {
    return InvalidArgumentError("opening state directory " + dir + ": the cluster id is empty");
  }
  ASSIGN_OR_RETURN(bool db_exists, PrepareDirectory(dir, options));
  RocksConfig config = MakeConfig(options);

  // Open every column family the database has (RocksDB insists), and create ours only once we know the
  // directory belongs to this cluster.
  std::vector<std::string> existing = {rocksdb::kDefaultColumnFamilyName};
  if (db_exists) {
    rocksdb::Status s = rocksdb::DB::ListColumnFamilies(config.db, dir, &existing);
    if (!s.ok()) return OpenError(dir, s);
  }
  std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
  for (const std::string& name : existing) descriptors.emplace_back(name, config.cf);
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw_db = nullptr;
  rocksdb::Status s = rocksdb::DB::Open(config.db, dir, descriptors, &handles, &raw_db);
  if (!s.ok()) return OpenError(dir, s);
  auto store = std::make_unique<RocksStateStore>(dir, raw_db);
  store->AdoptHandles(handles);

  std::optional<std::string> marker;
  if (store->handle(Table::kMeta) != nullptr) {
    ASSIGN_OR_RETURN(marker, store->Get(Table::kMeta, kClusterIdKey));
  }
  if (marker.has_value() && *marker != expected_cluster_id) {
    return FailedPreconditionError("state directory " + dir + " belongs to cluster '" + PrintableKey(*marker) +
                                   "', not to cluster '" + expected_cluster_id +
                                   "' that this process was started for; nothing in it was changed. Start "
                                   "with cluster id '" + PrintableKey(*marker) + "' to use this state, or " +
                                   "give cluster '" + expected_cluster_id + "' its own new state directory");
  }
  if (!marker.has_value()) {
    ASSIGN_OR_RETURN(bool has_data, AnyTableHasData(*store));
    if (has_data) {
      return FailedPreconditionError("state directory " + dir + " holds data but no cluster marker (meta/'" +
                                     std::string(kClusterIdKey) + "'), so it is not a shoal state directory "
                                     "or it is damaged; nothing in it was changed. Point the state directory "
                                     "at a new or empty directory, or restore this one from a backup");
    }
  }

  std::vector<std::string> missing;
  for (Table t : kAllTables) {
    if (store->handle(t) == nullptr) missing.emplace_back(TableName(t));
  }
  if (!missing.empty()) {
    std::vector<rocksdb::ColumnFamilyHandle*> created;
    s = store->db()->CreateColumnFamilies(config.cf, missing, &created);
    store->AdoptHandles(created);  // on failure RocksDB returns the ones it did create
    if (!s.ok()) return FromRocksStatus(s, "create tables in state directory " + dir);
  }
  for (Table t : kAllTables) CHECK(store->handle(t) != nullptr) << "table " << TableName(t) << " missing";

  if (!marker.has_value()) {
    rocksdb::WriteBatch wb;
    RETURN_IF_ERROR(FromRocksStatus(wb.Put(store->handle(Table::kMeta), kClusterIdKey, expected_cluster_id),
                                    "record cluster id in state directory " + dir));
    rocksdb::WriteOptions wo;
    wo.sync = true;
    RETURN_IF_ERROR(FromRocksStatus(store->db()->Write(wo, &wb), "record cluster id in state directory " + dir));
  }
  store->set_cluster_id(expected_cluster_id);
  return std::unique_ptr<StateStore>(std::move(store));
}

}  // namespace shoal
