// A model on disk, whatever wrote it: a `shoal export` directory (config.json + Hugging Face weights, plus
// shoal.json) or a checkpoint step directory (<checkpoints>/<job>/<phase>/step-N, with config.json and job.yaml
// in the job's checkpoint root). Used by `shoal generate/eval` and by `model: {init_from: DIR}`.
#pragma once

#include <string>

#include "common/status.h"
#include "spec/model_config.h"
#include "worker/checkpoint/tensor_set.h"

namespace shoal::checkpoint {

struct ModelDir {
  ModelConfig config;
  TensorSet tensors;            // F32, Hugging Face names
  std::string kind;             // "export" | "checkpoint"
  bool chat = false;            // fine-tuned with the chat template (an SFT phase ran before these weights)
  int64_t train_seq_len = 0;    // the training sequence length when known, else 0
};

Result<ModelDir> LoadModelDir(const std::string& dir);
// The same without reading the weights (tensors stays empty).
Result<ModelDir> InspectModelDir(const std::string& dir);

// A lookup for model::Model::Load over `tensors` (F32 tensors of the given shape, else null).
const float* FindF32(const TensorSet& tensors, const std::string& name, const std::vector<int64_t>& shape);

}  // namespace shoal::checkpoint
