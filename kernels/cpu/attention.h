// Causal softmax attention for MLA's head dims (Dqk ≠ Dv in general), fp32, flash-style: the forward saves
// only logsumexp per (sequence, head, query) and the backward recomputes the probabilities; fast CPU version
// (blocked 32×32 tiles, online softmax, AVX-512 micro-kernels; parallel over (b, h)).
// Shapes: B sequences of T tokens, NH heads, Dqk = query/key head dim, Dv = value head dim (both ≤ 256).
// Masking: key j is visible to query i iff j ≤ i and, when seg != null, seg[b,j] == seg[b,i] (block-diagonal
// causal mask for packed samples: give each packed sample its own id).
#pragma once

#include <cstdint>

namespace shoal::kernels {

// out[b,i,h,:] = Σ_j softmax_j(scale·⟨q[b,i,h], k[b,j,h]⟩)·v[b,j,h,:];
// lse[b,h,i] = log Σ_j exp(scale·⟨q, k⟩) over the visible j (natural log), saved for the backward.
void attention_forward(float* out /*[B,T,NH,Dv]*/, float* lse /*[B,NH,T]*/, const float* q /*[B,T,NH,Dqk]*/,
                       const float* k /*[B,T,NH,Dqk]*/, const float* v /*[B,T,NH,Dv]*/,
                       const int32_t* seg /*[B,T] | null*/, int B, int T, int NH, int Dqk, int Dv, float scale);

// dq, dk, dv += the gradients of Σ dout ⊙ out (P recomputed from lse; D_i = ⟨dout_i, out_i⟩).
void attention_backward(float* dq /*[B,T,NH,Dqk] +=*/, float* dk /*[B,T,NH,Dqk] +=*/, float* dv /*[B,T,NH,Dv] +=*/,
                        const float* dout /*[B,T,NH,Dv]*/, const float* out /*[B,T,NH,Dv]*/,
                        const float* lse /*[B,NH,T]*/, const float* q /*[B,T,NH,Dqk]*/,
                        const float* k /*[B,T,NH,Dqk]*/, const float* v /*[B,T,NH,Dv]*/,
                        const int32_t* seg /*[B,T] | null*/, int B, int T, int NH, int Dqk, int Dv, float scale);

}  // namespace shoal::kernels
