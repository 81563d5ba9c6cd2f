// The StateStore contract (STYLE.md §14): one suite, run against every backend. A backend is correct when it
// passes this file; backend-specific behaviour (persistence, locking, crash safety, fault injection) is
// tested beside it in rocks_state_store_test.cc and memory_state_store_test.cc.
#include <algorithm>
#include <atomic>
#include <functional>
#include <latch>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "storage/memory_state_store.h"
#include "storage/rocks_state_store.h"
#include "storage/state_store.h"
#include "storage/typed_table.h"
#include "tests/storage/test_util.h"

namespace shoal {
namespace {

using testing_util::Rows;
using testing_util::TempDir;

constexpr char kCluster[] = "cluster-0123456789ab";

struct Backend {
  std::string name;
  std::function<Result<std::unique_ptr<StateStore>>(const std::string& dir)> open;
  friend void PrintTo(const Backend& b, std::ostream* os) { *os << b.name; }
};

std::vector<Backend> Backends() {
  return {
      Backend{"Memory",
              [](const std::string&) -> Result<std::unique_ptr<StateStore>> {
                return NewMemoryStateStore(kCluster);
              }},
      Backend{"Rocks",
              [](const std::string& dir) -> Result<std::unique_ptr<StateStore>> {
                return OpenRocksStateStore(dir + "/state", kCluster);
              }},
  };
}

class StateStoreContractTest : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override {
    auto store = GetParam().open(dir_.path());
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(store).value();
  }

  std::optional<std::string> MustGet(Table t, std::string_view key) {
    auto v = store_->Get(t, key);
    EXPECT_TRUE(v.ok()) << v.status();
    return v.ok() ? *v : std::nullopt;
  }
  Rows MustScan(Table t, std::string_view prefix = "") {
    auto rows = store_->Scan(t, prefix);
    EXPECT_TRUE(rows.ok()) << rows.status();
    return rows.ok() ? *rows : Rows{};
  }

  TempDir dir_;
  std::unique_ptr<StateStore> store_;
};

TEST_P(StateStoreContractTest, PutGetDelete) {
  EXPECT_EQ(MustGet(Table::kJobs, "job-1"), std::nullopt);
  WriteBatch put;
  put.Put(Table::kJobs, "job-1", "spec-1");
  ASSERT_TRUE(store_->Write(put).ok());
  EXPECT_EQ(MustGet(Table::kJobs, "job-1"), "spec-1");

  WriteBatch del;
  del.Delete(Table::kJobs, "job-1");
  del.Delete(Table::kJobs, "never-existed");  // not an error
  ASSERT_TRUE(store_->Write(del).ok());
  EXPECT_EQ(MustGet(Table::kJobs, "job-1"), std::nullopt);
  EXPECT_TRUE(MustScan(Table::kJobs).empty());
}

TEST_P(StateStoreContractTest, OverwriteReplacesTheValue) {
  for (const char* v : {"first", "second, longer than the first", ""}) {
    WriteBatch b;
    b.Put(Table::kWorkers, "w-1", v);
    ASSERT_TRUE(store_->Write(b).ok());
    EXPECT_EQ(MustGet(Table::kWorkers, "w-1"), v);
  }
  EXPECT_EQ(MustScan(Table::kWorkers).size(), 1u);
}

TEST_P(StateStoreContractTest, TablesAreSeparateKeySpaces) {
  WriteBatch b;
  for (Table t : kAllTables) {
    if (t == Table::kMeta) continue;
    b.Put(t, "same-key", std::string(TableName(t)));
  }
  ASSERT_TRUE(store_->Write(b).ok());
  for (Table t : kAllTables) {
    if (t == Table::kMeta) continue;
    EXPECT_EQ(MustGet(t, "same-key"), std::string(TableName(t)));
  }
  EXPECT_EQ(MustGet(Table::kMeta, "same-key"), std::nullopt);
}

TEST_P(StateStoreContractTest, ScanIsInBytewiseKeyOrderAndFiltersByPrefix) {
  // Inserted out of order, including keys that sort differently under a signed char comparison.
  const std::vector<std::string> keys = {"b", std::string("a\0", 2), "\xff", "ab", "a", "\xff\xff", "",
                                         "\x7f", "\x80", "a/b", "b0"};
  WriteBatch b;
  for (const std::string& k : keys) b.Put(Table::kEvents, k, "v:" + k);
  ASSERT_TRUE(store_->Write(b).ok());

  std::vector<std::string> sorted = keys;
  std::sort(sorted.begin(), sorted.end());  // std::string compares as unsigned char
  Rows all = MustScan(Table::kEvents);
  ASSERT_EQ(all.size(), sorted.size());
  for (size_t i = 0; i < sorted.size(); ++i) {
    EXPECT_EQ(all[i].first, sorted[i]) << "position " << i;
    EXPECT_EQ(all[i].second, "v:" + sorted[i]);
  }

  auto keys_of = [](const Rows& rows) {
    std::vector<std::string> out;
    for (const auto& [k, v] : rows) out.push_back(k);
    return out;
  };
  EXPECT_EQ(keys_of(MustScan(Table::kEvents, "a")),
            (std::vector<std::string>{"a", std::string("a\0", 2), "a/b", "ab"}));
  EXPECT_EQ(keys_of(MustScan(Table::kEvents, "b")), (std::vector<std::string>{"b", "b0"}));
  EXPECT_EQ(keys_of(MustScan(Table::kEvents, "\xff")), (std::vector<std::string>{"\xff", "\xff\xff"}));
  EXPECT_EQ(keys_of(MustScan(Table::kEvents, "\x7f")), (std::vector<std::string>{"\x7f"}));
  EXPECT_TRUE(MustScan(Table::kEvents, "c").empty());
  EXPECT_TRUE(MustScan(Table::kEvents, "ab0").empty());
  EXPECT_TRUE(MustScan(Table::kJobs).empty());
}

TEST_P(StateStoreContractTest, EmptyValuesAndBinaryKeysAndValuesRoundTrip) {
  std::string all_bytes;
  for (int c = 0; c < 256; ++c) all_bytes.push_back(static_cast<char>(c));
  const std::string binary_key("\0k\xff\x01\0", 5);
  const std::string big(1 << 20, '\xab');
  WriteBatch b;
  b.Put(Table::kCursors, "empty", "");
  b.Put(Table::kCursors, binary_key, all_bytes);
  b.Put(Table::kCursors, "", "empty key");
  b.Put(Table::kCheckpoints, "big", big);
  ASSERT_TRUE(store_->Write(b).ok());

  EXPECT_EQ(MustGet(Table::kCursors, "empty"), std::string());  // present and empty, not absent
  EXPECT_EQ(MustGet(Table::kCursors, binary_key), all_bytes);
  EXPECT_EQ(MustGet(Table::kCursors, std::string("\0k", 2)), std::nullopt);  // no truncation at NUL
  EXPECT_EQ(MustGet(Table::kCursors, ""), "empty key");
  EXPECT_EQ(MustGet(Table::kCheckpoints, "big"), big);
  EXPECT_EQ(MustScan(Table::kCursors, std::string("\0", 1)), (Rows{{binary_key, all_bytes}}));
}

TEST_P(StateStoreContractTest, BatchAppliesAllItsOpsInOrderAcrossTables) {
  WriteBatch seed;
  seed.Put(Table::kJobs, "job-1", "old");
  seed.Put(Table::kPlacements, "job-1/0", "w-9");
  ASSERT_TRUE(store_->Write(seed).ok());

  WriteBatch b;
  b.Put(Table::kJobs, "job-1", "running");
  b.Put(Table::kPlacements, "job-1/0", "w-1");
  b.Put(Table::kPlacements, "job-1/1", "w-2");
  b.Put(Table::kEvents, "0001", "job-1 placed");
  b.Put(Table::kMetrics, "tmp", "x");
  b.Delete(Table::kMetrics, "tmp");  // put then delete: gone
  b.Delete(Table::kCursors, "c");
  b.Put(Table::kCursors, "c", "7");  // delete then put: present
  b.Put(Table::kMeta, "schema_version", "1");
  ASSERT_TRUE(store_->Write(b).ok());

  EXPECT_EQ(MustGet(Table::kJobs, "job-1"), "running");
  EXPECT_EQ(MustScan(Table::kPlacements), (Rows{{"job-1/0", "w-1"}, {"job-1/1", "w-2"}}));
  EXPECT_EQ(MustScan(Table::kEvents), (Rows{{"0001", "job-1 placed"}}));
  EXPECT_EQ(MustGet(Table::kMetrics, "tmp"), std::nullopt);
  EXPECT_EQ(MustGet(Table::kCursors, "c"), "7");
  EXPECT_EQ(MustGet(Table::kMeta, "schema_version"), "1");
}

TEST_P(StateStoreContractTest, DeletePrefixRemovesExactlyThePrefix) {
  WriteBatch seed;
  for (const char* k : {"job-1/a", "job-1/b", "job-10/a", "job-2/a", "job-1"}) seed.Put(Table::kEvents, k, "e");
  seed.Put(Table::kJobs, "job-1/a", "other table");
  ASSERT_TRUE(store_->Write(seed).ok());

  WriteBatch b;
  b.DeletePrefix(Table::kEvents, "job-1/");
  b.Put(Table::kEvents, "job-1/c", "after the delete");  // ops apply in order
  ASSERT_TRUE(store_->Write(b).ok());
  EXPECT_EQ(MustScan(Table::kEvents), (Rows{{"job-1", "e"},
                                            {"job-1/c", "after the delete"},
                                            {"job-10/a", "e"},
                                            {"job-2/a", "e"}}));
  EXPECT_EQ(MustGet(Table::kJobs, "job-1/a"), "other table");
}

TEST_P(StateStoreContractTest, DeletePrefixWithoutUpperBoundCoversEverythingAfterIt) {
  // An all-0xff prefix and the empty prefix have no successor key; they must still delete every match,
  // including keys put earlier in the same batch that sort after everything already stored.
  WriteBatch seed;
  for (const char* k : {"a", "\xfe", "\xff", "\xff\x01", "\xff\xff", "\xff\xff\xff"}) {
    seed.Put(Table::kMetrics, k, "m");
  }
  ASSERT_TRUE(store_->Write(seed).ok());

  WriteBatch b;
  b.Put(Table::kMetrics, "\xff\xff\xff\xff\xff", "put earlier in the batch");
  b.DeletePrefix(Table::kMetrics, "\xff\xff");
  ASSERT_TRUE(store_->Write(b).ok());
  EXPECT_EQ(MustScan(Table::kMetrics), (Rows{{"a", "m"}, {"\xfe", "m"}, {"\xff", "m"}, {"\xff\x01", "m"}}));

  WriteBatch clear;
  clear.Put(Table::kWorkers, "w", "untouched");
  clear.Put(Table::kMetrics, std::string(40, '\xff'), "put earlier in the batch");
  clear.DeletePrefix(Table::kMetrics, "");
  clear.Put(Table::kMetrics, "z", "put after the clear");
  ASSERT_TRUE(store_->Write(clear).ok());
  EXPECT_EQ(MustScan(Table::kMetrics), (Rows{{"z", "put after the clear"}}));
  EXPECT_EQ(MustGet(Table::kWorkers, "w"), "untouched");

  WriteBatch clear_empty_table;
  clear_empty_table.DeletePrefix(Table::kCheckpoints, "");
  EXPECT_TRUE(store_->Write(clear_empty_table).ok());
}

TEST_P(StateStoreContractTest, ClusterIdIsRecordedInMeta) {
  EXPECT_EQ(store_->cluster_id(), kCluster);
  EXPECT_EQ(MustGet(Table::kMeta, kClusterIdKey), kCluster);
}

TEST_P(StateStoreContractTest, BatchTouchingTheClusterMarkerIsRefusedWhole) {
  auto refused = [&](const WriteBatch& b) {
    Status s = store_->Write(b);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s;
    EXPECT_NE(s.message().find("cluster_id"), std::string::npos) << s;
  };
  WriteBatch overwrite;
  overwrite.Put(Table::kJobs, "job-1", "must not land");
  overwrite.Put(Table::kMeta, kClusterIdKey, "cluster-other");
  refused(overwrite);
  WriteBatch del;
  del.Put(Table::kJobs, "job-1", "must not land");
  del.Delete(Table::kMeta, kClusterIdKey);
  refused(del);
  WriteBatch clear_meta;
  clear_meta.DeletePrefix(Table::kMeta, "");
  refused(clear_meta);
  WriteBatch prefix_of_marker;
  prefix_of_marker.DeletePrefix(Table::kMeta, "clus");
  refused(prefix_of_marker);

  EXPECT_EQ(MustGet(Table::kJobs, "job-1"), std::nullopt);
  EXPECT_EQ(MustGet(Table::kMeta, kClusterIdKey), kCluster);

  WriteBatch fine;  // the rest of meta is the callers'
  fine.Put(Table::kMeta, "cluster_idx", "1");
  fine.DeletePrefix(Table::kMeta, "cluster_idz");
  fine.Put(Table::kWorkers, "cluster_id", "a worker may be called that");
  EXPECT_TRUE(store_->Write(fine).ok());
  EXPECT_EQ(MustGet(Table::kMeta, "cluster_idx"), "1");
}

TEST_P(StateStoreContractTest, EmptyBatchIsANoOp) {
  auto before = testing_util::DumpAll(*store_);
  EXPECT_TRUE(store_->Write(WriteBatch()).ok());
  EXPECT_EQ(testing_util::DumpAll(*store_), before);
}

// ---- TypedTable over each backend.

struct JobRow {
  std::string name;
  int64_t step = 0;
  friend bool operator==(const JobRow&, const JobRow&) = default;
};

std::string EncodeJob(const JobRow& j) { return j.name + "|" + std::to_string(j.step); }

Result<JobRow> DecodeJob(std::string_view s) {
  size_t bar = s.rfind('|');
  if (bar == std::string_view::npos) return InvalidArgumentError("no '|' in job row");
  JobRow j;
  j.name = std::string(s.substr(0, bar));
  try {
    j.step = std::stoll(std::string(s.substr(bar + 1)));
  } catch (...) {
    return InvalidArgumentError("step is not a number");
  }
  return j;
}

TEST_P(StateStoreContractTest, TypedTableRoundTripsValues) {
  TypedTable<JobRow> jobs(store_.get(), Table::kJobs, EncodeJob, DecodeJob);
  WriteBatch b;
  jobs.Put(b, "job-2", JobRow{"sft", 100});
  jobs.Put(b, "job-1", JobRow{"pretrain", 300});
  jobs.Put(b, "other", JobRow{"x|y", -1});  // the codec, not the table, owns the format
  b.Put(Table::kEvents, "e", "same batch, another table");
  ASSERT_TRUE(store_->Write(b).ok());

  auto one = jobs.Get("job-1");
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_EQ(*one, (JobRow{"pretrain", 300}));
  auto missing = jobs.Get("job-3");
  ASSERT_TRUE(missing.ok()) << missing.status();
  EXPECT_EQ(*missing, std::nullopt);

  auto scanned = jobs.Scan("job-");
  ASSERT_TRUE(scanned.ok()) << scanned.status();
  ASSERT_EQ(scanned->size(), 2u);
  EXPECT_EQ((*scanned)[0], (std::pair<std::string, JobRow>{"job-1", {"pretrain", 300}}));
  EXPECT_EQ((*scanned)[1], (std::pair<std::string, JobRow>{"job-2", {"sft", 100}}));
  EXPECT_EQ(*jobs.Get("other"), (JobRow{"x|y", -1}));

  WriteBatch del;
  jobs.Delete(del, "job-1");
  jobs.DeletePrefix(del, "oth");
  ASSERT_TRUE(store_->Write(del).ok());
  EXPECT_EQ(jobs.Scan()->size(), 1u);
  EXPECT_EQ(MustGet(Table::kEvents, "e"), "same batch, another table");
}

TEST_P(StateStoreContractTest, TypedTableUndecodableValueIsDataLossNamingTableAndKey) {
  TypedTable<JobRow> jobs(store_.get(), Table::kJobs, EncodeJob, DecodeJob);
  WriteBatch b;
  jobs.Put(b, "job-1", JobRow{"ok", 1});
  b.Put(Table::kJobs, std::string("job-\x01" "bad", 8), "not a job row");
  ASSERT_TRUE(store_->Write(b).ok());

  auto got = jobs.Get(std::string("job-\x01" "bad", 8));
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().code(), StatusCode::kDataLoss) << got.status();
  EXPECT_NE(got.status().message().find("table 'jobs'"), std::string::npos) << got.status();
  EXPECT_NE(got.status().message().find("key 'job-\\x01bad'"), std::string::npos) << got.status();
  EXPECT_NE(got.status().message().find("no '|' in job row"), std::string::npos) << got.status();

  auto scanned = jobs.Scan();
  ASSERT_FALSE(scanned.ok());
  EXPECT_EQ(scanned.status().code(), StatusCode::kDataLoss) << scanned.status();

  auto good = jobs.Get("job-1");  // one bad row does not poison the others
  ASSERT_TRUE(good.ok()) << good.status();
  EXPECT_EQ(*good, (JobRow{"ok", 1}));
}

// ---- Concurrency: several writer threads and reader threads on one store. Readers check that every scan
// shows each writer's two keys from the same batch (a batch is seen whole or not at all).

TEST_P(StateStoreContractTest, ConcurrentWritersAndReadersSeeWholeBatches) {
  constexpr int kWriters = 4;
  constexpr int kBatchesPerWriter = 40;
  constexpr int kReaders = 2;
  std::latch start(kWriters + kReaders);
  std::atomic<int> writers_left{kWriters};
  std::atomic<int> write_failures{0};
  std::atomic<int> torn_reads{0};
  std::atomic<int> scans{0};

  std::vector<std::thread> threads;
  for (int w = 0; w < kWriters; ++w) {
    threads.emplace_back([&, w] {
      start.arrive_and_wait();
      const std::string p = "w" + std::to_string(w) + "/";
      for (int i = 1; i <= kBatchesPerWriter; ++i) {
        WriteBatch b;
        b.Put(Table::kJobs, p + "a", std::to_string(i));
        b.Put(Table::kJobs, p + "b", std::to_string(i));
        b.Put(Table::kEvents, p + std::to_string(1000 + i), "event");
        if (!store_->Write(b).ok()) write_failures++;
      }
      writers_left--;
    });
  }
  for (int r = 0; r < kReaders; ++r) {
    threads.emplace_back([&] {
      start.arrive_and_wait();
      bool last = false;
      while (!last) {
        last = writers_left.load() == 0;  // one more full pass after every writer finished
        auto rows = store_->Scan(Table::kJobs);
        if (!rows.ok()) {
          torn_reads++;
          continue;
        }
        scans++;
        std::map<std::string, std::string> m(rows->begin(), rows->end());
        for (int w = 0; w < kWriters; ++w) {
          const std::string p = "w" + std::to_string(w) + "/";
          if (m.count(p + "a") != m.count(p + "b") || (m.count(p + "a") && m[p + "a"] != m[p + "b"])) {
            torn_reads++;
          }
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();

  EXPECT_EQ(write_failures.load(), 0);
  EXPECT_EQ(torn_reads.load(), 0);
  EXPECT_GE(scans.load(), kReaders);
  for (int w = 0; w < kWriters; ++w) {
    const std::string p = "w" + std::to_string(w) + "/";
    EXPECT_EQ(MustGet(Table::kJobs, p + "a"), std::to_string(kBatchesPerWriter));
    EXPECT_EQ(MustGet(Table::kJobs, p + "b"), std::to_string(kBatchesPerWriter));
    EXPECT_EQ(MustScan(Table::kEvents, p).size(), static_cast<size_t>(kBatchesPerWriter));
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, StateStoreContractTest, ::testing::ValuesIn(Backends()),
                         [](const ::testing::TestParamInfo<Backend>& info) { return info.param.name; });

}  // namespace
}  // namespace shoal
