// YAML -> JobSpec. yaml-cpp stays in this file (and job_spec_emit.cc). Scalars are read from their text, not with
// yaml-cpp's as<T>(), so that every error can say what was expected and what was there; positions come from the
// nodes' marks (0-based in yaml-cpp 0.7, printed 1-based).
#include <algorithm>
#include <charconv>
#include <cmath>
#include <map>
#include <span>

#include <yaml-cpp/yaml.h>

#include "spec/job_spec.h"
#include "spec/model_config_fields.h"

namespace shoal {
namespace {

using spec_internal::ModelField;
using spec_internal::RopeField;

constexpr size_t kMaxErrors = 20;

std::string Quote(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      out += c == '\n' ? "\\n" : c == '\t' ? "\\t" : "?";
    } else {
      out += c;
    }
  }
  return out + "\"";
}

std::string Describe(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Scalar: return Quote(n.Scalar());
    case YAML::NodeType::Sequence: return "a list";
    case YAML::NodeType::Map: return "a map";
    default: return "nothing";
  }
}

std::string Join(std::span<const std::string> names) {
  std::string out;
  for (const std::string& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

std::string ChildPath(const std::string& parent, std::string_view key) {
  return parent.empty() ? std::string(key) : parent + "." + std::string(key);
}

enum class IntRule { kAny, kNonNegative, kPositive };
enum class NumRule { kAny, kNonNegative, kPositive, kUnit };

struct Entry {
  std::string key;
  std::string path;
  YAML::Node value;
  YAML::Mark key_mark;
  YAML::Mark mark;  // of the value; of the key when the value is empty (yaml-cpp marks it on the next line)
};

struct Located {
  int line;
  int column;
  std::string text;
};

// Collects errors and the position of every path it has seen (for the semantic checks, which know only paths).
class Reader {
 public:
  explicit Reader(std::string_view file) : file_(file) {}

  void Error(const YAML::Mark& m, const std::string& path, const std::string& msg) {
    int line = m.line >= 0 ? m.line + 1 : 1;
    int col = m.column >= 0 ? m.column + 1 : 1;
    std::string text = file_ + ":" + std::to_string(line) + ":" + std::to_string(col) + ": ";
    if (!path.empty()) text += path + ": ";
    errors_.push_back({line, col, text + msg});
  }
  void Record(const std::string& path, const YAML::Mark& m) { marks_.emplace(path, m); }
  // The mark of `path`, or of its nearest recorded ancestor ("phases[2].data.builtin" -> "phases[2]" -> "").
  YAML::Mark Locate(std::string path) const {
    for (;;) {
      if (auto it = marks_.find(path); it != marks_.end()) return it->second;
      if (path.empty()) return YAML::Mark();
      size_t cut = path.find_last_of(".[");
      path = cut == std::string::npos ? std::string() : path.substr(0, cut);
    }
  }
  bool failed() const { return !errors_.empty(); }
  std::string Message(bool sort) {
    if (sort)
      std::stable_sort(errors_.begin(), errors_.end(), [](const Located& a, const Located& b) {
        return a.line != b.line ? a.line < b.line : a.column < b.column;
      });
    std::string msg;
    for (size_t i = 0; i < errors_.size() && i < kMaxErrors; ++i) msg += (i ? "\n" : "") + errors_[i].text;
    if (errors_.size() > kMaxErrors) msg += "\n(and " + std::to_string(errors_.size() - kMaxErrors) + " more)";
    return msg;
  }

  // A map's entries; reports non-map nodes, odd keys, duplicates and unknown keys (with a "did you mean").
  std::vector<Entry> Entries(const YAML::Node& node, const std::string& path, const YAML::Mark& where,
                             std::span<const std::string> known) {
    std::vector<Entry> out;
    if (!node.IsMap()) {
      Error(node.IsNull() ? where : node.Mark(), path, "expected a map, got " + Describe(node));
      return out;
    }
    Record(path, node.Mark());
    std::map<std::string, YAML::Mark> seen;
    for (auto it = node.begin(); it != node.end(); ++it) {
      const YAML::Node& k = it->first;
      if (!k.IsScalar()) {
        Error(k.Mark(), path, "keys must be plain names, got " + Describe(k));
        continue;
      }
      Entry e{k.Scalar(), ChildPath(path, k.Scalar()), it->second, k.Mark(),
              it->second.IsNull() ? k.Mark() : it->second.Mark()};
      if (auto [prev, fresh] = seen.emplace(e.key, k.Mark()); !fresh) {
        Error(k.Mark(), e.path, "duplicate key (first at line " + std::to_string(prev->second.line + 1) + ")");
        continue;
      }
      if (std::find(known.begin(), known.end(), e.key) == known.end()) {
        std::string msg = "unknown key; ";
        std::string near = spec_internal::NearestName(e.key, known);
        if (!near.empty()) msg += "did you mean " + Quote(near) + "? ";
        Error(k.Mark(), e.path, msg + "known keys are " + Join(known));
        continue;
      }
      Record(e.path, e.mark);
      out.push_back(std::move(e));
    }
    return out;
  }

  bool Int(const Entry& e, IntRule rule, int64_t* out) {
    const char* expected = rule == IntRule::kPositive      ? "expected a positive integer"
                           : rule == IntRule::kNonNegative ? "expected a non-negative integer"
                                                           : "expected an integer";
    int64_t v = 0;
    bool parsed = false;
    if (e.value.IsScalar()) {
      const std::string& s = e.value.Scalar();
      auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
      parsed = ec == std::errc() && end == s.data() + s.size() && !s.empty();
    }
    if (!parsed || (rule == IntRule::kPositive && v <= 0) || (rule == IntRule::kNonNegative && v < 0)) {
      Error(e.mark, e.path, std::string(expected) + ", got " + Describe(e.value));
      return false;
    }
    *out = v;
    return true;
  }

  bool Int(const Entry& e, IntRule rule, int* out) {
    int64_t v = 0;
    if (!Int(e, rule, &v)) return false;
    if (v > 1'000'000'000 || v < -1'000'000'000) {
      Error(e.mark, e.path, "expected a value below 1e9, got " + Describe(e.value));
      return false;
    }
    *out = static_cast<int>(v);
    return true;
  }

  bool Number(const Entry& e, NumRule rule, double* out) {
    const char* expected = rule == NumRule::kPositive      ? "expected a positive number"
                           : rule == NumRule::kNonNegative ? "expected a non-negative number"
                           : rule == NumRule::kUnit        ? "expected a number in [0, 1)"
                                                           : "expected a number";
    double v = 0;
    bool parsed = false;
    if (e.value.IsScalar()) {
      const std::string& s = e.value.Scalar();
      const char* begin = s.data() + (!s.empty() && s[0] == '+' ? 1 : 0);
      auto [end, ec] = std::from_chars(begin, s.data() + s.size(), v);
      parsed = ec == std::errc() && end == s.data() + s.size() && begin != end && std::isfinite(v);
    }
    bool in_range = rule == NumRule::kPositive      ? v > 0
                    : rule == NumRule::kNonNegative ? v >= 0
                    : rule == NumRule::kUnit        ? (v >= 0 && v < 1)
                                                    : true;
    if (!parsed || !in_range) {
      Error(e.mark, e.path, std::string(expected) + ", got " + Describe(e.value));
      return false;
    }
    *out = v;
    return true;
  }

  bool Bool(const Entry& e, bool* out) {
    std::string s = e.value.IsScalar() ? e.value.Scalar() : std::string();
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
    if (e.value.IsScalar() && (s == "true" || s == "false")) {
      *out = s == "true";
      return true;
    }
    Error(e.mark, e.path, "expected true or false, got " + Describe(e.value));
    return false;
  }

  bool String(const Entry& e, std::string* out) {
    if (!e.value.IsScalar()) {
      Error(e.mark, e.path, "expected a string, got " + Describe(e.value));
      return false;
    }
    *out = e.value.Scalar();
    return true;
  }

  template <typename E>
  bool Enum(const Entry& e, std::string_view what, std::initializer_list<E> all, E* out) {
    std::vector<std::string> names;
    for (E v : all) {
      names.emplace_back(ToString(v));
      if (e.value.IsScalar() && e.value.Scalar() == ToString(v)) {
        *out = v;
        return true;
      }
    }
    std::string msg = "expected " + std::string(what) + " (one of " + Join(names) + "), got " + Describe(e.value);
    if (e.value.IsScalar()) {
      std::string near = spec_internal::NearestName(e.value.Scalar(), names);
      if (!near.empty()) msg += "; did you mean " + Quote(near) + "?";
    }
    Error(e.mark, e.path, msg);
    return false;
  }

  // Errors at the enclosing map for each required key that is absent.
  void Require(const std::vector<Entry>& entries, const YAML::Node& map, const std::string& path,
               std::initializer_list<std::string_view> keys) {
    for (std::string_view k : keys) {
      bool present = std::any_of(entries.begin(), entries.end(), [&](const Entry& e) { return e.key == k; });
      if (!present) Error(map.Mark(), path, "missing required key " + Quote(k));
    }
  }

 private:
  std::string file_;
  std::vector<Located> errors_;
  std::map<std::string, YAML::Mark> marks_;
};

const Entry* Find(const std::vector<Entry>& entries, std::string_view key) {
  for (const Entry& e : entries)
    if (e.key == key) return &e;
  return nullptr;
}

std::vector<std::string> Names(std::initializer_list<std::string_view> keys) {
  return std::vector<std::string>(keys.begin(), keys.end());
}

// ---- model -------------------------------------------------------------------------------------------------

void ReadRopeScaling(Reader& r, const Entry& e, std::optional<RopeScaling>* out) {
  if (e.value.IsNull()) {
    out->reset();
    return;
  }
  std::vector<std::string> known;
  for (const RopeField& f : spec_internal::RopeFields()) known.emplace_back(f.name);
  std::vector<Entry> entries = r.Entries(e.value, e.path, e.mark, known);
  if (!e.value.IsMap()) return;
  RopeScaling rope;
  for (const RopeField& f : spec_internal::RopeFields()) {
    const Entry* sub = Find(entries, f.name);
    if (!sub) {
      if (f.required) r.Error(e.value.Mark(), e.path, "missing required key " + Quote(f.name));
      continue;
    }
    std::visit(
        [&](auto member) {
          using T = std::remove_cvref_t<decltype(rope.*member)>;
          if constexpr (std::is_same_v<T, double>) {
            r.Number(*sub, NumRule::kAny, &(rope.*member));
          } else if constexpr (std::is_same_v<T, int64_t>) {
            r.Int(*sub, IntRule::kAny, &(rope.*member));
          } else {
            r.String(*sub, &(rope.*member));
          }
        },
        f.member);
  }
  *out = rope;
}

void ReadModelField(Reader& r, const ModelField& f, const Entry& e, ModelConfig* c) {
  std::visit(
      [&](auto member) {
        using T = std::remove_cvref_t<decltype(c->*member)>;
        if constexpr (std::is_same_v<T, int64_t>) {
          if (f.zero_is_null && e.value.IsNull()) {
            c->*member = 0;
          } else {
            r.Int(e, IntRule::kAny, &(c->*member));
          }
        } else if constexpr (std::is_same_v<T, double>) {
          r.Number(e, NumRule::kAny, &(c->*member));
        } else if constexpr (std::is_same_v<T, bool>) {
          r.Bool(e, &(c->*member));
        } else if constexpr (std::is_same_v<T, std::string>) {
          r.String(e, &(c->*member));
        } else {
          ReadRopeScaling(r, e, &(c->*member));
        }
      },
      f.member);
}

void ReadModel(Reader& r, const Entry& e, ModelSpec* out) {
  std::vector<std::string> known = {"preset", "init_from"};
  for (const ModelField& f : spec_internal::ModelFields()) known.emplace_back(f.name);
  std::vector<Entry> entries = r.Entries(e.value, e.path, e.mark, known);
  if (!e.value.IsMap()) return;
  ModelConfig config;
  if (const Entry* p = Find(entries, "preset")) {
    if (r.String(*p, &out->preset)) {
      Result<ModelConfig> preset = ModelPreset(out->preset);
      if (preset.ok()) {
        config = *preset;
      } else {
        std::vector<std::string> names = ModelPresetNames();
        std::string msg = "unknown preset " + Quote(out->preset) + "; ";
        std::string near = spec_internal::NearestName(out->preset, names);
        if (!near.empty()) msg += "did you mean " + Quote(near) + "? ";
        r.Error(p->mark, p->path, msg + "known presets are " + Join(names));
      }
    }
  } else {
    std::vector<std::string> missing;
    for (const ModelField& f : spec_internal::ModelFields())
      if (f.required && !Find(entries, f.name)) missing.emplace_back(f.name);
    if (!missing.empty())
      r.Error(e.value.Mark(), e.path,
              "no preset given (known: " + Join(ModelPresetNames()) +
                  "), so every size must be set; missing " + Join(missing));
  }
  for (const ModelField& f : spec_internal::ModelFields())
    if (const Entry* fe = Find(entries, f.name)) ReadModelField(r, f, *fe, &config);
  if (const Entry* i = Find(entries, "init_from")) r.String(*i, &out->init_from);
  out->config = config;
}

// ---- sections ----------------------------------------------------------------------------------------------

void ReadParallel(Reader& r, const Entry& e, ParallelSpec* p) {
  static const std::vector<std::string> kKnown =
      Names({"pipeline", "data", "expert", "schedule", "dispatch", "combine", "max_nodes_per_token"});
  std::vector<Entry> entries = r.Entries(e.value, e.path, e.mark, kKnown);
  for (const Entry& f : entries) {
    if (f.key == "pipeline") r.Int(f, IntRule::kPositive, &p->pipeline);
    if (f.key == "data") r.Int(f, IntRule::kPositive, &p->data);
    if (f.key == "expert") r.Int(f, IntRule::kPositive, &p->expert);
    if (f.key == "schedule")
      r.Enum(f, "a pipeline schedule",
             {PipelineSchedule::k1F1B, PipelineSchedule::kZB1P, PipelineSchedule::kDualPipe,
              PipelineSchedule::kDualPipeV},
             &p->schedule);
    if (f.key == "dispatch") {
      Precision d = Precision::kFp32;
      r.Enum(f, "a dispatch payload type (fp32 or fp8)", {Precision::kFp32, Precision::kFp8}, &d);
      p->dispatch = d;
    }
    if (f.key == "combine") {
      Precision c = Precision::kFp32;
      r.Enum(f, "a combine payload type (fp32 or bf16)", {Precision::kFp32, Precision::kBf16}, &c);
      p->combine = c;
    }
    if (f.key == "max_nodes_per_token") r.Int(f, IntRule::kPositive, &p->max_nodes_per_token);
  }
}

void ReadTrain(Reader& r, const Entry& e, TrainSpec* t) {
  static const std::vector<std::string> kKnown =
      Names({"seq_len", "micro_batch", "global_batch", "lr", "min_lr", "warmup_steps", "lr_schedule",
             "weight_decay", "beta1", "beta2", "eps", "grad_clip", "seed", "init_std", "bias_update_speed",
             "balance_alpha", "mtp_lambda"});
  std::vector<Entry> entries = r.Entries(e.value, e.path, e.mark, kKnown);
  for (const Entry& f : entries) {
    const std::string& k = f.key;
    if (k == "seq_len") r.Int(f, IntRule::kPositive, &t->seq_len);
    if (k == "micro_batch") r.Int(f, IntRule::kPositive, &t->micro_batch);
    if (k == "global_batch") r.Int(f, IntRule::kPositive, &t->global_batch);
    if (k == "lr") r.Number(f, NumRule::kPositive, &t->lr);
    if (k == "min_lr") r.Number(f, NumRule::kNonNegative, &t->min_lr);
    if (k == "warmup_steps") r.Int(f, IntRule::kNonNegative, &t->warmup_steps);
    if (k == "lr_schedule")
      r.Enum(f, "an LR schedule", {LrSchedule::kCosine, LrSchedule::kLinear, LrSchedule::kConstant},
             &t->lr_schedule);
    if (k == "weight_decay") r.Number(f, NumRule::kNonNegative, &t->weight_decay);
    if (k == "beta1") r.Number(f, NumRule::kUnit, &t->beta1);
    if (k == "beta2") r.Number(f, NumRule::kUnit, &t->beta2);
    if (k == "eps") r.Number(f, NumRule::kPositive, &t->eps);
    if (k == "grad_clip") r.Number(f, NumRule::kNonNegative, &t->grad_clip);
    if (k == "seed") {
      int64_t seed = 0;
      if (r.Int(f, IntRule::kNonNegative, &seed)) t->seed = static_cast<uint64_t>(seed);
    }
    if (k == "init_std") r.Number(f, NumRule::kPositive, &t->init_std);
    if (k == "bias_update_speed") r.Number(f, NumRule::kNonNegative, &t->bias_update_speed);
    if (k == "balance_alpha") r.Number(f, NumRule::kNonNegative, &t->balance_alpha);
    if (k == "mtp_lambda") r.Number(f, NumRule::kNonNegative, &t->mtp_lambda);
  }
}

void ReadResources(Reader& r, const Entry& e, ResourcesSpec* res) {
  static const std::vector<std::string> kKnown = Names({"device", "threads_per_worker"});
  for (const Entry& f : r.Entries(e.value, e.path, e.mark, kKnown)) {
    if (f.key == "device") r.Enum(f, "a device kind", {DeviceKind::kCpu, DeviceKind::kCuda}, &res->device);
    if (f.key == "threads_per_worker") r.Int(f, IntRule::kNonNegative, &res->threads_per_worker);
  }
}

void ReadData(Reader& r, const Entry& e, DataSpec* d) {
  static const std::vector<std::string> kKnown = Names({"builtin", "path", "format"});
  std::vector<Entry> entries = r.Entries(e.value, e.path, e.mark, kKnown);
  if (!e.value.IsMap()) return;
  const Entry* builtin = Find(entries, "builtin");
  const Entry* path = Find(entries, "path");
  const Entry* format = Find(entries, "format");
  if (builtin && path) {
    r.Error(path->key_mark, e.path, "give either builtin or path, not both");
    return;
  }
  if (!builtin && !path) {
    r.Error(e.value.Mark(), e.path, "missing required key \"builtin\" (a built-in data set) or \"path\"");
    return;
  }
  if (builtin) {
    r.String(*builtin, &d->builtin);
    if (format) r.Error(format->key_mark, format->path, "only data read from a path takes a format");
    return;
  }
  if (!r.String(*path, &d->path)) return;
  if (d->path.empty()) {
    r.Error(path->mark, path->path, "expected a file or directory, got \"\"");
    return;
  }
  if (format) {
    r.Enum(*format, "a data format", {DataFormat::kText, DataFormat::kJsonl, DataFormat::kShards}, &d->format);
  } else if (d->path.ends_with(".jsonl")) {
    d->format = DataFormat::kJsonl;
  } else if (d->path.ends_with(".txt")) {
    d->format = DataFormat::kText;
  } else {
    r.Error(e.value.Mark(), e.path,
            "missing required key \"format\" (text, jsonl or shards); it is inferred only for *.txt and *.jsonl");
  }
}

void ReadCheckpoint(Reader& r, const Entry& e, CheckpointSpec* c) {
  static const std::vector<std::string> kKnown = Names({"every", "keep"});
  for (const Entry& f : r.Entries(e.value, e.path, e.mark, kKnown)) {
    if (f.key == "every") r.Int(f, IntRule::kNonNegative, &c->every);
    if (f.key == "keep") r.Int(f, IntRule::kNonNegative, &c->keep);
  }
}

constexpr std::string_view kGrpoKeys[] = {"reward", "group_size", "kl_beta", "clip_eps", "max_new_tokens",
                                          "temperature"};

void ReadPhase(Reader& r, const YAML::Node& node, const std::string& path, PhaseSpec* ph) {
  static const std::vector<std::string> kKnown =
      Names({"name", "kind", "data", "steps", "checkpoint", "lr", "min_lr", "warmup_steps", "mtp_lambda", "reward",
             "group_size", "kl_beta", "clip_eps", "max_new_tokens", "temperature"});
  std::vector<Entry> entries = r.Entries(node, path, node.Mark(), kKnown);
  if (!node.IsMap()) return;
  r.Require(entries, node, path, {"name", "kind", "data", "steps"});
  bool kind_ok = false;
  if (const Entry* k = Find(entries, "kind"))
    kind_ok = r.Enum(*k, "a phase kind", {PhaseKind::kPretrain, PhaseKind::kSft, PhaseKind::kGrpo}, &ph->kind);
  for (const Entry& f : entries) {
    const std::string& k = f.key;
    bool grpo_key = std::find(std::begin(kGrpoKeys), std::end(kGrpoKeys), k) != std::end(kGrpoKeys);
    if (grpo_key && kind_ok && ph->kind != PhaseKind::kGrpo) {
      r.Error(f.key_mark, f.path, "only grpo phases take " + k + " (this phase is " +
                                      std::string(ToString(ph->kind)) + ")");
      continue;
    }
    if (k == "name") r.String(f, &ph->name);
    if (k == "data") ReadData(r, f, &ph->data);
    if (k == "steps") r.Int(f, IntRule::kPositive, &ph->steps);
    if (k == "checkpoint") ReadCheckpoint(r, f, &ph->checkpoint);
    if (k == "lr") {
      double v = 0;
      if (r.Number(f, NumRule::kPositive, &v)) ph->lr = v;
    }
    if (k == "min_lr") {
      double v = 0;
      if (r.Number(f, NumRule::kNonNegative, &v)) ph->min_lr = v;
    }
    if (k == "warmup_steps") {
      int64_t v = 0;
      if (r.Int(f, IntRule::kNonNegative, &v)) ph->warmup_steps = v;
    }
    if (k == "mtp_lambda") {
      double v = 0;
      if (r.Number(f, NumRule::kNonNegative, &v)) ph->mtp_lambda = v;
    }
    if (k == "reward") r.String(f, &ph->reward);
    if (k == "group_size") r.Int(f, IntRule::kPositive, &ph->group_size);
    if (k == "kl_beta") r.Number(f, NumRule::kNonNegative, &ph->kl_beta);
    if (k == "clip_eps") r.Number(f, NumRule::kPositive, &ph->clip_eps);
    if (k == "max_new_tokens") r.Int(f, IntRule::kPositive, &ph->max_new_tokens);
    if (k == "temperature") r.Number(f, NumRule::kPositive, &ph->temperature);
  }
}

void ReadPhases(Reader& r, const Entry& e, std::vector<PhaseSpec>* phases) {
  if (!e.value.IsSequence()) {
    r.Error(e.mark, e.path, "expected a list of phases, got " + Describe(e.value));
    return;
  }
  if (e.value.size() == 0) {
    r.Error(e.mark, e.path, "expected at least one phase, got an empty list");
    return;
  }
  for (size_t i = 0; i < e.value.size(); ++i) {
    const YAML::Node item = e.value[i];
    std::string path = e.path + "[" + std::to_string(i) + "]";
    r.Record(path, item.Mark());
    PhaseSpec ph;
    ReadPhase(r, item, path, &ph);
    phases->push_back(std::move(ph));
  }
}

void ReadJob(Reader& r, const YAML::Node& root, JobSpec* spec) {
  static const std::vector<std::string> kKnown =
      Names({"name", "model", "parallel", "precision", "train", "resources", "phases"});
  std::vector<Entry> entries = r.Entries(root, "", root.Mark(), kKnown);
  r.Require(entries, root, "", {"name", "model", "phases"});
  for (const Entry& f : entries) {
    const std::string& k = f.key;
    if (k == "name") r.String(f, &spec->name);
    if (k == "model") ReadModel(r, f, &spec->model);
    if (k == "parallel") ReadParallel(r, f, &spec->parallel);
    if (k == "precision")
      r.Enum(f, "a precision", {Precision::kFp32, Precision::kBf16, Precision::kFp8}, &spec->precision);
    if (k == "train") ReadTrain(r, f, &spec->train);
    if (k == "resources") ReadResources(r, f, &spec->resources);
    if (k == "phases") ReadPhases(r, f, &spec->phases);
  }
}

}  // namespace

Result<JobSpec> ParseJobSpec(std::string_view yaml_text, std::string_view file_name) {
  Reader r(file_name);
  YAML::Node root;
  try {
    root = YAML::Load(std::string(yaml_text));
  } catch (const YAML::Exception& e) {
    r.Error(e.mark, "", "YAML syntax error: " + e.msg);
    return InvalidArgumentError(r.Message(false));
  }
  if (root.IsNull()) {
    r.Error(YAML::Mark(), "", "empty job spec; expected a map with at least name, model and phases");
    return InvalidArgumentError(r.Message(false));
  }
  if (!root.IsMap()) {
    r.Error(root.Mark(), "", "expected a map (name, model, phases, ...) at the top level, got " + Describe(root));
    return InvalidArgumentError(r.Message(false));
  }
  JobSpec spec;
  ReadJob(r, root, &spec);
  if (r.failed()) return InvalidArgumentError(r.Message(true));
  // Values are well-formed; now the cross-field rules, located at the key they are about.
  for (const SpecIssue& issue : CheckJobSpec(spec)) r.Error(r.Locate(issue.path), issue.path, issue.message);
  if (r.failed()) return InvalidArgumentError(r.Message(true));
  return spec;
}

}  // namespace shoal
