// JobSpec helpers and the semantic checks (values, layout, model). Parsing is job_spec_parse.cc, the canonical
// YAML job_spec_emit.cc.
#include "spec/job_spec.h"

#include <map>

#include "common/file_util.h"
#include "spec/model_config_fields.h"
#include "spec/stage_layout.h"

namespace shoal {
namespace {

std::string Str(int64_t v) { return std::to_string(v); }
std::string Num(double v) { return spec_internal::FormatDouble(v); }

bool IsValidName(const std::string& s) {
  if (s.empty() || s.size() > 63) return false;
  for (char c : s)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) return false;
  return s.front() != '-';
}

class IssueList {
 public:
  void Add(std::string path, std::string message) { issues_.push_back({std::move(path), std::move(message)}); }
  std::vector<SpecIssue> Take() { return std::move(issues_); }

 private:
  std::vector<SpecIssue> issues_;
};

void CheckModel(const JobSpec& spec, IssueList& out) {
  for (ConfigIssue& i : spec.model.config.Issues()) out.Add("model." + i.key, std::move(i.message));
}

void CheckParallel(const JobSpec& spec, IssueList& out) {
  const ParallelSpec& p = spec.parallel;
  const ModelConfig& m = spec.model.config;
  if (p.pipeline < 1) out.Add("parallel.pipeline", "must be >= 1, got " + Str(p.pipeline));
  if (p.data < 1) out.Add("parallel.data", "must be >= 1, got " + Str(p.data));
  if (p.expert < 1) out.Add("parallel.expert", "must be >= 1, got " + Str(p.expert));
  if (p.pipeline < 1 || p.data < 1 || p.expert < 1) return;
  if (m.n_routed_experts > 0 && m.n_routed_experts % p.expert != 0)
    out.Add("parallel.expert", "the model's " + Str(m.n_routed_experts) +
                                   " routed experts (n_routed_experts) are not divisible by the expert-parallel "
                                   "degree " + Str(p.expert) + "; pick a divisor of " + Str(m.n_routed_experts));
  if (p.data % p.expert != 0)
    out.Add("parallel.expert", "the expert-parallel degree " + Str(p.expert) +
                                   " must divide the data-parallel degree " + Str(p.data) +
                                   " (EP groups are formed from data-parallel replicas)");
  const int stages = p.num_stages();
  if (m.num_hidden_layers > 0 && stages > MaxPipelineStages(m)) {
    std::string what = p.schedule == PipelineSchedule::kDualPipeV
                           ? "dualpipev with pipeline " + Str(p.pipeline) + " cuts the model into " + Str(stages)
                           : "pipeline " + Str(p.pipeline) + " needs " + Str(stages);
    std::string blocks = Str(m.num_hidden_layers) + " layers" +
                         (m.num_nextn_predict_layers > 0 ? " + the MTP layer(s), which share the last stage" : "");
    out.Add("parallel.pipeline", what + " stages, but the model can fill at most " + Str(MaxPipelineStages(m)) +
                                     " (" + blocks + "); every stage needs at least one layer");
  }
  if (p.max_nodes_per_token > 0) {
    if (m.n_routed_experts <= 0 || m.n_group < 1) {
      out.Add("parallel.max_nodes_per_token", "node-limited routing needs a model with routed experts and n_group");
    } else if (m.topk_group > p.max_nodes_per_token) {
      out.Add("parallel.max_nodes_per_token",
              "the router keeps topk_group = " + Str(m.topk_group) + " expert groups per token, more than " +
                  Str(p.max_nodes_per_token) + " nodes; node-limited routing maps groups onto hosts, so set "
                  "topk_group <= max_nodes_per_token");
    }
  }
  if (p.schedule == PipelineSchedule::kDualPipe && p.pipeline % 2 != 0)
    out.Add("parallel.pipeline", "dualpipe needs an even pipeline degree, got " + Str(p.pipeline) +
                                     " (use dualpipev or 1f1b for an odd one)");
}

void CheckTrain(const JobSpec& spec, IssueList& out) {
  const TrainSpec& t = spec.train;
  const ParallelSpec& p = spec.parallel;
  auto positive = [&](const char* key, double v) {
    if (!(v > 0)) out.Add(std::string("train.") + key, "must be > 0, got " + Num(v));
  };
  auto non_negative = [&](const char* key, double v) {
    if (!(v >= 0)) out.Add(std::string("train.") + key, "must be >= 0, got " + Num(v));
  };
  auto unit = [&](const char* key, double v) {
    if (!(v >= 0 && v < 1)) out.Add(std::string("train.") + key, "must be in [0, 1), got " + Num(v));
  };
  if (t.seq_len < 1) out.Add("train.seq_len", "must be >= 1, got " + Str(t.seq_len));
  if (t.micro_batch < 1) out.Add("train.micro_batch", "must be >= 1, got " + Str(t.micro_batch));
  if (t.global_batch < 1) out.Add("train.global_batch", "must be >= 1, got " + Str(t.global_batch));
  positive("lr", t.lr);
  non_negative("min_lr", t.min_lr);
  if (t.min_lr > t.lr) out.Add("train.min_lr", "must be <= lr (" + Num(t.lr) + "), got " + Num(t.min_lr));
  if (t.warmup_steps < 0) out.Add("train.warmup_steps", "must be >= 0, got " + Str(t.warmup_steps));
  non_negative("weight_decay", t.weight_decay);
  unit("beta1", t.beta1);
  unit("beta2", t.beta2);
  positive("eps", t.eps);
  non_negative("grad_clip", t.grad_clip);
  positive("init_std", t.init_std);
  non_negative("bias_update_speed", t.bias_update_speed);
  non_negative("balance_alpha", t.balance_alpha);
  non_negative("mtp_lambda", t.mtp_lambda);
  const ModelConfig& m = spec.model.config;
  if (m.max_position_embeddings > 0 && t.seq_len > m.max_position_embeddings)
    out.Add("train.seq_len", "must be <= the model's max_position_embeddings (" +
                                 Str(m.max_position_embeddings) + "), got " + Str(t.seq_len));
  if (t.micro_batch < 1 || t.global_batch < 1 || p.data < 1 || p.pipeline < 1) return;
  const int64_t per_round = t.micro_batch * p.data;
  if (t.global_batch % per_round != 0) {
    out.Add("train.global_batch", "global_batch " + Str(t.global_batch) + " is not divisible by micro_batch " +
                                      Str(t.micro_batch) + " x data " + Str(p.data) + " = " + Str(per_round));
    return;
  }
  const int64_t mb = t.global_batch / per_round;
  const std::string mb_text = Str(mb) + " (global_batch " + Str(t.global_batch) + " / (micro_batch " +
                              Str(t.micro_batch) + " x data " + Str(p.data) + "))";
  if (p.schedule == PipelineSchedule::kDualPipe || p.schedule == PipelineSchedule::kDualPipeV) {
    std::string sched(ToString(p.schedule));
    if (mb < 2 * p.pipeline)
      out.Add("parallel.schedule", sched + " with pipeline " + Str(p.pipeline) + " needs at least " +
                                       Str(2 * p.pipeline) + " micro-batches per step (2 x pipeline), got " +
                                       mb_text);
    else if (p.schedule == PipelineSchedule::kDualPipe && mb % 2 != 0)
      out.Add("parallel.schedule", "dualpipe needs an even number of micro-batches per step (half go each "
                                   "way), got " + mb_text);
  }
}

void CheckData(const PhaseSpec& ph, const std::string& path, IssueList& out) {
  const DataSpec& d = ph.data;
  if (d.is_builtin() && !d.path.empty()) {
    out.Add(path + ".data", "give either builtin or path, not both");
    return;
  }
  if (!d.is_builtin() && d.path.empty()) {
    out.Add(path + ".data", "needs builtin: NAME or path: FILE-or-DIR");
    return;
  }
  if (!d.is_builtin()) return;
  std::string known;
  for (const BuiltinDataset& b : BuiltinDatasets()) {
    if (b.name == d.builtin) {
      if (b.kind != ph.kind)
        out.Add(path + ".data.builtin", "the built-in data set \"" + d.builtin + "\" is for " +
                                            std::string(ToString(b.kind)) + " phases, not " +
                                            std::string(ToString(ph.kind)));
      return;
    }
    known += (known.empty() ? "" : ", ") + std::string(b.name);
  }
  out.Add(path + ".data.builtin", "unknown built-in data set \"" + d.builtin + "\"; known: " + known);
}

void CheckPhases(const JobSpec& spec, IssueList& out) {
  const TrainSpec& t = spec.train;
  if (spec.phases.empty()) out.Add("phases", "needs at least one phase");
  std::map<std::string, size_t> seen;
  for (size_t i = 0; i < spec.phases.size(); ++i) {
    const PhaseSpec& ph = spec.phases[i];
    const std::string path = "phases[" + Str(static_cast<int64_t>(i)) + "]";
    if (!IsValidName(ph.name)) {
      out.Add(path + ".name", "must be 1-63 characters of [a-z0-9-] not starting with '-', got \"" + ph.name + "\"");
    } else if (auto [it, fresh] = seen.emplace(ph.name, i); !fresh) {
      out.Add(path + ".name", "duplicate phase name \"" + ph.name + "\" (also phases[" +
                                  Str(static_cast<int64_t>(it->second)) + "])");
    }
    if (ph.steps < 1) out.Add(path + ".steps", "must be >= 1, got " + Str(ph.steps));
    if (ph.checkpoint.every < 0) out.Add(path + ".checkpoint.every", "must be >= 0, got " + Str(ph.checkpoint.every));
    if (ph.checkpoint.keep < 0) out.Add(path + ".checkpoint.keep", "must be >= 0, got " + Str(ph.checkpoint.keep));
    if (ph.lr && !(*ph.lr > 0)) out.Add(path + ".lr", "must be > 0, got " + Num(*ph.lr));
    if (ph.min_lr && !(*ph.min_lr >= 0)) out.Add(path + ".min_lr", "must be >= 0, got " + Num(*ph.min_lr));
    if (ph.effective_min_lr(t) > ph.effective_lr(t))
      out.Add(path + (ph.min_lr ? ".min_lr" : ".lr"),
              "the phase's min_lr (" + Num(ph.effective_min_lr(t)) + ") must be <= its lr (" +
                  Num(ph.effective_lr(t)) + ")");
    if (ph.warmup_steps && *ph.warmup_steps < 0)
      out.Add(path + ".warmup_steps", "must be >= 0, got " + Str(*ph.warmup_steps));
    CheckData(ph, path, out);
    if (ph.kind != PhaseKind::kGrpo) {
      PhaseSpec defaults;
      if (!ph.reward.empty()) out.Add(path + ".reward", "only grpo phases take a reward");
      if (ph.group_size != defaults.group_size || ph.kl_beta != defaults.kl_beta ||
          ph.clip_eps != defaults.clip_eps || ph.max_new_tokens != defaults.max_new_tokens ||
          ph.temperature != defaults.temperature)
        out.Add(path, "group_size, kl_beta, clip_eps, max_new_tokens and temperature are for grpo phases only");
      continue;
    }
    if (ph.reward.empty()) out.Add(path, "a grpo phase needs a reward (e.g. reward: exact_match)");
    if (ph.group_size < 2) {
      out.Add(path + ".group_size", "must be >= 2 (advantages are normalised within a group), got " +
                                        Str(ph.group_size));
    } else if (t.global_batch % ph.group_size != 0) {
      out.Add(path + ".group_size", "must divide train.global_batch (" + Str(t.global_batch) +
                                        ") so that every step holds whole groups, got " + Str(ph.group_size));
    }
    if (!(ph.kl_beta >= 0)) out.Add(path + ".kl_beta", "must be >= 0, got " + Num(ph.kl_beta));
    if (!(ph.clip_eps > 0 && ph.clip_eps < 1)) out.Add(path + ".clip_eps", "must be in (0, 1), got " + Num(ph.clip_eps));
    if (ph.max_new_tokens < 1 || ph.max_new_tokens >= t.seq_len)
      out.Add(path + ".max_new_tokens", "must be in [1, seq_len=" + Str(t.seq_len) + "), got " +
                                            Str(ph.max_new_tokens));
    if (!(ph.temperature > 0)) out.Add(path + ".temperature", "must be > 0, got " + Num(ph.temperature));
  }
}

}  // namespace

std::string_view ToString(PipelineSchedule v) {
  switch (v) {
    case PipelineSchedule::k1F1B: return "1f1b";
    case PipelineSchedule::kZB1P: return "zb1p";
    case PipelineSchedule::kDualPipe: return "dualpipe";
    case PipelineSchedule::kDualPipeV: return "dualpipev";
  }
  return "?";
}

std::string_view ToString(Precision v) {
  switch (v) {
    case Precision::kFp32: return "fp32";
    case Precision::kBf16: return "bf16";
    case Precision::kFp8: return "fp8";
  }
  return "?";
}

std::string_view ToString(DeviceKind v) {
  switch (v) {
    case DeviceKind::kCpu: return "cpu";
    case DeviceKind::kCuda: return "cuda";
  }
  return "?";
}

std::string_view ToString(PhaseKind v) {
  switch (v) {
    case PhaseKind::kPretrain: return "pretrain";
    case PhaseKind::kSft: return "sft";
    case PhaseKind::kGrpo: return "grpo";
  }
  return "?";
}

std::string_view ToString(DataFormat v) {
  switch (v) {
    case DataFormat::kText: return "text";
    case DataFormat::kJsonl: return "jsonl";
    case DataFormat::kShards: return "shards";
  }
  return "?";
}

std::string_view ToString(LrSchedule v) {
  switch (v) {
    case LrSchedule::kCosine: return "cosine";
    case LrSchedule::kLinear: return "linear";
    case LrSchedule::kConstant: return "constant";
  }
  return "?";
}

int NumPipelineStages(PipelineSchedule schedule, int pipeline) {
  return schedule == PipelineSchedule::kDualPipeV ? 2 * pipeline : pipeline;
}

std::vector<int> StagesOfPipelineRank(PipelineSchedule schedule, int pipeline, int rank) {
  switch (schedule) {
    case PipelineSchedule::kDualPipe:
      if (pipeline - 1 - rank != rank) return {rank, pipeline - 1 - rank};
      return {rank};
    case PipelineSchedule::kDualPipeV:
      return {rank, 2 * pipeline - 1 - rank};
    default:
      return {rank};
  }
}

std::vector<BuiltinDataset> BuiltinDatasets() {
  return {{"arith", PhaseKind::kPretrain}, {"arith-sft", PhaseKind::kSft}, {"arith-rl", PhaseKind::kGrpo}};
}

int64_t JobSpec::num_micro_batches() const {
  int64_t per_round = train.micro_batch * parallel.data;
  return per_round > 0 ? train.global_batch / per_round : 0;
}

std::vector<SpecIssue> CheckJobSpec(const JobSpec& spec) {
  IssueList out;
  if (!IsValidName(spec.name))
    out.Add("name", "must be 1-63 characters of [a-z0-9-] not starting with '-', got \"" + spec.name + "\"");
  CheckModel(spec, out);
  CheckParallel(spec, out);
  CheckTrain(spec, out);
  if (spec.resources.threads_per_worker < 0)
    out.Add("resources.threads_per_worker", "must be >= 0, got " + Str(spec.resources.threads_per_worker));
  CheckPhases(spec, out);
  return out.Take();
}

Status ValidateJobSpec(const JobSpec& spec) {
  std::vector<SpecIssue> issues = CheckJobSpec(spec);
  if (issues.empty()) return Status::OK();
  std::string msg;
  for (const SpecIssue& i : issues) msg += (msg.empty() ? "" : "\n") + i.path + ": " + i.message;
  return InvalidArgumentError(std::move(msg));
}

Result<JobSpec> LoadJobSpec(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  return ParseJobSpec(text, path);
}

}  // namespace shoal
