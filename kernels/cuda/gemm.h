// Dense GEMMs on CUDA through cuBLASLt: fp32 and bf16 (fp32 accumulate) with the same row-major semantics as
// kernels/cpu/blas.h, and DeepSeek-V3's block-scaled FP8 GEMM through cuBLASLt's Hopper block-scaling modes
// (1×128 "VEC128" and 128×128 "BLK128x128" fp32 scales, cuBLAS >= 12.9, sm_90). All pointers are device
// pointers; everything is enqueued on `stream` and nothing synchronises or allocates.
//
// Only cudart and cuBLASLt are linked (never the driver stub), so binaries start on machines without a GPU;
// there, BlasContext::Create returns Unavailable.
#pragma once

#include <cstdint>
#include <memory>

#include "common/status.h"
#include "kernels/dtype.h"
#include "kernels/fp8.h"

// Forward declarations so that this header does not pull in cuda_runtime.h / cublasLt.h.
struct CUstream_st;
struct cublasLtContext;

namespace shoal::kernels::cuda {

using Stream = CUstream_st*;  // == cudaStream_t

// Owns a cuBLASLt handle and its workspace on the current device. Create once per device and reuse; not
// thread-safe (one per stream user).
class BlasContext {
 public:
  static constexpr int64_t kDefaultWorkspaceBytes = 32 << 20;
  static Result<std::unique_ptr<BlasContext>> Create(int64_t workspace_bytes = kDefaultWorkspaceBytes);
  ~BlasContext();
  BlasContext(const BlasContext&) = delete;
  BlasContext& operator=(const BlasContext&) = delete;

  cublasLtContext* handle() const { return handle_; }
  void* workspace() const { return workspace_; }
  int64_t workspace_bytes() const { return workspace_bytes_; }

 private:
  BlasContext(cublasLtContext* handle, void* workspace, int64_t workspace_bytes)
      : handle_(handle), workspace_(workspace), workspace_bytes_(workspace_bytes) {}
  cublasLtContext* handle_;  // owned (cublasLtDestroy)
  void* workspace_;          // owned (cudaFree)
  int64_t workspace_bytes_;
};

// C[M,N] = alpha·op(A)·op(B) + beta·C, row-major, leading dims = row strides (as in cpu::sgemm).
// in_dtype: kF32 (true fp32 math, no TF32) or kBF16 (fp32 accumulate); out_dtype: kF32 or kBF16.
Status gemm(BlasContext& ctx, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const void* A,
            int64_t lda, const void* B, int64_t ldb, float beta, void* C, int64_t ldc, DType in_dtype, DType out_dtype,
            Stream stream);

// Linear layer, weights [OC, C]: out[N,OC] = inp[N,C]·weight[OC,C]ᵀ (inputs of `dtype`, fp32 output).
Status matmul_forward(BlasContext& ctx, float* out, const void* inp, const void* weight, int64_t N, int64_t C,
                      int64_t OC, DType dtype, Stream stream);
// dinp[N,C] += dout·weight; dweight[OC,C] += doutᵀ·inp (either may be null). fp32 gradients.
Status matmul_backward(BlasContext& ctx, float* dinp, float* dweight, const void* dout, const void* inp,
                       const void* weight, int64_t N, int64_t C, int64_t OC, DType dtype, Stream stream);

// ---- FP8 through cuBLASLt block scaling (Hopper).
//
// out[M,N] = Σ_kb (A·Bᵀ)_kb · sa · sb with A [M,K] and B [N,K] both K-major E4M3 (the "TN" layout FP8 tensor
// cores need), each with 1×128 or 128×128 tiles (not both 128×128: cuBLASLt has no 2D×2D kernels). The scales
// must be in cuBLASLt's layout, made from ours by fp8_scales_to_cublaslt (kernels/cuda/fp8.h). Requires
// K % 16 == 0. out_dtype: kF32 or kBF16. Returns Unimplemented where this cuBLASLt/GPU has no kernel.
Status fp8_gemm_cublaslt(BlasContext& ctx, void* out, DType out_dtype, const Fp8Matrix& a, const Fp8Matrix& b,
                         Stream stream);

}  // namespace shoal::kernels::cuda
