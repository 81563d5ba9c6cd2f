// A fixed pool of worker threads for data-parallel CPU kernels: ParallelFor splits [0, n) into contiguous
// chunks, runs them on the pool plus the calling thread, and returns when all are done.
//
// Threading policy (kernels): a kernel either parallelises with this pool or calls OpenBLAS with its own
// threads, never both at once. While a ParallelFor body runs, BLAS calls inside it must be single-threaded
// (kernels/cpu/blas.h sets that up).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace shoal {

class ThreadPool {
 public:
  // num_threads counts the calling thread: ThreadPool(1) runs everything inline.
  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return num_threads_; }

  // Calls fn(begin, end, thread_idx) over disjoint chunks covering [0, n). Chunks have at least `grain`
  // items (except the last). Not reentrant: do not call ParallelFor from inside fn.
  void ParallelFor(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t, int)>& fn);

  // The process-wide pool used by kernels when none is passed (sized by SetDefaultThreads, default: all cores).
  static ThreadPool& Default();
  static void SetDefaultThreads(int num_threads);

 private:
  void WorkerLoop(int thread_idx);

  int num_threads_;
  std::vector<std::thread> threads_;
  std::mutex mu_;
  std::condition_variable work_cv_;
  std::condition_variable done_cv_;
  const std::function<void(int64_t, int64_t, int)>* fn_ = nullptr;
  int64_t n_ = 0;
  int64_t chunk_ = 0;
  int64_t num_chunks_ = 0;
  int64_t next_chunk_ = 0;
  int64_t chunks_done_ = 0;
  uint64_t generation_ = 0;
  bool stop_ = false;
};

}  // namespace shoal
