// CUDA twin of kernels/cpu/cross_entropy.h: per chunk of rows, logits through cuBLASLt (true fp32), one block
// per row for the max-subtracted softmax / loss / gradient, then the two gradient GEMMs. Σ loss is reduced
// by one block in row order (deterministic).
#include <algorithm>

#include "kernels/cuda/gemm.h"
#include "kernels/cuda/ops.h"
#include "kernels/cuda/ops_util.cuh"

namespace shoal::kernels::cuda {
namespace {

constexpr int kThreads = 256;

// Row r of lg (a [rows, V] chunk): loss[r] (0 when ignored); with grad, the row becomes
// loss_scale·(softmax − onehot) (zero when ignored).
__global__ void softmax_rows_kernel(float* lg, float* loss, const int32_t* targets, int V, bool grad,
                                    float loss_scale) {
  __shared__ float red[32];
  float* row = lg + (int64_t)blockIdx.x * V;
  const int32_t tgt = targets != nullptr ? targets[blockIdx.x] : -1;
  if (tgt < 0) {
    if (threadIdx.x == 0 && loss != nullptr) loss[blockIdx.x] = 0.0f;
    if (grad)
      for (int v = threadIdx.x; v < V; v += blockDim.x) row[v] = 0.0f;
    return;
  }
  float mx = -INFINITY;
  for (int v = threadIdx.x; v < V; v += blockDim.x) mx = fmaxf(mx, row[v]);
  mx = detail::block_max(mx, red);
  float sum = 0.0f;
  for (int v = threadIdx.x; v < V; v += blockDim.x) sum += expf(row[v] - mx);
  sum = detail::block_sum(sum, red);
  const float lse = mx + logf(sum);
  const float target_logit = row[tgt];
  __syncthreads();  // everyone has read row[tgt] before it is overwritten
  if (threadIdx.x == 0 && loss != nullptr) loss[blockIdx.x] = lse - target_logit;
  if (!grad) return;
  for (int v = threadIdx.x; v < V; v += blockDim.x)
    row[v] = (expf(row[v] - lse) - (v == tgt ? 1.0f : 0.0f)) * loss_scale;
}

__global__ void sum_kernel(float* out, const float* x, int n) {
  __shared__ float red[32];
  // Fixed per-thread strided partials, then a fixed-order block reduction: deterministic.
  double acc = 0.0;
  for (int i = threadIdx.x; i < n; i += blockDim.x) acc += x[i];
  float v = static_cast<float>(acc);
  v = detail::block_sum(v, red);
  if (threadIdx.x == 0) *out = v;
}

Status run(BlasContext& blas, float* dz, float* dW, float* logits_out, float* token_loss, float* loss_sum,
           float* scratch, const float* z, const float* W, const int32_t* targets, int N, int C, int V,
           int chunk_rows, bool grad, float loss_scale, cudaStream_t stream) {
  if (chunk_rows < 1) return InvalidArgumentError("cross_entropy: chunk_rows must be >= 1");
  for (int64_t r0 = 0; r0 < N; r0 += chunk_rows) {
    const int rows = static_cast<int>(std::min<int64_t>(chunk_rows, N - r0));
    float* lg = logits_out != nullptr ? logits_out + r0 * V : scratch;
    RETURN_IF_ERROR(gemm(blas, false, true, rows, V, C, 1.0f, z + r0 * C, C, W, C, 0.0f, lg, V, DType::kF32,
                         DType::kF32, stream));
    softmax_rows_kernel<<<rows, kThreads, 0, stream>>>(lg, token_loss != nullptr ? token_loss + r0 : nullptr,
                                                       targets != nullptr ? targets + r0 : nullptr, V, grad,
                                                       loss_scale);
    if (!grad) continue;
    if (dz != nullptr)
      RETURN_IF_ERROR(gemm(blas, false, false, rows, C, V, 1.0f, lg, V, W, C, 1.0f, dz + r0 * C, C, DType::kF32,
                           DType::kF32, stream));
    if (dW != nullptr)
      RETURN_IF_ERROR(gemm(blas, true, false, V, C, rows, 1.0f, lg, V, z + r0 * C, C, 1.0f, dW, C, DType::kF32,
                           DType::kF32, stream));
  }
  if (loss_sum != nullptr) {
    if (token_loss == nullptr) return InvalidArgumentError("cross_entropy: loss_sum needs token_loss");
    sum_kernel<<<1, 1024, 0, stream>>>(loss_sum, token_loss, N);
  }
  return Status::OK();
}

}  // namespace

size_t cross_entropy_scratch_floats(int V, int chunk_rows) { return static_cast<size_t>(V) * chunk_rows; }

Status cross_entropy_forward_backward(BlasContext& blas, float* dz, float* dW, float* token_loss, float* loss_sum,
                                      float* scratch, const float* z, const float* W, const int32_t* targets, int N,
                                      int C, int V, int chunk_rows, float loss_scale, cudaStream_t stream) {
  if (targets == nullptr || scratch == nullptr || token_loss == nullptr)
    return InvalidArgumentError("cross_entropy_forward_backward: needs targets, token_loss and scratch");
  return run(blas, dz, dW, nullptr, token_loss, loss_sum, scratch, z, W, targets, N, C, V, chunk_rows, true,
             loss_scale, stream);
}

Status cross_entropy_forward(BlasContext& blas, float* logits, float* token_loss, float* loss_sum, float* scratch,
                             const float* z, const float* W, const int32_t* targets, int N, int C, int V,
                             int chunk_rows, cudaStream_t stream) {
  if (logits == nullptr && scratch == nullptr)
    return InvalidArgumentError("cross_entropy_forward: needs logits or scratch");
  return run(blas, nullptr, nullptr, logits, token_loss, loss_sum, scratch, z, W, targets, N, C, V, chunk_rows, false,
             1.0f, stream);
}

}  // namespace shoal::kernels::cuda
