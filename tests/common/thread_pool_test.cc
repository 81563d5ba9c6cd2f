#include "common/thread_pool.h"

#include <gtest/gtest.h>

#include <atomic>

namespace shoal {
namespace {

TEST(ThreadPoolTest, CoversEveryIndexExactlyOnceRepeatedly) {
  ThreadPool pool(3);
  for (int64_t n : {1, 2, 7, 1000, 100003}) {
    std::vector<std::atomic<int>> hits(n);
    for (int round = 0; round < 5; ++round) {
      pool.ParallelFor(n, 1, [&](int64_t b, int64_t e, int) {
        for (int64_t i = b; i < e; ++i) hits[i]++;
      });
    }
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 5) << "n=" << n << " i=" << i;
  }
}

TEST(ThreadPoolTest, UsesSeveralThreadsWhenWorkIsLarge) {
  ThreadPool pool(2);
  std::atomic<int> max_idx{0};
  pool.ParallelFor(1000, 10, [&](int64_t, int64_t, int t) {
    int cur = max_idx.load();
    while (t > cur && !max_idx.compare_exchange_weak(cur, t)) {}
  });
  EXPECT_LT(max_idx.load(), 2);
  ThreadPool one(1);
  int calls = 0;
  one.ParallelFor(100, 1, [&](int64_t b, int64_t e, int) { calls++; EXPECT_EQ(e - b, 100); });
  EXPECT_EQ(calls, 1);
}

}  // namespace
}  // namespace shoal
