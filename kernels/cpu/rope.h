// Decoupled RoPE in DeepSeek's interleaved-pair convention (spec §2.3): pair (2j, 2j+1) of a head is rotated
// by angle pos·θ_j, θ_j = base^(−2j/D), optionally YaRN-scaled (§2.4). Fast CPU version plus the host helpers
// that build the frequency and cos/sin tables every implementation (ref, CPU, CUDA) consumes.
//
// Tensor layout: [N, NH, D] where consecutive heads of one token are `ld` floats apart (ld ≥ D), so a token
// is NH·ld floats: ld = D for a contiguous tensor; ld = Dqk with the pointer at the rope slice (offset
// qk_nope_head_dim) for MLA's q; NH = 1, ld = kv_lora_rank + D for the shared rope key inside the
// kv_a_proj_with_mqa output. Positions are per token (int32), so packed samples may restart at 0.
#pragma once

#include <cstdint>

namespace shoal::kernels {

// YaRN context extension parameters (HF rope_scaling with type "yarn"); factor ≤ 1 means plain RoPE.
struct YarnConfig {
  float factor = 1.0f;              // s
  int original_max_position = 4096; // L0 (original_max_position_embeddings)
  float beta_fast = 32.0f;
  float beta_slow = 1.0f;
};

// inv_freq[j] = base^(−2j/D) for j < D/2; with YaRN (factor > 1): θ'_j = θ_j·keep_j + (θ_j/s)·(1 − keep_j),
// keep_j = 1 − clamp((j − low)/(high − low), 0, 1), low = max(floor(corr(β_fast)), 0),
// high = min(ceil(corr(β_slow)), D − 1), corr(r) = D·ln(L0/(2πr)) / (2 ln base).
void rope_inv_freq(float* inv_freq /*[D/2]*/, int D, float base, const YarnConfig* yarn /*null = plain*/);
// The YaRN attention factor 0.1·mscale·ln(s) + 1 (1 when s ≤ 1); multiply the softmax scale by its square.
float yarn_mscale(float factor, float mscale);
// cos_sin[p, j] = (cos, sin) of (float)p · inv_freq[j] for p < P (angle in fp32 as HF does, cos/sin in fp64).
void rope_table(float* cos_sin /*[P,D/2,2]*/, const float* inv_freq /*[D/2]*/, int P, int D);

// out = R(pos·θ)·x per head. out may equal x (in place). Every pos[n] must be in [0, P).
void rope_forward(float* out /*[N,NH,D] @ld*/, const float* x /*[N,NH,D] @ld*/, const int32_t* pos /*[N]*/,
                  const float* cos_sin /*[P,D/2,2]*/, int N, int NH, int D, int ld);
// dx = R(−pos·θ)·dout: OVERWRITES dx (the one backward that does not accumulate), and dx may equal dout so
// the gradient of an in-place rotation can be un-rotated in place.
void rope_backward(float* dx /*[N,NH,D] @ld*/, const float* dout /*[N,NH,D] @ld*/, const int32_t* pos /*[N]*/,
                   const float* cos_sin /*[P,D/2,2]*/, int N, int NH, int D, int ld);

}  // namespace shoal::kernels
