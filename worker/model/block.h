// One pre-norm decoder layer (reference/deepseek-v3.md §1.1): MLA sub-block, then post_attention_layernorm and
// the FFN (dense SwiGLU for main layers < first_k_dense_replace, MoE otherwise and in every MTP layer), each with
// its residual. The unit pipeline stages are cut into; the backward is split into BackwardInput (dX, plus the
// norm weights' gradients) and BackwardWeight (the Linear and router weight gradients) for zero-bubble schedules.
#pragma once

#include <cstdint>
#include <memory>

#include "common/status.h"
#include "spec/model_config.h"
#include "worker/model/layer_context.h"
#include "worker/model/mla.h"
#include "worker/model/mlp.h"
#include "worker/model/moe.h"

namespace shoal::model {

class DecoderBlock {
 public:
  DecoderBlock(const ModelConfig& config, int64_t layer_idx, int64_t expert_begin, int64_t expert_end,
               GemmMode mode, float balance_alpha, double ep_capacity_factor);

  void Declare(LayerPlans& plans);
  void PrepareWeights();
  // y[N,H] = block(x[N,H]). Errors come from the MoE layer's expert-parallel exchange only.
  Status Forward(float* y, const float* x, const StepContext& ctx);
  // g[N,H]: in dL/dy, out dL/dx (in place); x is the forward's input.
  Status BackwardInput(float* g, const float* x, const StepContext& ctx);
  void BackwardWeight(const StepContext& ctx);

  int64_t layer_idx() const { return layer_idx_; }
  MoeFfn* moe() const { return moe_.get(); }  // null for a dense layer

 private:
  const ModelConfig& c_;
  int64_t layer_idx_;
  MlaAttention attn_;
  std::unique_ptr<SwiGluMlp> mlp_;
  std::unique_ptr<MoeFfn> moe_;
  ParamRef w_ffn_norm_;
  float *h_mid_, *u_, *rstd_ffn_;  // saved
  float* d_ffn_out_;               // dgrad: dL/dy, the FFN output's gradient
  float *ffn_out_, *du_, *rms_scratch_;  // scratch
};

}  // namespace shoal::model
