// Multi-head Latent Attention sub-block (reference/deepseek-v3.md §2.1-2.4, naive/training form), with its
// pre-norm and residual:  h_mid = x + o_proj(Attn(MLA projections of input_layernorm(x))).
//
//   q:  q_a_proj → q_a_layernorm → q_b_proj (or q_proj when q_lora_rank = 0), head-major [nope | rope]
//   kv: kv_a_proj_with_mqa → [latent d_c | rope key d_R]; kv_a_layernorm on the latent only; kv_b_proj
//       head-major [k_nope | v]; the rope key comes straight from the projection and is shared by all heads
//   interleaved RoPE on the q rope slices and the rope key; causal (or block-diagonal) softmax with
//   config.softmax_scale(); o_proj reads n_h·d_v.
// Backward: BackwardInput turns dL/dh_mid into dL/dx (in place, the residual included) and computes the norm
// weights' gradients; BackwardWeight adds the five projections' weight gradients.
#pragma once

#include <cstdint>

#include "spec/model_config.h"
#include "worker/model/layer_context.h"
#include "worker/model/linear.h"

namespace shoal::model {

class MlaAttention {
 public:
  MlaAttention(const ModelConfig& config, int64_t layer_idx, GemmMode mode);

  void Declare(LayerPlans& plans);
  void PrepareWeights();
  // h_mid[N,H] = x[N,H] + attention(x).
  void Forward(float* h_mid, const float* x, const StepContext& ctx);
  // g[N,H]: in dL/dh_mid, out dL/dx (accumulated in place); x is the forward's input.
  void BackwardInput(float* g, const float* x, const StepContext& ctx);
  void BackwardWeight(const StepContext& ctx);

 private:
  const ModelConfig& c_;
  int64_t layer_idx_;
  GemmMode mode_;
  int64_t H_, nh_, dn_, dr_, dqk_, dv_, dc_, dqr_;  // dqr_ = q_lora_rank

  // Parameters.
  ParamRef w_in_norm_, w_q_norm_, w_kv_norm_;
  Linear q_a_, q_b_, q_proj_, kv_a_, kv_b_, o_proj_;
  // Saved activations ([N, ...] with N = max tokens; lse [B, n_h, T]).
  float *x_norm_, *rstd_in_, *cq_raw_, *rstd_q_, *cq_, *q_, *latent_, *rstd_kv_, *ckv_, *k_, *v_, *o_, *lse_;
  // Output gradients of the Linears (dgrad region).
  float *d_out_, *dq_, *dcq_raw_, *dkv_, *dkv_raw_;  // dq_: dL/dq (after un-rotating)
  // Scratch.
  float *kv_raw_, *kv_, *do_, *dk_, *dvv_, *dcq_, *dckv_, *dlatent_, *dx_norm_, *rms_scratch_;
};

}  // namespace shoal::model
