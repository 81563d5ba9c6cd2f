// cuBLASLt wrappers: row-major problems are handed to column-major cuBLASLt as their transposes
// (Cᵀ = op(B)ᵀ·op(A)ᵀ), which swaps the roles of A and B and keeps the transpose flags.
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <string>

#include "kernels/cuda/fp8.h"
#include "kernels/cuda/gemm.h"

namespace shoal::kernels::cuda {
namespace {

Status CudaStatus(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return Status::OK();
  cudaGetLastError();
  return InternalError(std::string(what) + ": " + cudaGetErrorName(err) + " (" + cudaGetErrorString(err) + ")");
}

Status BlasStatus(cublasStatus_t st, const char* what) {
  if (st == CUBLAS_STATUS_SUCCESS) return Status::OK();
  std::string msg = std::string(what) + ": " + cublasLtGetStatusName(st) + " (" + cublasLtGetStatusString(st) + ")";
  if (st == CUBLAS_STATUS_NOT_SUPPORTED) return UnimplementedError(msg);
  if (st == CUBLAS_STATUS_INVALID_VALUE) return InvalidArgumentError(msg);
  if (st == CUBLAS_STATUS_NOT_INITIALIZED) return UnavailableError(msg + "; is a CUDA device present?");
  return InternalError(msg);
}

cudaDataType_t ToCuda(DType t) {
  switch (t) {
    case DType::kF32:
      return CUDA_R_32F;
    case DType::kBF16:
      return CUDA_R_16BF;
    case DType::kF8E4M3:
      return CUDA_R_8F_E4M3;
    default:
      return CUDA_R_32I;
  }
}

// RAII for the three descriptor kinds.
struct MatmulDesc {
  cublasLtMatmulDesc_t d = nullptr;
  ~MatmulDesc() {
    if (d) cublasLtMatmulDescDestroy(d);
  }
  template <typename T>
  Status Set(cublasLtMatmulDescAttributes_t attr, const T& v) {
    return BlasStatus(cublasLtMatmulDescSetAttribute(d, attr, &v, sizeof(v)), "cublasLtMatmulDescSetAttribute");
  }
};
struct Layout {
  cublasLtMatrixLayout_t d = nullptr;
  ~Layout() {
    if (d) cublasLtMatrixLayoutDestroy(d);
  }
};
struct Preference {
  cublasLtMatmulPreference_t d = nullptr;
  ~Preference() {
    if (d) cublasLtMatmulPreferenceDestroy(d);
  }
};

// Column-major layout of a row-major [rows, cols] matrix with row stride ld: cols × rows, ld.
Status MakeLayout(Layout& l, cudaDataType_t type, int64_t rows, int64_t cols, int64_t ld) {
  return BlasStatus(
      cublasLtMatrixLayoutCreate(&l.d, type, static_cast<uint64_t>(cols), static_cast<uint64_t>(rows), ld),
      "cublasLtMatrixLayoutCreate");
}

// Picks the heuristic's best algorithm and runs it.
Status RunMatmul(BlasContext& ctx, MatmulDesc& desc, const void* alpha, const void* A, Layout& la, const void* B,
                 Layout& lb, const void* beta, const void* C, Layout& lc, void* D, Layout& ld, Stream stream) {
  Preference pref;
  RETURN_IF_ERROR(BlasStatus(cublasLtMatmulPreferenceCreate(&pref.d), "cublasLtMatmulPreferenceCreate"));
  size_t ws = static_cast<size_t>(ctx.workspace_bytes());
  RETURN_IF_ERROR(BlasStatus(
      cublasLtMatmulPreferenceSetAttribute(pref.d, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)),
      "cublasLtMatmulPreferenceSetAttribute"));
  cublasLtMatmulHeuristicResult_t heuristic{};
  int found = 0;
  RETURN_IF_ERROR(BlasStatus(
      cublasLtMatmulAlgoGetHeuristic(ctx.handle(), desc.d, la.d, lb.d, lc.d, ld.d, pref.d, 1, &heuristic, &found),
      "cublasLtMatmulAlgoGetHeuristic"));
  if (found == 0) return UnimplementedError("cuBLASLt has no algorithm for this GEMM on this GPU");
  return BlasStatus(cublasLtMatmul(ctx.handle(), desc.d, alpha, A, la.d, B, lb.d, beta, C, lc.d, D, ld.d,
                                   &heuristic.algo, ctx.workspace(), ws, stream),
                    "cublasLtMatmul");
}

}  // namespace

Result<std::unique_ptr<BlasContext>> BlasContext::Create(int64_t workspace_bytes) {
  cublasLtHandle_t handle = nullptr;
  RETURN_IF_ERROR(BlasStatus(cublasLtCreate(&handle), "cublasLtCreate"));
  void* workspace = nullptr;
  if (workspace_bytes > 0) {
    Status st =
        CudaStatus(cudaMalloc(&workspace, static_cast<size_t>(workspace_bytes)), "cudaMalloc(cuBLASLt workspace)");
    if (!st.ok()) {
      cublasLtDestroy(handle);
      return st;
    }
  }
  return std::unique_ptr<BlasContext>(new BlasContext(handle, workspace, workspace_bytes));
}

BlasContext::~BlasContext() {
  if (workspace_ != nullptr) cudaFree(workspace_);
  if (handle_ != nullptr) cublasLtDestroy(handle_);
}

Status gemm(BlasContext& ctx, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const void* A,
            int64_t lda, const void* B, int64_t ldb, float beta, void* C, int64_t ldc, DType in_dtype, DType out_dtype,
            Stream stream) {
  if (in_dtype != DType::kF32 && in_dtype != DType::kBF16)
    return InvalidArgumentError("cuda::gemm: inputs must be f32 or bf16");
  if (out_dtype != DType::kF32 && out_dtype != DType::kBF16)
    return InvalidArgumentError("cuda::gemm: output must be f32 or bf16");
  if (M == 0 || N == 0) return Status::OK();
  MatmulDesc desc;
  RETURN_IF_ERROR(
      BlasStatus(cublasLtMatmulDescCreate(&desc.d, CUBLAS_COMPUTE_32F, CUDA_R_32F), "cublasLtMatmulDescCreate"));
  // cuBLAS computes Cᵀ[N,M] = op(B)ᵀ·op(A)ᵀ: its "A" is our B.
  const cublasOperation_t op_b = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, op_a = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  RETURN_IF_ERROR(desc.Set(CUBLASLT_MATMUL_DESC_TRANSA, op_b));
  RETURN_IF_ERROR(desc.Set(CUBLASLT_MATMUL_DESC_TRANSB, op_a));
  Layout la, lb, lc;
  const cudaDataType_t in = ToCuda(in_dtype), out = ToCuda(out_dtype);
  RETURN_IF_ERROR(MakeLayout(la, in, trans_b ? N : K, trans_b ? K : N, ldb));  // our B as stored
  RETURN_IF_ERROR(MakeLayout(lb, in, trans_a ? K : M, trans_a ? M : K, lda));  // our A as stored
  RETURN_IF_ERROR(MakeLayout(lc, out, M, N, ldc));
  return RunMatmul(ctx, desc, &alpha, B, la, A, lb, &beta, C, lc, C, lc, stream);
}

Status matmul_forward(BlasContext& ctx, float* out, const void* inp, const void* weight, int64_t N, int64_t C,
                      int64_t OC, DType dtype, Stream stream) {
  return gemm(ctx, false, true, N, OC, C, 1.f, inp, C, weight, C, 0.f, out, OC, dtype, DType::kF32, stream);
}

Status matmul_backward(BlasContext& ctx, float* dinp, float* dweight, const void* dout, const void* inp,
                       const void* weight, int64_t N, int64_t C, int64_t OC, DType dtype, Stream stream) {
  if (dinp != nullptr) {
    RETURN_IF_ERROR(
        gemm(ctx, false, false, N, C, OC, 1.f, dout, OC, weight, C, 1.f, dinp, C, dtype, DType::kF32, stream));
  }
  if (dweight != nullptr) {
    RETURN_IF_ERROR(
        gemm(ctx, true, false, OC, C, N, 1.f, dout, OC, inp, C, 1.f, dweight, C, dtype, DType::kF32, stream));
  }
  return Status::OK();
}

Status fp8_gemm_cublaslt(BlasContext& ctx, void* out, DType out_dtype, const Fp8Matrix& a, const Fp8Matrix& b,
                         Stream stream) {
  const int64_t M = a.rows, N = b.rows, K = a.cols;
  if (b.cols != K)
    return InvalidArgumentError("fp8_gemm_cublaslt: A is [" + std::to_string(M) + ", " + std::to_string(K) +
                                "] but B has " + std::to_string(b.cols) + " columns");
  if (K % 16 != 0)
    return InvalidArgumentError("fp8_gemm_cublaslt: K=" + std::to_string(K) + " must be a multiple of 16");
  if (out_dtype != DType::kF32 && out_dtype != DType::kBF16)
    return InvalidArgumentError("fp8_gemm_cublaslt: output must be f32 or bf16");
  RETURN_IF_ERROR(CheckCublasLtTiling(a, "A"));
  RETURN_IF_ERROR(CheckCublasLtTiling(b, "B"));
  if (a.tiling.tile_rows == kFp8BlockSize && b.tiling.tile_rows == kFp8BlockSize) {
    return UnimplementedError(
        "fp8_gemm_cublaslt: cuBLASLt has no 128x128 x 128x128 kernel; quantise one operand 1x128");
  }
  if (M == 0 || N == 0) return Status::OK();
  MatmulDesc desc;
  RETURN_IF_ERROR(
      BlasStatus(cublasLtMatmulDescCreate(&desc.d, CUBLAS_COMPUTE_32F, CUDA_R_32F), "cublasLtMatmulDescCreate"));
  // cuBLAS "A" = our B (op T), cuBLAS "B" = our A (op N): D[N,M] col-major = out[M,N] row-major.
  const cublasOperation_t op_t = CUBLAS_OP_T, op_n = CUBLAS_OP_N;
  RETURN_IF_ERROR(desc.Set(CUBLASLT_MATMUL_DESC_TRANSA, op_t));
  RETURN_IF_ERROR(desc.Set(CUBLASLT_MATMUL_DESC_TRANSB, op_n));
  const int32_t mode_cublas_a =
      b.tiling.tile_rows == 1 ? CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F : CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F;
  const int32_t mode_cublas_b =
      a.tiling.tile_rows == 1 ? CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F : CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F;
  RETURN_IF_ERROR(desc.Set(CUBLASLT_MATMUL_DESC_A_SCALE_MODE, mode_cublas_a));
  RETURN_IF_ERROR(desc.Set(CUBLASLT_MATMUL_DESC_B_SCALE_MODE, mode_cublas_b));
  const void* scale_cublas_a = b.scale;
  const void* scale_cublas_b = a.scale;
  RETURN_IF_ERROR(desc.Set(CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, scale_cublas_a));
  RETURN_IF_ERROR(desc.Set(CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, scale_cublas_b));
  Layout la, lb, lc;
  RETURN_IF_ERROR(BlasStatus(cublasLtMatrixLayoutCreate(&la.d, CUDA_R_8F_E4M3, K, N, K), "cublasLtMatrixLayoutCreate"));
  RETURN_IF_ERROR(BlasStatus(cublasLtMatrixLayoutCreate(&lb.d, CUDA_R_8F_E4M3, K, M, K), "cublasLtMatrixLayoutCreate"));
  RETURN_IF_ERROR(
      BlasStatus(cublasLtMatrixLayoutCreate(&lc.d, ToCuda(out_dtype), N, M, N), "cublasLtMatrixLayoutCreate"));
  const float alpha = 1.f, beta = 0.f;
  return RunMatmul(ctx, desc, &alpha, b.q, la, a.q, lb, &beta, out, lc, out, lc, stream);
}

}  // namespace shoal::kernels::cuda
