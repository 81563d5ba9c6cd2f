// Internal to worker/model: the state behind Model (layer objects, arenas, model-level buffers).
#pragma once

#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "kernels/arena.h"
#include "worker/model/block.h"
#include "worker/model/buffer_plan.h"
#include "worker/model/layer_context.h"
#include "worker/model/linear.h"
#include "worker/model/model.h"

namespace shoal::model {

// The MTP module of depth 1 (§4.1): h' = eh_proj · [enorm(Emb(x_{i+1})) ; hnorm(h0_i)] → block → shared_head.norm.
struct MtpModule {
  int64_t layer = 0;
  ParamRef enorm, hnorm, shared_norm;
  ParamRef embed_copy;  // model.layers.{L}.embed_tokens.weight when the model does not hold model.embed_tokens
  Linear eh_proj;
  std::unique_ptr<DecoderBlock> block;
  // Saved [N, ...].
  float *emb = nullptr, *rstd_e = nullptr, *rstd_h = nullptr, *cat = nullptr, *h_in = nullptr, *h_out = nullptr,
        *rstd_sh = nullptr, *z = nullptr;
  // Gradients (model level, saved region).
  float *dz = nullptr, *g = nullptr, *dcat = nullptr;
  // Scratch.
  float *norm_out = nullptr, *d_half = nullptr, *d_emb = nullptr;

  // `plans` holds the block's regions; the module's own temporaries go to the model-level scratch `top`.
  void Declare(const ModelConfig& c, bool has_embedding, GemmMode mode, LayerPlans& plans, BufferPlan& top);
};

// The memory regions of one planning or binding pass over the whole model.
struct ModelRegions {
  ParamPlan params;
  BufferPlan cache, saved, dgrad_global, linear;
  std::vector<BufferPlan> scratch, block_dgrad;  // per component: 0 = model level, then the blocks
}; 

struct Model::Impl {
  std::vector<std::unique_ptr<DecoderBlock>> blocks;  // held main layers, in order
  std::unique_ptr<MtpModule> mtp;
  ParamRef embed, final_norm, head;
  GemmMode head_mode = GemmMode::kFp32;
  float* head_bf16 = nullptr;  // cache [V, H] (bf16/fp8 precisions)

  // Planning results.
  std::vector<ParamStorage> storages;
  std::vector<TensorSpec> cache_specs, saved_specs, dgrad_specs, linear_specs;
  std::vector<std::vector<TensorSpec>> scratch_specs;        // per component (0 = model level, then blocks)
  std::vector<std::vector<TensorSpec>> block_dgrad_specs;    // per block when dgrad is shared
  std::vector<kernels::ArenaLayout> scratch_layouts, block_dgrad_layouts;
  kernels::ArenaLayout cache_layout, saved_layout, dgrad_layout, linear_layout;
  int64_t scratch_bytes = 0, dgrad_bytes = 0;
  LinearNeeds linear_needs;

  // Memory. The saved region (and with deferred weight gradients the dgrad region) exists once per activation
  // slot; saved_base/dgrad_base point at the current slot's, which the layers' views are bound to.
  std::unique_ptr<kernels::Arena> params, grads, cache, acts;
  std::byte *saved_base = nullptr, *dgrad_base = nullptr, *scratch_base = nullptr, *linear_base = nullptr;
  std::vector<std::byte*> saved_bases, dgrad_bases;  // per slot

  // Model-level buffers.
  std::vector<float*> hs;  // [num blocks + 1] hidden states [N, H]
  float *rstd_final = nullptr, *h0n = nullptr, *d_h0n = nullptr, *g = nullptr;
  float *z_round = nullptr, *ce_scratch = nullptr, *ce_row_loss = nullptr, *rms_scratch = nullptr;
  int32_t* default_positions = nullptr;
  LinearWorkspace linear;
  int ce_chunk = 0;
  std::vector<float> rope;  // [P, d_R/2, 2]
  int64_t rope_positions = 0;

  std::unordered_map<std::string, bool> trainable;

  // After a planning pass: keeps its specs and layouts for the allocation and the binding pass.
  void RecordPlan(const ModelRegions& r, bool defer_weight_grads);
  // The current slot's step state; the other slots' wait in `parked`.
  struct SlotState {
    StepContext ctx;
    bool have_forward = false;
    bool ran_mtp = false;
  };
  StepContext ctx;
  bool have_forward = false;  // a forward's activations are in place
  bool ran_mtp = false;       // ... including the MTP module's
  int slot = 0;
  std::vector<SlotState> parked;  // [activation_slots]

  // Expert parallelism.
  EpLayout ep_layout;          // of the expert range
  bool ep_ranges_ok = false;   // the range is one of equal contiguous ranges
  ExpertExchange* exchange = nullptr;
};

// RoPE cos/sin table [positions, d_R/2, 2] of a config (§2.3-2.4: YaRN frequencies and attention factor).
std::vector<float> BuildRopeTable(const ModelConfig& config, int64_t positions);

}  // namespace shoal::model
