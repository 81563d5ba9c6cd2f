// CUDA twins of kernels/cpu/swiglu.h (fused [N, 2I] gate|up layout).
#include "kernels/cuda/ops.h"
#include "kernels/cuda/ops_util.cuh"

namespace shoal::kernels::cuda {
namespace {

__global__ void swiglu_forward_kernel(float* out, const float* gate_up, int N, int I) {
  const int64_t total = (int64_t)N * I;
  for (int64_t t = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; t < total; t += (int64_t)gridDim.x * blockDim.x) {
    const int64_t n = t / I, i = t % I;
    const float a = gate_up[n * 2 * I + i], b = gate_up[n * 2 * I + I + i];
    out[t] = a * detail::sigmoidf_(a) * b;
  }
}

__global__ void swiglu_backward_kernel(float* dgate_up, const float* dout, const float* gate_up, int N, int I) {
  const int64_t total = (int64_t)N * I;
  for (int64_t t = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; t < total; t += (int64_t)gridDim.x * blockDim.x) {
    const int64_t n = t / I, i = t % I;
    const int64_t ia = n * 2 * I + i, ib = ia + I;
    const float a = gate_up[ia], b = gate_up[ib], dm = dout[t];
    const float sg = detail::sigmoidf_(a);
    dgate_up[ia] += dm * b * sg * (1.0f + a * (1.0f - sg));
    dgate_up[ib] += dm * a * sg;
  }
}

}  // namespace

void swiglu_forward(float* out, const float* gate_up, int N, int I, cudaStream_t stream) {
  const int64_t total = (int64_t)N * I;
  if (total == 0) return;
  swiglu_forward_kernel<<<detail::grid_for(total, 256), 256, 0, stream>>>(out, gate_up, N, I);
}

void swiglu_backward(float* dgate_up, const float* dout, const float* gate_up, int N, int I, cudaStream_t stream) {
  const int64_t total = (int64_t)N * I;
  if (total == 0) return;
  swiglu_backward_kernel<<<detail::grid_for(total, 256), 256, 0, stream>>>(dgate_up, dout, gate_up, N, I);
}

}  // namespace shoal::kernels::cuda
