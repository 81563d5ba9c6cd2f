// FP8 on CUDA, twins of kernels/fp8.h and kernels/cpu/fp8_gemm.h with the same layouts and semantics:
// tile quantisation (E4M3 via cuda_fp8.h's saturating round-to-nearest-even), dequantisation, and a
// straightforward block-scaled GEMM kernel (SIMT fp32, any transposes) that promotes every 128 of K exactly as
// §5.3 says. The fast path is cuBLASLt's block scaling (kernels/cuda/gemm.h), which wants its scales in its own
// layout: fp8_scales_to_cublaslt converts ours.
//
// All pointers are device pointers; kernels are enqueued on `stream`; nothing allocates or synchronises.
#pragma once

#include <cstdint>

#include "common/status.h"
#include "kernels/fp8.h"

struct CUstream_st;

namespace shoal::kernels::cuda {

using Stream = CUstream_st*;

// q[rows, cols], scale[Fp8ScaleRows, Fp8ScaleCols] from x[rows, cols] (fp32).
Status quantize_fp8(uint8_t* q, float* scale, const float* x, int64_t rows, int64_t cols, Fp8Tiling tiling,
                    bool pow2_scale, Stream stream);
// x[rows, cols] = q · scale of its tile.
Status dequantize_fp8(float* x, const uint8_t* q, const float* scale, int64_t rows, int64_t cols, Fp8Tiling tiling,
                      Stream stream);

// out[M,N] = op(A)·op(B) (or += with accumulate), A stored [M,K] ([K,M] if trans_a), B stored [K,N] ([N,K] if
// trans_b); per 128-K block the fp32 partial sum is multiplied by both tiles' scales and added to the fp32
// accumulator. Same tiling rules as cpu::fp8_gemm.
Status fp8_gemm(float* out, const Fp8Matrix& a, bool trans_a, const Fp8Matrix& b, bool trans_b, bool accumulate,
                Stream stream);

// cuBLASLt's scale layouts for a K-major operand [outer, K] (TransformerEngine's "GEMM-ready" format):
//   1×128 tiles:   [ceil(K/128), roundup(outer, 4)]          (ours is [outer, ceil(K/128)])
//   128×128 tiles: [ceil(outer/128), roundup(ceil(K/128), 4)] (ours, with rows padded to a multiple of 4)
// Padding entries are set to 1.
int64_t CublasLtScaleCount(int64_t outer, int64_t k, Fp8Tiling tiling);
// InvalidArgument unless the tiling is 1×128 or 128×128 (what cuBLASLt's Hopper block scaling takes).
Status CheckCublasLtTiling(const Fp8Matrix& m, const char* name);
// dst[CublasLtScaleCount] from m's scales (m.q is not touched).
Status fp8_scales_to_cublaslt(float* dst, const Fp8Matrix& m, Stream stream);

}  // namespace shoal::kernels::cuda
