// CUDA twin of kernels/cpu/clip.h: Σx² per buffer in fp64 (block partials, then fp64 atomics into one
// scalar), and a scaling kernel that derives min(1, max_norm/(‖g‖ + 1e-6)) from that scalar on the device.
#include <algorithm>

#include "kernels/cuda/ops.h"
#include "kernels/cuda/ops_util.cuh"

namespace shoal::kernels::cuda {
namespace {

__global__ void sumsq_kernel(double* sumsq, const float* x, int64_t n) {
  __shared__ double red[32];
  double acc = 0.0;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    acc += static_cast<double>(x[i]) * x[i];
  acc = detail::warp_sum_d(acc);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) red[warp] = acc;
  __syncthreads();
  if (warp == 0) {
    acc = lane < (int)(blockDim.x >> 5) ? red[lane] : 0.0;
    acc = detail::warp_sum_d(acc);
    if (lane == 0) atomicAdd(sumsq, acc);
  }
}

__global__ void clip_kernel(float* x, int64_t n, const double* sumsq, float max_norm) {
  const double norm = sqrt(*sumsq);
  const double s = static_cast<double>(max_norm) / (norm + 1e-6);
  const float scale = static_cast<float>(s < 1.0 ? s : 1.0);
  if (scale == 1.0f) return;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    x[i] *= scale;
}

}  // namespace

void global_norm_squared(double* sumsq, const float* const* bufs, const int64_t* sizes, int num_bufs,
                         cudaStream_t stream) {
  for (int b = 0; b < num_bufs; ++b) {
    if (sizes[b] == 0) continue;
    const int grid = std::min(detail::grid_for(sizes[b], 256), 1024);
    sumsq_kernel<<<grid, 256, 0, stream>>>(sumsq, bufs[b], sizes[b]);
  }
}

void clip_by_global_norm(float* const* bufs, const int64_t* sizes, int num_bufs, const double* sumsq,
                         float max_norm, cudaStream_t stream) {
  for (int b = 0; b < num_bufs; ++b) {
    if (sizes[b] == 0) continue;
    clip_kernel<<<detail::grid_for(sizes[b], 256), 256, 0, stream>>>(bufs[b], sizes[b], sumsq, max_norm);
  }
}

}  // namespace shoal::kernels::cuda
