#include "spec/stage_layout.h"

#include "common/check.h"

namespace shoal {
namespace {

// `blocks` over `stages` stages: floor for everyone, extras to stages 1..S-2, then stage 0 (see the header).
std::vector<int64_t> EvenSplit(int64_t blocks, int stages) {
  std::vector<int64_t> counts(stages, blocks / stages);
  int64_t extra = blocks % stages;
  for (int s = 1; s + 1 < stages && extra > 0; ++s, --extra) ++counts[s];
  if (extra > 0) ++counts[0];  // extra < stages, so this was the last one
  return counts;
}

}  // namespace

int64_t MaxPipelineStages(const ModelConfig& config) {
  return config.num_hidden_layers + (config.num_nextn_predict_layers > 0 ? 1 : 0);
}

std::vector<StageLayout> SplitLayers(const ModelConfig& config, int num_stages) {
  CHECK(num_stages >= 1 && num_stages <= MaxPipelineStages(config))
      << "SplitLayers: " << num_stages << " stages for " << config.num_hidden_layers << " layers + "
      << config.num_nextn_predict_layers << " MTP";
  const int64_t mtp = config.num_nextn_predict_layers;
  std::vector<int64_t> counts = EvenSplit(config.num_blocks(), num_stages);
  if (num_stages > 1 && counts.back() < mtp) {
    std::vector<int64_t> head = EvenSplit(config.num_hidden_layers, num_stages - 1);
    head.push_back(mtp);
    counts = std::move(head);
  }
  std::vector<StageLayout> stages(num_stages);
  int64_t next = 0;
  for (int s = 0; s < num_stages; ++s) {
    stages[s].stage_idx = s;
    stages[s].layer_begin = next;
    next += counts[s];
    stages[s].layer_end = next;
    stages[s].has_embedding = s == 0;
    stages[s].has_head = s == num_stages - 1;
  }
  CHECK_EQ(next, config.num_blocks());
  return stages;
}

}  // namespace shoal
