// Grouped GEMM for routed experts: the rows of x are already sorted by expert, and expert e owns rows
// [offsets[e], offsets[e+1]). For every expert, a linear layer with its own weight W_e [N, K]:
//   forward:  y[rows_e]   = x[rows_e] · W_eᵀ
//   backward: dx[rows_e] += dy[rows_e] · W_e          dW_e += dy[rows_e]ᵀ · x[rows_e]
// Shapes: x [R, K], y/dy [R, N], w/dw [E, N, K], offsets [E+1] with offsets[0] = 0, offsets[E] = R.
//
// Parallelism (policy (b) of kernels/cpu/blas.h): the pool's threads split the work evenly and each runs
// single-threaded sgemm on its share. Forward and dx split the R rows into equal contiguous ranges (cut at
// expert boundaries, so one expert may be split between threads). dW gives each thread whole experts when
// that is balanced (bigger GEMMs, ~10% faster) and otherwise, under skewed routing, a slice of every expert's
// N output rows; either way no two threads write the same gradient element.
#pragma once

#include <cstdint>

#include "common/thread_pool.h"

namespace shoal::kernels::cpu {

// A contiguous run of rows that belongs to one expert.
struct ExpertRows {
  int32_t expert_idx;
  int64_t begin;  // global row index
  int64_t end;
};

// Pure: the pieces of part `part_idx` when rows [0, offsets[E]) are cut into `num_parts` equal contiguous
// ranges. Calls fn(ExpertRows) for each non-empty piece, in row order. Empty experts yield nothing.
template <typename Fn>
void ForEachExpertRowsInPart(const int32_t* offsets, int64_t num_experts, int64_t num_parts, int64_t part_idx,
                             Fn&& fn) {
  const int64_t total = offsets[num_experts];
  const int64_t lo = total * part_idx / num_parts, hi = total * (part_idx + 1) / num_parts;
  for (int64_t e = 0; e < num_experts && lo < hi; ++e) {
    const int64_t b = offsets[e] > lo ? offsets[e] : lo;
    const int64_t en = offsets[e + 1] < hi ? offsets[e + 1] : hi;
    if (b < en) fn(ExpertRows{static_cast<int32_t>(e), b, en});
  }
}

// Pure: the part (of num_parts) that owns expert_idx when dW is split by whole experts: the one whose equal
// share of rows [0, R) holds the expert's row midpoint.
inline int64_t ExpertPart(const int32_t* offsets, int64_t num_experts, int64_t num_parts, int64_t expert_idx) {
  const int64_t total = offsets[num_experts];
  if (total == 0) return 0;
  const int64_t twice_mid = int64_t{offsets[expert_idx]} + offsets[expert_idx + 1];  // 2 × midpoint
  const int64_t part = twice_mid * num_parts / (2 * total);
  return part < num_parts ? part : num_parts - 1;
}

// Pure: whether dW is split by whole experts, i.e. no part would get more than 1.15× its share of rows.
bool SplitWeightGradByExperts(const int32_t* offsets, int64_t num_experts, int64_t num_parts);

// y[R,N] = per expert x[rows_e,K] · w[e]ᵀ. Rows outside [0, offsets[E]) are not touched.
void grouped_matmul_forward(float* y, const float* x, const float* w, const int32_t* offsets, int64_t num_experts,
                            int64_t K, int64_t N, ThreadPool* pool = nullptr);

// dx[R,K] += per expert dy[rows_e,N] · w[e];  dw[E,N,K] += per expert dy[rows_e]ᵀ · x[rows_e].
// Either output may be null to skip it.
void grouped_matmul_backward(float* dx, float* dw, const float* dy, const float* x, const float* w,
                             const int32_t* offsets, int64_t num_experts, int64_t K, int64_t N,
                             ThreadPool* pool = nullptr);

}  // namespace shoal::kernels::cpu
