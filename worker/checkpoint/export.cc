// ExportHuggingFace and LoadHuggingFace (deepseek-v3.md §9.2-§9.4).
#include "worker/checkpoint/export.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>

#include "common/file_util.h"
#include "kernels/fp8.h"
#include "worker/checkpoint/atomic_file.h"
#include "worker/checkpoint/safetensors.h"

namespace shoal::checkpoint {

namespace {

using Json = nlohmann::ordered_json;

constexpr std::string_view kSingleFile = "model.safetensors";
constexpr std::string_view kIndexFile = "model.safetensors.index.json";
constexpr std::string_view kScaleSuffix = "_scale_inv";
const std::regex kShardFileRe(R"(model-\d{5}-of-\d{5}\.safetensors)");

std::string JoinPath(const std::string& dir, std::string_view name) {
  return (std::filesystem::path(dir) / std::string(name)).string();
}

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

bool IsBias(std::string_view name) { return EndsWith(name, ".mlp.gate.e_score_correction_bias"); }

std::string MtpPrefix(int64_t layer) { return "model.layers." + std::to_string(layer) + "."; }

// One output tensor as planned: its name, how it is stored, and its on-disk bytes (incl. the scale for FP8).
struct Planned {
  std::string name;
  DType dtype;
  int64_t bytes;
};

Status RemoveIfExists(const std::string& path) {
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) return ErrnoToStatus(errno, "remove stale " + path);
  return Status::OK();
}

// The output tensors of one planned entry (the weight, and its scale when FP8).
Status Convert(const Planned& p, const TensorRef& in, TensorSet* out) {
  if (p.dtype == DType::kF8E4M3) {
    const int64_t rows = in.shape[0], cols = in.shape[1];
    const std::vector<float> x = ToF32(in);
    Tensor q = Tensor::Zeros(DType::kF8E4M3, in.shape);
    Tensor s = Tensor::Zeros(DType::kF32, {kernels::CeilDiv(rows, kernels::kFp8BlockSize),
                                           kernels::CeilDiv(cols, kernels::kFp8BlockSize)});
    kernels::quantize_fp8(q.bytes.data(), s.mutable_values<float>().data(), x.data(), rows, cols,
                          kernels::kFp8Block128x128, /*pow2_scale=*/false);
    out->emplace(p.name, std::move(q));
    out->emplace(p.name + std::string(kScaleSuffix), std::move(s));
    return Status::OK();
  }
  ASSIGN_OR_RETURN(Tensor t, ConvertFloat(in, p.dtype, p.name));
  out->emplace(p.name, std::move(t));
  return Status::OK();
}

// The tensors to write: the MTP layers' embed_tokens / shared_head.head copies filled from (or checked against)
// the shared embedding and head; without MTP, the MTP layers dropped and D = 0 in `config`.
Result<TensorRefMap> PrepareTensors(const TensorRefMap& tensors_in, bool include_mtp, const std::string& where,
                                    ModelConfig* config) {
  const int64_t L = config->num_hidden_layers;
  TensorRefMap tensors;
  for (const auto& [name, ref] : tensors_in) {
    bool mtp = false;
    for (int64_t l = L; l < config->num_blocks(); ++l) mtp |= name.starts_with(MtpPrefix(l));
    if (!mtp || include_mtp) tensors.emplace(name, ref);
  }
  if (!include_mtp) {
    config->num_nextn_predict_layers = 0;
    return tensors;
  }
  for (int64_t l = L; l < config->num_blocks(); ++l) {
    for (const auto& [copy, shared] : {std::pair{MtpPrefix(l) + "embed_tokens.weight", "model.embed_tokens.weight"},
                                       std::pair{MtpPrefix(l) + "shared_head.head.weight", "lm_head.weight"}}) {
      auto src = tensors.find(shared);
      if (src == tensors.end()) continue;  // CheckHfTensorSet reports it
      auto it = tensors.find(copy);
      if (it == tensors.end()) {
        tensors.emplace(copy, src->second);
      } else if (it->second.shape == src->second.shape && ToF32(it->second) != ToF32(src->second)) {
        return InvalidArgumentError(where + ": " + copy + " differs from " + shared +
                                    "; the MTP layer shares the embedding and head (deepseek-v3.md §4.1), so the "
                                    "copy must be equal: drop it from the tensors or copy " + shared + " into it");
      }
    }
  }
  return tensors;
}

// Output files in model order, each FP8 scale beside its weight; one file unless the total exceeds the limit.
struct ExportPlan {
  std::vector<std::pair<std::string, std::vector<Planned>>> files;
  int64_t total_bytes = 0;
};

ExportPlan PlanExport(const ModelConfig& config, const ExportOptions& options) {
  std::vector<Planned> all;
  ExportPlan plan;
  for (const HfTensorSpec& spec : ExpectedHfTensors(config, options.include_mtp)) {
    Planned p{spec.name, options.dtype, 0};
    if (IsBias(spec.name)) p.dtype = DType::kF32;
    if (options.fp8 && IsFp8ExportedWeight(spec.name)) p.dtype = DType::kF8E4M3;
    p.bytes = NumElements(spec.shape).value_or(0) * DTypeSize(p.dtype);
    if (p.dtype == DType::kF8E4M3) {
      p.bytes += kernels::CeilDiv(spec.shape[0], kernels::kFp8BlockSize) *
                 kernels::CeilDiv(spec.shape[1], kernels::kFp8BlockSize) * 4;
    }
    plan.total_bytes += p.bytes;
    all.push_back(std::move(p));
  }
  std::vector<std::vector<Planned>> groups(1);
  int64_t group_bytes = 0;
  for (Planned& p : all) {
    if (plan.total_bytes > options.max_shard_bytes && !groups.back().empty() &&
        group_bytes + p.bytes > options.max_shard_bytes) {
      groups.emplace_back();
      group_bytes = 0;
    }
    group_bytes += p.bytes;
    groups.back().push_back(std::move(p));
  }
  for (size_t k = 0; k < groups.size(); ++k) {
    std::string file(kSingleFile);
    if (groups.size() > 1) {
      char buf[64];
      std::snprintf(buf, sizeof(buf), "model-%05zu-of-%05zu.safetensors", k + 1, groups.size());
      file = buf;
    }
    plan.files.emplace_back(std::move(file), std::move(groups[k]));
  }
  return plan;
}

// Weight files of an earlier export that this one did not overwrite would confuse a loader.
Status RemoveStaleWeights(const std::string& out_dir, const ExportPlan& plan) {
  std::set<std::string> written;
  for (const auto& [file, _] : plan.files) written.insert(file);
  RETURN_IF_ERROR(RemoveIfExists(JoinPath(out_dir, plan.files.size() > 1 ? kSingleFile : kIndexFile)));
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(out_dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (std::regex_match(name, kShardFileRe) && !written.count(name)) {
      RETURN_IF_ERROR(RemoveIfExists(entry.path().string()));
    }
  }
  if (ec) return ErrnoToStatus(ec.value(), "list " + out_dir);
  return Status::OK();
}

}  // namespace

Status ExportHuggingFace(const ModelConfig& config_in, const TensorRefMap& tensors_in, const std::string& out_dir,
                         const ExportOptions& options) {
  const std::string where = "export to " + out_dir;
  if (options.dtype != DType::kBF16 && options.dtype != DType::kF32) {
    return InvalidArgumentError(where + ": dtype must be BF16 or F32, got " + std::string(DTypeName(options.dtype)));
  }
  if (options.max_shard_bytes <= 0) return InvalidArgumentError(where + ": max_shard_bytes must be positive");
  RETURN_IF_ERROR(config_in.Validate().WithContext(where));
  ModelConfig config = config_in;
  ASSIGN_OR_RETURN(TensorRefMap tensors, PrepareTensors(tensors_in, options.include_mtp, where, &config));
  RETURN_IF_ERROR(CheckHfTensorSet(config, tensors, options.include_mtp).WithContext(where));
  config.torch_dtype = options.dtype == DType::kF32 ? "float32" : "bfloat16";

  const ExportPlan plan = PlanExport(config, options);
  RETURN_IF_ERROR(MakeDirs(out_dir));
  SafetensorsWriteOptions st_options;
  st_options.sync = options.sync;
  std::map<std::string, std::string> weight_map;  // sorted, as transformers writes it
  for (const auto& [file, planned] : plan.files) {
    TensorSet converted;  // one file's tensors at a time
    for (const Planned& p : planned) {
      RETURN_IF_ERROR(Convert(p, tensors.find(p.name)->second, &converted).WithContext(where));
    }
    for (const auto& [name, _] : converted) weight_map[name] = file;
    RETURN_IF_ERROR(WriteSafetensors(JoinPath(out_dir, file), converted, st_options));
  }
  if (plan.files.size() > 1) {
    Json index;
    index["metadata"] = {{"total_size", plan.total_bytes}};
    index["weight_map"] = weight_map;
    RETURN_IF_ERROR(WriteFileAtomically(JoinPath(out_dir, kIndexFile), index.dump(2) + "\n", options.sync));
  }

  Json cfg = Json::parse(ToHfConfigJson(config));
  if (options.fp8) {
    cfg["quantization_config"] = {{"activation_scheme", "dynamic"},
                                  {"fmt", "e4m3"},
                                  {"quant_method", "fp8"},
                                  {"weight_block_size", {kernels::kFp8BlockSize, kernels::kFp8BlockSize}}};
  }
  RETURN_IF_ERROR(WriteFileAtomically(JoinPath(out_dir, "config.json"), cfg.dump(2) + "\n", options.sync));
  RETURN_IF_ERROR(RemoveStaleWeights(out_dir, plan));
  return options.sync ? SyncDirectory(out_dir) : Status::OK();
}

Status ExportHuggingFace(const ModelConfig& config, const TensorSet& tensors, const std::string& out_dir,
                         const ExportOptions& options) {
  return ExportHuggingFace(config, RefsOf(tensors), out_dir, options);
}

namespace {

Status BadDir(const std::string& dir, const std::string& detail) {
  return DataLossError(dir + ": " + detail + " (the Hugging Face checkpoint directory is incomplete or corrupt; "
                             "export or download it again)");
}

// The files to read, from model.safetensors or the index (which must name plain files of `dir`).
Result<std::vector<std::string>> WeightFiles(const std::string& dir, std::map<std::string, std::string>* weight_map) {
  if (FileExists(JoinPath(dir, kSingleFile))) return std::vector<std::string>{std::string(kSingleFile)};
  const std::string index_path = JoinPath(dir, kIndexFile);
  if (!FileExists(index_path)) {
    return NotFoundError(dir + " has neither " + std::string(kSingleFile) + " nor " + std::string(kIndexFile) +
                         "; pass a Hugging Face checkpoint directory (e.g. one written by `shoal export`)");
  }
  ASSIGN_OR_RETURN(std::string text, ReadFile(index_path));
  Json index = Json::parse(text, nullptr, false);
  if (index.is_discarded() || !index.is_object() || !index.contains("weight_map") ||
      !index["weight_map"].is_object()) {
    return BadDir(dir, std::string(kIndexFile) + " is not JSON with a \"weight_map\" object");
  }
  std::set<std::string> files;
  for (const auto& [name, file] : index["weight_map"].items()) {
    if (!file.is_string()) return BadDir(dir, std::string(kIndexFile) + ": weight_map[\"" + name + "\"] is not a file name");
    const std::string f = file.get<std::string>();
    if (f.empty() || f.find('/') != std::string::npos || f == "." || f == "..") {
      return BadDir(dir, std::string(kIndexFile) + ": weight_map[\"" + name + "\"] = \"" + f +
                             "\" is not a file of this directory");
    }
    (*weight_map)[name] = f;
    files.insert(f);
  }
  if (files.empty()) return BadDir(dir, std::string(kIndexFile) + " lists no tensors");
  return std::vector<std::string>(files.begin(), files.end());
}

// quantization_config.weight_block_size of a config.json; 128×128 when absent.
Status Fp8BlockSize(const std::string& config_text, const std::string& path, int64_t* rows, int64_t* cols) {
  *rows = *cols = kernels::kFp8BlockSize;
  Json cfg = Json::parse(config_text, nullptr, false);
  if (!cfg.is_object() || !cfg.contains("quantization_config") || !cfg["quantization_config"].is_object()) {
    return Status::OK();
  }
  const Json& q = cfg["quantization_config"];
  if (!q.contains("weight_block_size")) return Status::OK();
  const Json& b = q["weight_block_size"];
  if (!b.is_array() || b.size() != 2 || !b[0].is_number_unsigned() || !b[1].is_number_unsigned() ||
      b[0].get<int64_t>() <= 0 || b[1].get<int64_t>() <= 0) {
    return InvalidArgumentError(path + ": quantization_config.weight_block_size must be [rows, cols], got " +
                                b.dump());
  }
  *rows = b[0].get<int64_t>();
  *cols = b[1].get<int64_t>();
  return Status::OK();
}

}  // namespace

Result<HfCheckpoint> LoadHuggingFace(const std::string& dir) {
  HfCheckpoint out;
  ASSIGN_OR_RETURN(std::string config_text, ReadFile(JoinPath(dir, "config.json")));
  auto config = ModelConfigFromHfJson(config_text);
  if (!config.ok()) return config.status().WithContext(JoinPath(dir, "config.json"));
  out.config = *config;

  int64_t block_rows = 0, block_cols = 0;
  RETURN_IF_ERROR(Fp8BlockSize(config_text, JoinPath(dir, "config.json"), &block_rows, &block_cols));

  std::map<std::string, std::string> weight_map;
  ASSIGN_OR_RETURN(out.files, WeightFiles(dir, &weight_map));
  std::map<std::string, SafetensorsFile> files;
  std::map<std::string, std::string, std::less<>> file_of;  // tensor -> file
  for (const std::string& f : out.files) {
    ASSIGN_OR_RETURN(SafetensorsFile file, SafetensorsFile::Open(JoinPath(dir, f)));
    for (const std::string& name : file.names()) {
      auto [it, inserted] = file_of.emplace(name, f);
      if (!inserted) return BadDir(dir, "tensor '" + name + "' is in both " + it->second + " and " + f);
    }
    files.emplace(f, std::move(file));
  }
  for (const auto& [name, f] : weight_map) {
    auto it = file_of.find(name);
    if (it == file_of.end() || it->second != f) {
      return BadDir(dir, std::string(kIndexFile) + " puts tensor '" + name + "' in " + f + ", which does not hold it");
    }
  }

  for (const auto& [name, f] : file_of) {
    if (EndsWith(name, kScaleSuffix)) {
      const std::string weight = name.substr(0, name.size() - kScaleSuffix.size());
      if (!file_of.count(weight)) return BadDir(dir, "'" + name + "' has no weight '" + weight + "'");
      continue;
    }
    ASSIGN_OR_RETURN(TensorRef ref, files.at(f).Get(name));
    std::vector<float> values;
    if (ref.dtype == DType::kF8E4M3) {
      const std::string scale_name = name + std::string(kScaleSuffix);
      auto s = file_of.find(scale_name);
      if (s == file_of.end()) {
        return BadDir(dir, "FP8 tensor '" + name + "' has no '" + scale_name + "' (its dequantisation scales)");
      }
      ASSIGN_OR_RETURN(TensorRef scale, files.at(s->second).Get(scale_name));
      auto deq = DequantizeFp8(ref, scale, JoinPath(dir, f) + ": " + name, block_rows, block_cols);
      if (!deq.ok()) return DataLossError(deq.status().message());
      values = std::move(*deq);
      out.fp8 = true;
    } else {
      values = ToF32(ref);
    }
    out.tensors.emplace(name, Tensor::FromF32(ref.shape, values));
  }

  const std::string mtp_prefix = MtpPrefix(out.config.num_hidden_layers);
  for (const auto& [name, _] : out.tensors) out.has_mtp |= name.starts_with(mtp_prefix);
  RETURN_IF_ERROR(CheckHfTensorSet(out.config, out.tensors, out.has_mtp).WithContext(dir));
  return out;
}

}  // namespace shoal::checkpoint
