#include "worker/model/moe.h"

#include <cstring>

#include "common/check.h"
#include "kernels/cpu/blas.h"
#include "kernels/cpu/permute.h"
#include "kernels/cpu/router.h"
#include "kernels/cpu/swiglu.h"

namespace shoal::model {

MoeFfn::MoeFfn(const ModelConfig& config, int64_t layer_idx, int64_t expert_begin, int64_t expert_end,
               GemmMode mode, float balance_alpha)
    : c_(config),
      layer_idx_(layer_idx),
      e0_(expert_begin),
      e1_(expert_end),
      H_(config.hidden_size),
      E_(config.n_routed_experts),
      K_(config.num_experts_per_tok),
      Im_(config.moe_intermediate_size),
      mode_(mode),
      alpha_(balance_alpha),
      loads_(static_cast<size_t>(config.n_routed_experts), 0) {
  if (config.n_shared_experts > 0) {
    shared_ = std::make_unique<SwiGluMlp>(LayerPrefix(layer_idx) + "mlp.shared_experts.",
                                          "layers." + std::to_string(layer_idx) + ".shared",
                                          config.hidden_size, config.n_shared_experts * config.moe_intermediate_size,
                                          mode);
  }
}

void MoeFfn::Declare(LayerPlans& p) {
  const std::string pre = LayerPrefix(layer_idx_) + "mlp.";
  const int64_t N = p.max_tokens(), R = N * K_, Eh = e1_ - e0_;
  gate_ = p.params->Tensor(pre + "gate.weight", {E_, H_});
  bias_ = p.params->Tensor(pre + "gate.e_score_correction_bias", {E_}, /*trainable=*/false);

  std::vector<ParamPart> gate_up_parts, down_parts;
  for (int64_t e = e0_; e < e1_; ++e) {
    const std::string x = pre + "experts." + std::to_string(e) + ".";
    gate_up_parts.push_back({x + "gate_proj.weight", {Im_, H_}});
    gate_up_parts.push_back({x + "up_proj.weight", {Im_, H_}});
    down_parts.push_back({x + "down_proj.weight", {H_, Im_}});
  }
  const std::string range = "[" + std::to_string(e0_) + ":" + std::to_string(e1_) + "]";
  experts_gate_up_.Declare(pre + "experts" + range + ".gate_up_proj",
                           p.params->Stack(pre + "experts" + range + ".gate_up_proj", gate_up_parts), Eh, 2 * Im_, H_,
                           {Im_, Im_}, mode_, *p.cache);
  experts_down_.Declare(pre + "experts" + range + ".down_proj",
                        p.params->Stack(pre + "experts" + range + ".down_proj", down_parts), Eh, H_, Im_, {}, mode_,
                        *p.cache);
  if (shared_) shared_->Declare(p);
  p.linear_needs->Merge(experts_gate_up_.Needs(R));
  p.linear_needs->Merge(experts_down_.Needs(R));

  const std::string s = "layers." + std::to_string(layer_idx_) + ".moe.";
  BufferPlan& sv = *p.saved;
  scores_ = sv.F32(s + "scores", Shape{N, E_});
  topk_idx_ = sv.I32(s + "topk_idx", Shape{N, K_});
  topk_weight_ = sv.F32(s + "topk_weight", Shape{N, K_});
  offsets_ = sv.I32(s + "offsets", Shape{E_ + 1});
  local_offsets_ = sv.I32(s + "local_offsets", Shape{Eh + 1});
  sorted_rows_ = sv.I32(s + "sorted_rows", Shape{R});
  row_pos_ = sv.I32(s + "row_pos", Shape{R});
  xs_ = sv.F32(s + "xs", Shape{R, H_});
  gu_s_ = sv.F32(s + "gate_up", Shape{R, 2 * Im_});
  m_s_ = sv.F32(s + "m", Shape{R, Im_});
  ys_ = sv.F32(s + "ys", Shape{R, H_});
  shared_out_ = shared_ ? sv.F32(s + "shared_out", Shape{N, H_}) : nullptr;

  BufferPlan& dg = *p.dgrad;
  dlogits_ = dg.F32(s + "dlogits", Shape{N, E_});
  dys_ = dg.F32(s + "dys", Shape{R, H_});
  dgu_s_ = dg.F32(s + "dgate_up", Shape{R, 2 * Im_});
  dweight_ = dg.F32(s + "dweight", Shape{N, K_});
  dxs_ = dg.F32(s + "dxs", Shape{R, H_});

  BufferPlan& sc = *p.scratch;
  logits_ = sc.F32(s + "logits", Shape{N, E_});
  dm_s_ = sc.F32(s + "dm", Shape{R, Im_});
}

void MoeFfn::PrepareWeights() {
  experts_gate_up_.PrepareWeights();
  experts_down_.PrepareWeights();
  if (shared_) shared_->PrepareWeights();
}

void MoeFfn::Route(const float* u, const StepContext& ctx) {
  u_ = u;
  const int n = static_cast<int>(ctx.N), E = static_cast<int>(E_), K = static_cast<int>(K_);
  // Router in fp32 whatever the precision (§3.2 step 1, §5.4).
  kernels::cpu::sgemm(false, true, ctx.N, E_, H_, 1.f, u, H_, gate_.w, H_, 0.f, logits_, E_);
  kernels::router_forward(scores_, topk_idx_, topk_weight_, logits_, bias_.w, n, E, K,
                          static_cast<int>(c_.n_group), static_cast<int>(c_.topk_group),
                          static_cast<float>(c_.routed_scaling_factor));
  balance_loss_ = kernels::router_balance_loss(nullptr, scores_, ctx.B, ctx.T, E, K, alpha_, 0.f);
  if (ctx.training) kernels::router_count_loads(loads_.data(), topk_idx_, n, K, E);
}

void MoeFfn::Dispatch(const StepContext& ctx) {
  const int n = static_cast<int>(ctx.N), K = static_cast<int>(K_);
  kernels::moe_permute_plan(offsets_, sorted_rows_, row_pos_, topk_idx_, n, K, static_cast<int>(E_));
  for (int64_t e = 0; e <= e1_ - e0_; ++e) local_offsets_[e] = offsets_[e0_ + e] - offsets_[e0_];
  kernels::moe_permute_forward(xs_, u_, sorted_rows_, n, K, static_cast<int>(H_));
}

void MoeFfn::Experts(const StepContext& ctx) {
  const int64_t R = ctx.N * K_, r0 = offsets_[e0_], r1 = offsets_[e1_];
  const LinearWorkspace& ws = *ctx.linear;
  experts_gate_up_.Forward(gu_s_ + r0 * 2 * Im_, xs_ + r0 * H_, local_offsets_, ws);
  kernels::swiglu_forward(m_s_ + r0 * Im_, gu_s_ + r0 * 2 * Im_, static_cast<int>(r1 - r0), static_cast<int>(Im_));
  experts_down_.Forward(ys_ + r0 * H_, m_s_ + r0 * Im_, local_offsets_, ws);
  // Rows of experts held elsewhere: zero until the expert-parallel exchange fills them.
  std::memset(ys_, 0, sizeof(float) * r0 * H_);
  std::memset(ys_ + r1 * H_, 0, sizeof(float) * (R - r1) * H_);
  if (shared_) shared_->Forward(shared_out_, u_, ctx);
}

void MoeFfn::Combine(float* out, const float* base, const StepContext& ctx) {
  const int64_t n = ctx.N * H_;
  if (shared_) {
    for (int64_t i = 0; i < n; ++i) out[i] = base[i] + shared_out_[i];
  } else if (out != base) {
    std::memcpy(out, base, sizeof(float) * n);
  }
  kernels::moe_unpermute_forward(out, ys_, topk_weight_, row_pos_, static_cast<int>(ctx.N), static_cast<int>(K_),
                                 static_cast<int>(H_));
}

void MoeFfn::BackwardInput(float* du, const float* dout, const StepContext& ctx) {
  BackwardCombine(dout, ctx);
  BackwardExperts(du, ctx);
  BackwardDispatch(du, ctx);
}

void MoeFfn::BackwardCombine(const float* dout, const StepContext& ctx) {
  dout_ = dout;
  const int64_t R = ctx.N * K_;
  std::memset(dys_, 0, sizeof(float) * R * H_);
  std::memset(dweight_, 0, sizeof(float) * ctx.N * K_);
  kernels::moe_unpermute_backward(dys_, dweight_, dout, ys_, topk_weight_, row_pos_, static_cast<int>(ctx.N),
                                  static_cast<int>(K_), static_cast<int>(H_));
}

void MoeFfn::BackwardExperts(float* du, const StepContext& ctx) {
  const int64_t R = ctx.N * K_, r0 = offsets_[e0_], r1 = offsets_[e1_];
  const LinearWorkspace& ws = *ctx.linear;
  std::memset(dm_s_ + r0 * Im_, 0, sizeof(float) * (r1 - r0) * Im_);  // the grouped GEMM accumulates
  experts_down_.BackwardInput(dm_s_ + r0 * Im_, dys_ + r0 * H_, local_offsets_, ws);
  std::memset(dgu_s_, 0, sizeof(float) * R * 2 * Im_);
  kernels::swiglu_backward(dgu_s_ + r0 * 2 * Im_, dm_s_ + r0 * Im_, gu_s_ + r0 * 2 * Im_, static_cast<int>(r1 - r0),
                           static_cast<int>(Im_));
  // Rows of experts held elsewhere: their input gradient arrives through the expert-parallel exchange.
  std::memset(dxs_, 0, sizeof(float) * R * H_);
  experts_gate_up_.BackwardInput(dxs_ + r0 * H_, dgu_s_ + r0 * 2 * Im_, local_offsets_, ws);
  if (shared_) shared_->BackwardInput(du, dout_, ctx);
}

void MoeFfn::BackwardDispatch(float* du, const StepContext& ctx) {
  const int n = static_cast<int>(ctx.N), K = static_cast<int>(K_), E = static_cast<int>(E_);
  kernels::moe_permute_backward(du, dxs_, row_pos_, n, K, static_cast<int>(H_));
  // Router: gate values (Appendix A) and the balance loss, then through the router GEMM (fp32).
  std::memset(dlogits_, 0, sizeof(float) * ctx.N * E_);
  kernels::router_backward(dlogits_, dweight_, scores_, topk_idx_, n, E, K,
                           static_cast<float>(c_.routed_scaling_factor));
  if (ctx.balance_grad_scale != 0.f) {
    kernels::router_balance_loss(dlogits_, scores_, ctx.B, ctx.T, E, K, alpha_, ctx.balance_grad_scale);
  }
  kernels::cpu::sgemm(false, false, ctx.N, H_, E_, 1.f, dlogits_, E_, gate_.w, H_, 1.f, du, H_);
}

void MoeFfn::BackwardWeight(const StepContext& ctx) {
  const int64_t r0 = offsets_[e0_];
  const LinearWorkspace& ws = *ctx.linear;
  kernels::cpu::sgemm(true, false, E_, H_, ctx.N, 1.f, dlogits_, E_, u_, H_, 1.f, gate_.g, H_);
  if (shared_) shared_->BackwardWeight(ctx);
  experts_down_.BackwardWeight(dys_ + r0 * H_, m_s_ + r0 * Im_, local_offsets_, ws);
  experts_gate_up_.BackwardWeight(dgu_s_ + r0 * 2 * Im_, xs_ + r0 * H_, local_offsets_, ws);
}

void MoeFfn::ZeroLoads() { std::fill(loads_.begin(), loads_.end(), 0); }

void MoeFfn::UpdateBias(float gamma) {
  kernels::router_update_bias(bias_.w, loads_.data(), static_cast<int>(E_), gamma);
}

}  // namespace shoal::model
