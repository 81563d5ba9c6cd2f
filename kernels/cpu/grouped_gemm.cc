#include "kernels/cpu/grouped_gemm.h"

#include <algorithm>

#include "common/check.h"
#include "kernels/cpu/blas.h"

namespace shoal::kernels::cpu {
namespace {

void CheckOffsets(const int32_t* offsets, int64_t num_experts) {
  CHECK(offsets != nullptr && num_experts >= 0) << "grouped GEMM: " << num_experts << " experts";
  CHECK(offsets[0] == 0) << "grouped GEMM: offsets[0] = " << offsets[0];
  for (int64_t e = 0; e < num_experts; ++e) {
    CHECK(offsets[e] <= offsets[e + 1]) << "grouped GEMM: offsets not sorted at expert " << e;
  }
}

// Runs body(part_idx) for part_idx in [0, num_parts) on the pool with single-threaded BLAS.
template <typename Body>
void RunParts(ThreadPool& pool, int64_t num_parts, Body&& body) {
  ScopedBlasThreads single(1);
  if (num_parts == 1) {
    body(0);
    return;
  }
  pool.ParallelFor(num_parts, 1, [&](int64_t begin, int64_t end, int) {
    for (int64_t p = begin; p < end; ++p) body(p);
  });
}

// dW_e[n0:n1, :] += dy[rows_e, n0:n1]ᵀ · x[rows_e, :]
void WeightGradSlice(float* dw, const float* dy, const float* x, const int32_t* offsets, int64_t e, int64_t K,
                     int64_t N, int64_t n0, int64_t n1) {
  const int64_t r0 = offsets[e], rows = offsets[e + 1] - r0;
  if (rows == 0 || n1 == n0) return;
  sgemm(true, false, n1 - n0, K, rows, 1.f, dy + r0 * N + n0, N, x + r0 * K, K, 1.f, dw + (e * N + n0) * K, K);
}

}  // namespace

bool SplitWeightGradByExperts(const int32_t* offsets, int64_t num_experts, int64_t num_parts) {
  const int64_t total = offsets[num_experts];
  if (num_parts <= 1 || total == 0) return true;
  for (int64_t p = 0; p < num_parts; ++p) {
    int64_t rows = 0;
    for (int64_t e = 0; e < num_experts; ++e) {
      if (ExpertPart(offsets, num_experts, num_parts, e) == p) rows += offsets[e + 1] - offsets[e];
    }
    if (rows * num_parts * 100 > total * 115) return false;
  }
  return true;
}

void grouped_matmul_forward(float* y, const float* x, const float* w, const int32_t* offsets, int64_t num_experts,
                            int64_t K, int64_t N, ThreadPool* pool) {
  CheckOffsets(offsets, num_experts);
  ThreadPool& tp = pool ? *pool : ThreadPool::Default();
  const int64_t num_parts = tp.num_threads();
  RunParts(tp, num_parts, [&](int64_t part) {
    ForEachExpertRowsInPart(offsets, num_experts, num_parts, part, [&](const ExpertRows& r) {
      sgemm(false, true, r.end - r.begin, N, K, 1.f, x + r.begin * K, K, w + r.expert_idx * N * K, K, 0.f,
            y + r.begin * N, N);
    });
  });
}

void grouped_matmul_backward(float* dx, float* dw, const float* dy, const float* x, const float* w,
                             const int32_t* offsets, int64_t num_experts, int64_t K, int64_t N, ThreadPool* pool) {
  CheckOffsets(offsets, num_experts);
  ThreadPool& tp = pool ? *pool : ThreadPool::Default();
  const int64_t num_parts = tp.num_threads();
  if (dx != nullptr) {
    RunParts(tp, num_parts, [&](int64_t part) {
      ForEachExpertRowsInPart(offsets, num_experts, num_parts, part, [&](const ExpertRows& r) {
        sgemm(false, false, r.end - r.begin, K, N, 1.f, dy + r.begin * N, N, w + r.expert_idx * N * K, K, 1.f,
              dx + r.begin * K, K);
      });
    });
  }
  if (dw != nullptr) {
    if (SplitWeightGradByExperts(offsets, num_experts, num_parts)) {
      RunParts(tp, num_parts, [&](int64_t part) {
        for (int64_t e = 0; e < num_experts; ++e) {
          if (ExpertPart(offsets, num_experts, num_parts, e) == part)
            WeightGradSlice(dw, dy, x, offsets, e, K, N, 0, N);
        }
      });
    } else {
      // Skewed routing: part p owns output rows [n0, n1) of every expert's dW.
      const int64_t dw_parts = std::min<int64_t>(num_parts, N);
      RunParts(tp, dw_parts, [&](int64_t part) {
        const int64_t n0 = N * part / dw_parts, n1 = N * (part + 1) / dw_parts;
        for (int64_t e = 0; e < num_experts; ++e) WeightGradSlice(dw, dy, x, offsets, e, K, N, n0, n1);
      });
    }
  }
}

}  // namespace shoal::kernels::cpu
