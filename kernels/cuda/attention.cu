// CUDA twins of kernels/cpu/attention.h. Straightforward warp-per-row kernels (correctness first): a block
// of 4 warps owns 4 query rows (forward, dq) or 4 key rows (dk/dv) of one (sequence, head) and streams the
// other side through shared memory in tiles of 32 rows, one row per lane. Scores, softmax statistics and
// sums stay in fp32; the backward recomputes P from the saved logsumexp (flash-style), with D_i = ⟨dO_i, O_i⟩
// precomputed into scratch. No atomics: every output row is owned by one warp, so results are deterministic.
#include <algorithm>

#include "common/check.h"
#include "kernels/cuda/ops.h"
#include "kernels/cuda/ops_util.cuh"

namespace shoal::kernels::cuda {
namespace {

constexpr int kWarps = 4;     // rows owned per block
constexpr int kTile = 32;     // rows streamed per tile (one per lane)
constexpr int kMaxD = 256;
constexpr int kPerLane = kMaxD / 32;

struct Geometry {
  int T, NH, Dqk, Dv;
  float scale;
};

__device__ __forceinline__ bool visible(const int32_t* seg, int T, int b, int i, int j) {
  return j <= i && (seg == nullptr || seg[(int64_t)b * T + j] == seg[(int64_t)b * T + i]);
}

__global__ void attention_forward_kernel(float* out, float* lse, const float* q, const float* k, const float* v,
                                         const int32_t* seg, Geometry g) {
  extern __shared__ float smem[];
  const int T = g.T, Dqk = g.Dqk, Dv = g.Dv, ldk = Dqk + 1;
  float* Ks = smem;                  // [32][Dqk+1]
  float* Vs = Ks + kTile * ldk;      // [32][Dv]
  float* Qs = Vs + kTile * Dv;       // [4][Dqk]
  const int b = blockIdx.z, h = blockIdx.y, i0 = blockIdx.x * kWarps;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int i = i0 + warp;
  const int64_t lq = (int64_t)g.NH * Dqk, lv = (int64_t)g.NH * Dv;
  const float* qb = q + ((int64_t)b * T * g.NH + h) * Dqk;
  const float* kb = k + ((int64_t)b * T * g.NH + h) * Dqk;
  const float* vb = v + ((int64_t)b * T * g.NH + h) * Dv;
  for (int idx = threadIdx.x; idx < kWarps * Dqk; idx += blockDim.x) {
    const int r = idx / Dqk, d = idx % Dqk;
    Qs[idx] = i0 + r < T ? qb[(i0 + r) * lq + d] : 0.0f;
  }
  float m = -INFINITY, l = 0.0f, o[kPerLane];
#pragma unroll
  for (int t = 0; t < kPerLane; ++t) o[t] = 0.0f;
  const int jmax = min(T, i0 + kWarps);
  for (int j0 = 0; j0 < jmax; j0 += kTile) {
    __syncthreads();
    for (int idx = threadIdx.x; idx < kTile * Dqk; idx += blockDim.x) {
      const int jj = idx / Dqk, d = idx % Dqk;
      Ks[jj * ldk + d] = j0 + jj < T ? kb[(j0 + jj) * lq + d] : 0.0f;
    }
    for (int idx = threadIdx.x; idx < kTile * Dv; idx += blockDim.x) {
      const int jj = idx / Dv, d = idx % Dv;
      Vs[idx] = j0 + jj < T ? vb[(j0 + jj) * lv + d] : 0.0f;
    }
    __syncthreads();
    if (i >= T) continue;  // warp-uniform
    const int j = j0 + lane;
    const bool vis = visible(seg, T, b, i, j);
    float s = -INFINITY;
    if (vis) {
      float dot = 0.0f;
      for (int d = 0; d < Dqk; ++d) dot += Qs[warp * Dqk + d] * Ks[lane * ldk + d];
      s = dot * g.scale;
    }
    const float mx = detail::warp_max(s);
    if (mx == -INFINITY) continue;  // nothing visible in this tile (warp-uniform)
    const float m_new = fmaxf(m, mx);
    const float corr = expf(m - m_new);
    const float p = vis ? expf(s - m_new) : 0.0f;
    l = l * corr + detail::warp_sum(p);
    m = m_new;
#pragma unroll
    for (int t = 0; t < kPerLane; ++t) o[t] *= corr;
    for (int jj = 0; jj < kTile; ++jj) {
      const float pj = __shfl_sync(0xffffffffu, p, jj);
#pragma unroll
      for (int t = 0; t < kPerLane; ++t) {
        const int d = lane + 32 * t;
        if (d < Dv) o[t] += pj * Vs[jj * Dv + d];
      }
    }
  }
  if (i >= T) return;
  const float inv = 1.0f / l;
  float* orow = out + ((int64_t)b * T * g.NH + (int64_t)i * g.NH + h) * Dv;
#pragma unroll
  for (int t = 0; t < kPerLane; ++t) {
    const int d = lane + 32 * t;
    if (d < Dv) orow[d] = o[t] * inv;
  }
  if (lane == 0) lse[((int64_t)b * g.NH + h) * T + i] = m + logf(l);
}

// D[b,h,i] = ⟨dout[b,i,h,:], out[b,i,h,:]⟩: one warp per row.
__global__ void attention_d_kernel(float* D, const float* dout, const float* out, int B, int T, int NH, int Dv) {
  const int64_t row = blockIdx.x * (int64_t)(blockDim.x / 32) + threadIdx.x / 32;  // (b·T + i)·NH + h
  const int lane = threadIdx.x % 32;
  if (row >= (int64_t)B * T * NH) return;
  float acc = 0.0f;
  for (int d = lane; d < Dv; d += 32) acc += dout[row * Dv + d] * out[row * Dv + d];
  acc = detail::warp_sum(acc);
  const int64_t h = row % NH, bi = row / NH, b = bi / T, i = bi % T;
  if (lane == 0) D[(b * NH + h) * T + i] = acc;
}

// dq: a warp per query row, keys streamed.
__global__ void attention_dq_kernel(float* dq, const float* D, const float* dout, const float* lse, const float* q,
                                    const float* k, const float* v, const int32_t* seg, Geometry g) {
  extern __shared__ float smem[];
  const int T = g.T, Dqk = g.Dqk, Dv = g.Dv, ldk = Dqk + 1, ldv = Dv + 1;
  float* Ks = smem;                   // [32][Dqk+1]
  float* Vs = Ks + kTile * ldk;       // [32][Dv+1]
  float* Qs = Vs + kTile * ldv;       // [4][Dqk]
  float* dOs = Qs + kWarps * Dqk;     // [4][Dv]
  const int b = blockIdx.z, h = blockIdx.y, i0 = blockIdx.x * kWarps;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int i = i0 + warp;
  const int64_t lq = (int64_t)g.NH * Dqk, lv = (int64_t)g.NH * Dv;
  const int64_t base_q = ((int64_t)b * T * g.NH + h) * Dqk, base_v = ((int64_t)b * T * g.NH + h) * Dv;
  for (int idx = threadIdx.x; idx < kWarps * Dqk; idx += blockDim.x) {
    const int r = idx / Dqk, d = idx % Dqk;
    Qs[idx] = i0 + r < T ? q[base_q + (i0 + r) * lq + d] : 0.0f;
  }
  for (int idx = threadIdx.x; idx < kWarps * Dv; idx += blockDim.x) {
    const int r = idx / Dv, d = idx % Dv;
    dOs[idx] = i0 + r < T ? dout[base_v + (i0 + r) * lv + d] : 0.0f;
  }
  const int64_t stat = ((int64_t)b * g.NH + h) * T;
  const float L = i < T ? lse[stat + i] : 0.0f, Di = i < T ? D[stat + i] : 0.0f;
  float acc[kPerLane];
#pragma unroll
  for (int t = 0; t < kPerLane; ++t) acc[t] = 0.0f;
  const int jmax = min(T, i0 + kWarps);
  for (int j0 = 0; j0 < jmax; j0 += kTile) {
    __syncthreads();
    for (int idx = threadIdx.x; idx < kTile * Dqk; idx += blockDim.x) {
      const int jj = idx / Dqk, d = idx % Dqk;
      Ks[jj * ldk + d] = j0 + jj < T ? k[base_q + (j0 + jj) * lq + d] : 0.0f;
    }
    for (int idx = threadIdx.x; idx < kTile * Dv; idx += blockDim.x) {
      const int jj = idx / Dv, d = idx % Dv;
      Vs[jj * ldv + d] = j0 + jj < T ? v[base_v + (j0 + jj) * lv + d] : 0.0f;
    }
    __syncthreads();
    if (i >= T) continue;
    const int j = j0 + lane;
    float ds = 0.0f;
    if (visible(seg, T, b, i, j)) {
      float s = 0.0f, dp = 0.0f;
      for (int d = 0; d < Dqk; ++d) s += Qs[warp * Dqk + d] * Ks[lane * ldk + d];
      for (int d = 0; d < Dv; ++d) dp += dOs[warp * Dv + d] * Vs[lane * ldv + d];
      const float p = expf(s * g.scale - L);
      ds = p * (dp - Di) * g.scale;
    }
    for (int jj = 0; jj < kTile; ++jj) {
      const float dsj = __shfl_sync(0xffffffffu, ds, jj);
#pragma unroll
      for (int t = 0; t < kPerLane; ++t) {
        const int d = lane + 32 * t;
        if (d < Dqk) acc[t] += dsj * Ks[jj * ldk + d];
      }
    }
  }
  if (i >= T) return;
  float* dqr = dq + base_q + (int64_t)i * lq;
#pragma unroll
  for (int t = 0; t < kPerLane; ++t) {
    const int d = lane + 32 * t;
    if (d < Dqk) dqr[d] += acc[t];
  }
}

// dk, dv: a warp per key row, queries (i ≥ j) streamed.
__global__ void attention_dkdv_kernel(float* dk, float* dv, const float* D, const float* dout, const float* lse,
                                      const float* q, const float* k, const float* v, const int32_t* seg,
                                      Geometry g) {
  extern __shared__ float smem[];
  const int T = g.T, Dqk = g.Dqk, Dv = g.Dv, ldq = Dqk + 1, ldo = Dv + 1;
  float* Qs = smem;                   // [32][Dqk+1]
  float* dOs = Qs + kTile * ldq;      // [32][Dv+1]
  float* Kj = dOs + kTile * ldo;      // [4][Dqk]
  float* Vj = Kj + kWarps * Dqk;      // [4][Dv]
  float* Ls = Vj + kWarps * Dv;       // [32] logsumexp of the tile's queries
  float* Ds = Ls + kTile;             // [32]
  const int b = blockIdx.z, h = blockIdx.y, j_first = blockIdx.x * kWarps;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int j = j_first + warp;
  const int64_t lq = (int64_t)g.NH * Dqk, lv = (int64_t)g.NH * Dv;
  const int64_t base_q = ((int64_t)b * T * g.NH + h) * Dqk, base_v = ((int64_t)b * T * g.NH + h) * Dv;
  const int64_t stat = ((int64_t)b * g.NH + h) * T;
  for (int idx = threadIdx.x; idx < kWarps * Dqk; idx += blockDim.x) {
    const int r = idx / Dqk, d = idx % Dqk;
    Kj[idx] = j_first + r < T ? k[base_q + (j_first + r) * lq + d] : 0.0f;
  }
  for (int idx = threadIdx.x; idx < kWarps * Dv; idx += blockDim.x) {
    const int r = idx / Dv, d = idx % Dv;
    Vj[idx] = j_first + r < T ? v[base_v + (j_first + r) * lv + d] : 0.0f;
  }
  float acc_k[kPerLane], acc_v[kPerLane];
#pragma unroll
  for (int t = 0; t < kPerLane; ++t) acc_k[t] = acc_v[t] = 0.0f;
  for (int i0 = j_first / kTile * kTile; i0 < T; i0 += kTile) {
    __syncthreads();
    for (int idx = threadIdx.x; idx < kTile * Dqk; idx += blockDim.x) {
      const int ii = idx / Dqk, d = idx % Dqk;
      Qs[ii * ldq + d] = i0 + ii < T ? q[base_q + (i0 + ii) * lq + d] : 0.0f;
    }
    for (int idx = threadIdx.x; idx < kTile * Dv; idx += blockDim.x) {
      const int ii = idx / Dv, d = idx % Dv;
      dOs[ii * ldo + d] = i0 + ii < T ? dout[base_v + (i0 + ii) * lv + d] : 0.0f;
    }
    if (threadIdx.x < kTile) {
      const int ii = i0 + threadIdx.x;
      Ls[threadIdx.x] = ii < T ? lse[stat + ii] : 0.0f;
      Ds[threadIdx.x] = ii < T ? D[stat + ii] : 0.0f;
    }
    __syncthreads();
    if (j >= T) continue;
    const int i = i0 + lane;
    float p = 0.0f, ds = 0.0f;
    if (i < T && visible(seg, T, b, i, j)) {
      float s = 0.0f, dp = 0.0f;
      for (int d = 0; d < Dqk; ++d) s += Qs[lane * ldq + d] * Kj[warp * Dqk + d];
      for (int d = 0; d < Dv; ++d) dp += dOs[lane * ldo + d] * Vj[warp * Dv + d];
      p = expf(s * g.scale - Ls[lane]);
      ds = p * (dp - Ds[lane]) * g.scale;
    }
    for (int ii = 0; ii < kTile; ++ii) {
      const float pi = __shfl_sync(0xffffffffu, p, ii), dsi = __shfl_sync(0xffffffffu, ds, ii);
#pragma unroll
      for (int t = 0; t < kPerLane; ++t) {
        const int d = lane + 32 * t;
        if (d < Dv) acc_v[t] += pi * dOs[ii * ldo + d];
        if (d < Dqk) acc_k[t] += dsi * Qs[ii * ldq + d];
      }
    }
  }
  if (j >= T) return;
  float* dkr = dk + base_q + (int64_t)j * lq;
  float* dvr = dv + base_v + (int64_t)j * lv;
#pragma unroll
  for (int t = 0; t < kPerLane; ++t) {
    const int d = lane + 32 * t;
    if (d < Dqk) dkr[d] += acc_k[t];
    if (d < Dv) dvr[d] += acc_v[t];
  }
}

// Opts a kernel into more than 48 KiB of dynamic shared memory when needed (a function attribute, no sync).
template <typename Kernel>
void allow_smem(Kernel kernel, size_t bytes) {
  if (bytes > 48 * 1024) cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes);
}

}  // namespace

void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v, const int32_t* seg,
                       int B, int T, int NH, int Dqk, int Dv, float scale, cudaStream_t stream) {
  CHECK(Dqk >= 1 && Dqk <= kMaxD && Dv >= 1 && Dv <= kMaxD)
      << "cuda::attention_forward: head dims Dqk=" << Dqk << " Dv=" << Dv << " must be in [1, " << kMaxD << "]";
  if (B == 0 || T == 0 || NH == 0) return;
  const Geometry g{T, NH, Dqk, Dv, scale};
  const size_t smem = sizeof(float) * (kTile * (Dqk + 1) + kTile * Dv + kWarps * Dqk);
  allow_smem(attention_forward_kernel, smem);
  const dim3 grid(detail::ceil_div(T, kWarps), NH, B);
  attention_forward_kernel<<<grid, 32 * kWarps, smem, stream>>>(out, lse, q, k, v, seg, g);
}

size_t attention_backward_scratch_floats(int B, int T, int NH) { return (size_t)B * T * NH; }

void attention_backward(float* dq, float* dk, float* dv, float* scratch, const float* dout, const float* out,
                        const float* lse, const float* q, const float* k, const float* v, const int32_t* seg, int B,
                        int T, int NH, int Dqk, int Dv, float scale, cudaStream_t stream) {
  CHECK(Dqk >= 1 && Dqk <= kMaxD && Dv >= 1 && Dv <= kMaxD)
      << "cuda::attention_backward: head dims Dqk=" << Dqk << " Dv=" << Dv << " must be in [1, " << kMaxD << "]";
  if (B == 0 || T == 0 || NH == 0) return;
  const Geometry g{T, NH, Dqk, Dv, scale};
  const int64_t rows = (int64_t)B * T * NH;
  attention_d_kernel<<<detail::ceil_div(rows, 8), 256, 0, stream>>>(scratch, dout, out, B, T, NH, Dv);
  const dim3 grid(detail::ceil_div(T, kWarps), NH, B);
  const size_t smem_q = sizeof(float) * (kTile * (Dqk + 1) + kTile * (Dv + 1) + kWarps * (Dqk + Dv));
  allow_smem(attention_dq_kernel, smem_q);
  attention_dq_kernel<<<grid, 32 * kWarps, smem_q, stream>>>(dq, scratch, dout, lse, q, k, v, seg, g);
  const size_t smem_k =
      sizeof(float) * (kTile * (Dqk + 1) + kTile * (Dv + 1) + kWarps * (Dqk + Dv) + 2 * kTile);
  allow_smem(attention_dkdv_kernel, smem_k);
  attention_dkdv_kernel<<<grid, 32 * kWarps, smem_k, stream>>>(dk, dv, scratch, dout, lse, q, k, v, seg, g);
}

}  // namespace shoal::kernels::cuda
