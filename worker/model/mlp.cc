#include "worker/model/mlp.h"

#include <cstring>

#include "kernels/cpu/swiglu.h"

namespace shoal::model {

SwiGluMlp::SwiGluMlp(std::string prefix, std::string tag, int64_t hidden, int64_t intermediate, GemmMode mode)
    : prefix_(std::move(prefix)), tag_(std::move(tag)), H_(hidden), I_(intermediate), mode_(mode) {}

void SwiGluMlp::Declare(LayerPlans& p) {
  const int64_t N = p.max_tokens();
  ParamRef gu = p.params->Stack(prefix_ + "gate_up_proj", {ParamPart{prefix_ + "gate_proj.weight", {I_, H_}},
                                                           ParamPart{prefix_ + "up_proj.weight", {I_, H_}}});
  gate_up_.Declare(prefix_ + "gate_up_proj", gu, 2 * I_, H_, {I_, I_}, mode_, *p.cache);
  down_.Declare(prefix_ + "down_proj", p.params->Tensor(prefix_ + "down_proj.weight", {H_, I_}), H_, I_, {}, mode_,
                *p.cache);
  p.linear_needs->Merge(gate_up_.Needs(N));
  p.linear_needs->Merge(down_.Needs(N));
  gate_up_act_ = p.saved->F32(tag_ + ".gate_up", Shape{N, 2 * I_});
  m_ = p.saved->F32(tag_ + ".m", Shape{N, I_});
  dgate_up_ = p.dgrad->F32(tag_ + ".dgate_up", Shape{N, 2 * I_});
  dm_ = p.scratch->F32(tag_ + ".dm", Shape{N, I_});
}

void SwiGluMlp::PrepareWeights() {
  gate_up_.PrepareWeights();
  down_.PrepareWeights();
}

void SwiGluMlp::Forward(float* out, const float* u, const StepContext& ctx) {
  ForwardUp(u, ctx);
  ForwardDown(out, ctx);
}

void SwiGluMlp::ForwardUp(const float* u, const StepContext& ctx) {
  gate_up_.Forward(gate_up_act_, 2 * I_, u, H_, ctx.N, *ctx.linear);
  kernels::swiglu_forward(m_, gate_up_act_, static_cast<int>(ctx.N), static_cast<int>(I_));
}

void SwiGluMlp::ForwardDown(float* out, const StepContext& ctx) { down_.Forward(out, H_, m_, I_, ctx.N, *ctx.linear); }

void SwiGluMlp::BackwardInput(float* du, const float* dout, const StepContext& ctx) {
  down_.BackwardInput(dm_, dout, H_, ctx.N, *ctx.linear, /*accumulate=*/false);
  std::memset(dgate_up_, 0, sizeof(float) * ctx.N * 2 * I_);
  kernels::swiglu_backward(dgate_up_, dm_, gate_up_act_, static_cast<int>(ctx.N), static_cast<int>(I_));
  gate_up_.BackwardInput(du, dgate_up_, 2 * I_, ctx.N, *ctx.linear);
}

void SwiGluMlp::BackwardWeight(const float* u, const float* dout, const StepContext& ctx) {
  down_.BackwardWeight(dout, H_, m_, I_, ctx.N, *ctx.linear);
  gate_up_.BackwardWeight(dgate_up_, 2 * I_, u, H_, ctx.N, *ctx.linear);
}

}  // namespace shoal::model
