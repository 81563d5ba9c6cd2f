// CUDA twins of kernels/cpu/permute.h.
// The plan is a stable counting sort in three launches: per-tile expert histograms (shared-memory atomics),
// one block turning them into per-(tile, expert) write cursors and the expert offsets, then one warp per tile
// placing its rows in order (__match_any_sync ranks equal experts inside each 32-row step). The row moves are
// gathers (each output row owned by one thread group): deterministic, no atomics.
#include "common/check.h"
#include "kernels/cuda/ops.h"
#include "kernels/cuda/ops_util.cuh"

namespace shoal::kernels::cuda {
namespace {

constexpr int kPlanTile = 1024;  // rows per tile of the plan
constexpr int kMaxExperts = 1024;

__global__ void plan_histogram_kernel(int32_t* tile_counts, const int32_t* topk_idx, int64_t R, int E) {
  __shared__ int32_t hist[kMaxExperts];
  for (int e = threadIdx.x; e < E; e += blockDim.x) hist[e] = 0;
  __syncthreads();
  const int64_t r0 = (int64_t)blockIdx.x * kPlanTile;
  for (int64_t r = r0 + threadIdx.x; r < min(R, r0 + kPlanTile); r += blockDim.x) atomicAdd(&hist[topk_idx[r]], 1);
  __syncthreads();
  for (int e = threadIdx.x; e < E; e += blockDim.x) tile_counts[(int64_t)blockIdx.x * E + e] = hist[e];
}

// tile_counts[tile][e] ← first sorted position of tile's rows of expert e; expert_offsets filled.
__global__ void plan_scan_kernel(int32_t* expert_offsets, int32_t* tile_counts, int num_tiles, int E, int64_t R) {
  __shared__ int32_t total[kMaxExperts];
  for (int e = threadIdx.x; e < E; e += blockDim.x) {
    int32_t run = 0;
    for (int t = 0; t < num_tiles; ++t) {
      const int32_t c = tile_counts[(int64_t)t * E + e];
      tile_counts[(int64_t)t * E + e] = run;
      run += c;
    }
    total[e] = run;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    int32_t run = 0;
    for (int e = 0; e < E; ++e) {
      expert_offsets[e] = run;
      const int32_t c = total[e];
      total[e] = run;
      run += c;
    }
    expert_offsets[E] = static_cast<int32_t>(R);
  }
  __syncthreads();
  for (int e = threadIdx.x; e < E; e += blockDim.x)
    for (int t = 0; t < num_tiles; ++t) tile_counts[(int64_t)t * E + e] += total[e];
}

// One warp per tile.
__global__ void plan_place_kernel(int32_t* sorted_rows, int32_t* row_pos, const int32_t* tile_base,
                                  const int32_t* topk_idx, int64_t R, int E) {
  __shared__ int32_t cursor[kMaxExperts];
  const int lane = threadIdx.x;
  for (int e = lane; e < E; e += 32) cursor[e] = tile_base[(int64_t)blockIdx.x * E + e];
  __syncwarp();
  const int64_t r0 = (int64_t)blockIdx.x * kPlanTile;
  const unsigned lt_mask = (1u << lane) - 1u;
  for (int64_t step = r0; step < min(R, r0 + kPlanTile); step += 32) {
    const int64_t r = step + lane;
    const bool valid = r < R && r < r0 + kPlanTile;
    const int e = valid ? topk_idx[r] : -1;
    const unsigned peers = __match_any_sync(0xffffffffu, e);
    if (valid) {
      const int pos = cursor[e] + __popc(peers & lt_mask);
      sorted_rows[pos] = static_cast<int32_t>(r);
      row_pos[r] = pos;
    }
    __syncwarp();
    if (valid && (peers & lt_mask) == 0) cursor[e] += __popc(peers);  // the lowest lane of each group
    __syncwarp();
  }
}

__global__ void permute_forward_kernel(float* xs, const float* x, const int32_t* sorted_rows, int64_t R, int K,
                                       int C) {
  const int64_t total = R * C;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t p = i / C, c = i % C;
    xs[i] = x[(int64_t)(sorted_rows[p] / K) * C + c];
  }
}

__global__ void permute_backward_kernel(float* dx, const float* dxs, const int32_t* row_pos, int N, int K, int C) {
  const int64_t total = (int64_t)N * C;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t n = i / C, c = i % C;
    float acc = dx[i];
    for (int k = 0; k < K; ++k) acc += dxs[(int64_t)row_pos[n * K + k] * C + c];
    dx[i] = acc;
  }
}

__global__ void unpermute_forward_kernel(float* out, const float* ys, const float* weight, const int32_t* row_pos,
                                         int N, int K, int C) {
  const int64_t total = (int64_t)N * C;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t n = i / C, c = i % C;
    float acc = out[i];
    for (int k = 0; k < K; ++k) acc += weight[n * K + k] * ys[(int64_t)row_pos[n * K + k] * C + c];
    out[i] = acc;
  }
}

// dys rows: one thread per element. dweight: one warp per (n, k).
__global__ void unpermute_backward_dys_kernel(float* dys, const float* dout, const float* weight,
                                              const int32_t* row_pos, int N, int K, int C) {
  const int64_t total = (int64_t)N * K * C;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t nk = i / C, c = i % C, n = nk / K;
    dys[(int64_t)row_pos[nk] * C + c] += weight[nk] * dout[n * C + c];
  }
}

__global__ void unpermute_backward_dw_kernel(float* dweight, const float* dout, const float* ys,
                                             const int32_t* row_pos, int N, int K, int C) {
  const int64_t nk = blockIdx.x * (int64_t)(blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (nk >= (int64_t)N * K) return;
  const int64_t n = nk / K, p = row_pos[nk];
  float acc = 0.0f;
  for (int c = lane; c < C; c += 32) acc += dout[n * C + c] * ys[p * C + c];
  acc = detail::warp_sum(acc);
  if (lane == 0) dweight[nk] += acc;
}

}  // namespace

size_t moe_permute_plan_scratch_ints(int N, int K, int E) {
  return static_cast<size_t>(detail::ceil_div((int64_t)N * K, kPlanTile)) * E;
}

void moe_permute_plan(int32_t* expert_offsets, int32_t* sorted_rows, int32_t* row_pos, int32_t* scratch,
                      const int32_t* topk_idx, int N, int K, int E, cudaStream_t stream) {
  CHECK(E >= 1 && E <= kMaxExperts) << "cuda::moe_permute_plan: E=" << E << " must be in [1, " << kMaxExperts << "]";
  const int64_t R = (int64_t)N * K;
  const int tiles = detail::ceil_div(R, kPlanTile);
  if (tiles > 0) plan_histogram_kernel<<<tiles, 256, 0, stream>>>(scratch, topk_idx, R, E);
  plan_scan_kernel<<<1, 256, 0, stream>>>(expert_offsets, scratch, tiles, E, R);
  if (tiles > 0) plan_place_kernel<<<tiles, 32, 0, stream>>>(sorted_rows, row_pos, scratch, topk_idx, R, E);
}

void moe_permute_forward(float* xs, const float* x, const int32_t* sorted_rows, int N, int K, int C,
                         cudaStream_t stream) {
  const int64_t R = (int64_t)N * K;
  if (R * C == 0) return;
  permute_forward_kernel<<<detail::grid_for(R * C, 256), 256, 0, stream>>>(xs, x, sorted_rows, R, K, C);
}

void moe_permute_backward(float* dx, const float* dxs, const int32_t* row_pos, int N, int K, int C,
                          cudaStream_t stream) {
  if ((int64_t)N * C == 0) return;
  permute_backward_kernel<<<detail::grid_for((int64_t)N * C, 256), 256, 0, stream>>>(dx, dxs, row_pos, N, K, C);
}

void moe_unpermute_forward(float* out, const float* ys, const float* weight, const int32_t* row_pos, int N, int K,
                           int C, cudaStream_t stream) {
  if ((int64_t)N * C == 0) return;
  unpermute_forward_kernel<<<detail::grid_for((int64_t)N * C, 256), 256, 0, stream>>>(out, ys, weight, row_pos, N, K,
                                                                                       C);
}

void moe_unpermute_backward(float* dys, float* dweight, const float* dout, const float* ys, const float* weight,
                            const int32_t* row_pos, int N, int K, int C, cudaStream_t stream) {
  const int64_t R = (int64_t)N * K;
  if (R * C == 0) return;
  unpermute_backward_dys_kernel<<<detail::grid_for(R * C, 256), 256, 0, stream>>>(dys, dout, weight, row_pos, N, K,
                                                                                   C);
  unpermute_backward_dw_kernel<<<detail::ceil_div(R, 8), 256, 0, stream>>>(dweight, dout, ys, row_pos, N, K, C);
}

}  // namespace shoal::kernels::cuda
