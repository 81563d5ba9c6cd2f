#include "worker/checkpoint/model_dir.h"

#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/file_util.h"
#include "spec/job_spec.h"
#include "worker/checkpoint/checkpoint.h"
#include "worker/checkpoint/export.h"

namespace shoal::checkpoint {
namespace fs = std::filesystem;

namespace {

bool IsExportDir(const std::string& dir) {
  return FileExists(dir + "/config.json") &&
         (FileExists(dir + "/model.safetensors") || FileExists(dir + "/model.safetensors.index.json"));
}

// Everything but the tensors. `depth` bounds the init_from chain that decides `chat`.
Result<ModelDir> Inspect(const std::string& dir, int depth) {
  ModelDir out;
  if (IsExportDir(dir)) {
    out.kind = "export";
    ASSIGN_OR_RETURN(std::string text, ReadFile(dir + "/config.json"));
    ASSIGN_OR_RETURN(out.config, ModelConfigFromHfJson(text));
    auto meta = ReadFile(dir + "/shoal.json");
    if (meta.ok()) {
      auto j = nlohmann::json::parse(*meta, nullptr, false);
      if (!j.is_discarded()) {
        out.chat = j.value("chat_template", false);
        out.train_seq_len = j.value("seq_len", 0);
      }
    }
    return out;
  }
  auto listing = ListShards(dir);
  if (!listing.ok() || listing->complete.empty()) {
    return InvalidArgumentError(dir + " is not a model: expected config.json + model.safetensors (from `shoal "
                                "export`) or a checkpoint step directory (<checkpoints>/<job>/<phase>/step-N)");
  }
  out.kind = "checkpoint";
  fs::path p = fs::absolute(dir);
  std::string config_path;
  for (int up = 0; up < 3 && config_path.empty(); ++up) {
    if (fs::exists(p / "config.json")) config_path = (p / "config.json").string();
    p = p.parent_path();
  }
  if (config_path.empty()) return NotFoundError("no config.json beside or above checkpoint " + dir);
  ASSIGN_OR_RETURN(std::string text, ReadFile(config_path));
  ASSIGN_OR_RETURN(out.config, ModelConfigFromHfJson(text));
  std::string job_yaml = (fs::path(config_path).parent_path() / "job.yaml").string();
  if (FileExists(job_yaml)) {
    auto spec = LoadJobSpec(job_yaml);
    if (spec.ok()) {
      out.train_seq_len = spec->train.seq_len;
      // Chat once an SFT phase has run up to this checkpoint's phase, or the job started from such a model.
      if (!spec->model.init_from.empty() && depth > 0) {
        auto init = Inspect(spec->model.init_from, depth - 1);
        if (init.ok()) out.chat = init->chat;
      }
      std::string phase = fs::absolute(dir).parent_path().filename().string();
      for (const auto& ph : spec->phases) {
        if (ph.kind == PhaseKind::kSft) out.chat = true;
        if (ph.name == phase) break;
      }
    }
  }
  return out;
}

}  // namespace

const float* FindF32(const TensorSet& tensors, const std::string& name, const std::vector<int64_t>& shape) {
  auto it = tensors.find(name);
  if (it == tensors.end() || it->second.shape != shape || it->second.dtype != DType::kF32) return nullptr;
  return it->second.values<float>().data();
}

Result<ModelDir> InspectModelDir(const std::string& dir) { return Inspect(dir, 8); }

Result<ModelDir> LoadModelDir(const std::string& dir) {
  ASSIGN_OR_RETURN(ModelDir out, InspectModelDir(dir));
  if (out.kind == "export") {
    ASSIGN_OR_RETURN(auto hf, LoadHuggingFace(dir));
    out.config = std::move(hf.config);
    out.tensors = std::move(hf.tensors);
  } else {
    ASSIGN_OR_RETURN(auto merged, LoadMerged(dir));
    out.tensors = std::move(merged.params);
  }
  return out;
}

}  // namespace shoal::checkpoint
