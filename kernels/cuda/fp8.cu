// CUDA twins of the FP8 quantiser and the block-scaled GEMM (see kernels/cuda/fp8.h).
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <string>

#include "kernels/cuda/fp8.h"

namespace shoal::kernels::cuda {
namespace {

constexpr int kThreads = 256;

Status LaunchStatus(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err == cudaSuccess) return Status::OK();
  const std::string msg = std::string(what) + ": " + cudaGetErrorName(err) + " (" + cudaGetErrorString(err) + ")";
  if (err == cudaErrorInsufficientDriver || err == cudaErrorNoDevice) {
    return UnavailableError(msg + "; is a CUDA device present?");
  }
  return InternalError(msg);
}

Status CheckTiling(Fp8Tiling t, const char* what) {
  if (t.tile_rows <= 0 || t.tile_cols <= 0) {
    return InvalidArgumentError(std::string(what) + ": tiling " + std::to_string(t.tile_rows) + "x" +
                                std::to_string(t.tile_cols));
  }
  return Status::OK();
}

__device__ __forceinline__ float DecodeE4M3(uint8_t b) {
  const uint32_t mag = b & 0x7fu;
  float v;
  if (mag == 0x7fu) {
    v = __uint_as_float(0x7fc00000u);
  } else if (mag < 8u) {
    v = static_cast<float>(mag) * 0x1p-9f;
  } else {
    v = __uint_as_float((mag << 20) + (120u << 23));
  }
  return (b & 0x80u) ? -v : v;
}

__device__ __forceinline__ uint8_t EncodeE4M3(float v) {
  return static_cast<uint8_t>(__nv_cvt_float_to_fp8(v, __NV_SATFINITE, __NV_E4M3));
}

// Same arithmetic as Fp8ScaleFromAmax on the host: max(amax, 1e-4)/448, optionally rounded up to a power of two
// (s is always a normal float here, so clearing the mantissa and bumping the exponent is exact).
__device__ __forceinline__ float ScaleFromAmax(float amax, bool pow2) {
  const float s = fmaxf(amax, kFp8AmaxFloor) / kE4M3Max;
  if (!pow2) return s;
  uint32_t u = __float_as_uint(s);
  if (u & 0x7fffffu) u = (u & 0x7f800000u) + 0x00800000u;
  return __uint_as_float(u);
}

__device__ float BlockMax(float v) {
  __shared__ float warp_max[kThreads / 32];
  for (int off = 16; off > 0; off >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
  if ((threadIdx.x & 31) == 0) warp_max[threadIdx.x >> 5] = v;
  __syncthreads();
  if (threadIdx.x < 32) {
    v = threadIdx.x < blockDim.x / 32 ? warp_max[threadIdx.x] : 0.f;
    for (int off = 16; off > 0; off >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
  }
  return v;  // valid in thread 0
}

// One block per tile: amax, scale, encode.
__global__ void __launch_bounds__(kThreads)
    QuantizeTilesKernel(uint8_t* q, float* scale, const float* x, int64_t rows, int64_t cols, int64_t tr, int64_t tc,
                        int64_t num_col_tiles, bool pow2) {
  const int64_t tile = blockIdx.x;
  const int64_t r0 = (tile / num_col_tiles) * tr, c0 = (tile % num_col_tiles) * tc;
  const int64_t nr = min(tr, rows - r0), nc = min(tc, cols - c0), n = nr * nc;
  float m = 0.f;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) m = fmaxf(m, fabsf(x[(r0 + i / nc) * cols + c0 + i % nc]));
  m = BlockMax(m);
  __shared__ float s_shared;
  if (threadIdx.x == 0) {
    s_shared = ScaleFromAmax(m, pow2);
    scale[tile] = s_shared;
  }
  __syncthreads();
  const float s = s_shared;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    const int64_t idx = (r0 + i / nc) * cols + c0 + i % nc;
    q[idx] = EncodeE4M3(x[idx] / s);
  }
}

__global__ void DequantizeKernel(float* x, const uint8_t* q, const float* scale, int64_t rows, int64_t cols, int64_t tr,
                                 int64_t tc, int64_t num_col_tiles) {
  const int64_t n = rows * cols;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = i / cols, c = i % cols;
    x[i] = DecodeE4M3(q[i]) * scale[(r / tr) * num_col_tiles + c / tc];
  }
}

// ---- Block-scaled GEMM: 64×64 output tile per block, 4×4 per thread, K in 32-wide steps inside 128-wide
// promotion blocks. Operands are read through their stored orientation (k_major: K is the stored column dim).
constexpr int kBM = 64, kBN = 64, kBK = 32;

__device__ __forceinline__ float ScaleAt(const Fp8Matrix& m, bool k_major, int64_t i, int64_t k) {
  const int64_t r = k_major ? i : k, c = k_major ? k : i;
  const int64_t num_col_tiles = (m.cols + m.tiling.tile_cols - 1) / m.tiling.tile_cols;
  return m.scale[(r / m.tiling.tile_rows) * num_col_tiles + c / m.tiling.tile_cols];
}

// Loads the outer [o0, o0+64) × K [k0, k0+32) slice of an operand, decoded, into smem[k][o]; zero outside
// [0, outer) × [k0, k_end).
template <bool kKMajor>
__device__ __forceinline__ void LoadTile(float (*smem)[kBM + 4], const Fp8Matrix& m, int64_t o0, int64_t outer,
                                         int64_t k0, int64_t k_end) {
  for (int e = threadIdx.x; e < kBM * kBK; e += kThreads) {
    const int oo = kKMajor ? e / kBK : e % kBM;
    const int kk = kKMajor ? e % kBK : e / kBM;
    const int64_t go = o0 + oo, gk = k0 + kk;
    float v = 0.f;
    if (go < outer && gk < k_end) v = DecodeE4M3(kKMajor ? m.q[go * m.cols + gk] : m.q[gk * m.cols + go]);
    smem[kk][oo] = v;
  }
}

template <bool kAKMajor, bool kBKMajor>
__global__ void __launch_bounds__(kThreads)
    Fp8GemmKernel(float* out, Fp8Matrix a, Fp8Matrix b, int64_t M, int64_t N, int64_t K, bool accumulate) {
  __shared__ __align__(16) float As[kBK][kBM + 4];
  __shared__ __align__(16) float Bs[kBK][kBN + 4];
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const int64_t m0 = int64_t{blockIdx.y} * kBM, n0 = int64_t{blockIdx.x} * kBN;
  float acc[4][4] = {};
  for (int64_t kb0 = 0; kb0 < K; kb0 += kFp8BlockSize) {
    const int64_t kb1 = min(K, kb0 + kFp8BlockSize);
    float part[4][4] = {};
    for (int64_t k0 = kb0; k0 < kb1; k0 += kBK) {
      LoadTile<kAKMajor>(As, a, m0, M, k0, kb1);
      LoadTile<kBKMajor>(Bs, b, n0, N, k0, kb1);
      __syncthreads();
#pragma unroll 8
      for (int kk = 0; kk < kBK; ++kk) {
        const float4 av = *reinterpret_cast<const float4*>(&As[kk][ty * 4]);
        const float4 bv = *reinterpret_cast<const float4*>(&Bs[kk][tx * 4]);
        const float ar[4] = {av.x, av.y, av.z, av.w}, br[4] = {bv.x, bv.y, bv.z, bv.w};
#pragma unroll
        for (int i = 0; i < 4; ++i) {
#pragma unroll
          for (int j = 0; j < 4; ++j) part[i][j] = fmaf(ar[i], br[j], part[i][j]);
        }
      }
      __syncthreads();
    }
    // Promotion (§5.3): acc += partial · sa · sb.
    float sa[4], sb[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int64_t gm = m0 + ty * 4 + i, gn = n0 + tx * 4 + i;
      sa[i] = gm < M ? ScaleAt(a, kAKMajor, gm, kb0) : 0.f;
      sb[i] = gn < N ? ScaleAt(b, kBKMajor, gn, kb0) : 0.f;
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
#pragma unroll
      for (int j = 0; j < 4; ++j) acc[i][j] += part[i][j] * sa[i] * sb[j];
    }
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t gm = m0 + ty * 4 + i;
    if (gm >= M) continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t gn = n0 + tx * 4 + j;
      if (gn < N) out[gm * N + gn] = accumulate ? out[gm * N + gn] + acc[i][j] : acc[i][j];
    }
  }
}

__global__ void ScalesToCublasLtKernel(float* dst, const float* src, int64_t outer, int64_t num_k_blocks,
                                       bool one_by_128, int64_t count) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < count; i += int64_t{gridDim.x} * blockDim.x) {
    if (one_by_128) {
      const int64_t ld = (outer + 3) / 4 * 4, kb = i / ld, o = i % ld;
      dst[i] = o < outer ? src[o * num_k_blocks + kb] : 1.f;
    } else {
      const int64_t ld = (num_k_blocks + 3) / 4 * 4, ob = i / ld, kb = i % ld;
      dst[i] = kb < num_k_blocks ? src[ob * num_k_blocks + kb] : 1.f;
    }
  }
}

int GridFor(int64_t n) { return static_cast<int>(std::min<int64_t>((n + kThreads - 1) / kThreads, 65535 * 8)); }

}  // namespace

Status quantize_fp8(uint8_t* q, float* scale, const float* x, int64_t rows, int64_t cols, Fp8Tiling tiling,
                    bool pow2_scale, Stream stream) {
  RETURN_IF_ERROR(CheckTiling(tiling, "cuda::quantize_fp8"));
  if (rows == 0 || cols == 0) return Status::OK();
  const int64_t num_tiles = Fp8NumScales(rows, cols, tiling);
  if (num_tiles > 0x7fffffff) return InvalidArgumentError("cuda::quantize_fp8: too many tiles");
  QuantizeTilesKernel<<<static_cast<unsigned>(num_tiles), kThreads, 0, stream>>>(
      q, scale, x, rows, cols, tiling.tile_rows, tiling.tile_cols, Fp8ScaleCols(cols, tiling), pow2_scale);
  return LaunchStatus("cuda::quantize_fp8");
}

Status dequantize_fp8(float* x, const uint8_t* q, const float* scale, int64_t rows, int64_t cols, Fp8Tiling tiling,
                      Stream stream) {
  RETURN_IF_ERROR(CheckTiling(tiling, "cuda::dequantize_fp8"));
  if (rows == 0 || cols == 0) return Status::OK();
  DequantizeKernel<<<GridFor(rows * cols), kThreads, 0, stream>>>(x, q, scale, rows, cols, tiling.tile_rows,
                                                                  tiling.tile_cols, Fp8ScaleCols(cols, tiling));
  return LaunchStatus("cuda::dequantize_fp8");
}

Status fp8_gemm(float* out, const Fp8Matrix& a, bool trans_a, const Fp8Matrix& b, bool trans_b, bool accumulate,
                Stream stream) {
  RETURN_IF_ERROR(CheckTiling(a.tiling, "cuda::fp8_gemm A"));
  RETURN_IF_ERROR(CheckTiling(b.tiling, "cuda::fp8_gemm B"));
  const bool a_k_major = !trans_a, b_k_major = trans_b;
  const int64_t M = a_k_major ? a.rows : a.cols, K = a_k_major ? a.cols : a.rows;
  const int64_t N = b_k_major ? b.rows : b.cols, KB = b_k_major ? b.cols : b.rows;
  if (KB != K)
    return InvalidArgumentError("cuda::fp8_gemm: K mismatch (" + std::to_string(K) + " vs " + std::to_string(KB) + ")");
  const int64_t a_k_tile = a_k_major ? a.tiling.tile_cols : a.tiling.tile_rows;
  const int64_t b_k_tile = b_k_major ? b.tiling.tile_cols : b.tiling.tile_rows;
  for (int64_t kt : {a_k_tile, b_k_tile}) {
    if (kt % kFp8BlockSize != 0 && kt < K) {
      return InvalidArgumentError("cuda::fp8_gemm: tiles span " + std::to_string(kt) + " along K=" + std::to_string(K) +
                                  "; they must be a multiple of 128 or cover all of K");
    }
  }
  if (M == 0 || N == 0) return Status::OK();
  if (K == 0) {
    if (!accumulate && cudaMemsetAsync(out, 0, static_cast<size_t>(M * N) * sizeof(float), stream) != cudaSuccess) {
      return LaunchStatus("cuda::fp8_gemm memset");
    }
    return Status::OK();
  }
  if ((M + kBM - 1) / kBM > 65535) return InvalidArgumentError("cuda::fp8_gemm: M too large");
  const dim3 grid(static_cast<unsigned>((N + kBN - 1) / kBN), static_cast<unsigned>((M + kBM - 1) / kBM));
  if (a_k_major && b_k_major) {
    Fp8GemmKernel<true, true><<<grid, kThreads, 0, stream>>>(out, a, b, M, N, K, accumulate);
  } else if (a_k_major) {
    Fp8GemmKernel<true, false><<<grid, kThreads, 0, stream>>>(out, a, b, M, N, K, accumulate);
  } else if (b_k_major) {
    Fp8GemmKernel<false, true><<<grid, kThreads, 0, stream>>>(out, a, b, M, N, K, accumulate);
  } else {
    Fp8GemmKernel<false, false><<<grid, kThreads, 0, stream>>>(out, a, b, M, N, K, accumulate);
  }
  return LaunchStatus("cuda::fp8_gemm");
}

int64_t CublasLtScaleCount(int64_t outer, int64_t k, Fp8Tiling tiling) {
  const int64_t kb = CeilDiv(k, kFp8BlockSize);
  if (tiling.tile_rows == 1) return kb * ((outer + 3) / 4 * 4);
  return CeilDiv(outer, kFp8BlockSize) * ((kb + 3) / 4 * 4);
}

Status CheckCublasLtTiling(const Fp8Matrix& m, const char* name) {
  if (m.tiling.tile_cols == kFp8BlockSize && (m.tiling.tile_rows == 1 || m.tiling.tile_rows == kFp8BlockSize)) {
    return Status::OK();
  }
  return InvalidArgumentError(std::string("cuBLASLt FP8: operand ") + name + " has " +
                              std::to_string(m.tiling.tile_rows) + "x" + std::to_string(m.tiling.tile_cols) +
                              " tiles; it takes 1x128 or 128x128 tiles of a K-major matrix");
}

Status fp8_scales_to_cublaslt(float* dst, const Fp8Matrix& m, Stream stream) {
  RETURN_IF_ERROR(CheckCublasLtTiling(m, "m"));
  const int64_t count = CublasLtScaleCount(m.rows, m.cols, m.tiling);
  if (count == 0) return Status::OK();
  ScalesToCublasLtKernel<<<GridFor(count), kThreads, 0, stream>>>(dst, m.scale, m.rows, CeilDiv(m.cols, kFp8BlockSize),
                                                                  m.tiling.tile_rows == 1, count);
  return LaunchStatus("cuda::fp8_scales_to_cublaslt");
}

}  // namespace shoal::kernels::cuda
