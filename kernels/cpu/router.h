// DeepSeek-V3 MoE router pieces (spec §3.2, §3.3, §3.5; backward per Appendix A); fast CPU versions.
// The router GEMM (logits = u·Eᵀ, fp32) is a plain GEMM done by the caller; these kernels start at logits.
// Shapes: N = tokens = B·T, E = routed experts, K = experts per token, G = expert groups.
// Limits: E ≤ 1024, K ≤ 64; E divisible by G with ≥ 2 experts per group when G > 1.
#pragma once

#include <cstdint>

namespace shoal::kernels {

// scores = sigmoid(logits) (saved for the backward). Selection uses scores + bias (bias null = 0): each of G
// contiguous groups scores the sum of its top-2 biased scores, the topk_group best groups stay, the other
// groups' experts are masked to −∞, and topk_idx gets the K best experts in decreasing biased score (ties:
// lower index first). topk_weight = routed_scale · s_k / (Σ_selected s + 1e-20) from the UNBIASED scores.
void router_forward(float* scores /*[N,E]*/, int32_t* topk_idx /*[N,K]*/, float* topk_weight /*[N,K]*/,
                    const float* logits /*[N,E]*/, const float* bias /*[E] | null*/, int N, int E, int K, int G,
                    int topk_group, float routed_scale);

// dlogits += s(1−s) · dL/ds, dL/ds_k = (c/S')·(G_k − Σ_j (s_j/S') G_j) on the selected experts (zero
// elsewhere), S' = Σ_selected s + 1e-20, c = routed_scale, G = dweight (the selection is constant).
void router_backward(float* dlogits /*[N,E] +=*/, const float* dweight /*[N,K]*/, const float* scores /*[N,E]*/,
                     const int32_t* topk_idx /*[N,K]*/, int N, int E, int K, float routed_scale);

// Complementary sequence-wise balance loss, paper/Megatron form, averaged over the B sequences of T tokens:
//   L_b = α Σ_i f_i P_i,  f_i = E/(K·T) · #{t : i ∈ plain top-K of the UNBIASED s_t (no groups)} (constant),
//   P_i = (1/T) Σ_t s_{i,t} / Σ_j s_{j,t}.
// Returns mean_b L_b. If dlogits is non-null, adds grad_scale · d(mean_b L_b)/dlogits (Appendix A).
float router_balance_loss(float* dlogits /*[N,E] += | null*/, const float* scores /*[N,E]*/, int B, int T, int E,
                          int K, float alpha, float grad_scale);

// loads[e] += number of (token, slot) assignments to expert e (zero it at the start of a step; sum it over
// micro-batches and data-parallel ranks before router_update_bias).
void router_count_loads(int32_t* loads /*[E] +=*/, const int32_t* topk_idx /*[N,K]*/, int N, int K, int E);

// Auxiliary-loss-free balancing (§3.3): bias[e] += gamma · sign(mean(loads) − loads[e]), sign(0) = 0.
void router_update_bias(float* bias /*[E]*/, const int32_t* loads /*[E]*/, int E, float gamma);

}  // namespace shoal::kernels
