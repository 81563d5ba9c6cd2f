// The in-memory store's test hooks: injected write failures and a hook that holds a write in flight. These
// are what callers' tests use to prove they acknowledge nothing before the store says it is durable.
#include "storage/memory_state_store.h"

#include <future>
#include <latch>
#include <thread>

#include <gtest/gtest.h>

namespace shoal {
namespace {

std::optional<std::string> MustGet(const StateStore& store, Table t, std::string_view key) {
  auto v = store.Get(t, key);
  EXPECT_TRUE(v.ok()) << v.status();
  return v.ok() ? *v : std::nullopt;
}

WriteBatch PutJob(const std::string& key) {
  WriteBatch b;
  b.Put(Table::kJobs, key, "spec");
  b.Put(Table::kEvents, key, "submitted");
  return b;
}

TEST(MemoryStateStoreTest, FailNextWritesFailsExactlyThatManyAndAppliesNothing) {
  MemoryStateStore store("cluster-a");
  store.FailNextWrites(2, ResourceExhaustedError("disk full (injected)"));
  Status first = store.Write(PutJob("job-1"));
  Status second = store.Write(PutJob("job-2"));
  EXPECT_EQ(first, ResourceExhaustedError("disk full (injected)"));
  EXPECT_EQ(second, ResourceExhaustedError("disk full (injected)"));
  EXPECT_TRUE(store.Write(PutJob("job-3")).ok());

  EXPECT_EQ(MustGet(store, Table::kJobs, "job-1"), std::nullopt);
  EXPECT_EQ(MustGet(store, Table::kEvents, "job-1"), std::nullopt);  // no half of a failed batch
  EXPECT_EQ(MustGet(store, Table::kJobs, "job-2"), std::nullopt);
  EXPECT_EQ(MustGet(store, Table::kJobs, "job-3"), "spec");
  EXPECT_EQ(store.num_successful_writes(), 1);
}

TEST(MemoryStateStoreTest, DefaultInjectedFailureIsUnavailable) {
  MemoryStateStore store("cluster-a");
  store.FailNextWrites(1);
  EXPECT_EQ(store.Write(PutJob("job-1")).code(), StatusCode::kUnavailable);
  EXPECT_TRUE(store.Write(PutJob("job-1")).ok());
}

TEST(MemoryStateStoreTest, AppliedThenFailedLeavesTheWholeBatchVisible) {
  // The outcome a failed fsync can leave: the caller was told "failed" but the batch may be there.
  MemoryStateStore store("cluster-a");
  store.FailNextWrites(1, InternalError("fsync failed (injected)"),
                       MemoryStateStore::FaultMode::kAppliedThenFailed);
  EXPECT_EQ(store.Write(PutJob("job-1")).code(), StatusCode::kInternal);
  EXPECT_EQ(MustGet(store, Table::kJobs, "job-1"), "spec");
  EXPECT_EQ(MustGet(store, Table::kEvents, "job-1"), "submitted");
  EXPECT_EQ(store.num_successful_writes(), 0);
}

TEST(MemoryStateStoreTest, EmptyAndRefusedBatchesDoNotUseUpInjectedFailures) {
  MemoryStateStore store("cluster-a");
  store.FailNextWrites(1);
  EXPECT_TRUE(store.Write(WriteBatch()).ok());
  WriteBatch bad;
  bad.Delete(Table::kMeta, kClusterIdKey);
  EXPECT_EQ(store.Write(bad).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store.Write(PutJob("job-1")).code(), StatusCode::kUnavailable);
  EXPECT_TRUE(store.Write(PutJob("job-1")).ok());
}

TEST(MemoryStateStoreTest, WriteHookHoldsAWriteInFlightWithoutBlockingReads) {
  MemoryStateStore store("cluster-a");
  std::promise<void> entered;
  std::latch release(1);
  store.SetWriteHook([&](const WriteBatch& b) {
    EXPECT_EQ(b.size(), 2u);
    entered.set_value();
    release.wait();
    return Status::OK();
  });

  std::promise<Status> result;
  std::thread writer([&] { result.set_value(store.Write(PutJob("job-1"))); });
  entered.get_future().wait();
  // The write is in flight: not applied yet, and readers are not blocked by it.
  EXPECT_EQ(MustGet(store, Table::kJobs, "job-1"), std::nullopt);
  EXPECT_EQ(store.num_successful_writes(), 0);
  release.count_down();
  writer.join();
  EXPECT_TRUE(result.get_future().get().ok());
  EXPECT_EQ(MustGet(store, Table::kJobs, "job-1"), "spec");

  store.SetWriteHook(nullptr);
  EXPECT_TRUE(store.Write(PutJob("job-2")).ok());
}

TEST(MemoryStateStoreTest, WriteHookErrorFailsTheWriteWithNothingApplied) {
  MemoryStateStore store("cluster-a");
  int calls = 0;
  store.SetWriteHook([&](const WriteBatch& b) -> Status {
    ++calls;
    if (b.ops()[0].key == "job-bad") return UnavailableError("hook says no");
    return Status::OK();
  });
  EXPECT_EQ(store.Write(PutJob("job-bad")), UnavailableError("hook says no"));
  EXPECT_TRUE(store.Write(PutJob("job-good")).ok());
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(MustGet(store, Table::kJobs, "job-bad"), std::nullopt);
  EXPECT_EQ(MustGet(store, Table::kJobs, "job-good"), "spec");
}

TEST(MemoryStateStoreDeathTest, EmptyClusterIdIsABug) {
  EXPECT_DEATH({ MemoryStateStore store(""); }, "needs a cluster id");
}

}  // namespace
}  // namespace shoal
