// How a model's layers are cut into pipeline stages. A pure function of the model and the stage count, shared by
// the job spec's checks (is the pipeline too deep?) and placement (what each worker holds).
//
// The rule. The pipeline splits the model's blocks: the L main layers, then the D MTP layers (HF indices
// 0..L+D-1). Stage 0 also holds the embedding; the last stage holds the final norm, the head and all D MTP
// layers (MTP needs the head and the main model's last hidden state, §4.1). With B = L + D blocks and S stages,
// every stage gets floor(B/S) blocks and the B mod S extra blocks go to the middle stages 1, 2, ..., S-2 first
// (they carry neither embedding nor head), then to stage 0; the last stage never gets an extra one. If that
// leaves the last stage fewer than D blocks, it takes exactly the D MTP layers and the L main layers are split
// over the other S-1 stages by the same rule. Example: 671B (61 + 1 blocks, 16 stages) gives stage 0 layers
// 0-2, stages 1-14 four layers each, stage 15 layers 59-60 + MTP 61.
#pragma once

#include <cstdint>
#include <vector>

#include "spec/model_config.h"

namespace shoal {

struct StageLayout {
  int stage_idx = 0;
  int64_t layer_begin = 0;     // [layer_begin, layer_end) over HF layer indices (MTP layers are L..L+D-1)
  int64_t layer_end = 0;
  bool has_embedding = false;  // model.embed_tokens
  bool has_head = false;       // model.norm + lm_head (and the MTP layers' shared_head / embed_tokens copies)
  int64_t num_layers() const { return layer_end - layer_begin; }
  friend bool operator==(const StageLayout&, const StageLayout&) = default;
};

// The deepest pipeline the rule above can fill: L stages plus one for the MTP layers (when D > 0).
int64_t MaxPipelineStages(const ModelConfig& config);

// Requires 1 <= num_stages <= MaxPipelineStages(config) (CHECKed: callers validate the job spec first).
std::vector<StageLayout> SplitLayers(const ModelConfig& config, int num_stages);

}  // namespace shoal
