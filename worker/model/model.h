// The DeepSeek-V3 model on the CPU (reference/deepseek-v3.md §1-§5, Appendix A): embedding → L pre-norm decoder
// layers (dense SwiGLU, then MoE) → model.norm → lm_head, plus the MTP module(s) sharing the embedding and
// the head, trained with mean cross-entropy + λ·MTP cross-entropy + Σ sequence-wise balance losses. Built from
// the kernels in kernels/cpu; tensors keep their Hugging Face names end to end.
//
// Memory (STYLE.md §6): parameters (fp32 master), gradients, the bf16/fp8 weight caches and the activations of
// activation_slots micro-batches of [max_batch, max_seq] tokens are each one allocation made in Create, laid out
// by the pure planning pass PlanMemory also uses (worker/model/buffer_plan.h). Nothing is allocated on the step
// path.
//
// A Model can hold a pipeline stage: a range of layers (HF indices, MTP layers are L..L+D-1), with or without
// the embedding and the head, and a range of routed experts. A stage that holds MTP layers must hold the head
// (the MTP module needs model.norm's output and the head, spec/stage_layout.h); when it does not also hold the
// embedding, the MTP layer keeps its own copy model.layers.{L}.embed_tokens.weight (trainable; the trainer
// all-reduces its gradient with the first stage's model.embed_tokens.weight). A single-process model holds
// everything and trains with ForwardBackward; stages run ForwardStage / BackwardStage. A model holding a proper
// part of the routed experts is one EP rank and exchanges MoE rows with its EP group (expert_parallel.h).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"
#include "kernels/dtype.h"
#include "spec/job_spec.h"
#include "spec/model_config.h"
#include "worker/model/expert_parallel.h"

namespace shoal::model {

struct NamedTensor {
  std::string name;  // Hugging Face name
  kernels::DType dtype = kernels::DType::kF32;
  std::vector<int64_t> shape;
  float* data = nullptr;  // fp32 view into the model's arena
  int64_t numel() const;
};

struct ModelOptions {
  Precision precision = Precision::kFp32;
  int64_t layer_begin = 0, layer_end = -1;     // HF layer indices held, [begin, end); -1 = all main + MTP layers
  bool has_embedding = true, has_head = true;  // model.embed_tokens / model.norm + lm_head (+ the MTP heads)
  int64_t expert_begin = 0, expert_end = -1;   // routed experts held in every MoE layer; -1 = all
  int64_t max_batch = 8, max_seq = 128;        // the activation arena holds one micro-batch of [max_batch, max_seq]
  float balance_alpha = 1e-4f;                 // α of the sequence-wise balance loss (§3.5)
  float mtp_lambda = 0.3f;                     // λ of the MTP loss (§4.3), for the trainer's MeanLossScales
  // Keep every layer's Linear output gradients until BackwardWeightStage (zero-bubble schedules); costs one more
  // set of per-layer buffers. Off: each layer's weight gradients are computed right after its input gradient.
  bool defer_weight_grads = false;
  // Micro-batches that can be in flight on this model at once, between their ForwardStage and their
  // BackwardStage / BackwardWeightStage (pipeline schedules: 1F1B keeps up to PP in flight on the first stage).
  // Each slot has its own activation arena (saved activations, and with defer_weight_grads the Linear output
  // gradients); parameters, gradients, weight caches and scratch are shared. SetActivationSlot picks one.
  int64_t activation_slots = 1;
  // Expert parallelism (EP > 1): the receive capacity of a MoE layer's experts, in multiples of this rank's
  // N·K rows; 0 = the worst case EP·N·min(K, E/EP) rows (no dispatch can exceed it). A dispatch beyond a smaller
  // capacity fails with ResourceExhausted (no token is ever dropped).
  double ep_capacity_factor = 0;
};

// One micro-batch, int32 row-major [B, T] (worker/data/batch.h's Batch::Slice gives these).
struct MicroBatch {
  const int32_t* inputs = nullptr;       // x_i
  const int32_t* targets = nullptr;      // x_{i+1}, -1 = no loss (null = no main loss)
  const int32_t* mtp_inputs = nullptr;   // MTP depth 1: x_{i+1} (null = the MTP module is skipped)
  const int32_t* mtp_targets = nullptr;  // x_{i+2}, -1 = no loss
  const int32_t* positions = nullptr;    // RoPE positions (null = 0..T-1 in every row)
  const int32_t* segment_ids = nullptr;  // null = plain causal attention, else block-diagonal causal
  int B = 0, T = 0;
  // Per-target weights of the main loss's gradient (null = 1): the backward then differentiates
  // main·Σ_t w_t·CE_t (GRPO's advantage-weighted log-likelihood); the reported losses stay unweighted.
  const float* target_weights = nullptr;
};

// The backward computes the gradient of  main·Σ CE_main + mtp·Σ CE_mtp + balance·Σ_layers L_bal  (sums over this
// micro-batch's valid targets; L_bal is each MoE layer's mean over the micro-batch's sequences).
struct LossScales {
  float main = 1, mtp = 1, balance = 1;
};

// The scales that make one micro-batch's gradient that of  mean CE_main + λ/D·Σ_k mean CE_mtp,k + Σ L_bal  over
// a global batch with these target counts, of which this micro-batch holds `micro_fraction` of the sequences.
LossScales MeanLossScales(int64_t global_main_targets, int64_t global_mtp_targets, int64_t mtp_depth,
                          float mtp_lambda, double micro_fraction = 1.0);

struct StepLosses {
  double main_sum = 0;  // Σ CE over the valid main targets (natural log)
  int64_t main_count = 0;
  double mtp_sum = 0;
  int64_t mtp_count = 0;
  double balance = 0;   // Σ over the held MoE layers of L_bal (unscaled; α included)
};

// The last forward's routing of one MoE layer (rows in token order b·T + t).
struct RoutingView {
  int64_t layer = 0;
  int64_t num_tokens = 0, k = 0;
  const int32_t* topk_idx = nullptr;   // [num_tokens, k], decreasing s + b
  const float* topk_weight = nullptr;  // [num_tokens, k]
  const float* scores = nullptr;       // [num_tokens, n_routed_experts] sigmoid affinities s (unbiased)
  double balance_loss = 0;             // this layer's L_bal of the last forward
};

// Sizes without allocating.
struct MemoryPlan {
  int64_t params = 0;       // elements of every held tensor (incl. e_score_correction_bias)
  int64_t trainable = 0;    // elements with a gradient
  int64_t param_bytes = 0;  // fp32 master weights (arena, aligned)
  int64_t grad_bytes = 0;
  int64_t optimizer_bytes = 0;  // AdamW moments in bf16 (2 × 2 bytes per trainable element, §5.5)
  int64_t weight_cache_bytes = 0;  // bf16/fp8 copies of the Linear weights
  // One micro-batch's activations (a slot plus the shared scratch): what a schedule multiplies by the micro-batches
  // it keeps in flight when it sizes a worker.
  int64_t activation_bytes_per_microbatch = 0;
  // What Create allocates for activations: shared scratch + activation_slots × the per-slot regions.
  int64_t activation_bytes = 0;
  int64_t activation_slot_bytes = 0;  // one slot's regions
  int64_t total_bytes() const {
    return param_bytes + grad_bytes + optimizer_bytes + weight_cache_bytes + activation_bytes;
  }
};
Result<MemoryPlan> PlanMemory(const ModelConfig& config, const ModelOptions& options);

class Model {
 public:
  // InvalidArgument for an unusable config/options combination; ResourceExhausted when memory runs out.
  static Result<std::unique_ptr<Model>> Create(const ModelConfig& config, const ModelOptions& options);
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const ModelConfig& config() const { return config_; }
  const ModelOptions& options() const { return options_; }  // with -1 ranges resolved

  // Held tensors under HF names, fp32 views into the parameter arena, grouped by layer (embedding, layers in
  // order, model.norm, lm_head); within a MoE layer all experts' gate_proj/up_proj come before their down_proj.
  // Includes the non-trainable e_score_correction_bias buffers.
  std::vector<NamedTensor> Parameters();
  // The same names and order, trainable tensors only.
  std::vector<NamedTensor> Gradients();
  bool IsTrainable(const std::string& name) const;
  // Parameters() plus the MTP layers' model.layers.{L}.embed_tokens.weight / shared_head.head.weight when they
  // are views of the shared embedding and head: the full HF tensor list of the held part, for export.
  std::vector<NamedTensor> HfTensors();

  // Matrices ~ N(0, init_std²), RMSNorm weights 1, e_score_correction_bias 0. Each tensor's values depend only
  // on (seed, its name), so every layout (stages, expert ranges) initialises the same model.
  void InitRandom(uint64_t seed, float init_std);
  // Copies every held tensor from lookup(name, shape), which returns null when it has no such tensor of that
  // shape: then NotFound naming the tensor.
  Status Load(const std::function<const float*(const std::string& name, const std::vector<int64_t>& shape)>& lookup);

  void ZeroGrad();
  // Forward and backward of the whole model (needs every layer, the embedding and the head): accumulates the
  // gradients and the expert loads; returns this micro-batch's losses. Without mtp_inputs the MTP module is
  // skipped (no MTP loss; its tensors get no gradient), e.g. for RL phases.
  Result<StepLosses> ForwardBackward(const MicroBatch& batch, const LossScales& scales);
  // Evaluation: no gradients, no load counting. logits_out [B,T,V] and mtp_logits_out [B,T,V] (slot i of the
  // MTP stream predicts x_{i+2}) may be null. Losses are computed where targets are given. Without mtp_inputs
  // the MTP module is skipped (generation).
  Result<StepLosses> Forward(const MicroBatch& batch, float* logits_out, float* mtp_logits_out);

  // Pipeline stages. hidden_in [B,T,H] (null iff has_embedding), hidden_out [B,T,H] (null iff has_head).
  // ForwardStage counts loads when `training`. Losses are known after BackwardStage on the last stage.
  Status ForwardStage(const MicroBatch& batch, const float* hidden_in, float* hidden_out, bool training);
  // dhidden_out [B,T,H] (null iff has_head), dhidden_in [B,T,H] receives dL/dhidden_in (null iff has_embedding).
  Result<StepLosses> BackwardStage(const MicroBatch& batch, const LossScales& scales, const float* dhidden_out,
                                   float* dhidden_in);
  // With defer_weight_grads: the Linear/router weight gradients of the last BackwardStage (of the current slot).
  void BackwardWeightStage();

  // Activation slots (ModelOptions::activation_slots): the forward, backward and weight-gradient calls that
  // follow use slot `slot`'s activations, so up to activation_slots micro-batches can be in flight, e.g.
  //   SetActivationSlot(0); ForwardStage(mb0);  SetActivationSlot(1); ForwardStage(mb1);
  //   BackwardStage(mb1) ... SetActivationSlot(0); BackwardStage(mb0); BackwardWeightStage();
  // The batch arrays of a micro-batch must stay valid until its backward. Cheap (rebinds the layers' buffer
  // views), a no-op for the current slot; CHECK-fails outside [0, activation_slots).
  void SetActivationSlot(int slot);
  int activation_slot() const;

  // Expert parallelism (expert_parallel.h): a model whose expert range is a proper part of the routed experts
  // (EP > 1) runs its MoE layers through the exchange of its EP group, which must be set before the first forward
  // and outlive its use (not owned; null detaches). InvalidArgument unless the exchange's size and rank match the
  // expert range (EpLayoutOf). Forwards of such a model without an exchange are a FailedPrecondition.
  Status SetExpertExchange(ExpertExchange* exchange);
  EpLayout ep_layout() const;  // size 1 for a model holding every expert

  // Aux-loss-free balancing (§3.3), per held MoE layer (main and MTP), in layer order.
  void ZeroLoads();
  std::vector<std::pair<int64_t, std::vector<int32_t>>> Loads() const;
  // Replaces one layer's loads (e.g. with the all-reduced counts); InvalidArgument for an unknown layer/size.
  Status SetLoads(int64_t layer, const std::vector<int32_t>& loads);
  // b_i += γ·sign(mean(load) − load_i) in every held MoE layer.
  void UpdateBias(float gamma);
  // The last forward's routing of every held MoE layer that ran (views valid until the next forward).
  std::vector<RoutingView> LastRouting() const;

  size_t ActivationBytes() const;
  size_t ParameterCount() const;  // elements of every held tensor (MemoryPlan::params)

 private:
  Model(const ModelConfig& config, const ModelOptions& options);
  friend Result<MemoryPlan> PlanMemory(const ModelConfig&, const ModelOptions&);
  struct Impl;
  void Declare(bool binding);
  Status CheckBatch(const MicroBatch& batch, bool needs_targets) const;
  void SetUpStep(const MicroBatch& batch, bool training, float balance_scale);
  Status CheckExchange() const;
  Status RunForward(const MicroBatch& batch, const float* hidden_in, float* hidden_out);
  double HeadLoss(const float* z, const int32_t* targets, const float* weights, float* dz, float scale,
                  float* logits_out);
  Result<StepLosses> RunBackward(const MicroBatch& batch, const LossScales& scales, const float* dhidden_out,
                                 float* dhidden_in, bool weights_now);
  ModelConfig config_;
  ModelOptions options_;
  std::unique_ptr<Impl> impl_;
};

// Resolves the -1 ranges and checks the options against the config (InvalidArgument naming the option).
Result<ModelOptions> ResolveModelOptions(const ModelConfig& config, const ModelOptions& options);

}  // namespace shoal::model
