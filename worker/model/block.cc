#include "worker/model/block.h"

#include <cstring>

#include "kernels/cpu/rmsnorm.h"

namespace shoal::model {

DecoderBlock::DecoderBlock(const ModelConfig& config, int64_t layer_idx, int64_t expert_begin, int64_t expert_end,
                           GemmMode mode, float balance_alpha, double ep_capacity_factor)
    : c_(config), layer_idx_(layer_idx), attn_(config, layer_idx, mode) {
  if (config.is_moe_layer(layer_idx)) {
    moe_ = std::make_unique<MoeFfn>(config, layer_idx, expert_begin, expert_end, mode, balance_alpha,
                                    ep_capacity_factor);
  } else {
    mlp_ = std::make_unique<SwiGluMlp>(LayerPrefix(layer_idx) + "mlp.", "layers." + std::to_string(layer_idx) + ".mlp",
                                       config.hidden_size, config.intermediate_size, mode);
  }
}

void DecoderBlock::Declare(LayerPlans& p) {
  const int64_t N = p.max_tokens(), H = c_.hidden_size;
  attn_.Declare(p);
  w_ffn_norm_ = p.params->Tensor(LayerPrefix(layer_idx_) + "post_attention_layernorm.weight", {H});
  if (moe_) {
    moe_->Declare(p);
  } else {
    mlp_->Declare(p);
  }
  const std::string s = "layers." + std::to_string(layer_idx_) + ".";
  h_mid_ = p.saved->F32(s + "h_mid", Shape{N, H});
  u_ = p.saved->F32(s + "u", Shape{N, H});
  rstd_ffn_ = p.saved->F32(s + "rstd_ffn", Shape{N});
  d_ffn_out_ = p.dgrad->F32(s + "d_ffn_out", Shape{N, H});
  ffn_out_ = p.scratch->F32(s + "ffn_out", Shape{N, H});
  du_ = p.scratch->F32(s + "du", Shape{N, H});
  rms_scratch_ = p.scratch->F32(
      s + "rms_scratch",
      Shape{static_cast<int64_t>(kernels::rmsnorm_backward_scratch_floats(static_cast<int>(N), static_cast<int>(H)))});
}

void DecoderBlock::PrepareWeights() {
  attn_.PrepareWeights();
  if (moe_) {
    moe_->PrepareWeights();
  } else {
    mlp_->PrepareWeights();
  }
}

Status DecoderBlock::Forward(float* y, const float* x, const StepContext& ctx) {
  const int64_t H = c_.hidden_size;
  attn_.Forward(h_mid_, x, ctx);
  kernels::rmsnorm_forward(u_, rstd_ffn_, h_mid_, w_ffn_norm_.w, static_cast<int>(ctx.N), static_cast<int>(H),
                           static_cast<float>(c_.rms_norm_eps));
  if (moe_) return moe_->Forward(y, h_mid_, u_, ctx);
  mlp_->Forward(ffn_out_, u_, ctx);
  for (int64_t i = 0; i < ctx.N * H; ++i) y[i] = h_mid_[i] + ffn_out_[i];
  return Status::OK();
}

Status DecoderBlock::BackwardInput(float* g, const float* x, const StepContext& ctx) {
  const int64_t H = c_.hidden_size;
  std::memcpy(d_ffn_out_, g, sizeof(float) * ctx.N * H);
  std::memset(du_, 0, sizeof(float) * ctx.N * H);
  if (moe_) {
    RETURN_IF_ERROR(moe_->BackwardInput(du_, d_ffn_out_, ctx));
  } else {
    mlp_->BackwardInput(du_, d_ffn_out_, ctx);
  }
  kernels::rmsnorm_backward(g, w_ffn_norm_.g, rms_scratch_, du_, rstd_ffn_, h_mid_, w_ffn_norm_.w,
                            static_cast<int>(ctx.N), static_cast<int>(H));
  attn_.BackwardInput(g, x, ctx);
  return Status::OK();
}

void DecoderBlock::BackwardWeight(const StepContext& ctx) {
  if (moe_) {
    moe_->BackwardWeight(u_, d_ffn_out_, ctx);
  } else {
    mlp_->BackwardWeight(u_, d_ffn_out_, ctx);
  }
  attn_.BackwardWeight(ctx);
}

}  // namespace shoal::model
