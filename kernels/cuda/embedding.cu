// CUDA twins of kernels/cpu/embedding.h.
#include "kernels/cuda/ops.h"
#include "kernels/cuda/ops_util.cuh"

namespace shoal::kernels::cuda {
namespace {

__global__ void embedding_forward_kernel(float* out, const int32_t* tokens, const float* table, int N, int C) {
  const int64_t total = (int64_t)N * C;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t n = i / C, c = i % C;
    out[i] = table[(int64_t)tokens[n] * C + c];
  }
}

__global__ void embedding_backward_kernel(float* dtable, const float* dout, const int32_t* tokens, int N, int C) {
  const int64_t total = (int64_t)N * C;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t n = i / C, c = i % C;
    atomicAdd(dtable + (int64_t)tokens[n] * C + c, dout[i]);
  }
}

}  // namespace

void embedding_forward(float* out, const int32_t* tokens, const float* table, int N, int C, int V,
                       cudaStream_t stream) {
  const int64_t total = (int64_t)N * C;
  if (total == 0) return;
  embedding_forward_kernel<<<detail::grid_for(total, 256), 256, 0, stream>>>(out, tokens, table, N, C);
}

void embedding_backward(float* dtable, const float* dout, const int32_t* tokens, int N, int C, int V,
                        cudaStream_t stream) {
  const int64_t total = (int64_t)N * C;
  if (total == 0) return;
  embedding_backward_kernel<<<detail::grid_for(total, 256), 256, 0, stream>>>(dtable, dout, tokens, N, C);
}

}  // namespace shoal::kernels::cuda
