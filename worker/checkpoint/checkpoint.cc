#include "worker/checkpoint/checkpoint.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "common/file_util.h"
#include "worker/checkpoint/safetensors.h"

namespace shoal::checkpoint {

namespace {

using json = nlohmann::json;

constexpr std::string_view kManifestFormat = "shoal-shard-manifest/1";
constexpr std::string_view kStateFormat = "shoal-checkpoint-state/1";
constexpr std::string_view kExpAvg = ".exp_avg";
constexpr std::string_view kExpAvgSq = ".exp_avg_sq";
constexpr std::string_view kOptimStepTensor = "step";

std::string JoinPath(const std::string& dir, const std::string& name) {
  return (std::filesystem::path(dir) / name).string();
}

bool ValidShardName(std::string_view s) {
  if (s.empty() || s.size() > 128 || s[0] == '.') return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
           c == '.';
  });
}

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// The parameter a moment belongs to ("x.exp_avg_sq" -> "x"), or empty when the name is not a moment's.
std::string_view MomentBase(std::string_view name) {
  if (EndsWith(name, kExpAvgSq)) return name.substr(0, name.size() - kExpAvgSq.size());
  if (EndsWith(name, kExpAvg)) return name.substr(0, name.size() - kExpAvg.size());
  return {};
}

constexpr char kBase64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

std::string Base64Encode(std::string_view in) {
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= in.size(); i += 3) {
    const uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8) | uint8_t(in[i + 2]);
    for (int k = 3; k >= 0; --k) out += kBase64[(v >> (6 * k)) & 63];
  }
  if (i + 1 == in.size()) {
    const uint32_t v = uint8_t(in[i]) << 16;
    out += kBase64[(v >> 18) & 63];
    out += kBase64[(v >> 12) & 63];
    out += "==";
  } else if (i + 2 == in.size()) {
    const uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8);
    out += kBase64[(v >> 18) & 63];
    out += kBase64[(v >> 12) & 63];
    out += kBase64[(v >> 6) & 63];
    out += '=';
  }
  return out;
}

bool Base64Decode(std::string_view in, std::string* out) {
  if (in.size() % 4 != 0) return false;
  out->clear();
  uint32_t buf = 0;
  int bits = 0;
  size_t pad = 0;
  for (size_t i = 0; i < in.size(); ++i) {
    const char c = in[i];
    if (c == '=') {
      if (i + 2 < in.size()) return false;
      ++pad;
      continue;
    }
    if (pad) return false;
    const char* p = std::strchr(kBase64, c);
    if (p == nullptr || c == '\0') return false;
    buf = (buf << 6) | static_cast<uint32_t>(p - kBase64);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out->push_back(static_cast<char>((buf >> bits) & 0xff));
    }
  }
  return true;
}

Status BadFile(const std::string& path, const std::string& detail) {
  return DataLossError(path + ": " + detail +
                       " (the checkpoint file is corrupt; restore an older committed step)");
}

std::string StateToJson(const ShardWriteRequest& r) {
  json j;
  j["format"] = kStateFormat;
  j["shard"] = r.shard;
  j["step"] = r.state.step;
  j["phase"] = r.state.phase;
  j["epoch"] = r.state.epoch;
  j["optimizer_step"] = r.optimizer_step;
  j["data_cursor"] = json::parse(r.state.data_cursor_json);
  j["rng_state_base64"] = Base64Encode(r.state.rng_state);
  json extra = json::object();
  for (const auto& [k, v] : r.state.extra_json) extra[k] = json::parse(v);
  j["extra"] = std::move(extra);
  return j.dump(2) + "\n";
}

Status StateFromJson(std::string_view text, const std::string& path, TrainerState* state, int64_t* optimizer_step) {
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return BadFile(path, "not a JSON object");
  if (j.value("format", "") != kStateFormat) {
    return BadFile(path, "\"format\" is not \"" + std::string(kStateFormat) + "\"");
  }
  try {
    state->step = j.at("step").get<int64_t>();
    state->phase = j.at("phase").get<std::string>();
    state->epoch = j.at("epoch").get<int64_t>();
    *optimizer_step = j.at("optimizer_step").get<int64_t>();
    state->data_cursor_json = j.at("data_cursor").dump();
    if (!Base64Decode(j.at("rng_state_base64").get<std::string>(), &state->rng_state)) {
      return BadFile(path, "\"rng_state_base64\" is not base64");
    }
    state->extra_json.clear();
    for (const auto& [k, v] : j.at("extra").items()) state->extra_json[k] = v.dump();
  } catch (const json::exception& e) {
    return BadFile(path, std::string("missing or mistyped key: ") + e.what());
  }
  return Status::OK();
}

// A file of the checkpoint layout ("model-x.safetensors", or a writer's temporary ".model-x.safetensors.tmp-...")
// -> its shard name; empty when the name is not one of ours.
std::string ShardOfFileName(std::string name) {
  if (!name.empty() && name[0] == '.') {
    const size_t tmp = name.rfind(".tmp-");
    if (tmp == std::string::npos) return {};
    name = name.substr(1, tmp - 1);
  }
  for (const auto& [prefix, suffix] : {std::pair{"model-", ".safetensors"}, std::pair{"optim-", ".safetensors"},
                                      std::pair{"state-", ".json"}, std::pair{"manifest-", ".json"}}) {
    const std::string_view p(prefix), s(suffix);
    if (name.size() > p.size() + s.size() && name.starts_with(p) && EndsWith(name, s)) {
      return name.substr(p.size(), name.size() - p.size() - s.size());
    }
  }
  return {};
}

Status RunHook(const ShardWriteOptions& options, std::string_view stage) {
  return options.fault_hook ? options.fault_hook(stage) : Status::OK();
}

}  // namespace

std::string StepDirName(int64_t step) { return "step-" + std::to_string(step); }
std::string StepDir(const std::string& checkpoint_root, int64_t step) {
  return JoinPath(checkpoint_root, StepDirName(step));
}
std::string ModelFileName(std::string_view shard) { return "model-" + std::string(shard) + ".safetensors"; }
std::string OptimFileName(std::string_view shard) { return "optim-" + std::string(shard) + ".safetensors"; }
std::string StateFileName(std::string_view shard) { return "state-" + std::string(shard) + ".json"; }
std::string ManifestFileName(std::string_view shard) { return "manifest-" + std::string(shard) + ".json"; }

uint64_t ShardManifest::total_bytes() const {
  uint64_t n = 0;
  for (const auto& f : files) n += f.digest.bytes;
  return n;
}

std::string ShardManifest::ToJson() const {
  json j;
  j["format"] = kManifestFormat;
  j["shard"] = shard;
  j["step"] = step;
  j["phase"] = phase;
  j["epoch"] = epoch;
  json arr = json::array();
  for (const auto& f : files) {
    arr.push_back({{"name", f.name}, {"bytes", f.digest.bytes}, {"xxh3", Xxh3Hex(f.digest.xxh3)}});
  }
  j["files"] = std::move(arr);
  return j.dump(2) + "\n";
}

Result<ShardManifest> ShardManifest::FromJson(std::string_view text, std::string_view where) {
  const std::string w(where);
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return BadFile(w, "shard manifest is not a JSON object");
  if (j.value("format", "") != kManifestFormat) {
    return BadFile(w, "shard manifest \"format\" is not \"" + std::string(kManifestFormat) + "\"");
  }
  ShardManifest m;
  try {
    m.shard = j.at("shard").get<std::string>();
    m.step = j.at("step").get<int64_t>();
    m.phase = j.at("phase").get<std::string>();
    m.epoch = j.at("epoch").get<int64_t>();
    for (const json& f : j.at("files")) {
      ShardFileInfo info;
      info.name = f.at("name").get<std::string>();
      info.digest.bytes = f.at("bytes").get<uint64_t>();
      if (!ParseXxh3Hex(f.at("xxh3").get<std::string>(), &info.digest.xxh3)) {
        return BadFile(w, "file " + info.name + ": \"xxh3\" is not 16 lowercase hex digits");
      }
      if (info.name.empty() || info.name.find('/') != std::string::npos || info.name[0] == '.') {
        return BadFile(w, "file name \"" + info.name + "\" is not a plain file name");
      }
      m.files.push_back(std::move(info));
    }
  } catch (const json::exception& e) {
    return BadFile(w, std::string("shard manifest has a missing or mistyped key: ") + e.what());
  }
  if (!ValidShardName(m.shard)) return BadFile(w, "shard name \"" + m.shard + "\" is invalid");
  return m;
}

Status ValidateShardRequest(const ShardWriteRequest& r) {
  const std::string where = "checkpoint shard \"" + r.shard + "\" (step " + std::to_string(r.state.step) + ")";
  if (!ValidShardName(r.shard)) {
    return InvalidArgumentError(where + ": shard name must be 1-128 characters of [A-Za-z0-9_.-], not starting with '.'");
  }
  if (r.state.step < 0 || r.state.epoch < 0 || r.optimizer_step < 0) {
    return InvalidArgumentError(where + ": step, epoch and optimizer_step must be >= 0");
  }
  for (const auto& [name, t] : r.params) {
    if (!MomentBase(name).empty() || name == kOptimStepTensor) {
      return InvalidArgumentError(where + ": parameter name '" + name + "' is reserved for optimizer state");
    }
    if (!IsFloatDType(t.dtype) || t.dtype == DType::kF8E4M3) {
      return InvalidArgumentError(where + ": parameter '" + name + "' is " + std::string(DTypeName(t.dtype)) +
                                  "; master weights must be F32 (or BF16/F16)");
    }
    if (!NumElements(t.shape) || (t.data == nullptr && t.nbytes() > 0)) {
      return InvalidArgumentError(where + ": parameter '" + name + "' has a bad shape " + ShapeString(t.shape) +
                                  " or no data");
    }
  }
  for (const auto& [name, t] : r.moments) {
    const std::string_view base = MomentBase(name);
    if (base.empty()) {
      return InvalidArgumentError(where + ": optimizer tensor '" + name + "' must be named <param>.exp_avg or " +
                                  "<param>.exp_avg_sq");
    }
    auto p = r.params.find(base);
    if (p == r.params.end()) {
      return InvalidArgumentError(where + ": optimizer tensor '" + name + "' has no parameter '" +
                                  std::string(base) + "' in this shard; a shard saves each parameter with its moments");
    }
    if (p->second.shape != t.shape || !IsFloatDType(t.dtype) || t.dtype == DType::kF8E4M3 ||
        (t.data == nullptr && t.nbytes() > 0)) {
      return InvalidArgumentError(where + ": optimizer tensor '" + name + "' is " + std::string(DTypeName(t.dtype)) +
                                  " " + ShapeString(t.shape) + "; expected an F32/BF16 tensor of the parameter's " +
                                  "shape " + ShapeString(p->second.shape));
    }
  }
  if (json::parse(r.state.data_cursor_json, nullptr, false).is_discarded()) {
    return InvalidArgumentError(where + ": data cursor is not valid JSON: " + r.state.data_cursor_json);
  }
  for (const auto& [k, v] : r.state.extra_json) {
    if (json::parse(v, nullptr, false).is_discarded()) {
      return InvalidArgumentError(where + ": extra state \"" + k + "\" is not valid JSON text: " + v +
                                  " (quote strings: \"\\\"text\\\"\")");
    }
  }
  return Status::OK();
}

Result<ShardManifest> WriteShard(const std::string& checkpoint_root, const ShardWriteRequest& r,
                                 const ShardWriteOptions& options) {
  RETURN_IF_ERROR(ValidateShardRequest(r));
  const std::string dir = StepDir(checkpoint_root, r.state.step);
  RETURN_IF_ERROR(MakeDirs(dir));

  // First retract any earlier manifest of this shard: from here until the new manifest lands, the shard is
  // incomplete, whatever happens.
  const std::string manifest_path = JoinPath(dir, ManifestFileName(r.shard));
  if (::unlink(manifest_path.c_str()) != 0 && errno != ENOENT) {
    return ErrnoToStatus(errno, "remove the old manifest " + manifest_path);
  }
  if (options.sync) RETURN_IF_ERROR(SyncDirectory(dir));
  // Temporary files an earlier, crashed write of this shard left behind.
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name[0] == '.' && ShardOfFileName(name) == r.shard) ::unlink(entry.path().c_str());
  }

  ShardManifest manifest;
  manifest.shard = r.shard;
  manifest.step = r.state.step;
  manifest.phase = r.state.phase;
  manifest.epoch = r.state.epoch;
  SafetensorsWriteOptions st_options;
  st_options.sync = options.sync;
  st_options.metadata = {{"shoal_shard", r.shard}, {"shoal_step", std::to_string(r.state.step)}};

  const std::string model_name = ModelFileName(r.shard);
  ASSIGN_OR_RETURN(FileDigest model, WriteSafetensors(JoinPath(dir, model_name), r.params, st_options));
  manifest.files.push_back({model_name, model});
  RETURN_IF_ERROR(RunHook(options, "model"));

  // Moments go to disk as BF16 (deepseek-v3.md §5.5); convert the ones that are not.
  TensorSet converted;
  TensorRefMap optim;
  for (const auto& [name, t] : r.moments) {
    if (t.dtype == DType::kBF16) {
      optim.emplace(name, t);
    } else {
      ASSIGN_OR_RETURN(Tensor bf, ConvertFloat(t, DType::kBF16, name));
      optim.emplace(name, converted.emplace(name, std::move(bf)).first->second.ref());
    }
  }
  const Tensor step_tensor = Tensor::ScalarI64(r.optimizer_step);
  optim.emplace(std::string(kOptimStepTensor), step_tensor.ref());
  const std::string optim_name = OptimFileName(r.shard);
  ASSIGN_OR_RETURN(FileDigest optim_digest, WriteSafetensors(JoinPath(dir, optim_name), optim, st_options));
  manifest.files.push_back({optim_name, optim_digest});
  RETURN_IF_ERROR(RunHook(options, "optim"));

  const std::string state_name = StateFileName(r.shard);
  ASSIGN_OR_RETURN(FileDigest state, WriteFileAtomically(JoinPath(dir, state_name), StateToJson(r), options.sync));
  manifest.files.push_back({state_name, state});
  RETURN_IF_ERROR(RunHook(options, "state"));

  ASSIGN_OR_RETURN(FileDigest m, WriteFileAtomically(manifest_path, manifest.ToJson(), options.sync));
  (void)m;
  RETURN_IF_ERROR(RunHook(options, "manifest"));
  return manifest;
}

Result<StepDirListing> ListShards(const std::string& step_dir) {
  std::error_code ec;
  std::filesystem::directory_iterator it(step_dir, ec);
  if (ec) return ErrnoToStatus(ec.value(), "list checkpoint directory " + step_dir);
  std::set<std::string> complete, seen;
  for (const auto& entry : it) {
    const std::string name = entry.path().filename().string();
    const std::string shard = ShardOfFileName(name);
    if (shard.empty()) continue;
    seen.insert(shard);
    if (name == ManifestFileName(shard)) complete.insert(shard);
  }
  StepDirListing out;
  out.complete.assign(complete.begin(), complete.end());
  for (const auto& s : seen)
    if (!complete.count(s)) out.incomplete.push_back(s);
  return out;
}

namespace {

// Maps one manifest file and checks its digest.
Result<std::shared_ptr<const MappedFile>> OpenVerified(const std::string& step_dir, const ShardFileInfo& f,
                                                       const ShardManifest& manifest) {
  const std::string path = JoinPath(step_dir, f.name);
  auto file = MappedFile::Open(path);
  if (!file.ok()) {
    return DataLossError(path + ": listed in the manifest of shard \"" + manifest.shard + "\" but cannot be read (" +
                         file.status().ToString() + "); restore an older committed step");
  }
  const FileDigest got = (*file)->Digest();
  if (got.bytes != f.digest.bytes) {
    return DataLossError(path + ": size " + std::to_string(got.bytes) + " bytes, the manifest says " +
                         std::to_string(f.digest.bytes) + " (truncated or overwritten); restore an older committed step");
  }
  if (got.xxh3 != f.digest.xxh3) {
    return DataLossError(path + ": xxh3 " + Xxh3Hex(got.xxh3) + " does not match the manifest's " +
                         Xxh3Hex(f.digest.xxh3) + " (corrupted on disk or overwritten); restore an older committed step");
  }
  return file;
}

}  // namespace

Status VerifyShardFiles(const std::string& step_dir, const ShardManifest& manifest) {
  for (const auto& f : manifest.files) RETURN_IF_ERROR(OpenVerified(step_dir, f, manifest));
  return Status::OK();
}

Result<CheckpointShard> LoadShard(const std::string& step_dir, std::string_view shard, const ShardManifest* committed) {
  const std::string manifest_path = JoinPath(step_dir, ManifestFileName(shard));
  auto text = ReadFile(manifest_path);
  if (!text.ok()) {
    if (text.status().code() == StatusCode::kNotFound) {
      return NotFoundError(manifest_path + " does not exist: shard \"" + std::string(shard) +
                           "\" was never completely written (a crash mid-write leaves no manifest); restore the last "
                           "committed step instead");
    }
    return text.status();
  }
  CheckpointShard out;
  ASSIGN_OR_RETURN(out.manifest, ShardManifest::FromJson(*text, manifest_path));
  const ShardManifest& m = out.manifest;
  if (m.shard != shard) return BadFile(manifest_path, "names shard \"" + m.shard + "\"");
  if (committed != nullptr && !(*committed == m)) {
    return DataLossError(manifest_path + " differs from the committed manifest of shard \"" + std::string(shard) +
                         "\" (step " + std::to_string(committed->step) + ", epoch " + std::to_string(committed->epoch) +
                         "): the shard was rewritten after the commit, e.g. by a stale worker; restore another step");
  }
  const std::string want[] = {ModelFileName(shard), OptimFileName(shard), StateFileName(shard)};
  if (m.files.size() != 3 || m.files[0].name != want[0] || m.files[1].name != want[1] || m.files[2].name != want[2]) {
    return BadFile(manifest_path, "does not list exactly " + want[0] + ", " + want[1] + ", " + want[2]);
  }

  ASSIGN_OR_RETURN(auto model_file, OpenVerified(step_dir, m.files[0], m));
  ASSIGN_OR_RETURN(SafetensorsFile model, SafetensorsFile::FromMapping(model_file));
  ASSIGN_OR_RETURN(out.params, model.ReadAll());

  ASSIGN_OR_RETURN(auto optim_file, OpenVerified(step_dir, m.files[1], m));
  ASSIGN_OR_RETURN(SafetensorsFile optim, SafetensorsFile::FromMapping(optim_file));
  ASSIGN_OR_RETURN(out.moments, optim.ReadAll());
  auto step_it = out.moments.find(kOptimStepTensor);
  if (step_it == out.moments.end() || step_it->second.dtype != DType::kI64 || step_it->second.numel() != 1) {
    return BadFile(optim.path(), "no I64 scalar \"step\" (the optimizer step)");
  }
  out.optimizer_step = step_it->second.values<int64_t>()[0];
  out.moments.erase(step_it);

  ASSIGN_OR_RETURN(auto state_file, OpenVerified(step_dir, m.files[2], m));
  const std::string_view state_text(reinterpret_cast<const char*>(state_file->data()), state_file->size());
  int64_t state_optimizer_step = 0;
  RETURN_IF_ERROR(StateFromJson(state_text, state_file->path(), &out.state, &state_optimizer_step));
  if (out.state.step != m.step || out.state.phase != m.phase || out.state.epoch != m.epoch ||
      state_optimizer_step != out.optimizer_step) {
    return BadFile(state_file->path(), "step/phase/epoch/optimizer step disagree with the manifest or the optimizer "
                                       "file");
  }
  return out;
}

Result<MergedCheckpoint> LoadMerged(const std::string& step_dir, const std::vector<std::string>& shards) {
  std::vector<std::string> names = shards;
  if (names.empty()) {
    ASSIGN_OR_RETURN(StepDirListing listing, ListShards(step_dir));
    if (!listing.incomplete.empty()) {
      std::string list;
      for (const auto& s : listing.incomplete) list += (list.empty() ? "" : ", ") + s;
      return FailedPreconditionError(step_dir + ": shard(s) " + list + " have files but no manifest (not completely "
                                     "written), so this step is incomplete; load the committed shard list or an "
                                     "older step");
    }
    names = listing.complete;
    if (names.empty()) {
      return NotFoundError(step_dir + " holds no complete checkpoint shard (no manifest-*.json)");
    }
  }
  MergedCheckpoint out;
  std::map<std::string, std::string> owner;  // tensor name -> shard that supplied it
  auto merge = [&](TensorSet& into, TensorSet& from, const std::string& shard) -> Status {
    for (auto& [name, t] : from) {
      auto [it, inserted] = into.try_emplace(name, std::move(t));
      if (inserted) {
        owner[name] = shard;
      } else if (!(it->second == t)) {
        return DataLossError(step_dir + ": tensor '" + name + "' differs between shards \"" + owner[name] +
                             "\" and \"" + shard + "\"; the shards do not belong to one consistent checkpoint");
      }
    }
    return Status::OK();
  };
  for (size_t i = 0; i < names.size(); ++i) {
    ASSIGN_OR_RETURN(CheckpointShard s, LoadShard(step_dir, names[i]));
    if (i == 0) {
      out.step = s.state.step;
      out.optimizer_step = s.optimizer_step;
    } else if (s.state.step != out.step || s.optimizer_step != out.optimizer_step) {
      return DataLossError(step_dir + ": shard \"" + names[i] + "\" is at step " + std::to_string(s.state.step) +
                           " (optimizer step " + std::to_string(s.optimizer_step) + "), shard \"" + names[0] +
                           "\" at step " + std::to_string(out.step) + " (optimizer step " +
                           std::to_string(out.optimizer_step) + "); they cannot be merged");
    }
    RETURN_IF_ERROR(merge(out.params, s.params, names[i]));
    RETURN_IF_ERROR(merge(out.moments, s.moments, names[i]));
    out.states.emplace(names[i], std::move(s.state));
    out.manifests.push_back(std::move(s.manifest));
  }
  return out;
}

}  // namespace shoal::checkpoint
