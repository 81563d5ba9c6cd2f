// Dense GEMMs on the CPU: fp32 through OpenBLAS (cblas_sgemm), bf16 inputs with fp32 output, and the
// linear-layer forms y = x·Wᵀ (weights stored [OC, C], as in Hugging Face checkpoints) with their backward.
// All matrices are row-major.
//
// Threading policy: exactly one level of parallelism at a time. Either
//   (a) a single large GEMM runs with OpenBLAS's own threads (SetBlasThreads(n), by default the size of
//       ThreadPool::Default()), or
//   (b) a kernel splits work across ThreadPool::Default() (grouped GEMM, FP8 GEMM, bf16 tiles) and every BLAS
//       call inside the ParallelFor body runs single-threaded on the calling thread; such kernels hold a
//       ScopedBlasThreads(1) for the duration.
// Never both: OpenBLAS threads inside our pool's threads oversubscribe the cores and serialise on
// OpenBLAS's internal locks. OpenBLAS's thread count is process-global, so CPU kernels are meant to be called
// from one compute thread per process.
#pragma once

#include <cstdint>

#include "common/thread_pool.h"
#include "kernels/dtype.h"

namespace shoal::kernels::cpu {

// OpenBLAS thread count (openblas_set_num_threads). n <= 0 means ThreadPool::Default().num_threads().
void SetBlasThreads(int n);
int BlasThreads();

// Sets the OpenBLAS thread count for a scope and restores the previous count on exit.
class ScopedBlasThreads {
 public:
  explicit ScopedBlasThreads(int n);
  ~ScopedBlasThreads();
  ScopedBlasThreads(const ScopedBlasThreads&) = delete;
  ScopedBlasThreads& operator=(const ScopedBlasThreads&) = delete;

 private:
  int previous_;
};

// C[M,N] = alpha·op(A)·op(B) + beta·C, op(X) = X or Xᵀ; lda/ldb/ldc are row strides of the stored matrices
// (A is stored [M,K] or, transposed, [K,M]). With beta == 0, C is not read (NaNs in C do not propagate).
void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

// The same with bf16 A and B and an fp32 C: products and sums in fp32, i.e. exactly an fp32 GEMM of the
// bf16 values (cblas_sbgemm semantics). Debian's OpenBLAS 0.3.21 is built without sbgemm, so this widens
// 256×256 tiles to fp32 (a per-thread scratch allocated once) and runs sgemm on them; tiles are spread
// over `pool` with single-threaded BLAS.
void gemm_bf16(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const bf16_t* A, int64_t lda,
               const bf16_t* B, int64_t ldb, float beta, float* C, int64_t ldc, ThreadPool* pool = nullptr);

// Linear layer (no bias), in llm.c's argument order: outputs, inputs, weights, dims.
//   out[N,OC] = inp[N,C] · weight[OC,C]ᵀ             (N = B·T rows)
void matmul_forward(float* out, const float* inp, const float* weight, int64_t N, int64_t C, int64_t OC);
// Accumulates (+=) both gradients; either output may be null to skip it.
//   dinp[N,C]     += dout[N,OC] · weight[OC,C]
//   dweight[OC,C] += dout[N,OC]ᵀ · inp[N,C]
void matmul_backward(float* dinp, float* dweight, const float* dout, const float* inp, const float* weight, int64_t N,
                     int64_t C, int64_t OC);

// bf16 activations and weights, fp32 outputs and gradients (same semantics as above).
void matmul_forward_bf16(float* out, const bf16_t* inp, const bf16_t* weight, int64_t N, int64_t C, int64_t OC,
                         ThreadPool* pool = nullptr);
void matmul_backward_bf16(float* dinp, float* dweight, const bf16_t* dout, const bf16_t* inp, const bf16_t* weight,
                          int64_t N, int64_t C, int64_t OC, ThreadPool* pool = nullptr);

}  // namespace shoal::kernels::cpu
