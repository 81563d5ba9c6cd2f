// Token permutation to experts and back (the dispatch/combine building blocks of an MoE layer); fast CPU.
// Shapes: N = tokens, K = experts per token, E = experts, C = channels; "rows" are the N·K (token, slot)
// pairs, identified by r = n·K + k.
//
//   moe_permute_plan   topk_idx → per-expert offsets and a stable expert-sorted order of the rows
//   moe_permute        x [N,C] → xs [N·K,C] (row p holds the token of sorted row p): the experts' input
//   moe_unpermute      ys [N·K,C] (the experts' output, same order) → out[n] += Σ_k w[n,k]·ys[pos(n,k)]
#pragma once

#include <cstdint>

namespace shoal::kernels {

// expert_offsets[e] = first sorted position of expert e (offsets[E] = N·K), so expert e owns sorted rows
// [offsets[e], offsets[e+1]); sorted_rows[p] = r of the p-th sorted row, stable (increasing r within an
// expert); row_pos[r] = p (the inverse). Single-threaded counting sort, O(N·K + E).
void moe_permute_plan(int32_t* expert_offsets /*[E+1]*/, int32_t* sorted_rows /*[N·K]*/, int32_t* row_pos /*[N·K]*/,
                      const int32_t* topk_idx /*[N,K]*/, int N, int K, int E);

// xs[p,:] = x[sorted_rows[p] / K, :].
void moe_permute_forward(float* xs /*[N·K,C]*/, const float* x /*[N,C]*/, const int32_t* sorted_rows /*[N·K]*/,
                         int N, int K, int C);
// dx[n,:] += Σ_k dxs[row_pos[n·K+k], :]  (a gather: deterministic, no atomics).
void moe_permute_backward(float* dx /*[N,C] +=*/, const float* dxs /*[N·K,C]*/, const int32_t* row_pos /*[N·K]*/,
                          int N, int K, int C);

// out[n,:] += Σ_k weight[n,k]·ys[row_pos[n·K+k], :]. Accumulates, so out can start as the shared expert's
// output (or the residual stream, or zero).
void moe_unpermute_forward(float* out /*[N,C] +=*/, const float* ys /*[N·K,C]*/, const float* weight /*[N,K]*/,
                           const int32_t* row_pos /*[N·K]*/, int N, int K, int C);
// dys[row_pos[n,k],:] += weight[n,k]·dout[n,:];  dweight[n,k] += ⟨dout[n,:], ys[row_pos[n,k],:]⟩.
void moe_unpermute_backward(float* dys /*[N·K,C] +=*/, float* dweight /*[N,K] +=*/, const float* dout /*[N,C]*/,
                            const float* ys /*[N·K,C]*/, const float* weight /*[N,K]*/,
                            const int32_t* row_pos /*[N·K]*/, int N, int K, int C);

}  // namespace shoal::kernels
