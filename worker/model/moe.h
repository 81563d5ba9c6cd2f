// DeepSeekMoE FFN (reference/deepseek-v3.md §3): y = shared_experts(u) + Σ_k g_k·expert_k(u), sigmoid router
// in fp32 with the selection-only e_score_correction_bias, group-limited top-K, normalised and scaled gate
// values, the sequence-wise balance loss (§3.5) and the per-expert load counts of the aux-loss-free bias update
// (§3.3). No token dropping.
//
// Four phases (DESIGN.md §3 "Overlap"):
//   Route     router GEMM + top-K, balance loss, loads; rows sorted by expert: xs[N·K, H]
//   Dispatch  (expert parallel) the rows go to their experts' owners      | the shared expert's up-projection
//   Experts   the held experts' SwiGLUs on their rows (grouped GEMM)          runs meanwhile
//   Combine   (expert parallel) the outputs come back                     | the shared expert's down-projection
//             out = base + shared + Σ_k g_k·ys
// Backward mirrors it: the output gradients take the dispatch path (the shared expert's input gradient
// overlaps), the owners run the experts' backward, the input gradients come back (overlapped by the routed
// experts' weight gradients when they are computed in the same call), then the permutation and the router.
//
// A layer holding every routed expert runs them in place on xs. A layer holding a proper part of them (EP > 1,
// expert_parallel.h) exchanges rows through its ExpertExchange: what its experts receive is regrouped by local
// expert into xe[cap, H] (rows from source 0, 1, ... within each expert), the outputs are regrouped back into
// per-source blocks for the combine. cap, the most rows a rank can receive, is EP·N·min(K, E/EP) unless
// ModelOptions::ep_capacity_factor caps it (then a dispatch beyond it is ResourceExhausted).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "spec/model_config.h"
#include "worker/model/expert_parallel.h"
#include "worker/model/layer_context.h"
#include "worker/model/linear.h"
#include "worker/model/mlp.h"

namespace shoal::model {

class MoeFfn {
 public:
  // ep_capacity_factor: see ModelOptions (0 = the worst case).
  MoeFfn(const ModelConfig& config, int64_t layer_idx, int64_t expert_begin, int64_t expert_end, GemmMode mode,
         float balance_alpha, double ep_capacity_factor);

  void Declare(LayerPlans& plans);
  void PrepareWeights();
  // Expert parallelism: the exchange of the EP group (size and rank match the expert range; checked by Model).
  void SetExchange(ExpertExchange* exchange) { ep_ = exchange; }
  bool expert_parallel() const { return ep_size_ > 1; }

  // out[N,H] = base[N,H] + MoE(u[N,H]) (out may equal base). u must stay valid until BackwardWeight. Errors come
  // from the exchange only.
  Status Forward(float* out, const float* base, const float* u, const StepContext& ctx);
  // du[N,H] += dMoE/du · dout (dout[N,H] must stay valid until BackwardWeight). With ctx.weight_grads_now the
  // routed experts' weight gradients are computed here too (while the input gradients are in flight).
  Status BackwardInput(float* du, const float* dout, const StepContext& ctx);
  // The router's, the shared expert's and (unless BackwardInput did) the routed experts' weight gradients.
  void BackwardWeight(const float* u, const float* dout, const StepContext& ctx);

  // The last forward's routing and balance loss (this micro-batch, mean over its sequences).
  const int32_t* topk_idx() const { return topk_idx_; }
  const float* topk_weight() const { return topk_weight_; }
  const float* scores() const { return scores_; }
  double balance_loss() const;
  // Expert loads accumulated by training forwards since ZeroLoads (this rank's tokens, every expert).
  const std::vector<int32_t>& loads() const { return loads_; }
  void ZeroLoads();
  void SetLoads(const std::vector<int32_t>& loads) { loads_ = loads; }
  void UpdateBias(float gamma);
  float* bias() const { return bias_.w; }

  int64_t layer_idx() const { return layer_idx_; }

 private:
  void Route(const float* u, const StepContext& ctx);
  void ExpertsBackward(float* dx, const float* dy, const int32_t* offsets, const StepContext& ctx);
  void ExpertsWeight(const float* dy, const float* x, const int32_t* offsets, const StepContext& ctx);
  // Expert parallel: the per-rank row counts of this micro-batch (from offsets_ and recv_counts_).
  void ComputeRowCounts();
  Status CheckCapacity() const;
  // src (per-source blocks, each sorted by local expert) <-> dst (per-expert blocks, each sorted by source).
  void Regroup(float* dst, const float* src, bool to_expert_major);
  Status Exchange(ExchangeKind kind, const float* send, const std::vector<int64_t>& send_rows, float* recv,
                  const std::vector<int64_t>& recv_rows, const std::function<void()>& overlap);

  const ModelConfig& c_;
  int64_t layer_idx_, e0_, e1_;
  int64_t H_, E_, K_, Im_;
  GemmMode mode_;
  float alpha_;
  double ep_capacity_factor_;
  int64_t ep_size_ = 1, ep_rank_ = 0, El_ = 0, cap_ = 0;  // El_ = experts held

  ParamRef gate_, bias_;
  ExpertLinear experts_gate_up_, experts_down_;
  std::unique_ptr<SwiGluMlp> shared_;
  ExpertExchange* ep_ = nullptr;

  std::vector<int32_t> loads_;  // [E]
  // Per-call row counts (recomputed from saved buffers, so they need no slot of their own).
  std::vector<int32_t> expert_counts_;            // [E]
  std::vector<int64_t> send_rows_, recv_rows_;    // [EP]
  std::vector<int64_t> regroup_fill_;             // [El]

  // Saved.
  float *scores_, *topk_weight_, *ys_, *shared_out_, *balance_loss_;
  int32_t *topk_idx_, *offsets_, *sorted_rows_, *row_pos_;
  float *xs_, *gu_s_, *m_s_;   // held-everything path: rows in xs order
  int32_t* recv_counts_;       // EP: [EP, El] rows from each source for each local expert
  int32_t* local_offsets_;     // EP: [El + 1] expert-major offsets of the received rows
  float *xe_, *gu_e_, *m_e_;   // EP: the received rows, expert-major
  // Dgrad (kept between the backward phases and for BackwardWeight).
  float *dlogits_, *dys_, *dgu_s_, *dweight_, *dxs_;
  float *dye_, *dgu_e_;        // EP: expert-major
  // Scratch (EP: the exchange buffers live here; only one layer runs at a time).
  float *logits_, *dm_s_;
  float *xr_, *ye_, *yr_, *dyr_, *dxe_, *dxr_;
};

}  // namespace shoal::model
