// CUDA twins of kernels/cpu/rope.h: one thread per rotated pair.
#include "kernels/cuda/ops.h"
#include "kernels/cuda/ops_util.cuh"

namespace shoal::kernels::cuda {
namespace {

__global__ void rope_kernel(float* out, const float* x, const int32_t* pos, const float* cos_sin, int N, int NH,
                            int D, int ld, float sign) {
  const int half = D / 2;
  const int64_t total = (int64_t)N * NH * half;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    const int j = static_cast<int>(i % half);
    const int64_t nh = i / half;  // n·NH + h
    const int64_t n = nh / NH;
    const float* cs = cos_sin + ((int64_t)pos[n] * half + j) * 2;
    const float c = cs[0], s = sign * cs[1];
    const int64_t base = nh * ld + 2 * j;
    const float x0 = x[base], x1 = x[base + 1];
    out[base] = x0 * c - x1 * s;
    out[base + 1] = x0 * s + x1 * c;
  }
}

void launch(float* out, const float* x, const int32_t* pos, const float* cos_sin, int N, int NH, int D, int ld,
            float sign, cudaStream_t stream) {
  const int64_t total = (int64_t)N * NH * (D / 2);
  if (total == 0) return;
  rope_kernel<<<detail::grid_for(total, 256), 256, 0, stream>>>(out, x, pos, cos_sin, N, NH, D, ld, sign);
}

}  // namespace

void rope_forward(float* out, const float* x, const int32_t* pos, const float* cos_sin, int N, int NH, int D, int ld,
                  cudaStream_t stream) {
  launch(out, x, pos, cos_sin, N, NH, D, ld, 1.0f, stream);
}

void rope_backward(float* dx, const float* dout, const int32_t* pos, const float* cos_sin, int N, int NH, int D,
                   int ld, cudaStream_t stream) {
  launch(dx, dout, pos, cos_sin, N, NH, D, ld, -1.0f, stream);
}

}  // namespace shoal::kernels::cuda
