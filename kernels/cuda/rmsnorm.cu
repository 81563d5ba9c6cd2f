// CUDA twins of kernels/cpu/rmsnorm.h. Forward and dx: one warp per row. dw: per-chunk partial sums of a
// fixed row chunking into scratch, then an ordered reduction (deterministic, no atomics).
#include "kernels/cuda/ops.h"
#include "kernels/cuda/ops_util.cuh"

namespace shoal::kernels::cuda {
namespace {

constexpr int kRowsPerChunk = 64;

__global__ void rmsnorm_forward_kernel(float* out, float* rstd, const float* x, const float* w, int N, int C,
                                       float eps) {
  const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (row >= N) return;
  const float* xr = x + (int64_t)row * C;
  float ss = 0;
  for (int c = lane; c < C; c += 32) ss += xr[c] * xr[c];
  ss = detail::warp_sum(ss);
  const float r = 1.0f / sqrtf(ss / C + eps);
  if (lane == 0) rstd[row] = r;
  float* yr = out + (int64_t)row * C;
  for (int c = lane; c < C; c += 32) yr[c] = xr[c] * r * w[c];
}

__global__ void rmsnorm_dx_kernel(float* dx, const float* dout, const float* rstd, const float* x, const float* w,
                                  int N, int C) {
  const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (row >= N) return;
  const float* xr = x + (int64_t)row * C;
  const float* dy = dout + (int64_t)row * C;
  const float r = rstd[row];
  float dot = 0;
  for (int c = lane; c < C; c += 32) dot += w[c] * dy[c] * xr[c];
  dot = detail::warp_sum(dot);
  const float k = r * r * r / C * dot;
  float* dxr = dx + (int64_t)row * C;
  for (int c = lane; c < C; c += 32) dxr[c] += r * w[c] * dy[c] - k * xr[c];
}

// partial[chunk][c] = Σ_{rows of chunk} dout·x·rstd.
__global__ void rmsnorm_dw_partial_kernel(float* partial, const float* dout, const float* rstd, const float* x, int N,
                                          int C) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x, chunk = blockIdx.y;
  if (c >= C) return;
  const int r0 = chunk * kRowsPerChunk, r1 = min(N, r0 + kRowsPerChunk);
  float acc = 0;
  for (int r = r0; r < r1; ++r) acc += dout[(int64_t)r * C + c] * x[(int64_t)r * C + c] * rstd[r];
  partial[(int64_t)chunk * C + c] = acc;
}

__global__ void rmsnorm_dw_reduce_kernel(float* dw, const float* partial, int chunks, int C) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float acc = 0;
  for (int ch = 0; ch < chunks; ++ch) acc += partial[(int64_t)ch * C + c];
  dw[c] += acc;
}

}  // namespace

void rmsnorm_forward(float* out, float* rstd, const float* x, const float* w, int N, int C, float eps,
                     cudaStream_t stream) {
  if (N == 0) return;
  rmsnorm_forward_kernel<<<detail::ceil_div(N, 8), 256, 0, stream>>>(out, rstd, x, w, N, C, eps);
}

size_t rmsnorm_backward_scratch_floats(int N, int C) {
  return static_cast<size_t>(detail::ceil_div(N, kRowsPerChunk)) * C;
}

void rmsnorm_backward(float* dx, float* dw, float* scratch, const float* dout, const float* rstd, const float* x,
                      const float* w, int N, int C, cudaStream_t stream) {
  if (N == 0) return;
  rmsnorm_dx_kernel<<<detail::ceil_div(N, 8), 256, 0, stream>>>(dx, dout, rstd, x, w, N, C);
  const int chunks = detail::ceil_div(N, kRowsPerChunk);
  rmsnorm_dw_partial_kernel<<<dim3(detail::ceil_div(C, 128), chunks), 128, 0, stream>>>(scratch, dout, rstd, x, N, C);
  rmsnorm_dw_reduce_kernel<<<detail::ceil_div(C, 128), 128, 0, stream>>>(dw, scratch, chunks, C);
}

}  // namespace shoal::kernels::cuda
