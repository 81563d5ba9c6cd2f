#include "kernels/cpu/permute.h"

#include <cstring>

#include "common/check.h"
#include "kernels/cpu/ops_parallel.h"
#include "kernels/cpu/ops_simd.h"

namespace shoal::kernels {
namespace {

using simd::kW;
using simd::load;
using simd::store;
using simd::vf16;

SHOAL_SIMD_CLONES void gather_add_rows(float* dx, const float* dxs, const int32_t* row_pos, int64_t n0, int64_t n1,
                                       int K, int C) {
  for (int64_t n = n0; n < n1; ++n) {
    float* d = dx + n * C;
    for (int k = 0; k < K; ++k) {
      const float* src = dxs + (int64_t)row_pos[n * K + k] * C;
      int c = 0;
      for (; c + kW <= C; c += kW) store(d + c, load(d + c) + load(src + c));
      for (; c < C; ++c) d[c] += src[c];
    }
  }
}

SHOAL_SIMD_CLONES void combine_rows(float* out, const float* ys, const float* weight, const int32_t* row_pos,
                                    int64_t n0, int64_t n1, int K, int C) {
  for (int64_t n = n0; n < n1; ++n) {
    float* o = out + n * C;
    for (int k = 0; k < K; ++k) {
      const float* y = ys + (int64_t)row_pos[n * K + k] * C;
      const float w = weight[n * K + k];
      int c = 0;
      for (; c + kW <= C; c += kW) store(o + c, load(o + c) + w * load(y + c));
      for (; c < C; ++c) o[c] += w * y[c];
    }
  }
}

SHOAL_SIMD_CLONES void combine_backward_rows(float* dys, float* dweight, const float* dout, const float* ys,
                                             const float* weight, const int32_t* row_pos, int64_t n0, int64_t n1,
                                             int K, int C) {
  for (int64_t n = n0; n < n1; ++n) {
    const float* g = dout + n * C;
    for (int k = 0; k < K; ++k) {
      const int64_t p = row_pos[n * K + k];
      const float* y = ys + p * C;
      float* dy = dys + p * C;
      const float w = weight[n * K + k];
      vf16 acc{};
      int c = 0;
      for (; c + kW <= C; c += kW) {
        vf16 gv = load(g + c);
        store(dy + c, load(dy + c) + w * gv);
        acc += gv * load(y + c);
      }
      float dot = simd::reduce_add(acc);
      for (; c < C; ++c) {
        dy[c] += w * g[c];
        dot += g[c] * y[c];
      }
      dweight[n * K + k] += dot;
    }
  }
}

}  // namespace

void moe_permute_plan(int32_t* expert_offsets, int32_t* sorted_rows, int32_t* row_pos, const int32_t* topk_idx,
                      int N, int K, int E) {
  const int64_t R = (int64_t)N * K;
  std::memset(expert_offsets, 0, sizeof(int32_t) * (E + 1));
  for (int64_t r = 0; r < R; ++r) {
    CHECK(topk_idx[r] >= 0 && topk_idx[r] < E) << "moe_permute_plan: expert " << topk_idx[r] << " at row " << r;
    ++expert_offsets[topk_idx[r] + 1];
  }
  for (int e = 0; e < E; ++e) expert_offsets[e + 1] += expert_offsets[e];
  // Place rows in increasing r; expert_offsets[e] is used as the fill cursor and restored afterwards.
  for (int64_t r = 0; r < R; ++r) {
    const int32_t p = expert_offsets[topk_idx[r]]++;
    sorted_rows[p] = static_cast<int32_t>(r);
    row_pos[r] = p;
  }
  for (int e = E; e > 0; --e) expert_offsets[e] = expert_offsets[e - 1];
  expert_offsets[0] = 0;
}

void moe_permute_forward(float* xs, const float* x, const int32_t* sorted_rows, int N, int K, int C) {
  detail::ParallelRows((int64_t)N * K, (int64_t)C * 8, [&](int64_t b, int64_t e) {
    for (int64_t p = b; p < e; ++p)
      std::memcpy(xs + p * C, x + (int64_t)(sorted_rows[p] / K) * C, sizeof(float) * C);
  });
}

void moe_permute_backward(float* dx, const float* dxs, const int32_t* row_pos, int N, int K, int C) {
  detail::ParallelRows(N, (int64_t)C * 4 * (K + 2),
                       [&](int64_t b, int64_t e) { gather_add_rows(dx, dxs, row_pos, b, e, K, C); });
}

void moe_unpermute_forward(float* out, const float* ys, const float* weight, const int32_t* row_pos, int N, int K,
                           int C) {
  detail::ParallelRows(N, (int64_t)C * 4 * (K + 2),
                       [&](int64_t b, int64_t e) { combine_rows(out, ys, weight, row_pos, b, e, K, C); });
}

void moe_unpermute_backward(float* dys, float* dweight, const float* dout, const float* ys, const float* weight,
                            const int32_t* row_pos, int N, int K, int C) {
  detail::ParallelRows(N, (int64_t)C * 4 * (3 * K + 1), [&](int64_t b, int64_t e) {
    combine_backward_rows(dys, dweight, dout, ys, weight, row_pos, b, e, K, C);
  });
}

}  // namespace shoal::kernels
