// What every layer of the model sees: the buffer plans it declares its memory in (run once to size, once to
// bind; buffer_plan.h) and, per micro-batch, the step context (sizes, positions, mask, RoPE table, scratch).
//
// Memory regions a layer declares into:
//   params  its Hugging Face tensors (fp32 master) and gradients
//   cache   bf16/fp8 copies of its Linear weights (refreshed at every forward)
//   saved   activations kept from its forward for its backward (one set per layer)
//   dgrad   output gradients of its Linears, kept from BackwardInput for BackwardWeight (per layer when the
//           weight gradients are deferred, else one region shared by all layers)
//   scratch temporaries of one call (one region shared by every layer)
#pragma once

#include <cstdint>

#include "spec/model_config.h"
#include "worker/model/buffer_plan.h"
#include "worker/model/linear.h"

namespace shoal::model {

struct LayerPlans {
  ParamPlan* params = nullptr;
  BufferPlan* cache = nullptr;
  BufferPlan* saved = nullptr;
  BufferPlan* dgrad = nullptr;
  BufferPlan* scratch = nullptr;
  LinearNeeds* linear_needs = nullptr;  // merged into on every pass
  int64_t max_batch = 0, max_seq = 0;   // the activation arena holds one micro-batch of this size
  int64_t max_tokens() const { return max_batch * max_seq; }
};

struct StepContext {
  int B = 0, T = 0;                          // this micro-batch
  int64_t N = 0;                             // B·T tokens
  const int32_t* positions = nullptr;        // [B, T] RoPE positions
  const int32_t* segment_ids = nullptr;      // [B, T] block-diagonal mask ids, null = plain causal
  const float* rope_cos_sin = nullptr;       // [P, d_R/2, 2]
  const LinearWorkspace* linear = nullptr;   // shared Linear scratch
  bool training = false;                     // count expert loads in the forward
  float balance_grad_scale = 0.f;            // LossScales::balance
  bool weight_grads_now = true;              // the backward computes weight gradients right after input gradients
};

inline std::string LayerPrefix(int64_t layer_idx) { return "model.layers." + std::to_string(layer_idx) + "."; }

}  // namespace shoal::model
