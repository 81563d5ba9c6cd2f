// DeepSeekMoE FFN (reference/deepseek-v3.md §3): y = shared_experts(u) + Σ_k g_k·expert_k(u), sigmoid router
// in fp32 with the selection-only e_score_correction_bias, group-limited top-K, normalised and scaled gate
// values, the sequence-wise balance loss (§3.5) and the per-expert load counts of the aux-loss-free bias update
// (§3.3). No token dropping.
//
// Four phases, so that expert-parallel communication can later sit between them (DESIGN.md §3):
//   Route     router GEMM + top-K, balance loss, loads
//   Dispatch  tokens sorted by expert: xs[N·K, H] (the all-to-all's send buffer)
//   Experts   the held experts' SwiGLUs on their rows (grouped GEMM) and the shared expert on every token
//   Combine   out = shared + Σ_k g_k·ys (the all-to-all's receive buffer back in token order)
// Backward runs them in reverse; BackwardWeight adds the router, shared and routed experts' weight gradients.
// A model that holds only experts [expert_begin, expert_end) computes their rows; the other rows of ys stay
// zero until the expert-parallel exchange fills them.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "spec/model_config.h"
#include "worker/model/layer_context.h"
#include "worker/model/linear.h"
#include "worker/model/mlp.h"

namespace shoal::model {

class MoeFfn {
 public:
  MoeFfn(const ModelConfig& config, int64_t layer_idx, int64_t expert_begin, int64_t expert_end, GemmMode mode,
         float balance_alpha);

  void Declare(LayerPlans& plans);
  void PrepareWeights();

  // Forward phases; u[N,H] (the normed FFN input) must stay valid until BackwardWeight.
  void Route(const float* u, const StepContext& ctx);
  void Dispatch(const StepContext& ctx);
  void Experts(const StepContext& ctx);
  // out[N,H] = base[N,H] + MoE(u) (base is the residual; out may equal base).
  void Combine(float* out, const float* base, const StepContext& ctx);

  // du[N,H] += dMoE/du · dout (dout[N,H] must stay valid until BackwardWeight): the three phases below in order.
  void BackwardInput(float* du, const float* dout, const StepContext& ctx);
  // Backward phases (communication later sits between them, as in the forward): Combine's gradient dys[N·K, H]
  // (sent back to the experts' owners) and the gate values' gradient; the experts' input gradient dxs[N·K, H]
  // (sent back to the tokens' owners) and the shared expert's du; then the permutation and the router into du.
  void BackwardCombine(const float* dout, const StepContext& ctx);
  void BackwardExperts(float* du, const StepContext& ctx);
  void BackwardDispatch(float* du, const StepContext& ctx);
  void BackwardWeight(const StepContext& ctx);

  // The last forward's routing and balance loss (this micro-batch, mean over its sequences).
  const int32_t* topk_idx() const { return topk_idx_; }
  const float* topk_weight() const { return topk_weight_; }
  const float* scores() const { return scores_; }
  double balance_loss() const { return balance_loss_; }
  // Expert loads accumulated by training forwards since ZeroLoads.
  const std::vector<int32_t>& loads() const { return loads_; }
  void ZeroLoads();
  void SetLoads(const std::vector<int32_t>& loads) { loads_ = loads; }
  void UpdateBias(float gamma);
  float* bias() const { return bias_.w; }

  int64_t layer_idx() const { return layer_idx_; }

 private:
  const ModelConfig& c_;
  int64_t layer_idx_, e0_, e1_;
  int64_t H_, E_, K_, Im_;
  GemmMode mode_;
  float alpha_;

  ParamRef gate_, bias_;
  ExpertLinear experts_gate_up_, experts_down_;
  std::unique_ptr<SwiGluMlp> shared_;

  std::vector<int32_t> loads_;  // [E]
  double balance_loss_ = 0;
  const float* u_ = nullptr;
  const float* dout_ = nullptr;

  // Saved.
  float *scores_, *topk_weight_, *xs_, *gu_s_, *m_s_, *ys_, *shared_out_;
  int32_t *topk_idx_, *offsets_, *local_offsets_, *sorted_rows_, *row_pos_;
  // Dgrad (kept between the backward phases and for BackwardWeight).
  float *dlogits_, *dys_, *dgu_s_, *dweight_, *dxs_;
  // Scratch.
  float *logits_, *dm_s_;
};

}  // namespace shoal::model
