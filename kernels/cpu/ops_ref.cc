#include "kernels/cpu/ops_ref.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "common/check.h"

namespace shoal::kernels::ref {
namespace {

template <typename T>
T sigmoid(T x) {
  return T(1) / (T(1) + std::exp(-x));
}

// Indices of the k largest values (decreasing; ties: lower index first). Entries equal to -inf are never
// chosen while finite ones remain.
template <typename T>
void top_k(int32_t* idx, const T* vals, int n, int k) {
  std::vector<bool> taken(n, false);
  for (int r = 0; r < k; ++r) {
    int best = -1;
    for (int i = 0; i < n; ++i) {
      if (taken[i]) continue;
      if (best < 0 || vals[i] > vals[best]) best = i;
    }
    idx[r] = best;
    taken[best] = true;
  }
}

}  // namespace

// ---- embedding ------------------------------------------------------------------------------------

template <typename T>
void embedding_forward(T* out, const int32_t* tokens, const T* table, int N, int C, int V) {
  for (int n = 0; n < N; ++n) {
    CHECK(tokens[n] >= 0 && tokens[n] < V) << "token " << tokens[n] << " at " << n << " outside [0, " << V << ")";
    for (int c = 0; c < C; ++c) out[(int64_t)n * C + c] = table[(int64_t)tokens[n] * C + c];
  }
}

template <typename T>
void embedding_backward(T* dtable, const T* dout, const int32_t* tokens, int N, int C, int V) {
  for (int n = 0; n < N; ++n) {
    CHECK(tokens[n] >= 0 && tokens[n] < V) << "token " << tokens[n] << " at " << n;
    for (int c = 0; c < C; ++c) dtable[(int64_t)tokens[n] * C + c] += dout[(int64_t)n * C + c];
  }
}

// ---- RMSNorm --------------------------------------------------------------------------------------

template <typename T>
void rmsnorm_forward(T* out, T* rstd, const T* x, const T* w, int N, int C, T eps) {
  for (int n = 0; n < N; ++n) {
    const T* xr = x + (int64_t)n * C;
    T ss = 0;
    for (int c = 0; c < C; ++c) ss += xr[c] * xr[c];
    T r = T(1) / std::sqrt(ss / C + eps);
    rstd[n] = r;
    for (int c = 0; c < C; ++c) out[(int64_t)n * C + c] = xr[c] * r * w[c];
  }
}

template <typename T>
void rmsnorm_backward(T* dx, T* dw, const T* dout, const T* rstd, const T* x, const T* w, int N, int C) {
  for (int n = 0; n < N; ++n) {
    const T* xr = x + (int64_t)n * C;
    const T* dy = dout + (int64_t)n * C;
    T r = rstd[n];
    T dot = 0;  // Σ ĝ_j x_j
    for (int c = 0; c < C; ++c) dot += w[c] * dy[c] * xr[c];
    for (int c = 0; c < C; ++c) {
      dx[(int64_t)n * C + c] += r * w[c] * dy[c] - (r * r * r / C) * xr[c] * dot;
      dw[c] += dy[c] * xr[c] * r;
    }
  }
}

// ---- RoPE -----------------------------------------------------------------------------------------

template <typename T>
static void rope_apply(T* out, const T* x, const int32_t* pos, const float* cos_sin, int N, int NH, int D, int ld,
                       T sign) {
  CHECK(D % 2 == 0 && ld >= D) << "D=" << D << " ld=" << ld;
  for (int n = 0; n < N; ++n) {
    const float* cs = cos_sin + (int64_t)pos[n] * D;
    for (int h = 0; h < NH; ++h) {
      const int64_t base = ((int64_t)n * NH + h) * ld;
      for (int j = 0; j < D / 2; ++j) {
        T c = cs[2 * j], s = sign * T(cs[2 * j + 1]);
        T x0 = x[base + 2 * j], x1 = x[base + 2 * j + 1];
        out[base + 2 * j] = x0 * c - x1 * s;
        out[base + 2 * j + 1] = x0 * s + x1 * c;
      }
    }
  }
}

template <typename T>
void rope_forward(T* out, const T* x, const int32_t* pos, const float* cos_sin, int N, int NH, int D, int ld) {
  rope_apply(out, x, pos, cos_sin, N, NH, D, ld, T(1));
}

template <typename T>
void rope_backward(T* dx, const T* dout, const int32_t* pos, const float* cos_sin, int N, int NH, int D, int ld) {
  rope_apply(dx, dout, pos, cos_sin, N, NH, D, ld, T(-1));
}

// ---- attention ------------------------------------------------------------------------------------

namespace {
inline bool visible(const int32_t* seg, int b, int T, int i, int j) {
  return j <= i && (seg == nullptr || seg[(int64_t)b * T + j] == seg[(int64_t)b * T + i]);
}
}  // namespace

template <typename T>
void attention_forward(T* out, T* lse, const T* q, const T* k, const T* v, const int32_t* seg, int B, int T_,
                       int NH, int Dqk, int Dv, float scale) {
  std::vector<T> s(T_);
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < NH; ++h)
      for (int i = 0; i < T_; ++i) {
        const T* qi = q + (((int64_t)b * T_ + i) * NH + h) * Dqk;
        T mx = -std::numeric_limits<T>::infinity();
        for (int j = 0; j <= i; ++j) {
          if (!visible(seg, b, T_, i, j)) continue;
          const T* kj = k + (((int64_t)b * T_ + j) * NH + h) * Dqk;
          T dot = 0;
          for (int d = 0; d < Dqk; ++d) dot += qi[d] * kj[d];
          s[j] = dot * T(scale);
          mx = std::max(mx, s[j]);
        }
        T sum = 0;
        for (int j = 0; j <= i; ++j)
          if (visible(seg, b, T_, i, j)) sum += std::exp(s[j] - mx);
        T* oi = out + (((int64_t)b * T_ + i) * NH + h) * Dv;
        for (int d = 0; d < Dv; ++d) oi[d] = 0;
        for (int j = 0; j <= i; ++j) {
          if (!visible(seg, b, T_, i, j)) continue;
          T p = std::exp(s[j] - mx) / sum;
          const T* vj = v + (((int64_t)b * T_ + j) * NH + h) * Dv;
          for (int d = 0; d < Dv; ++d) oi[d] += p * vj[d];
        }
        lse[((int64_t)b * NH + h) * T_ + i] = mx + std::log(sum);
      }
}

template <typename T>
void attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* out, const T* lse, const T* q, const T* k,
                        const T* v, const int32_t* seg, int B, int T_, int NH, int Dqk, int Dv, float scale) {
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < NH; ++h)
      for (int i = 0; i < T_; ++i) {
        const int64_t qrow = ((int64_t)b * T_ + i) * NH + h;
        const T* qi = q + qrow * Dqk;
        const T* doi = dout + qrow * Dv;
        const T* oi = out + qrow * Dv;
        T Di = 0;
        for (int d = 0; d < Dv; ++d) Di += doi[d] * oi[d];
        T L = lse[((int64_t)b * NH + h) * T_ + i];
        for (int j = 0; j <= i; ++j) {
          if (!visible(seg, b, T_, i, j)) continue;
          const int64_t krow = ((int64_t)b * T_ + j) * NH + h;
          const T* kj = k + krow * Dqk;
          const T* vj = v + krow * Dv;
          T dot = 0;
          for (int d = 0; d < Dqk; ++d) dot += qi[d] * kj[d];
          T p = std::exp(dot * T(scale) - L);
          T dp = 0;
          for (int d = 0; d < Dv; ++d) {
            dp += doi[d] * vj[d];
            dv[krow * Dv + d] += p * doi[d];
          }
          T ds = p * (dp - Di) * T(scale);
          for (int d = 0; d < Dqk; ++d) {
            dq[qrow * Dqk + d] += ds * kj[d];
            dk[krow * Dqk + d] += ds * qi[d];
          }
        }
      }
}

// ---- SwiGLU ---------------------------------------------------------------------------------------

template <typename T>
void swiglu_forward(T* out, const T* gate_up, int N, int I) {
  for (int n = 0; n < N; ++n)
    for (int i = 0; i < I; ++i) {
      T a = gate_up[(int64_t)n * 2 * I + i], b = gate_up[(int64_t)n * 2 * I + I + i];
      out[(int64_t)n * I + i] = a * sigmoid(a) * b;
    }
}

template <typename T>
void swiglu_backward(T* dgate_up, const T* dout, const T* gate_up, int N, int I) {
  for (int n = 0; n < N; ++n)
    for (int i = 0; i < I; ++i) {
      const int64_t ia = (int64_t)n * 2 * I + i, ib = ia + I;
      T a = gate_up[ia], b = gate_up[ib], dm = dout[(int64_t)n * I + i];
      T sg = sigmoid(a);
      dgate_up[ia] += dm * b * sg * (T(1) + a * (T(1) - sg));
      dgate_up[ib] += dm * a * sg;
    }
}

// ---- router ---------------------------------------------------------------------------------------

template <typename T>
void router_forward(T* scores, int32_t* topk_idx, T* topk_weight, const T* logits, const float* bias, int N, int E,
                    int K, int G, int topk_group, float routed_scale) {
  CHECK(G >= 1 && E % G == 0 && (G == 1 || E / G >= 2)) << "E=" << E << " G=" << G;
  CHECK(topk_group >= 1 && topk_group <= G && K >= 1 && K <= topk_group * (E / G))
      << "K=" << K << " topk_group=" << topk_group;
  const int gs = E / G;
  const T kNegInf = -std::numeric_limits<T>::infinity();
  std::vector<T> sb(E), gscore(G), masked(E);
  std::vector<int32_t> gsel(topk_group), top2(2);
  for (int n = 0; n < N; ++n) {
    for (int e = 0; e < E; ++e) {
      T s = sigmoid(logits[(int64_t)n * E + e]);
      scores[(int64_t)n * E + e] = s;
      sb[e] = s + (bias ? T(bias[e]) : T(0));
    }
    for (int e = 0; e < E; ++e) masked[e] = sb[e];
    if (topk_group < G) {
      for (int g = 0; g < G; ++g) {
        top_k(top2.data(), sb.data() + g * gs, gs, 2);
        gscore[g] = sb[g * gs + top2[0]] + sb[g * gs + top2[1]];
      }
      top_k(gsel.data(), gscore.data(), G, topk_group);
      for (int g = 0; g < G; ++g) {
        bool kept = std::find(gsel.begin(), gsel.end(), g) != gsel.end();
        if (!kept)
          for (int e = g * gs; e < (g + 1) * gs; ++e) masked[e] = kNegInf;
      }
    }
    int32_t* idx = topk_idx + (int64_t)n * K;
    top_k(idx, masked.data(), E, K);
    T sum = 0;
    for (int r = 0; r < K; ++r) sum += scores[(int64_t)n * E + idx[r]];
    for (int r = 0; r < K; ++r)
      topk_weight[(int64_t)n * K + r] = T(routed_scale) * scores[(int64_t)n * E + idx[r]] / (sum + T(1e-20));
  }
}

template <typename T>
void router_backward(T* dlogits, const T* dweight, const T* scores, const int32_t* topk_idx, int N, int E, int K,
                     float routed_scale) {
  for (int n = 0; n < N; ++n) {
    const int32_t* idx = topk_idx + (int64_t)n * K;
    const T* s = scores + (int64_t)n * E;
    const T* G = dweight + (int64_t)n * K;
    T S = 0;
    for (int r = 0; r < K; ++r) S += s[idx[r]];
    S += T(1e-20);
    T mean = 0;  // Σ_j (s_j / S') G_j
    for (int r = 0; r < K; ++r) mean += s[idx[r]] / S * G[r];
    for (int r = 0; r < K; ++r) {
      const int e = idx[r];
      T ds = T(routed_scale) / S * (G[r] - mean);
      dlogits[(int64_t)n * E + e] += ds * s[e] * (T(1) - s[e]);
    }
  }
}

template <typename T>
T router_balance_loss(T* dlogits, const T* scores, int B, int T_, int E, int K, float alpha, float grad_scale) {
  std::vector<T> f(E), P(E), Z(T_);
  std::vector<int32_t> idx(K);
  T total = 0;
  for (int b = 0; b < B; ++b) {
    std::fill(f.begin(), f.end(), T(0));
    std::fill(P.begin(), P.end(), T(0));
    for (int t = 0; t < T_; ++t) {
      const T* s = scores + ((int64_t)b * T_ + t) * E;
      top_k(idx.data(), s, E, K);
      for (int r = 0; r < K; ++r) f[idx[r]] += T(1);
      T z = 0;
      for (int e = 0; e < E; ++e) z += s[e];
      Z[t] = z;
      for (int e = 0; e < E; ++e) P[e] += s[e] / z;
    }
    T loss = 0;
    for (int e = 0; e < E; ++e) {
      f[e] *= T(E) / (T(K) * T(T_));
      P[e] /= T(T_);
      loss += T(alpha) * f[e] * P[e];
    }
    total += loss;
    if (dlogits == nullptr) continue;
    for (int t = 0; t < T_; ++t) {
      const T* s = scores + ((int64_t)b * T_ + t) * E;
      T fs = 0;  // Σ_i f_i s'_i
      for (int e = 0; e < E; ++e) fs += f[e] * s[e] / Z[t];
      for (int m = 0; m < E; ++m) {
        T ds = T(alpha) / (T(T_) * Z[t]) * (f[m] - fs);
        dlogits[((int64_t)b * T_ + t) * E + m] += T(grad_scale) / T(B) * ds * s[m] * (T(1) - s[m]);
      }
    }
  }
  return total / T(B);
}

void router_count_loads(int32_t* loads, const int32_t* topk_idx, int N, int K, int E) {
  for (int64_t i = 0; i < (int64_t)N * K; ++i) {
    CHECK(topk_idx[i] >= 0 && topk_idx[i] < E) << "expert " << topk_idx[i];
    loads[topk_idx[i]] += 1;
  }
}

void router_update_bias(float* bias, const int32_t* loads, int E, float gamma) {
  double total = 0;
  for (int e = 0; e < E; ++e) total += loads[e];
  const double mean = total / E;
  for (int e = 0; e < E; ++e) {
    double diff = mean - loads[e];
    float sign = diff > 0 ? 1.0f : diff < 0 ? -1.0f : 0.0f;
    bias[e] += gamma * sign;
  }
}

// ---- permutation ----------------------------------------------------------------------------------

void moe_permute_plan(int32_t* expert_offsets, int32_t* sorted_rows, int32_t* row_pos, const int32_t* topk_idx,
                      int N, int K, int E) {
  const int64_t R = (int64_t)N * K;
  for (int e = 0; e <= E; ++e) expert_offsets[e] = 0;
  for (int64_t r = 0; r < R; ++r) {
    CHECK(topk_idx[r] >= 0 && topk_idx[r] < E) << "expert " << topk_idx[r];
    expert_offsets[topk_idx[r] + 1] += 1;
  }
  for (int e = 0; e < E; ++e) expert_offsets[e + 1] += expert_offsets[e];
  std::vector<int32_t> fill(expert_offsets, expert_offsets + E);
  for (int64_t r = 0; r < R; ++r) {
    int32_t p = fill[topk_idx[r]]++;
    sorted_rows[p] = static_cast<int32_t>(r);
    row_pos[r] = p;
  }
}

template <typename T>
void moe_permute_forward(T* xs, const T* x, const int32_t* sorted_rows, int N, int K, int C) {
  for (int64_t p = 0; p < (int64_t)N * K; ++p) {
    const int64_t n = sorted_rows[p] / K;
    for (int c = 0; c < C; ++c) xs[p * C + c] = x[n * C + c];
  }
}

template <typename T>
void moe_permute_backward(T* dx, const T* dxs, const int32_t* row_pos, int N, int K, int C) {
  for (int64_t n = 0; n < N; ++n)
    for (int k = 0; k < K; ++k) {
      const int64_t p = row_pos[n * K + k];
      for (int c = 0; c < C; ++c) dx[n * C + c] += dxs[p * C + c];
    }
}

template <typename T>
void moe_unpermute_forward(T* out, const T* ys, const T* weight, const int32_t* row_pos, int N, int K, int C) {
  for (int64_t n = 0; n < N; ++n)
    for (int k = 0; k < K; ++k) {
      const int64_t p = row_pos[n * K + k];
      for (int c = 0; c < C; ++c) out[n * C + c] += weight[n * K + k] * ys[p * C + c];
    }
}

template <typename T>
void moe_unpermute_backward(T* dys, T* dweight, const T* dout, const T* ys, const T* weight, const int32_t* row_pos,
                            int N, int K, int C) {
  for (int64_t n = 0; n < N; ++n)
    for (int k = 0; k < K; ++k) {
      const int64_t p = row_pos[n * K + k];
      T dot = 0;
      for (int c = 0; c < C; ++c) {
        dys[p * C + c] += weight[n * K + k] * dout[n * C + c];
        dot += dout[n * C + c] * ys[p * C + c];
      }
      dweight[n * K + k] += dot;
    }
}

// ---- cross-entropy --------------------------------------------------------------------------------

template <typename T>
double cross_entropy(T* dz, T* dW, T* logits, T* token_loss, const T* z, const T* W, const int32_t* targets, int N,
                     int C, int V, float loss_scale) {
  std::vector<T> lg(V);
  double total = 0;
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t v = 0; v < V; ++v) {
      T acc = 0;
      for (int c = 0; c < C; ++c) acc += z[n * C + c] * W[v * C + c];
      lg[v] = acc;
      if (logits) logits[n * V + v] = acc;
    }
    const int32_t tgt = targets ? targets[n] : -1;
    if (tgt < 0) {
      if (token_loss) token_loss[n] = 0;
      continue;
    }
    CHECK(tgt < V) << "target " << tgt << " at " << n;
    T mx = *std::max_element(lg.begin(), lg.end());
    T sum = 0;
    for (int v = 0; v < V; ++v) sum += std::exp(lg[v] - mx);
    T lse = mx + std::log(sum);
    T loss = lse - lg[tgt];
    if (token_loss) token_loss[n] = loss;
    total += static_cast<double>(loss);
    if (dz == nullptr && dW == nullptr) continue;
    for (int64_t v = 0; v < V; ++v) {
      T g = (std::exp(lg[v] - lse) - (v == tgt ? T(1) : T(0))) * T(loss_scale);
      for (int c = 0; c < C; ++c) {
        if (dz) dz[n * C + c] += g * W[v * C + c];
        if (dW) dW[v * C + c] += g * z[n * C + c];
      }
    }
  }
  return total;
}

// ---- optimizer and clipping -----------------------------------------------------------------------

void adamw_update(float* param, bf16_t* m, bf16_t* v, const float* grad, int64_t n, int step, float lr, float beta1,
                  float beta2, float eps, float weight_decay) {
  CHECK(step >= 1) << "step " << step;
  const float bc1 = static_cast<float>(1.0 - std::pow(static_cast<double>(beta1), step));
  const float bc2 = static_cast<float>(1.0 - std::pow(static_cast<double>(beta2), step));
  for (int64_t i = 0; i < n; ++i) {
    float g = grad[i];
    float mi = beta1 * bf16_to_f32(m[i]) + (1.0f - beta1) * g;
    float vi = beta2 * bf16_to_f32(v[i]) + (1.0f - beta2) * g * g;
    float mhat = mi / bc1, vhat = vi / bc2;
    float p = param[i];
    p -= lr * weight_decay * p;
    p -= lr * mhat / (std::sqrt(vhat) + eps);
    param[i] = p;
    m[i] = f32_to_bf16(mi);
    v[i] = f32_to_bf16(vi);
  }
}

double global_norm(const float* const* bufs, const int64_t* sizes, int num_bufs) {
  double ss = 0;
  for (int b = 0; b < num_bufs; ++b)
    for (int64_t i = 0; i < sizes[b]; ++i) ss += static_cast<double>(bufs[b][i]) * bufs[b][i];
  return std::sqrt(ss);
}

float clip_scale(double norm, float max_norm) {
  double s = static_cast<double>(max_norm) / (norm + 1e-6);
  return static_cast<float>(std::min(1.0, s));
}

void scale_buffers(float* const* bufs, const int64_t* sizes, int num_bufs, float scale) {
  for (int b = 0; b < num_bufs; ++b)
    for (int64_t i = 0; i < sizes[b]; ++i) bufs[b][i] *= scale;
}

// ---- instantiations -------------------------------------------------------------------------------

#define SHOAL_REF_INSTANTIATE(T)                                                                                   \
  template void embedding_forward<T>(T*, const int32_t*, const T*, int, int, int);                                \
  template void embedding_backward<T>(T*, const T*, const int32_t*, int, int, int);                               \
  template void rmsnorm_forward<T>(T*, T*, const T*, const T*, int, int, T);                                      \
  template void rmsnorm_backward<T>(T*, T*, const T*, const T*, const T*, const T*, int, int);                    \
  template void rope_forward<T>(T*, const T*, const int32_t*, const float*, int, int, int, int);                  \
  template void rope_backward<T>(T*, const T*, const int32_t*, const float*, int, int, int, int);                 \
  template void attention_forward<T>(T*, T*, const T*, const T*, const T*, const int32_t*, int, int, int, int, int, \
                                     float);                                                                       \
  template void attention_backward<T>(T*, T*, T*, const T*, const T*, const T*, const T*, const T*, const T*,      \
                                      const int32_t*, int, int, int, int, int, float);                             \
  template void swiglu_forward<T>(T*, const T*, int, int);                                                        \
  template void swiglu_backward<T>(T*, const T*, const T*, int, int);                                             \
  template void router_forward<T>(T*, int32_t*, T*, const T*, const float*, int, int, int, int, int, float);      \
  template void router_backward<T>(T*, const T*, const T*, const int32_t*, int, int, int, float);                 \
  template T router_balance_loss<T>(T*, const T*, int, int, int, int, float, float);                              \
  template void moe_permute_forward<T>(T*, const T*, const int32_t*, int, int, int);                              \
  template void moe_permute_backward<T>(T*, const T*, const int32_t*, int, int, int);                             \
  template void moe_unpermute_forward<T>(T*, const T*, const T*, const int32_t*, int, int, int);                  \
  template void moe_unpermute_backward<T>(T*, T*, const T*, const T*, const T*, const int32_t*, int, int, int);   \
  template double cross_entropy<T>(T*, T*, T*, T*, const T*, const T*, const int32_t*, int, int, int, float);

SHOAL_REF_INSTANTIATE(float)
SHOAL_REF_INSTANTIATE(double)
#undef SHOAL_REF_INSTANTIATE

}  // namespace shoal::kernels::ref
