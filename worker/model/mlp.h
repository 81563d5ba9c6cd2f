// SwiGLU MLP down(SiLU(gate(x)) ⊙ up(x)) (reference/deepseek-v3.md §1.1, §3.6): the dense FFN of the first
// layers and the shared expert of MoE layers. gate_proj and up_proj live back to back in one storage, so one
// GEMM against the fused [2I, H] weight computes both (fp8 still quantises each tensor on its own).
#pragma once

#include <cstdint>
#include <string>

#include "worker/model/layer_context.h"
#include "worker/model/linear.h"

namespace shoal::model {

class SwiGluMlp {
 public:
  // prefix: "model.layers.0.mlp." or "model.layers.3.mlp.shared_experts."; buffers named after `tag`.
  SwiGluMlp(std::string prefix, std::string tag, int64_t hidden, int64_t intermediate, GemmMode mode);

  void Declare(LayerPlans& plans);
  void PrepareWeights();
  // out[N,H] = MLP(u[N,H]).
  void Forward(float* out, const float* u, const StepContext& ctx);
  // The same in two halves (so that each can overlap an exchange): SiLU(gate(u)) ⊙ up(u), then the down-projection.
  void ForwardUp(const float* u, const StepContext& ctx);
  void ForwardDown(float* out, const StepContext& ctx);
  // du[N,H] += dMLP/du · dout.
  void BackwardInput(float* du, const float* dout, const StepContext& ctx);
  // dW += ... from the forward's input u and the output gradient dout of BackwardInput.
  void BackwardWeight(const float* u, const float* dout, const StepContext& ctx);

 private:
  std::string prefix_, tag_;
  int64_t H_, I_;
  GemmMode mode_;
  Linear gate_up_, down_;
  float *gate_up_act_, *m_;  // saved [N,2I], [N,I]
  float* dgate_up_;          // dgrad [N,2I]
  float* dm_;                // scratch [N,I]
};

}  // namespace shoal::model
