#include "kernels/cpu/cross_entropy.h"

#include <cblas.h>

#include <cmath>

#include "common/check.h"
#include "kernels/cpu/ops_parallel.h"
#include "kernels/cpu/ops_simd.h"

namespace shoal::kernels {
namespace {

using simd::kW;
using simd::load;
using simd::store;
using simd::vf16;

// For rows [r0, r1) of a logits block: per-row loss into loss[] (0 if ignored); if grad, the row becomes
// loss_scale·(softmax − onehot) (all zero for ignored rows).
SHOAL_SIMD_CLONES void softmax_rows(float* lg, float* loss, const int32_t* targets, int64_t r0, int64_t r1, int V,
                                    bool grad, float loss_scale) {
  for (int64_t r = r0; r < r1; ++r) {
    float* row = lg + r * V;
    const int32_t tgt = targets ? targets[r] : -1;
    if (tgt < 0) {
      loss[r] = 0;
      if (grad)
        for (int v = 0; v < V; ++v) row[v] = 0;
      continue;
    }
    CHECK(tgt < V) << "cross_entropy: target " << tgt << " at row " << r << " outside [-1, " << V << ")";
    vf16 mv = simd::splat(-__builtin_inff());
    int v = 0;
    for (; v + kW <= V; v += kW) mv = simd::vmax(mv, load(row + v));
    float mx = simd::reduce_max(mv);
    for (; v < V; ++v) mx = std::max(mx, row[v]);
    vf16 sv{};
    float sum = 0;
    v = 0;
    for (; v + kW <= V; v += kW) sv += simd::exp(load(row + v) - mx);
    for (; v < V; ++v) sum += std::exp(row[v] - mx);
    sum += simd::reduce_add(sv);
    const float lse = mx + std::log(sum);
    loss[r] = lse - row[tgt];
    if (!grad) continue;
    v = 0;
    for (; v + kW <= V; v += kW) store(row + v, simd::exp(load(row + v) - lse) * loss_scale);
    for (; v < V; ++v) row[v] = std::exp(row[v] - lse) * loss_scale;
    row[tgt] -= loss_scale;
  }
}

double run(float* dz, float* dW, float* logits_out, float* token_loss, float* scratch, const float* z,
           const float* W, const int32_t* targets, int N, int C, int V, int chunk_rows, bool grad, float loss_scale) {
  CHECK(chunk_rows >= 1) << "cross_entropy: chunk_rows " << chunk_rows;
  double total = 0;
  constexpr int kMaxChunk = 4096;
  float loss[kMaxChunk];
  for (int64_t r0 = 0; r0 < N; r0 += chunk_rows) {
    const int rows = static_cast<int>(std::min<int64_t>(chunk_rows, N - r0));
    float* lg = logits_out ? logits_out + r0 * V : scratch;
    // logits[rows, V] = z[rows, C] · W[V, C]ᵀ
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, V, C, 1.0f, z + r0 * C, C, W, C, 0.0f, lg, V);
    const int32_t* tg = targets ? targets + r0 : nullptr;
    for (int s0 = 0; s0 < rows; s0 += kMaxChunk) {
      const int srows = std::min(kMaxChunk, rows - s0);
      detail::ParallelRows(srows, (int64_t)V * 16, [&](int64_t b, int64_t e) {
        softmax_rows(lg + (int64_t)s0 * V, loss, tg ? tg + s0 : nullptr, b, e, V, grad, loss_scale);
      });
      for (int r = 0; r < srows; ++r) {
        if (tg) total += loss[r];
        if (token_loss) token_loss[r0 + s0 + r] = loss[r];
      }
    }
    if (!grad) continue;
    // dz[rows, C] += dlogits[rows, V] · W[V, C];  dW[V, C] += dlogits[rows, V]ᵀ · z[rows, C]
    if (dz) cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, C, V, 1.0f, lg, V, W, C, 1.0f, dz + r0 * C, C);
    if (dW) cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, V, C, rows, 1.0f, lg, V, z + r0 * C, C, 1.0f, dW, C);
  }
  return total;
}

}  // namespace

size_t cross_entropy_scratch_floats(int V, int chunk_rows) { return static_cast<size_t>(V) * chunk_rows; }

double cross_entropy_forward_backward(float* dz, float* dW, float* token_loss, float* scratch, const float* z,
                                      const float* W, const int32_t* targets, int N, int C, int V, int chunk_rows,
                                      float loss_scale) {
  CHECK(targets != nullptr && scratch != nullptr) << "cross_entropy_forward_backward needs targets and scratch";
  return run(dz, dW, nullptr, token_loss, scratch, z, W, targets, N, C, V, chunk_rows, true, loss_scale);
}

double cross_entropy_forward(float* logits, float* token_loss, float* scratch, const float* z, const float* W,
                             const int32_t* targets, int N, int C, int V, int chunk_rows) {
  CHECK(logits != nullptr || scratch != nullptr) << "cross_entropy_forward needs logits or scratch";
  return run(nullptr, nullptr, logits, token_loss, scratch, z, W, targets, N, C, V, chunk_rows, false, 1.0f);
}

}  // namespace shoal::kernels
