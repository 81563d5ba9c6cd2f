// Job specs: what parses into what (defaults, overrides, layouts), the canonical YAML round trip, and every file
// in configs/.
#include "spec/job_spec.h"

#include <algorithm>
#include <filesystem>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace shoal {
namespace {

using ::testing::HasSubstr;

JobSpec MustParse(std::string_view yaml) {
  Result<JobSpec> r = ParseJobSpec(yaml, "test.yaml");
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? *r : JobSpec();
}

constexpr const char* kMinimal = R"(
name: minimal
model: {preset: demo}
phases:
  - {name: pretrain, kind: pretrain, data: {builtin: arith}, steps: 10}
)";

// The shape of the brief / DESIGN §4, with every section present.
constexpr const char* kFull = R"(
name: arith-demo
model: {preset: demo}
parallel: {pipeline: 1, data: 1, expert: 1, schedule: 1f1b}
precision: fp32
train: {seq_len: 128, micro_batch: 8, global_batch: 16, lr: 2.0e-3, min_lr: 2.0e-4, warmup_steps: 50,
        weight_decay: 0.1, beta1: 0.9, beta2: 0.95, eps: 1.0e-8, grad_clip: 1.0, seed: 1234, init_std: 0.02,
        bias_update_speed: 1.0e-3, balance_alpha: 1.0e-4, mtp_lambda: 0.3}
resources: {device: cpu, threads_per_worker: 0}
phases:
  - {name: pretrain, kind: pretrain, data: {builtin: arith}, steps: 300, checkpoint: {every: 50}}
  - {name: sft,      kind: sft,      data: {builtin: arith-sft}, steps: 100, lr: 5.0e-4}
  - {name: rl,       kind: grpo,     data: {builtin: arith-rl}, reward: exact_match, group_size: 8, steps: 60,
     kl_beta: 0.04, clip_eps: 0.2}
)";

TEST(JobSpecTest, DefaultsAreTheDocumentedOnes) {
  JobSpec s = MustParse(kMinimal);
  EXPECT_EQ(s.name, "minimal");
  EXPECT_EQ(s.model.preset, "demo");
  EXPECT_EQ(s.model.config, *ModelPreset("demo"));
  EXPECT_EQ(s.parallel.pipeline, 1);
  EXPECT_EQ(s.parallel.data, 1);
  EXPECT_EQ(s.parallel.expert, 1);
  EXPECT_EQ(s.parallel.schedule, PipelineSchedule::k1F1B);
  EXPECT_EQ(s.precision, Precision::kFp32);
  const TrainSpec& t = s.train;
  EXPECT_EQ(t.seq_len, 128);
  EXPECT_EQ(t.micro_batch, 8);
  EXPECT_EQ(t.global_batch, 16);
  EXPECT_EQ(t.lr, 2.0e-3);
  EXPECT_EQ(t.min_lr, 2.0e-4);
  EXPECT_EQ(t.warmup_steps, 50);
  EXPECT_EQ(t.lr_schedule, LrSchedule::kCosine);
  EXPECT_EQ(t.weight_decay, 0.1);
  EXPECT_EQ(t.beta1, 0.9);
  EXPECT_EQ(t.beta2, 0.95);
  EXPECT_EQ(t.eps, 1.0e-8);
  EXPECT_EQ(t.grad_clip, 1.0);
  EXPECT_EQ(t.seed, 1234u);
  EXPECT_EQ(t.init_std, 0.02);
  EXPECT_EQ(t.bias_update_speed, 1.0e-3);
  EXPECT_EQ(t.balance_alpha, 1.0e-4);
  EXPECT_EQ(t.mtp_lambda, 0.3);
  EXPECT_EQ(s.resources.device, DeviceKind::kCpu);
  EXPECT_EQ(s.resources.threads_per_worker, 0);
  ASSERT_EQ(s.phases.size(), 1u);
  EXPECT_EQ(s.phases[0].checkpoint.every, 0);
  EXPECT_FALSE(s.phases[0].lr.has_value());
  EXPECT_EQ(s.num_micro_batches(), 2);
  // Writing every default out changes nothing.
  EXPECT_EQ(MustParse(kFull).train, t);
}

TEST(JobSpecTest, ParsesTheFullExample) {
  JobSpec s = MustParse(kFull);
  ASSERT_EQ(s.phases.size(), 3u);
  const PhaseSpec& pre = s.phases[0];
  EXPECT_EQ(pre.kind, PhaseKind::kPretrain);
  EXPECT_EQ(pre.data.builtin, "arith");
  EXPECT_EQ(pre.steps, 300);
  EXPECT_EQ(pre.checkpoint.every, 50);
  const PhaseSpec& sft = s.phases[1];
  EXPECT_EQ(sft.kind, PhaseKind::kSft);
  ASSERT_TRUE(sft.lr.has_value());
  EXPECT_EQ(*sft.lr, 5.0e-4);
  EXPECT_EQ(sft.effective_lr(s.train), 5.0e-4);
  EXPECT_EQ(sft.effective_min_lr(s.train), 2.0e-4);
  EXPECT_EQ(sft.effective_warmup_steps(s.train), 50);
  const PhaseSpec& rl = s.phases[2];
  EXPECT_EQ(rl.kind, PhaseKind::kGrpo);
  EXPECT_EQ(rl.reward, "exact_match");
  EXPECT_EQ(rl.group_size, 8);
  EXPECT_EQ(rl.kl_beta, 0.04);
  EXPECT_EQ(rl.clip_eps, 0.2);
  EXPECT_EQ(rl.steps, 60);
  EXPECT_EQ(rl.effective_lr(s.train), 2.0e-3);
}

TEST(JobSpecTest, ModelOverridesApplyOnTopOfThePreset) {
  JobSpec s = MustParse(R"(
name: deeper
model:
  preset: demo
  num_hidden_layers: 6
  rope_theta: 50000
  q_lora_rank: null
  rope_scaling: {factor: 4, original_max_position_embeddings: 64, mscale_all_dim: 1.0}
phases: [{name: p, kind: pretrain, data: {builtin: arith}, steps: 1}]
)");
  ModelConfig want = *ModelPreset("demo");
  want.num_hidden_layers = 6;
  want.rope_theta = 50000;
  want.q_lora_rank = 0;
  want.rope_scaling = RopeScaling{.factor = 4, .original_max_position_embeddings = 64, .mscale_all_dim = 1.0};
  EXPECT_EQ(s.model.config, want);
}

TEST(JobSpecTest, ExplicitModelWithoutPreset) {
  JobSpec s = MustParse(R"(
name: explicit
model: {vocab_size: 320, hidden_size: 64, intermediate_size: 160, moe_intermediate_size: 20,
        num_hidden_layers: 3, num_attention_heads: 2, num_key_value_heads: 2, q_lora_rank: 48, kv_lora_rank: 24,
        qk_nope_head_dim: 16, qk_rope_head_dim: 8, v_head_dim: 28, n_routed_experts: 12, num_experts_per_tok: 3,
        n_group: 3, topk_group: 2, first_k_dense_replace: 1, max_position_embeddings: 64}
train: {seq_len: 32}
phases: [{name: p, kind: pretrain, data: {path: /data/x.jsonl}, steps: 1}]
)");
  EXPECT_EQ(s.model.preset, "");
  EXPECT_EQ(s.model.config.hidden_size, 64);
  EXPECT_EQ(s.model.config.n_shared_experts, 1);  // optional knobs keep their defaults
  EXPECT_EQ(s.phases[0].data.path, "/data/x.jsonl");
  EXPECT_EQ(s.phases[0].data.format, DataFormat::kJsonl);  // inferred from the extension
}

TEST(JobSpecTest, DistributedLayoutAndMicroBatches) {
  JobSpec s = MustParse(R"(
name: dist
model: {preset: demo}
parallel: {pipeline: 2, data: 2, expert: 2, schedule: dualpipe}
train: {micro_batch: 2, global_batch: 16}
phases: [{name: p, kind: pretrain, data: {path: /corpus, format: shards}, steps: 1}]
)");
  EXPECT_EQ(s.parallel.world_size(), 4);
  EXPECT_EQ(s.parallel.num_stages(), 2);
  EXPECT_EQ(s.num_micro_batches(), 4);
  EXPECT_EQ(s.phases[0].data.format, DataFormat::kShards);
}

TEST(JobSpecTest, StagesOfPipelineRanks) {
  EXPECT_EQ(StagesOfPipelineRank(PipelineSchedule::k1F1B, 4, 2), std::vector<int>({2}));
  EXPECT_EQ(StagesOfPipelineRank(PipelineSchedule::kDualPipe, 4, 0), std::vector<int>({0, 3}));
  EXPECT_EQ(StagesOfPipelineRank(PipelineSchedule::kDualPipe, 4, 2), std::vector<int>({2, 1}));
  EXPECT_EQ(StagesOfPipelineRank(PipelineSchedule::kDualPipeV, 2, 0), std::vector<int>({0, 3}));
  EXPECT_EQ(StagesOfPipelineRank(PipelineSchedule::kDualPipeV, 2, 1), std::vector<int>({1, 2}));
  EXPECT_EQ(NumPipelineStages(PipelineSchedule::kDualPipeV, 3), 6);
  EXPECT_EQ(NumPipelineStages(PipelineSchedule::kDualPipe, 4), 4);
}

void ExpectRoundTrip(const JobSpec& s) {
  std::string yaml = JobSpecToYaml(s);
  Result<JobSpec> back = ParseJobSpec(yaml, "canonical.yaml");
  ASSERT_TRUE(back.ok()) << back.status() << "\n" << yaml;
  EXPECT_EQ(*back, s) << yaml;
  EXPECT_EQ(JobSpecToYaml(*back), yaml);  // canonical: a fixed point
}

TEST(JobSpecTest, CanonicalYamlRoundTrips) {
  ExpectRoundTrip(MustParse(kMinimal));
  ExpectRoundTrip(MustParse(kFull));
  JobSpec s = MustParse(kFull);
  s.name = "odd-values";
  s.train.lr = 0.1 + 0.2;  // not a short decimal
  s.train.seed = 9'000'000'000ull;
  s.train.lr_schedule = LrSchedule::kLinear;
  s.phases[0].data.path = "/data/with space: and colon/x.txt";
  s.phases[0].data.builtin.clear();
  s.phases[1].min_lr = 1e-7;
  s.phases[1].warmup_steps = 0;
  s.phases[2].temperature = 0.7;
  s.model.config.rope_scaling = RopeScaling{.factor = 8, .original_max_position_embeddings = 32};
  s.model.config.q_lora_rank = 0;
  ASSERT_TRUE(ValidateJobSpec(s).ok()) << ValidateJobSpec(s);
  ExpectRoundTrip(s);
}

TEST(JobSpecTest, CanonicalYamlKeepsEveryModelKnob) {
  // A stored job must not change meaning when a preset does: every knob is written, not just the preset.
  std::string yaml = JobSpecToYaml(MustParse(kMinimal));
  EXPECT_THAT(yaml, HasSubstr("preset: demo"));
  EXPECT_THAT(yaml, HasSubstr("hidden_size: 128"));
  EXPECT_THAT(yaml, HasSubstr("num_key_value_heads: 4"));
  EXPECT_THAT(yaml, HasSubstr("rope_scaling: ~"));
  // Floats are spelled so that any YAML reader (not just ours) reads a float back.
  EXPECT_THAT(yaml, HasSubstr("min_lr: 2.0e-04\n"));
  EXPECT_THAT(yaml, HasSubstr("grad_clip: 1.0\n"));
  EXPECT_THAT(yaml, HasSubstr("lr: 0.002\n"));
}

std::vector<std::filesystem::path> ConfigFiles() {
  std::vector<std::filesystem::path> files;
  for (const auto& entry : std::filesystem::directory_iterator(std::string(SHOAL_SOURCE_DIR) + "/configs"))
    if (entry.path().extension() == ".yaml" || entry.path().extension() == ".yml") files.push_back(entry.path());
  std::sort(files.begin(), files.end());
  return files;
}

TEST(ConfigsTest, EveryConfigParsesAndRoundTrips) {
  std::vector<std::filesystem::path> files = ConfigFiles();
  EXPECT_GE(files.size(), 4u);
  for (const auto& f : files) {
    Result<JobSpec> s = LoadJobSpec(f.string());
    ASSERT_TRUE(s.ok()) << s.status();
    ExpectRoundTrip(*s);
  }
}

TEST(ConfigsTest, TheShippedLayouts) {
  const std::string dir = std::string(SHOAL_SOURCE_DIR) + "/configs/";
  Result<JobSpec> demo = LoadJobSpec(dir + "demo.yaml");
  ASSERT_TRUE(demo.ok()) << demo.status();
  EXPECT_EQ(demo->model.preset, "demo");
  EXPECT_EQ(demo->parallel.world_size(), 1);
  EXPECT_EQ(demo->precision, Precision::kFp32);
  ASSERT_EQ(demo->phases.size(), 3u);
  EXPECT_GT(demo->phases[0].checkpoint.every, 0);
  EXPECT_EQ(demo->phases[2].kind, PhaseKind::kGrpo);
  EXPECT_EQ(demo->phases[2].reward, "exact_match");

  Result<JobSpec> dist = LoadJobSpec(dir + "demo-dist.yaml");
  ASSERT_TRUE(dist.ok()) << dist.status();
  EXPECT_EQ(dist->parallel.world_size(), 4);
  EXPECT_EQ(dist->parallel.schedule, PipelineSchedule::kDualPipe);
  EXPECT_GE(dist->num_micro_batches(), 2 * dist->parallel.pipeline);
  EXPECT_EQ(dist->num_micro_batches() % 2, 0);

  Result<JobSpec> big = LoadJobSpec(dir + "deepseek-v3-671b.yaml");
  ASSERT_TRUE(big.ok()) << big.status();
  EXPECT_EQ(big->parallel.world_size(), 2048);
  EXPECT_EQ(big->parallel.pipeline, 16);
  EXPECT_EQ(big->parallel.expert, 64);
  EXPECT_EQ(big->precision, Precision::kFp8);
  EXPECT_EQ(big->model.config, *ModelPreset("deepseek-v3-671b"));
}

TEST(ConfigsTest, MissingFileIsNotFound) {
  Result<JobSpec> s = LoadJobSpec("/nonexistent/job.yaml");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), StatusCode::kNotFound);
  EXPECT_THAT(s.status().message(), HasSubstr("/nonexistent/job.yaml"));
}

}  // namespace
}  // namespace shoal

namespace shoal {
namespace {

TEST(JobSpecTest, InitFromRoundTrips) {
  auto spec = ParseJobSpec("name: x\nmodel: {preset: demo, init_from: /ckpt/sft/step-200}\nphases:\n"
                           "  - {name: rl, kind: grpo, data: {builtin: arith-rl}, reward: exact_match, steps: 3}\n",
                           "x.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->model.init_from, "/ckpt/sft/step-200");
  auto again = ParseJobSpec(JobSpecToYaml(*spec), "again.yaml");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(*again, *spec);
}

}  // namespace
}  // namespace shoal
