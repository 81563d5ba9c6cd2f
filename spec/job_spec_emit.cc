// JobSpec -> canonical YAML (for storage and `shoal plan` output). Numbers are written as the shortest text that
// reads back to the same value, so ParseJobSpec(JobSpecToYaml(s)) == s.
#include <yaml-cpp/yaml.h>

#include "spec/job_spec.h"
#include "spec/model_config_fields.h"

namespace shoal {
namespace {

// Shortest round-trip text, spelled so that any YAML reader sees a float: "0.002", "2.0e-04", "1.0".
std::string YamlDouble(double v) {
  std::string s = spec_internal::FormatDouble(v);
  if (s.find_first_of(".ni") != std::string::npos) return s;  // has a point, or inf/nan (never valid here)
  size_t e = s.find('e');
  return e == std::string::npos ? s + ".0" : s.insert(e, ".0");
}

void Put(YAML::Emitter& out, std::string_view key, const std::string& value) {
  out << YAML::Key << std::string(key) << YAML::Value << value;
}
void Put(YAML::Emitter& out, std::string_view key, std::string_view value) { Put(out, key, std::string(value)); }
void Put(YAML::Emitter& out, std::string_view key, const char* value) { Put(out, key, std::string(value)); }
void Put(YAML::Emitter& out, std::string_view key, int64_t value) { Put(out, key, std::to_string(value)); }
void Put(YAML::Emitter& out, std::string_view key, int value) { Put(out, key, std::to_string(value)); }
void Put(YAML::Emitter& out, std::string_view key, uint64_t value) { Put(out, key, std::to_string(value)); }
void Put(YAML::Emitter& out, std::string_view key, double value) { Put(out, key, YamlDouble(value)); }
void Put(YAML::Emitter& out, std::string_view key, bool value) { Put(out, key, value ? "true" : "false"); }

void EmitRope(YAML::Emitter& out, const RopeScaling& r) {
  out << YAML::BeginMap;
  for (const spec_internal::RopeField& f : spec_internal::RopeFields())
    std::visit([&](auto member) { Put(out, f.name, r.*member); }, f.member);
  out << YAML::EndMap;
}

void EmitModel(YAML::Emitter& out, const ModelSpec& m) {
  out << YAML::BeginMap;
  if (!m.preset.empty()) Put(out, "preset", m.preset);
  if (!m.init_from.empty()) Put(out, "init_from", m.init_from);
  const ModelConfig& c = m.config;
  for (const spec_internal::ModelField& f : spec_internal::ModelFields()) {
    std::visit(
        [&](auto member) {
          using T = std::remove_cvref_t<decltype(c.*member)>;
          if constexpr (std::is_same_v<T, std::optional<RopeScaling>>) {
            out << YAML::Key << std::string(f.name) << YAML::Value;
            if (c.*member)
              EmitRope(out, *(c.*member));
            else
              out << YAML::Null;
          } else {
            Put(out, f.name, c.*member);
          }
        },
        f.member);
  }
  out << YAML::EndMap;
}

void EmitPhase(YAML::Emitter& out, const PhaseSpec& ph) {
  out << YAML::BeginMap;
  Put(out, "name", ph.name);
  Put(out, "kind", ToString(ph.kind));
  out << YAML::Key << "data" << YAML::Value << YAML::Flow << YAML::BeginMap;
  if (ph.data.is_builtin()) {
    Put(out, "builtin", ph.data.builtin);
  } else {
    Put(out, "path", ph.data.path);
    Put(out, "format", ToString(ph.data.format));
  }
  out << YAML::EndMap;
  Put(out, "steps", ph.steps);
  out << YAML::Key << "checkpoint" << YAML::Value << YAML::Flow << YAML::BeginMap;
  Put(out, "every", ph.checkpoint.every);
  Put(out, "keep", ph.checkpoint.keep);
  out << YAML::EndMap;
  if (ph.lr) Put(out, "lr", *ph.lr);
  if (ph.min_lr) Put(out, "min_lr", *ph.min_lr);
  if (ph.warmup_steps) Put(out, "warmup_steps", *ph.warmup_steps);
  if (ph.mtp_lambda) Put(out, "mtp_lambda", *ph.mtp_lambda);
  if (ph.kind == PhaseKind::kGrpo) {
    Put(out, "reward", ph.reward);
    Put(out, "group_size", ph.group_size);
    Put(out, "kl_beta", ph.kl_beta);
    Put(out, "clip_eps", ph.clip_eps);
    Put(out, "max_new_tokens", ph.max_new_tokens);
    Put(out, "temperature", ph.temperature);
  }
  out << YAML::EndMap;
}

}  // namespace

std::string JobSpecToYaml(const JobSpec& spec) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  Put(out, "name", spec.name);
  out << YAML::Key << "model" << YAML::Value;
  EmitModel(out, spec.model);

  const ParallelSpec& p = spec.parallel;
  out << YAML::Key << "parallel" << YAML::Value << YAML::Flow << YAML::BeginMap;
  Put(out, "pipeline", p.pipeline);
  Put(out, "data", p.data);
  Put(out, "expert", p.expert);
  Put(out, "schedule", ToString(p.schedule));
  if (p.dispatch) Put(out, "dispatch", ToString(*p.dispatch));
  if (p.combine) Put(out, "combine", ToString(*p.combine));
  if (p.max_nodes_per_token > 0) Put(out, "max_nodes_per_token", p.max_nodes_per_token);
  out << YAML::EndMap;

  Put(out, "precision", ToString(spec.precision));

  const TrainSpec& t = spec.train;
  out << YAML::Key << "train" << YAML::Value << YAML::BeginMap;
  Put(out, "seq_len", t.seq_len);
  Put(out, "micro_batch", t.micro_batch);
  Put(out, "global_batch", t.global_batch);
  Put(out, "lr", t.lr);
  Put(out, "min_lr", t.min_lr);
  Put(out, "warmup_steps", t.warmup_steps);
  Put(out, "lr_schedule", ToString(t.lr_schedule));
  Put(out, "weight_decay", t.weight_decay);
  Put(out, "beta1", t.beta1);
  Put(out, "beta2", t.beta2);
  Put(out, "eps", t.eps);
  Put(out, "grad_clip", t.grad_clip);
  Put(out, "seed", t.seed);
  Put(out, "init_std", t.init_std);
  Put(out, "bias_update_speed", t.bias_update_speed);
  Put(out, "balance_alpha", t.balance_alpha);
  Put(out, "mtp_lambda", t.mtp_lambda);
  out << YAML::EndMap;

  out << YAML::Key << "resources" << YAML::Value << YAML::Flow << YAML::BeginMap;
  Put(out, "device", ToString(spec.resources.device));
  Put(out, "threads_per_worker", spec.resources.threads_per_worker);
  out << YAML::EndMap;

  out << YAML::Key << "phases" << YAML::Value << YAML::BeginSeq;
  for (const PhaseSpec& ph : spec.phases) EmitPhase(out, ph);
  out << YAML::EndSeq;
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

}  // namespace shoal
