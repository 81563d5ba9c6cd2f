// Hugging Face DeepSeek-V3 checkpoints (deepseek-v3.md §9): the tensor names and shapes a ModelConfig implies,
// a checker for a tensor set, the export (config.json + model.safetensors, or shards + index, optionally FP8 with
// 128×128 weight_scale_inv blocks), and the import back into f32 tensors (what `shoal generate --model DIR` and
// `shoal export` round trips use).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "spec/model_config.h"
#include "worker/checkpoint/tensor_set.h"

namespace shoal::checkpoint {

struct HfTensorSpec {
  std::string name;
  std::vector<int64_t> shape;
  friend bool operator==(const HfTensorSpec&, const HfTensorSpec&) = default;
};

// Every tensor of §9.1 in model order (embedding, layers 0..L-1, then the MTP layers L..L+D-1 when include_mtp,
// final norm, head), including the MTP layers' embed_tokens / shared_head.head copies.
std::vector<HfTensorSpec> ExpectedHfTensors(const ModelConfig& config, bool include_mtp = true);

// The Linear weights the released FP8 checkpoint stores as F8_E4M3 with a "<name>_scale_inv" (§9.4): attention
// projections, dense MLP, shared and routed experts. Not: embeddings, heads, norms, router, bias, eh_proj.
bool IsFp8ExportedWeight(std::string_view name);

// OK when `tensors` holds exactly ExpectedHfTensors(config, include_mtp) with those shapes and floating-point
// dtypes; otherwise InvalidArgument listing the missing, extra and wrong-shape names.
Status CheckHfTensorSet(const ModelConfig& config, const TensorRefMap& tensors, bool include_mtp = true);
Status CheckHfTensorSet(const ModelConfig& config, const TensorSet& tensors, bool include_mtp = true);

struct ExportOptions {
  DType dtype = DType::kBF16;  // kBF16 or kF32 for every tensor (e_score_correction_bias is always F32)
  bool fp8 = false;            // §9.4 Linear weights as F8_E4M3 + F32 weight_scale_inv, 128×128 blocks
  bool include_mtp = true;     // the MTP layers model.layers.{L..}; without them config.json says D = 0
  int64_t max_shard_bytes = 5'000'000'000;  // above this, model-0000k-of-0000N.safetensors + index
  bool sync = true;
};

// Writes `out_dir`/config.json and the weights. The tensors hold the model under HF names (the trainer's or a
// merged checkpoint's, any float dtype); the MTP layers' embed_tokens / shared_head.head copies are filled from
// the shared embedding and head when absent (and must equal them when present). Stale weight files of an earlier
// export in `out_dir` are removed; other files (tokenizer, README) are kept.
Status ExportHuggingFace(const ModelConfig& config, const TensorRefMap& tensors, const std::string& out_dir,
                         const ExportOptions& options = {});
Status ExportHuggingFace(const ModelConfig& config, const TensorSet& tensors, const std::string& out_dir,
                         const ExportOptions& options = {});

struct HfCheckpoint {
  ModelConfig config;
  TensorSet tensors;     // every tensor as F32 (FP8 weights dequantised, *_scale_inv dropped)
  bool has_mtp = false;  // the directory holds the MTP layers
  bool fp8 = false;      // the directory stored FP8 weights
  std::vector<std::string> files;  // the safetensors files read
};

// Reads a Hugging Face DeepSeek-V3 directory: config.json plus model.safetensors, or the shards that
// model.safetensors.index.json names (other *.safetensors files are ignored). The tensors must match the config
// (CheckHfTensorSet, with or without the MTP layers).
Result<HfCheckpoint> LoadHuggingFace(const std::string& dir);

}  // namespace shoal::checkpoint
