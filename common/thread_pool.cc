#include "common/thread_pool.h"

#include <algorithm>
#include <memory>

namespace shoal {
namespace {
std::mutex g_default_mu;
std::unique_ptr<ThreadPool> g_default;
int g_default_threads = 0;
}  // namespace

ThreadPool::ThreadPool(int num_threads) : num_threads_(std::max(1, num_threads)) {
  for (int i = 1; i < num_threads_; ++i) threads_.emplace_back([this, i] { WorkerLoop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  for (auto& t : threads_) t.join();
}

void ThreadPool::ParallelFor(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t, int)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  int64_t max_chunks = std::max<int64_t>(1, n / grain);
  int64_t num_chunks = std::min<int64_t>(num_threads_, max_chunks);
  if (num_chunks <= 1) {
    fn(0, n, 0);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    fn_ = &fn;
    n_ = n;
    num_chunks_ = num_chunks;
    chunk_ = (n + num_chunks - 1) / num_chunks;
    next_chunk_ = 1;  // chunk 0 is the caller's
    chunks_done_ = 0;
    ++generation_;
  }
  work_cv_.notify_all();
  fn(0, std::min(n, chunk_), 0);
  // The caller also helps with remaining chunks.
  for (;;) {
    int64_t c;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (next_chunk_ >= num_chunks_) break;
      c = next_chunk_++;
    }
    fn(c * chunk_, std::min(n, (c + 1) * chunk_), 0);
    std::lock_guard<std::mutex> lock(mu_);
    ++chunks_done_;
  }
  std::unique_lock<std::mutex> lock(mu_);
  done_cv_.wait(lock, [&] { return chunks_done_ == num_chunks_ - 1; });
  fn_ = nullptr;
}

void ThreadPool::WorkerLoop(int thread_idx) {
  uint64_t seen = 0;
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    work_cv_.wait(lock, [&] { return stop_ || (generation_ != seen && fn_ != nullptr); });
    if (stop_) return;
    seen = generation_;
    while (fn_ != nullptr && next_chunk_ < num_chunks_) {
      int64_t c = next_chunk_++;
      const auto* fn = fn_;
      int64_t begin = c * chunk_, end = std::min(n_, (c + 1) * chunk_);
      lock.unlock();
      (*fn)(begin, end, thread_idx);
      lock.lock();
      if (++chunks_done_ == num_chunks_ - 1) done_cv_.notify_all();
    }
  }
}

ThreadPool& ThreadPool::Default() {
  std::lock_guard<std::mutex> lock(g_default_mu);
  if (!g_default) {
    int n = g_default_threads > 0 ? g_default_threads : static_cast<int>(std::thread::hardware_concurrency());
    g_default = std::make_unique<ThreadPool>(n);
  }
  return *g_default;
}

void ThreadPool::SetDefaultThreads(int num_threads) {
  std::lock_guard<std::mutex> lock(g_default_mu);
  g_default_threads = num_threads;
  g_default.reset();
}

}  // namespace shoal
