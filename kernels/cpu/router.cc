#include "kernels/cpu/router.h"

#include <cmath>
#include <cstring>
#include <limits>

#include "common/check.h"
#include "kernels/cpu/ops_parallel.h"
#include "kernels/cpu/ops_simd.h"

namespace shoal::kernels {
namespace {

constexpr int kMaxExperts = 1024;
constexpr int kMaxK = 64;
constexpr int kMaxSeqChunks = 64;

using simd::kW;

// Index of the largest of w[0..n) (the lowest such index on ties). Measured faster here than a branch-free
// index search: the early-exit scan is short and mostly predicted.
SHOAL_INLINE int argmax(const float* w, int n) {
  float mx;
  int i = 0;
  if (n >= kW) {
    simd::vf16 mv = simd::load(w);
    for (i = kW; i + kW <= n; i += kW) mv = simd::vmax(mv, simd::load(w + i));
    mx = simd::reduce_max(mv);
  } else {
    mx = w[0];
    i = 1;
  }
  for (; i < n; ++i) mx = w[i] > mx ? w[i] : mx;
  for (i = 0; i < n - 1; ++i)
    if (w[i] == mx) break;
  return i;
}

// idx[0..k) = the k largest entries of w (decreasing; ties to the lower index). Consumes w: chosen entries
// become −∞. Entries already −∞ are never chosen while finite ones remain.
SHOAL_INLINE void top_k_consume(int32_t* idx, float* w, int n, int k) {
  for (int r = 0; r < k; ++r) {
    const int best = argmax(w, n);
    idx[r] = best;
    w[best] = -std::numeric_limits<float>::infinity();
  }
}

SHOAL_INLINE float row_sum(const float* s, int E) {
  simd::vf16 acc{};
  int e = 0;
  for (; e + kW <= E; e += kW) acc += simd::load(s + e);
  float z = simd::reduce_add(acc);
  for (; e < E; ++e) z += s[e];
  return z;
}

SHOAL_INLINE void sigmoid_row(float* s, const float* logit, int E) {
  int e = 0;
  for (; e + kW <= E; e += kW) simd::store(s + e, simd::sigmoid(simd::load(logit + e)));
  for (; e < E; ++e) s[e] = 1.0f / (1.0f + std::exp(-logit[e]));
}

SHOAL_SIMD_CLONES void router_rows(float* scores, int32_t* topk_idx, float* topk_weight, const float* logits,
                                   const float* bias, int64_t n0, int64_t n1, int E, int K, int G, int topk_group,
                                   float routed_scale) {
  const int gs = E / G;
  const float kNegInf = -std::numeric_limits<float>::infinity();
  alignas(64) float sb[kMaxExperts];
  alignas(64) float gscore[kMaxExperts];
  int32_t gsel[kMaxExperts];
  for (int64_t n = n0; n < n1; ++n) {
    float* s = scores + n * E;
    sigmoid_row(s, logits + n * E, E);
    if (bias != nullptr) {
      int e = 0;
      for (; e + kW <= E; e += kW) simd::store(sb + e, simd::load(s + e) + simd::load(bias + e));
      for (; e < E; ++e) sb[e] = s[e] + bias[e];
    } else {
      for (int e = 0; e < E; ++e) sb[e] = s[e];
    }
    if (topk_group < G) {
      for (int g = 0; g < G; ++g) {
        // Sum of the top-2 biased scores of the group (largest first, as the reference adds them).
        float m1 = kNegInf, m2 = kNegInf;
        for (int e = g * gs; e < (g + 1) * gs; ++e) {
          const float x = sb[e];
          m2 = x > m1 ? m1 : (x > m2 ? x : m2);
          m1 = x > m1 ? x : m1;
        }
        gscore[g] = m1 + m2;
      }
      top_k_consume(gsel, gscore, G, topk_group);
      // Kept groups now hold −∞ in gscore; mask the experts of the others.
      for (int g = 0; g < G; ++g)
        if (gscore[g] != kNegInf)
          for (int e = g * gs; e < (g + 1) * gs; ++e) sb[e] = kNegInf;
    }
    int32_t* idx = topk_idx + n * K;
    top_k_consume(idx, sb, E, K);
    float sum = 0;
    for (int r = 0; r < K; ++r) sum += s[idx[r]];
    const float denom = sum + 1e-20f;
    for (int r = 0; r < K; ++r) topk_weight[n * K + r] = routed_scale * s[idx[r]] / denom;
  }
}

// ---- 16 tokens at a time (E a multiple of 16, E ≤ 256): lanes are tokens. Scores are transposed in
// registers to one vector per expert, and every selection step is a vertical compare/select across experts,
// so there are no per-token branches. Same results as router_rows (ties to the lower index throughout).
constexpr int kMaxVecExperts = 256;

struct ArgMax {
  simd::vf16 val;
  simd::vi16 idx;
};
// a wins over b where a is larger, or equal with a lower index.
SHOAL_INLINE ArgMax better(const ArgMax& a, const ArgMax& b) {
  const simd::vi16 take_b = (b.val > a.val) | ((b.val == a.val) & (b.idx < a.idx));
  return ArgMax{take_b ? b.val : a.val, take_b ? b.idx : a.idx};
}
// Per lane, the largest of w[0..n) and its index (lowest on ties); four interleaved chains for latency.
SHOAL_INLINE ArgMax argmax_across(const simd::vf16* w, int n) {
  const int lanes = n < 4 ? n : 4;
  ArgMax c[4];
  c[0] = ArgMax{w[0], simd::vi16{}};
  for (int q = 1; q < 4; ++q) c[q] = q < lanes ? ArgMax{w[q], simd::vi16{} + q} : c[0];
  for (int e = lanes; e < n; ++e) {
    ArgMax& a = c[e & 3];
    const simd::vi16 gt = w[e] > a.val;  // strict: the earlier index stays on ties within a chain
    a.val = gt ? w[e] : a.val;
    a.idx = gt ? simd::vi16{} + e : a.idx;
  }
  ArgMax r = c[0];
  for (int q = 1; q < lanes; ++q) r = better(r, c[q]);
  return r;
}

SHOAL_INLINE void router_block16(float* scores, int32_t* topk_idx, float* topk_weight, const float* logits,
                                 const float* bias, int64_t n0, int E, int K, int G, int topk_group,
                                 float routed_scale) {
  using simd::vf16;
  using simd::vi16;
  const vf16 ninf = simd::splat(-std::numeric_limits<float>::infinity());
  alignas(64) vf16 sT[kMaxVecExperts];  // sT[e][t]: unbiased score of token n0 + t for expert e
  alignas(64) vf16 w[kMaxVecExperts];   // biased, masked working copy
  for (int eb = 0; eb < E; eb += kW) {
    vf16 r[kW];
#pragma GCC unroll 16
    for (int t = 0; t < kW; ++t) {
      r[t] = simd::sigmoid(simd::load(logits + (n0 + t) * E + eb));
      simd::store(scores + (n0 + t) * E + eb, r[t]);
    }
    simd::transpose16(r);
#pragma GCC unroll 16
    for (int x = 0; x < kW; ++x) {
      sT[eb + x] = r[x];
      w[eb + x] = bias != nullptr ? r[x] + bias[eb + x] : r[x];
    }
  }
  if (topk_group < G) {
    const int gs = E / G;
    alignas(64) vf16 gscore[kMaxVecExperts];
    alignas(64) vi16 keep[kMaxVecExperts];
    for (int g = 0; g < G; ++g) {
      vf16 m1 = ninf, m2 = ninf;
      for (int e = g * gs; e < (g + 1) * gs; ++e) {
        m2 = simd::vmax(m2, simd::vmin(m1, w[e]));
        m1 = simd::vmax(m1, w[e]);
      }
      gscore[g] = m1 + m2;
      keep[g] = vi16{};
    }
    for (int r = 0; r < topk_group; ++r) {
      const ArgMax best = argmax_across(gscore, G);
      for (int g = 0; g < G; ++g) {
        const vi16 hit = best.idx == g;
        keep[g] |= hit;
        gscore[g] = hit ? ninf : gscore[g];
      }
    }
    for (int g = 0; g < G; ++g)
      for (int e = g * gs; e < (g + 1) * gs; ++e) w[e] = keep[g] ? w[e] : ninf;
  }
  alignas(64) vi16 idx[kMaxK];
  alignas(64) vf16 sel[kMaxK];
  vf16 sum{};
  for (int r = 0; r < K; ++r) {
    const ArgMax best = argmax_across(w, E);
    vf16 s_sel{};
    for (int e = 0; e < E; ++e) {
      const vi16 hit = best.idx == e;
      s_sel = hit ? sT[e] : s_sel;
      w[e] = hit ? ninf : w[e];
    }
    idx[r] = best.idx;
    sel[r] = s_sel;
    sum += s_sel;
  }
  const vf16 denom = sum + 1e-20f;
  alignas(64) int32_t idx_out[kMaxK][kW];
  alignas(64) float wt_out[kMaxK][kW];
  for (int r = 0; r < K; ++r) {
    simd::store(wt_out[r], routed_scale * sel[r] / denom);
    std::memcpy(idx_out[r], &idx[r], sizeof(idx[r]));
  }
  for (int t = 0; t < kW; ++t)
    for (int r = 0; r < K; ++r) {
      topk_idx[(n0 + t) * K + r] = idx_out[r][t];
      topk_weight[(n0 + t) * K + r] = wt_out[r][t];
    }
}

SHOAL_SIMD_CLONES void router_rows_vec(float* scores, int32_t* topk_idx, float* topk_weight, const float* logits,
                                       const float* bias, int64_t n0, int64_t n1, int E, int K, int G,
                                       int topk_group, float routed_scale) {
  for (int64_t n = n0; n + kW <= n1; n += kW)
    router_block16(scores, topk_idx, topk_weight, logits, bias, n, E, K, G, topk_group, routed_scale);
}

SHOAL_SIMD_CLONES void router_backward_rows(float* dlogits, const float* dweight, const float* scores,
                                            const int32_t* topk_idx, int64_t n0, int64_t n1, int E, int K,
                                            float routed_scale) {
  for (int64_t n = n0; n < n1; ++n) {
    const int32_t* idx = topk_idx + n * K;
    const float* s = scores + n * E;
    const float* G = dweight + n * K;
    float S = 0;
    for (int r = 0; r < K; ++r) S += s[idx[r]];
    S += 1e-20f;
    float mean = 0;
    for (int r = 0; r < K; ++r) mean += s[idx[r]] / S * G[r];
    for (int r = 0; r < K; ++r) {
      const int e = idx[r];
      const float ds = routed_scale / S * (G[r] - mean);
      dlogits[n * E + e] += ds * s[e] * (1.0f - s[e]);
    }
  }
}

// Sequences [b0, b1): returns Σ_b L_b and adds the gradient (already divided by B and scaled).
SHOAL_SIMD_CLONES double balance_loss_seqs(float* dlogits, const float* scores, int64_t b0, int64_t b1, int B, int T,
                                           int E, int K, float alpha, float grad_scale) {
  alignas(64) float f[kMaxExperts], P[kMaxExperts], work[kMaxExperts];
  int32_t idx[kMaxK];
  double total = 0;
  for (int64_t b = b0; b < b1; ++b) {
    for (int e = 0; e < E; ++e) f[e] = P[e] = 0;
    for (int t = 0; t < T; ++t) {
      const float* s = scores + (b * T + t) * E;
      std::memcpy(work, s, sizeof(float) * E);
      top_k_consume(idx, work, E, K);
      for (int r = 0; r < K; ++r) f[idx[r]] += 1.0f;
      const float inv_z = 1.0f / row_sum(s, E);
      int e = 0;
      for (; e + kW <= E; e += kW) simd::store(P + e, simd::load(P + e) + simd::load(s + e) * inv_z);
      for (; e < E; ++e) P[e] += s[e] * inv_z;
    }
    float loss = 0;
    for (int e = 0; e < E; ++e) {
      f[e] *= static_cast<float>(E) / (static_cast<float>(K) * T);
      P[e] /= static_cast<float>(T);
      loss += alpha * f[e] * P[e];
    }
    total += loss;
    if (dlogits == nullptr) continue;
    for (int t = 0; t < T; ++t) {
      const float* s = scores + (b * T + t) * E;
      float* dl = dlogits + (b * T + t) * E;
      const float z = row_sum(s, E);
      simd::vf16 acc{};
      int e = 0;
      for (; e + kW <= E; e += kW) acc += simd::load(f + e) * simd::load(s + e);
      float fs = simd::reduce_add(acc);
      for (; e < E; ++e) fs += f[e] * s[e];
      fs /= z;
      const float coef = grad_scale / B * alpha / (static_cast<float>(T) * z);
      e = 0;
      for (; e + kW <= E; e += kW) {
        const simd::vf16 sv = simd::load(s + e);
        simd::store(dl + e, simd::load(dl + e) + coef * (simd::load(f + e) - fs) * sv * (1.0f - sv));
      }
      for (; e < E; ++e) dl[e] += coef * (f[e] - fs) * s[e] * (1.0f - s[e]);
    }
  }
  return total;
}

void check_router_dims(int E, int K) {
  CHECK(E >= 1 && E <= kMaxExperts && K >= 1 && K <= kMaxK && K <= E) << "router: E=" << E << " K=" << K;
}

}  // namespace

void router_forward(float* scores, int32_t* topk_idx, float* topk_weight, const float* logits, const float* bias,
                    int N, int E, int K, int G, int topk_group, float routed_scale) {
  check_router_dims(E, K);
  CHECK(G >= 1 && E % G == 0 && (G == 1 || E / G >= 2)) << "router: E=" << E << " G=" << G;
  CHECK(topk_group >= 1 && topk_group <= G && K <= topk_group * (E / G))
      << "router: K=" << K << " topk_group=" << topk_group << " G=" << G;
  if (E % kW != 0 || E > kMaxVecExperts) {
    detail::ParallelRows(N, (int64_t)E * 64, [&](int64_t b, int64_t e) {
      router_rows(scores, topk_idx, topk_weight, logits, bias, b, e, E, K, G, topk_group, routed_scale);
    });
    return;
  }
  // Blocks of 16 tokens in parallel, the remainder token by token.
  const int64_t blocks = N / kW;
  detail::ParallelRows(blocks, (int64_t)E * 16 * 16, [&](int64_t b, int64_t e) {
    router_rows_vec(scores, topk_idx, topk_weight, logits, bias, b * kW, e * kW, E, K, G, topk_group, routed_scale);
  });
  router_rows(scores, topk_idx, topk_weight, logits, bias, blocks * kW, N, E, K, G, topk_group, routed_scale);
}

void router_backward(float* dlogits, const float* dweight, const float* scores, const int32_t* topk_idx, int N,
                     int E, int K, float routed_scale) {
  check_router_dims(E, K);
  detail::ParallelRows(N, (int64_t)K * 64, [&](int64_t b, int64_t e) {
    router_backward_rows(dlogits, dweight, scores, topk_idx, b, e, E, K, routed_scale);
  });
}

float router_balance_loss(float* dlogits, const float* scores, int B, int T, int E, int K, float alpha,
                          float grad_scale) {
  check_router_dims(E, K);
  const int chunks = detail::NumFixedChunks(B, kMaxSeqChunks, std::max<int64_t>(1, 16384 / ((int64_t)T * E)));
  double partial[kMaxSeqChunks] = {};
  detail::ParallelFixedChunks(B, chunks, [&](int ch, int64_t b, int64_t e) {
    partial[ch] = balance_loss_seqs(dlogits, scores, b, e, B, T, E, K, alpha, grad_scale);
  });
  double total = 0;
  for (int ch = 0; ch < chunks; ++ch) total += partial[ch];
  return static_cast<float>(total / B);
}

void router_count_loads(int32_t* loads, const int32_t* topk_idx, int N, int K, int E) {
  for (int64_t i = 0; i < (int64_t)N * K; ++i) loads[topk_idx[i]] += 1;
}

void router_update_bias(float* bias, const int32_t* loads, int E, float gamma) {
  int64_t total = 0;
  for (int e = 0; e < E; ++e) total += loads[e];
  // sign(mean − load) = sign(total − E·load), computed exactly in integers.
  for (int e = 0; e < E; ++e) {
    const int64_t diff = total - (int64_t)E * loads[e];
    bias[e] += diff > 0 ? gamma : diff < 0 ? -gamma : 0.0f;
  }
}

}  // namespace shoal::kernels
