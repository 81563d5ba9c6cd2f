// CUDA twin of kernels/cpu/adamw.h (same operation order; bf16 rounding bit-identical to kernels/dtype.h).
#include <cmath>

#include "kernels/cuda/ops.h"
#include "kernels/cuda/ops_util.cuh"

namespace shoal::kernels::cuda {
namespace {

__global__ void adamw_kernel(float* param, uint16_t* m, uint16_t* v, const float* grad, int64_t n, float lr,
                             float beta1, float beta2, float eps, float weight_decay, float bc1, float bc2) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const float g = grad[i];
    const float mi = beta1 * detail::bf16_bits_to_f32(m[i]) + (1.0f - beta1) * g;
    const float vi = beta2 * detail::bf16_bits_to_f32(v[i]) + (1.0f - beta2) * g * g;
    const float mhat = mi / bc1, vhat = vi / bc2;
    float p = param[i];
    p -= lr * weight_decay * p;
    p -= lr * mhat / (sqrtf(vhat) + eps);
    param[i] = p;
    m[i] = detail::f32_to_bf16_bits(mi);
    v[i] = detail::f32_to_bf16_bits(vi);
  }
}

}  // namespace

void adamw_update(float* param, bf16_t* m, bf16_t* v, const float* grad, int64_t n, int step, float lr, float beta1,
                  float beta2, float eps, float weight_decay, cudaStream_t stream) {
  if (n == 0 || step < 1) return;
  const float bc1 = static_cast<float>(1.0 - std::pow(static_cast<double>(beta1), step));
  const float bc2 = static_cast<float>(1.0 - std::pow(static_cast<double>(beta2), step));
  adamw_kernel<<<detail::grid_for(n, 256), 256, 0, stream>>>(param, m, v, grad, n, lr, beta1, beta2, eps,
                                                             weight_decay, bc1, bc2);
}

}  // namespace shoal::kernels::cuda
