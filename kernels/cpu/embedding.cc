#include "kernels/cpu/embedding.h"

#include <cstring>

#include "common/thread_pool.h"
#include "kernels/cpu/ops_parallel.h"
#include "kernels/cpu/ops_simd.h"

namespace shoal::kernels {
namespace {

// dtable[tok, c0:c1] += dout[n, c0:c1] for every token, in token order.
SHOAL_SIMD_CLONES void scatter_add_cols(float* dtable, const float* dout, const int32_t* tokens, int N, int C,
                                        int c0, int c1) {
  for (int n = 0; n < N; ++n) {
    float* dst = dtable + (int64_t)tokens[n] * C;
    const float* src = dout + (int64_t)n * C;
    int c = c0;
    for (; c + simd::kW <= c1; c += simd::kW) simd::store(dst + c, simd::load(dst + c) + simd::load(src + c));
    for (; c < c1; ++c) dst[c] += src[c];
  }
}

}  // namespace

void embedding_forward(float* out, const int32_t* tokens, const float* table, int N, int C, int V) {
  detail::ParallelRows(N, (int64_t)C * 8, [&](int64_t b, int64_t e) {
    for (int64_t n = b; n < e; ++n)
      std::memcpy(out + n * C, table + (int64_t)tokens[n] * C, sizeof(float) * C);
  });
}

void embedding_backward(float* dtable, const float* dout, const int32_t* tokens, int N, int C, int V) {
  // Columns in blocks of 16 floats (one cache line when rows are 64-byte aligned): no two threads touch the
  // same line and each column's sum runs in token order.
  const int num_blocks = (C + simd::kW - 1) / simd::kW;
  const int64_t grain = (int64_t)N * C < (int64_t{1} << 15) ? num_blocks : 1;
  ThreadPool::Default().ParallelFor(num_blocks, grain, [&](int64_t b, int64_t e, int) {
    scatter_add_cols(dtable, dout, tokens, N, C, static_cast<int>(b * simd::kW),
                     static_cast<int>(std::min<int64_t>(C, e * simd::kW)));
  });
}

}  // namespace shoal::kernels
