// JobSpec: a training job as the user wrote it in YAML (DESIGN.md §4), parsed into validated value structs.
// Every field is an explicit member with its default. Errors name file:line:column, the key path and what was
// expected:  jobs/arith.yaml:12:5: phases[1].steps: expected a positive integer, got "ten"
//
//   name: arith-demo                          # [a-z0-9-], starts with a letter or digit; required
//   model: {preset: demo, num_hidden_layers: 6}  # preset and/or HF-named knobs; without a preset every size is required
//                                             # init_from: DIR starts from a checkpoint or exported model
//   parallel: {pipeline: 1, data: 1, expert: 1, schedule: 1f1b}   # 1f1b | zb1p | dualpipe | dualpipev
//   precision: fp32                           # fp32 | bf16 | fp8
//   train: {seq_len: 128, micro_batch: 8, global_batch: 16, lr: 2.0e-3, ...}   # TrainSpec below
//   resources: {device: cpu, threads_per_worker: 0}
//   phases:                                   # run in order; at least one
//     - {name: pretrain, kind: pretrain, data: {builtin: arith}, steps: 300, checkpoint: {every: 50}}
//     - {name: sft, kind: sft, data: {path: /data/sft.jsonl}, steps: 100, lr: 5.0e-4}
//     - {name: rl, kind: grpo, data: {builtin: arith-rl}, reward: exact_match, group_size: 8, steps: 60}
//
// Layout rules checked here (reference/deepseek-v3.md §6.3, DESIGN.md §3): world = pipeline × data workers;
// expert divides data and n_routed_experts; the pipeline has no more stages than the model can fill (L main
// layers, plus one stage for the MTP layers; spec/stage_layout.h); global_batch = micro_batch × data × num_micro_batches; dualpipe needs an even
// pipeline and an even count of >= 2·pipeline micro-batches, dualpipev >= 2·pipeline micro-batches.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "spec/model_config.h"

namespace shoal {

enum class PipelineSchedule { k1F1B, kZB1P, kDualPipe, kDualPipeV };
enum class Precision { kFp32, kBf16, kFp8 };
enum class DeviceKind { kCpu, kCuda };
enum class PhaseKind { kPretrain, kSft, kGrpo };
enum class DataFormat { kText, kJsonl, kShards };
enum class LrSchedule { kCosine, kLinear, kConstant };

// The YAML spellings: "1f1b", "fp8", "cuda", "grpo", "jsonl", "cosine", ...
std::string_view ToString(PipelineSchedule v);
std::string_view ToString(Precision v);
std::string_view ToString(DeviceKind v);
std::string_view ToString(PhaseKind v);
std::string_view ToString(DataFormat v);
std::string_view ToString(LrSchedule v);

// Pipeline stages for a schedule: `pipeline` for 1f1b/zb1p/dualpipe (DualPipe keeps two copies of each stage,
// running in opposite directions), 2·pipeline for dualpipev (the V-shaped variant cuts the model in 2·PP chunks).
int NumPipelineStages(PipelineSchedule schedule, int pipeline);
// Stages held by pipeline rank r: {r}; dualpipe {r, PP-1-r}; dualpipev {r, 2·PP-1-r}.
std::vector<int> StagesOfPipelineRank(PipelineSchedule schedule, int pipeline, int rank);

struct ModelSpec {
  std::string preset;   // empty when every size was given explicitly
  // Start from these weights instead of a random initialisation: a checkpoint step directory or a `shoal export`
  // directory on the workers' filesystem (names and shapes must match the model).
  std::string init_from;
  ModelConfig config;   // the preset with the job's overrides applied
  friend bool operator==(const ModelSpec&, const ModelSpec&) = default;
};

struct ParallelSpec {
  int pipeline = 1;  // PP
  int data = 1;      // DP, per pipeline stage
  int expert = 1;    // EP, divides DP: routed experts are sharded over groups of EP data-parallel replicas
  PipelineSchedule schedule = PipelineSchedule::k1F1B;
  // Expert all-to-all payloads (reference/deepseek-v3.md §5.5): dispatch fp32 | fp8 (E4M3, power-of-two 1x128
  // scales), combine fp32 | bf16. Unset: fp8 / bf16 when the job's precision is fp8, else fp32 / fp32.
  std::optional<Precision> dispatch;
  std::optional<Precision> combine;
  // Node-limited routing (§3.4): every token's routed experts live on at most this many hosts (0: no limit).
  // Realised by the group-limited router: each of the n_group expert groups must lie on one host (the
  // placement's hosts are checked when the job starts) and topk_group <= max_nodes_per_token.
  int max_nodes_per_token = 0;
  int world_size() const { return pipeline * data; }
  int num_stages() const { return NumPipelineStages(schedule, pipeline); }
  friend bool operator==(const ParallelSpec&, const ParallelSpec&) = default;
};

struct TrainSpec {
  int64_t seq_len = 128;       // tokens per sample (the loader reads seq_len + 1 for labels)
  int64_t micro_batch = 8;     // samples per micro-batch per data-parallel replica
  int64_t global_batch = 16;   // samples per optimizer step, all replicas together
  double lr = 2.0e-3;          // peak
  double min_lr = 2.0e-4;      // end of the decay
  int64_t warmup_steps = 50;   // linear from 0
  LrSchedule lr_schedule = LrSchedule::kCosine;  // after warm-up, over the phase's steps
  double weight_decay = 0.1;   // AdamW
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1.0e-8;
  double grad_clip = 1.0;      // global norm; 0 = off
  uint64_t seed = 1234;
  double init_std = 0.02;
  double bias_update_speed = 1.0e-3;  // gamma of the aux-loss-free balancing (§3.3)
  double balance_alpha = 1.0e-4;      // alpha of the sequence-wise balance loss (§3.5)
  double mtp_lambda = 0.3;            // lambda of the MTP loss (§4.3)
  friend bool operator==(const TrainSpec&, const TrainSpec&) = default;
};

struct ResourcesSpec {
  DeviceKind device = DeviceKind::kCpu;
  int threads_per_worker = 0;  // compute threads per worker; 0 = the worker's cores
  friend bool operator==(const ResourcesSpec&, const ResourcesSpec&) = default;
};

// {builtin: NAME} or {path: FILE-or-DIR, format: text|jsonl|shards}; exactly one of builtin/path is set.
// The path is used as written (the workers resolve it). Without `format`, "*.jsonl" means jsonl, "*.txt" text.
struct DataSpec {
  std::string builtin;
  std::string path;
  DataFormat format = DataFormat::kText;
  bool is_builtin() const { return !builtin.empty(); }
  friend bool operator==(const DataSpec&, const DataSpec&) = default;
};

// Built-in data sets and the phase kind each one feeds.
struct BuiltinDataset {
  std::string_view name;
  PhaseKind kind;
};
std::vector<BuiltinDataset> BuiltinDatasets();

struct CheckpointSpec {
  int64_t every = 0;  // steps between checkpoints; 0 = only at the end of the phase
  int64_t keep = 0;   // committed checkpoints kept per phase; 0 = all
  friend bool operator==(const CheckpointSpec&, const CheckpointSpec&) = default;
};

struct PhaseSpec {
  std::string name;  // [a-z0-9-], unique in the job
  PhaseKind kind = PhaseKind::kPretrain;
  DataSpec data;
  int64_t steps = 0;  // optimizer steps; required, > 0
  CheckpointSpec checkpoint;
  // Overrides of the job's train section for this phase; unset = inherit.
  std::optional<double> lr;
  std::optional<double> min_lr;
  std::optional<int64_t> warmup_steps;
  // λ of the MTP loss in this phase: a schedule across phases, e.g. DeepSeek-V3's 0.3 for the first 10T tokens
  // and 0.1 after, as two pre-training phases.
  std::optional<double> mtp_lambda;
  // grpo only (a pretrain/sft phase that sets one is an error). Each step samples global_batch / group_size
  // prompts, group_size completions each.
  std::string reward;            // rule-based reward by name, e.g. exact_match; required for grpo
  int64_t group_size = 8;        // G, completions per prompt, >= 2, divides global_batch
  double kl_beta = 0.04;         // beta of the k3 KL to the frozen reference (§7.3)
  double clip_eps = 0.2;         // epsilon of the ratio clip
  int64_t max_new_tokens = 32;   // generated tokens per completion, < seq_len
  double temperature = 1.0;      // sampling temperature of the rollouts

  double effective_lr(const TrainSpec& t) const { return lr.value_or(t.lr); }
  double effective_min_lr(const TrainSpec& t) const { return min_lr.value_or(t.min_lr); }
  int64_t effective_warmup_steps(const TrainSpec& t) const { return warmup_steps.value_or(t.warmup_steps); }
  double effective_mtp_lambda(const TrainSpec& t) const { return mtp_lambda.value_or(t.mtp_lambda); }
  friend bool operator==(const PhaseSpec&, const PhaseSpec&) = default;
};

struct JobSpec {
  std::string name;
  ModelSpec model;
  ParallelSpec parallel;
  Precision precision = Precision::kFp32;
  TrainSpec train;
  ResourcesSpec resources;
  std::vector<PhaseSpec> phases;

  // global_batch / (micro_batch · data): micro-batches each pipeline processes per optimizer step.
  int64_t num_micro_batches() const;
  friend bool operator==(const JobSpec&, const JobSpec&) = default;
};

// A problem with a spec: the key path ("phases[1].steps", "parallel.expert") and what is wrong.
struct SpecIssue {
  std::string path;
  std::string message;
};
// Every semantic problem (values, layout, model), in a stable order. Empty = valid.
std::vector<SpecIssue> CheckJobSpec(const JobSpec& spec);
// InvalidArgument with one "path: message" line per issue, or OK. ParseJobSpec already ran it.
Status ValidateJobSpec(const JobSpec& spec);

// Parses and validates; `file_name` is only used in messages. Problems are reported one per line (up to 20),
// "file:line:col: path: message", in document order: first every key/type/syntax error; once all values are
// well-formed, every semantic one (CheckJobSpec), located at the key it is about or, for a default that was
// not written, at the section that would hold it.
Result<JobSpec> ParseJobSpec(std::string_view yaml_text, std::string_view file_name);
Result<JobSpec> LoadJobSpec(const std::string& path);

// Canonical YAML: every field written out (the model as its preset plus every knob, so that a stored job does not
// change meaning when a preset does), block style, stable order. ParseJobSpec(JobSpecToYaml(s)) == s.
std::string JobSpecToYaml(const JobSpec& spec);

}  // namespace shoal
