// CUDA twins of kernels/cpu/router.h. Forward/backward: one thread per token (the selection is a short
// sequential scan, exactly the CPU algorithm, ties to the lower index). Balance loss: one block walks the
// sequences in order (deterministic; its cost is O(N·E), negligible next to the expert GEMMs). Loads:
// integer atomics (exact). Bias update: one block.
#include "common/check.h"
#include "kernels/cuda/ops.h"
#include "kernels/cuda/ops_util.cuh"

namespace shoal::kernels::cuda {
namespace {

constexpr int kMaxExperts = 1024;
constexpr int kMaxK = 64;

// Largest of w[0..n), lowest index on ties.
__device__ __forceinline__ int argmax(const float* w, int n) {
  int best = 0;
  for (int i = 1; i < n; ++i)
    if (w[i] > w[best]) best = i;
  return best;
}

__global__ void router_forward_kernel(float* scores, int32_t* topk_idx, float* topk_weight, const float* logits,
                                      const float* bias, int N, int E, int K, int G, int topk_group,
                                      float routed_scale) {
  const int64_t n = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (n >= N) return;
  float sb[kMaxExperts];
  float gscore[kMaxExperts];
  const int gs = E / G;
  float* s = scores + n * E;
  for (int e = 0; e < E; ++e) {
    const float x = detail::sigmoidf_(logits[n * E + e]);
    s[e] = x;
    sb[e] = bias != nullptr ? x + bias[e] : x;
  }
  if (topk_group < G) {
    for (int g = 0; g < G; ++g) {
      float m1 = -INFINITY, m2 = -INFINITY;
      for (int e = g * gs; e < (g + 1) * gs; ++e) {
        const float x = sb[e];
        if (x > m1) {
          m2 = m1;
          m1 = x;
        } else if (x > m2) {
          m2 = x;
        }
      }
      gscore[g] = m1 + m2;
    }
    for (int r = 0; r < topk_group; ++r) gscore[argmax(gscore, G)] = -INFINITY;  // kept groups become −∞
    for (int g = 0; g < G; ++g)
      if (gscore[g] != -INFINITY)
        for (int e = g * gs; e < (g + 1) * gs; ++e) sb[e] = -INFINITY;
  }
  int32_t* idx = topk_idx + n * K;
  float sum = 0.0f;
  for (int r = 0; r < K; ++r) {
    const int best = argmax(sb, E);
    idx[r] = best;
    sb[best] = -INFINITY;
    sum += s[best];
  }
  const float denom = sum + 1e-20f;
  for (int r = 0; r < K; ++r) topk_weight[n * K + r] = routed_scale * s[idx[r]] / denom;
}

__global__ void router_backward_kernel(float* dlogits, const float* dweight, const float* scores,
                                       const int32_t* topk_idx, int N, int E, int K, float routed_scale) {
  const int64_t n = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (n >= N) return;
  const int32_t* idx = topk_idx + n * K;
  const float* s = scores + n * E;
  const float* G = dweight + n * K;
  float S = 0.0f;
  for (int r = 0; r < K; ++r) S += s[idx[r]];
  S += 1e-20f;
  float mean = 0.0f;
  for (int r = 0; r < K; ++r) mean += s[idx[r]] / S * G[r];
  for (int r = 0; r < K; ++r) {
    const int e = idx[r];
    const float ds = routed_scale / S * (G[r] - mean);
    dlogits[n * E + e] += ds * s[e] * (1.0f - s[e]);
  }
}

// scratch: Z[N] (row sums), FS[N] (Σ_i f_i s_i / Z). Shared: f[E], P[E].
__global__ void router_balance_loss_kernel(float* loss, float* dlogits, float* scratch, const float* scores, int B,
                                           int T, int E, int K, float alpha, float grad_scale) {
  __shared__ float f[kMaxExperts];
  __shared__ float P[kMaxExperts];
  float* Z = scratch;
  float* FS = scratch + (int64_t)B * T;
  double total = 0.0;  // used by thread 0
  for (int b = 0; b < B; ++b) {
    for (int e = threadIdx.x; e < E; e += blockDim.x) f[e] = 0.0f;
    __syncthreads();
    // Per token: Z_t and the plain top-K of the unbiased scores (integer-valued counts: atomics are exact).
    for (int t = threadIdx.x; t < T; t += blockDim.x) {
      const float* s = scores + ((int64_t)b * T + t) * E;
      float z = 0.0f;
      for (int e = 0; e < E; ++e) z += s[e];
      Z[(int64_t)b * T + t] = z;
      int32_t chosen[kMaxK];
      for (int r = 0; r < K; ++r) {
        int best = -1;
        for (int e = 0; e < E; ++e) {
          bool taken = false;
          for (int q = 0; q < r; ++q) taken |= chosen[q] == e;
          if (!taken && (best < 0 || s[e] > s[best])) best = e;
        }
        chosen[r] = best;
        atomicAdd(&f[best], 1.0f);
      }
    }
    __syncthreads();
    // P_e = (1/T) Σ_t s_{e,t} / Z_t, summed in token order.
    for (int e = threadIdx.x; e < E; e += blockDim.x) {
      float acc = 0.0f;
      for (int t = 0; t < T; ++t) acc += scores[((int64_t)b * T + t) * E + e] / Z[(int64_t)b * T + t];
      P[e] = acc / static_cast<float>(T);
      f[e] *= static_cast<float>(E) / (static_cast<float>(K) * T);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      float l = 0.0f;
      for (int e = 0; e < E; ++e) l += alpha * f[e] * P[e];
      total += l;
    }
    if (dlogits != nullptr) {
      for (int t = threadIdx.x; t < T; t += blockDim.x) {
        const float* s = scores + ((int64_t)b * T + t) * E;
        float fs = 0.0f;
        for (int e = 0; e < E; ++e) fs += f[e] * s[e];
        FS[(int64_t)b * T + t] = fs / Z[(int64_t)b * T + t];
      }
      __syncthreads();
      const int64_t elems = (int64_t)T * E;
      for (int64_t x = threadIdx.x; x < elems; x += blockDim.x) {
        const int64_t t = x / E, m = x % E, row = (int64_t)b * T + t;
        const float sv = scores[row * E + m];
        const float coef = grad_scale / B * alpha / (static_cast<float>(T) * Z[row]);
        dlogits[row * E + m] += coef * (f[m] - FS[row]) * sv * (1.0f - sv);
      }
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) *loss = static_cast<float>(total / B);
}

__global__ void router_count_loads_kernel(int32_t* loads, const int32_t* topk_idx, int64_t rows) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < rows; i += (int64_t)gridDim.x * blockDim.x)
    atomicAdd(loads + topk_idx[i], 1);
}

__global__ void router_update_bias_kernel(float* bias, const int32_t* loads, int E, float gamma) {
  __shared__ long long total;
  if (threadIdx.x == 0) {
    long long t = 0;
    for (int e = 0; e < E; ++e) t += loads[e];
    total = t;
  }
  __syncthreads();
  for (int e = threadIdx.x; e < E; e += blockDim.x) {
    const long long diff = total - (long long)E * loads[e];  // sign(mean − load), exactly
    bias[e] += diff > 0 ? gamma : diff < 0 ? -gamma : 0.0f;
  }
}

}  // namespace

void router_forward(float* scores, int32_t* topk_idx, float* topk_weight, const float* logits, const float* bias,
                    int N, int E, int K, int G, int topk_group, float routed_scale, cudaStream_t stream) {
  CHECK(E >= 1 && E <= kMaxExperts && K >= 1 && K <= kMaxK && K <= E) << "cuda::router_forward: E=" << E << " K=" << K;
  CHECK(G >= 1 && E % G == 0 && (G == 1 || E / G >= 2) && topk_group >= 1 && topk_group <= G &&
        K <= topk_group * (E / G))
      << "cuda::router_forward: E=" << E << " G=" << G << " topk_group=" << topk_group << " K=" << K;
  if (N == 0) return;
  router_forward_kernel<<<detail::ceil_div(N, 128), 128, 0, stream>>>(scores, topk_idx, topk_weight, logits, bias, N,
                                                                      E, K, G, topk_group, routed_scale);
}

void router_backward(float* dlogits, const float* dweight, const float* scores, const int32_t* topk_idx, int N,
                     int E, int K, float routed_scale, cudaStream_t stream) {
  if (N == 0) return;
  router_backward_kernel<<<detail::ceil_div(N, 128), 128, 0, stream>>>(dlogits, dweight, scores, topk_idx, N, E, K,
                                                                       routed_scale);
}

size_t router_balance_loss_scratch_floats(int B, int T) { return 2 * (size_t)B * T; }

void router_balance_loss(float* loss, float* dlogits, float* scratch, const float* scores, int B, int T, int E,
                         int K, float alpha, float grad_scale, cudaStream_t stream) {
  CHECK(E >= 1 && E <= kMaxExperts && K >= 1 && K <= kMaxK && K <= E)
      << "cuda::router_balance_loss: E=" << E << " K=" << K;
  if (B == 0) return;
  router_balance_loss_kernel<<<1, 512, 0, stream>>>(loss, dlogits, scratch, scores, B, T, E, K, alpha, grad_scale);
}

void router_count_loads(int32_t* loads, const int32_t* topk_idx, int N, int K, int E, cudaStream_t stream) {
  const int64_t rows = (int64_t)N * K;
  if (rows == 0) return;
  router_count_loads_kernel<<<detail::grid_for(rows, 256), 256, 0, stream>>>(loads, topk_idx, rows);
}

void router_update_bias(float* bias, const int32_t* loads, int E, float gamma, cudaStream_t stream) {
  router_update_bias_kernel<<<1, 256, 0, stream>>>(bias, loads, E, gamma);
}

}  // namespace shoal::kernels::cuda
