// Internal to the fast CPU ops: how they split work over ThreadPool::Default().
//   * ParallelRows: rows in contiguous ranges, with a grain sized so that a chunk moves ≥ ~64 KiB (small
//     problems then run inline: waking a worker costs more than it saves).
//   * ParallelFixedChunks: a fixed number of chunks, independent of the thread count, so that reductions
//     over per-chunk partials (dw of RMSNorm, norms, losses) are bit-for-bit deterministic.
// ParallelFor is not reentrant, so the fast CPU ops must not be called from inside a ParallelFor body of
// ThreadPool::Default() (call them from the compute thread; they parallelise themselves).
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>

#include "common/thread_pool.h"

namespace shoal::kernels::detail {

inline void ParallelRows(int64_t rows, int64_t bytes_per_row, const std::function<void(int64_t, int64_t)>& fn) {
  const int64_t grain = std::max<int64_t>(1, (int64_t{64} << 10) / std::max<int64_t>(1, bytes_per_row));
  ThreadPool::Default().ParallelFor(rows, grain, [&](int64_t b, int64_t e, int) { fn(b, e); });
}

// Number of fixed chunks for n items: at most max_chunks, each with at least min_items.
inline int NumFixedChunks(int64_t n, int max_chunks, int64_t min_items) {
  return static_cast<int>(std::clamp<int64_t>(n / std::max<int64_t>(1, min_items), 1, max_chunks));
}

// fn(chunk_idx, begin, end) over num_chunks fixed chunks covering [0, n).
inline void ParallelFixedChunks(int64_t n, int num_chunks,
                                const std::function<void(int, int64_t, int64_t)>& fn) {
  const int64_t per = (n + num_chunks - 1) / num_chunks;
  ThreadPool::Default().ParallelFor(num_chunks, 1, [&](int64_t cb, int64_t ce, int) {
    for (int64_t c = cb; c < ce; ++c) {
      const int64_t b = std::min(n, c * per), e = std::min(n, (c + 1) * per);
      fn(static_cast<int>(c), b, e);
    }
  });
}

}  // namespace shoal::kernels::detail
