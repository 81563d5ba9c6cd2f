// Reference twins of the model ops (shoal::kernels::ref): plain loops, obviously correct, single-threaded.
// They are the oracles for the fast CPU ops and the CUDA ops (kernels/cuda/ops.h), and, instantiated for
// double, the models that finite-difference gradient checks differentiate.
// The fast CPU versions (shoal::kernels, one header per op: embedding.h, rmsnorm.h, rope.h, attention.h,
// swiglu.h, router.h, permute.h, cross_entropy.h, adamw.h, clip.h) run on ThreadPool::Default() with
// AVX-512 clones of their hot loops and must not be called from inside one of that pool's ParallelFor bodies.
//
// Glossary of shapes (row-major, fp32 unless stated):
//   N = tokens = B·T, B = sequences, T = tokens per sequence, C = channels, NH = heads,
//   Dqk = query/key head dim, Dv = value head dim, D = rotary dim, E = routed experts,
//   K = experts per token, G = expert groups, V = vocab, I = FFN intermediate size.
//
// Argument order (all ops): outputs, saved activations, inputs and weights, dims, scalars.
// For a backward: gradient outputs, [scratch], the incoming gradient, saved activations, forward inputs and
// weights, dims, scalars.
//
// Gradient semantics: every *_backward ACCUMULATES (+=) into all of its gradient outputs, parameter and
// input gradients alike (so a residual stream's gradient can be summed in place), with ONE exception:
// rope_backward overwrites (dx = Rᵀ·dout) and may run in place, because RoPE is applied in place to a slice
// of q / k. A gradient output never aliases an input unless stated.
#pragma once

#include <cstdint>

#include "kernels/dtype.h"

namespace shoal::kernels::ref {

// ---- embedding ------------------------------------------------------------------------------------
// out[n,:] = table[tokens[n],:].
template <typename T>
void embedding_forward(T* out /*[N,C]*/, const int32_t* tokens /*[N]*/, const T* table /*[V,C]*/, int N, int C,
                       int V);
// dtable[tokens[n],:] += dout[n,:].
template <typename T>
void embedding_backward(T* dtable /*[V,C] +=*/, const T* dout /*[N,C]*/, const int32_t* tokens /*[N]*/, int N,
                        int C, int V);

// ---- RMSNorm --------------------------------------------------------------------------------------
// out = x · rstd ⊙ w, rstd = (mean(x²) + eps)^-1/2 per row (statistics in T's precision, ≥ fp32).
template <typename T>
void rmsnorm_forward(T* out /*[N,C]*/, T* rstd /*[N]*/, const T* x /*[N,C]*/, const T* w /*[C]*/, int N, int C,
                     T eps);
// Appendix A: dx += r·ĝ − (r³/C)·x·Σ(ĝ⊙x), ĝ = w⊙dout; dw += Σ_rows dout⊙x·r.
template <typename T>
void rmsnorm_backward(T* dx /*[N,C] +=*/, T* dw /*[C] +=*/, const T* dout /*[N,C]*/, const T* rstd /*[N]*/,
                      const T* x /*[N,C]*/, const T* w /*[C]*/, int N, int C);

// ---- RoPE (interleaved pairs (2j, 2j+1), angle = pos·inv_freq[j]) -----------------------------------
// The tensor is [N, NH, D] where consecutive heads of a token are `ld` elements apart (ld ≥ D; a token is
// NH·ld elements): ld = D for a contiguous tensor, ld = Dqk with the pointer at the rope slice for MLA.
// cos_sin: [P, D/2, 2] table of (cos, sin) from kernels::rope_table() (kernels/cpu/rope.h); every
// position must be < P.
// out may equal x (in place).
template <typename T>
void rope_forward(T* out /*[N,NH,D] @ld*/, const T* x /*[N,NH,D] @ld*/, const int32_t* pos /*[N]*/,
                  const float* cos_sin /*[P,D/2,2]*/, int N, int NH, int D, int ld);
// dx = R(−θ)·dout (overwrite; dx may equal dout).
template <typename T>
void rope_backward(T* dx /*[N,NH,D] @ld*/, const T* dout /*[N,NH,D] @ld*/, const int32_t* pos /*[N]*/,
                   const float* cos_sin /*[P,D/2,2]*/, int N, int NH, int D, int ld);

// ---- causal attention (MLA head dims) ---------------------------------------------------------------
// out[b,i,h] = Σ_{j visible} softmax_j(scale·q[b,i,h]·k[b,j,h]) v[b,j,h]; j visible to i iff j ≤ i and
// (seg == nullptr or seg[b,j] == seg[b,i]). lse[b,h,i] = log Σ_j exp(scale·q·k) (natural log, fp32+).
template <typename T>
void attention_forward(T* out /*[B,T,NH,Dv]*/, T* lse /*[B,NH,T]*/, const T* q /*[B,T,NH,Dqk]*/,
                       const T* k /*[B,T,NH,Dqk]*/, const T* v /*[B,T,NH,Dv]*/, const int32_t* seg /*[B,T]|null*/,
                       int B, int T_, int NH, int Dqk, int Dv, float scale);
// dq, dk, dv += (flash-style: P recomputed from lse).
template <typename T>
void attention_backward(T* dq /*[B,T,NH,Dqk] +=*/, T* dk /*[B,T,NH,Dqk] +=*/, T* dv /*[B,T,NH,Dv] +=*/,
                        const T* dout /*[B,T,NH,Dv]*/, const T* out /*[B,T,NH,Dv]*/, const T* lse /*[B,NH,T]*/,
                        const T* q, const T* k, const T* v, const int32_t* seg /*[B,T]|null*/, int B, int T_,
                        int NH, int Dqk, int Dv, float scale);

// ---- SwiGLU on a fused gate|up buffer --------------------------------------------------------------
// gate_up row n = [a (I values, gate_proj output) | b (I values, up_proj output)]; out = SiLU(a) ⊙ b.
template <typename T>
void swiglu_forward(T* out /*[N,I]*/, const T* gate_up /*[N,2I]*/, int N, int I);
// dgate_up[:, :I] += dout⊙b⊙σ(a)(1 + a(1−σ(a))), dgate_up[:, I:] += dout⊙SiLU(a).
template <typename T>
void swiglu_backward(T* dgate_up /*[N,2I] +=*/, const T* dout /*[N,I]*/, const T* gate_up /*[N,2I]*/, int N,
                     int I);

// ---- MoE router (spec §3.2) ---------------------------------------------------------------------------
// scores = sigmoid(logits); selection on scores + bias (bias may be null = 0): group score = sum of the top-2
// biased scores of each of G contiguous groups, the topk_group best groups are kept (others −∞), then the
// top-K experts in decreasing biased score (ties: lower index first). topk_weight = routed_scale ·
// s_k / (Σ_sel s + 1e-20) from the UNBIASED scores.
template <typename T>
void router_forward(T* scores /*[N,E]*/, int32_t* topk_idx /*[N,K]*/, T* topk_weight /*[N,K]*/,
                    const T* logits /*[N,E]*/, const float* bias /*[E]|null*/, int N, int E, int K, int G,
                    int topk_group, float routed_scale);
// dlogits += σ'·dL/ds with dL/ds_k = (c/S')(G_k − Σ_j (s_j/S') G_j) on the selected experts, S' = S + 1e-20.
template <typename T>
void router_backward(T* dlogits /*[N,E] +=*/, const T* dweight /*[N,K]*/, const T* scores /*[N,E]*/,
                     const int32_t* topk_idx /*[N,K]*/, int N, int E, int K, float routed_scale);
// Sequence-wise balance loss (§3.5, paper/Megatron form), mean over the B sequences of T tokens:
// L = mean_b α Σ_i f_i P_i with f from a plain top-K of the unbiased scores (constant), P from scores
// normalised over all experts. Returns L; if dlogits is non-null adds grad_scale·dL/dlogits.
template <typename T>
T router_balance_loss(T* dlogits /*[N,E] += | null*/, const T* scores /*[N,E]*/, int B, int T_, int E, int K,
                      float alpha, float grad_scale);
// loads[e] += number of (token, slot) pairs routed to e.
void router_count_loads(int32_t* loads /*[E] +=*/, const int32_t* topk_idx /*[N,K]*/, int N, int K, int E);
// bias[e] += gamma · sign(mean(loads) − loads[e]) (sign(0) = 0).
void router_update_bias(float* bias /*[E]*/, const int32_t* loads /*[E]*/, int E, float gamma);

// ---- token permutation to experts --------------------------------------------------------------------
// expert_offsets[e] = first sorted row of expert e (offsets[E] = N·K); sorted_rows[p] = n·K + k of the
// p-th sorted row (stable: increasing n·K + k within an expert); row_pos[n·K + k] = its sorted position.
void moe_permute_plan(int32_t* expert_offsets /*[E+1]*/, int32_t* sorted_rows /*[N·K]*/, int32_t* row_pos /*[N·K]*/,
                      const int32_t* topk_idx /*[N,K]*/, int N, int K, int E);
// xs[p,:] = x[sorted_rows[p] / K, :].
template <typename T>
void moe_permute_forward(T* xs /*[N·K,C]*/, const T* x /*[N,C]*/, const int32_t* sorted_rows /*[N·K]*/, int N,
                         int K, int C);
// dx[n,:] += Σ_k dxs[row_pos[n·K+k], :].
template <typename T>
void moe_permute_backward(T* dx /*[N,C] +=*/, const T* dxs /*[N·K,C]*/, const int32_t* row_pos /*[N·K]*/, int N,
                          int K, int C);
// out[n,:] += Σ_k weight[n,k] · ys[row_pos[n·K+k], :]   (accumulates: start from the shared expert / zero).
template <typename T>
void moe_unpermute_forward(T* out /*[N,C] +=*/, const T* ys /*[N·K,C]*/, const T* weight /*[N,K]*/,
                           const int32_t* row_pos /*[N·K]*/, int N, int K, int C);
// dys[row_pos[n,k],:] += weight[n,k]·dout[n,:];  dweight[n,k] += ⟨dout[n,:], ys[row_pos[n,k],:]⟩.
template <typename T>
void moe_unpermute_backward(T* dys /*[N·K,C] +=*/, T* dweight /*[N,K] +=*/, const T* dout /*[N,C]*/,
                            const T* ys /*[N·K,C]*/, const T* weight /*[N,K]*/, const int32_t* row_pos /*[N·K]*/,
                            int N, int K, int C);

// ---- cross-entropy with the output projection (unfused reference) ------------------------------------
// logits = z·Wᵀ [N,V], loss_n = logsumexp(logits_n) − logits_n[target_n] (0 where target = −1).
// Returns Σ_n loss_n (unscaled). If dz/dW are non-null, adds the gradient of loss_scale·Σ_n loss_n.
// If logits is non-null it receives the [N,V] logits.
template <typename T>
double cross_entropy(T* dz /*[N,C] += | null*/, T* dW /*[V,C] += | null*/, T* logits /*[N,V] | null*/,
                     T* token_loss /*[N] | null*/, const T* z /*[N,C]*/, const T* W /*[V,C]*/,
                     const int32_t* targets /*[N] | null*/, int N, int C, int V, float loss_scale);

// ---- optimizer --------------------------------------------------------------------------------------
// AdamW, fp32 master weights, bf16 moments (round-to-nearest-even after each update), step ≥ 1:
//   m = β1 m + (1−β1) g;  v = β2 v + (1−β2) g²   (computed in fp32, then stored as bf16)
//   θ -= lr·wd·θ;  θ -= lr · (m/(1−β1^step)) / (sqrt(v/(1−β2^step)) + eps)   (with the fp32 m, v)
void adamw_update(float* param /*[n]*/, bf16_t* m /*[n]*/, bf16_t* v /*[n]*/, const float* grad /*[n]*/, int64_t n,
                  int step, float lr, float beta1, float beta2, float eps, float weight_decay);

// ---- global-norm clipping ---------------------------------------------------------------------------
// sqrt(Σ over all buffers of x²), accumulated in fp64.
double global_norm(const float* const* bufs, const int64_t* sizes, int num_bufs);
// min(1, max_norm / (norm + 1e-6)).
float clip_scale(double norm, float max_norm);
// x *= scale for every element of every buffer.
void scale_buffers(float* const* bufs, const int64_t* sizes, int num_bufs, float scale);

}  // namespace shoal::kernels::ref
