// `shoal plan` (tools/cli/plan_command.h): the 671B spec on 256 hosts x 8 GPUs gives DeepSeek-V3's layout and
// sensible numbers; memory adds up against PlanMemory of the whole model; bad clusters are refused.
#include "tools/cli/plan_command.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "spec/job_spec.h"
#include "worker/model/model.h"

namespace shoal::cli {
namespace {

using ::testing::HasSubstr;

JobSpec LoadConfig(const std::string& name) {
  Result<JobSpec> spec = LoadJobSpec(std::string(SHOAL_SOURCE_DIR) + "/configs/" + name);
  EXPECT_TRUE(spec.ok()) << spec.status();
  return spec.ok() ? *spec : JobSpec{};
}

PlanReport Plan(const JobSpec& spec, const std::string& cluster) {
  PlanOptions o;
  o.cluster = cluster;
  Result<PlanReport> r = BuildPlan(spec, o);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? *r : PlanReport{};
}

TEST(PlanTest, ParsesTheCluster) {
  Result<std::pair<int, int>> c = ParseCluster("256x8");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->first, 256);
  EXPECT_EQ(c->second, 8);
  for (const char* bad : {"256", "0x8", "4x0", "ax8", "4x", "x4", "-1x8", "4x8x2"}) {
    Result<std::pair<int, int>> r = ParseCluster(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_THAT(r.status().message(), HasSubstr("expected NODESxGPUS")) << bad;
  }
}

TEST(PlanTest, DeepSeekV3On2048Gpus) {
  const JobSpec spec = LoadConfig("deepseek-v3-671b.yaml");
  const PlanReport p = Plan(spec, "256x8");
  // The model: 671B total, ~37B activated (§1.3).
  EXPECT_NEAR(p.total_params / 1e9, 671, 1);
  EXPECT_NEAR(p.activated_params / 1e9, 37.5, 1);
  // The layout: PP16 x DP128, EP64 groups of 8 whole hosts, 2 per pipeline rank.
  EXPECT_EQ(p.hosts_used, 256);
  EXPECT_EQ(p.num_ep_groups, 32);
  EXPECT_EQ(p.min_hosts_per_ep_group, 8);
  EXPECT_EQ(p.max_hosts_per_ep_group, 8);
  EXPECT_EQ(p.num_micro_batches, 120);
  ASSERT_EQ(p.workers.size(), 16u);
  // DualPipe: two stages per worker (2x parameters), 4 routed experts each; PP+1 = 17 micro-batch activations
  // on the middle ranks.
  int max_in_flight = 0;
  for (const PlanWorkerMemory& w : p.workers) {
    EXPECT_EQ(w.stages.size(), 2u);
    EXPECT_EQ(w.expert_end - w.expert_begin, 4);
    max_in_flight = std::max(max_in_flight, w.peak_in_flight);
    EXPECT_LT(w.optimizer_bytes, w.optimizer_unsharded_bytes / 2);
    EXPECT_GT(w.optimizer_bytes, w.optimizer_unsharded_bytes / 128);
    EXPECT_GT(w.total_bytes(), 10LL << 30);
  }
  EXPECT_EQ(max_in_flight, 17);
  // ZeRO-1: replicated tensors' optimizer state (4 bytes per element) is sharded over the 128 replicas, the
  // routed experts' over 128/64 = 2. Rank 5 holds 8 MoE layers of 4 experts each.
  const double experts = 8.0 * 4 * CountParams(spec.model.config).routed_expert * 4;
  const double rest = p.workers[5].optimizer_unsharded_bytes - experts;
  EXPECT_NEAR(p.workers[5].optimizer_bytes, experts / 2 + rest / 128, 0.001 * experts);
  EXPECT_EQ(p.workers[7].peak_in_flight, 17);
  // Worker params: ~ 8 layers of ~(0.23B shared + 4 experts x 44M), plus embedding/head on ranks 0 and 15.
  EXPECT_NEAR(p.workers[5].params / 1e9, 3.3, 0.5);
  EXPECT_GT(p.workers[0].params, p.workers[5].params);  // embedding and head
  // Schedule: DualPipe's bubble is a modest share of the step; the step time is DeepSeek's order of magnitude
  // (19.9 s/step at ~39% MFU; here 400 TFLOP/s of model FLOPs is assumed).
  EXPECT_GT(p.bubble_fraction, 0.02);
  EXPECT_LT(p.bubble_fraction, 0.2);
  EXPECT_GT(p.step_s, 10);
  EXPECT_LT(p.step_s, 40);
  EXPECT_NEAR(p.utilization, 1 - p.bubble_fraction, 0.05);
  EXPECT_EQ(p.tokens_per_step, 15360LL * 4096);

  const std::string text = PlanText(p);
  EXPECT_THAT(text, HasSubstr("pipeline 16 x data 128 = 2048 workers, expert 64 (4 routed experts per worker)"));
  EXPECT_THAT(text, HasSubstr("... 2040 more workers"));
  EXPECT_THAT(text, HasSubstr("EP groups: 32 of 64 workers, each on 8 host(s)"));
  const nlohmann::json j = nlohmann::json::parse(PlanJson(p));
  EXPECT_EQ(j["layout"]["workers"], 2048);
  EXPECT_EQ(j["workers"].size(), 16u);
  EXPECT_EQ(j["schedule"]["kind"], "dualpipe");
}

TEST(PlanTest, MemoryAddsUpToTheWholeModel) {
  // 1F1B on two ranks, no expert parallelism: the two workers' parameters are the whole model's, plus the copy
  // of the embedding the MTP layer keeps on the last stage (it does not hold model.embed_tokens).
  JobSpec spec = LoadConfig("demo-dist.yaml");
  spec.parallel.schedule = PipelineSchedule::k1F1B;
  spec.parallel.expert = 1;
  const PlanReport p = Plan(spec, "2x2");
  ASSERT_EQ(p.workers.size(), 2u);
  model::ModelOptions all;
  all.precision = spec.precision;
  all.max_batch = spec.train.micro_batch;
  all.max_seq = spec.train.seq_len;
  Result<model::MemoryPlan> whole = model::PlanMemory(spec.model.config, all);
  ASSERT_TRUE(whole.ok()) << whole.status();
  EXPECT_EQ(p.workers[0].params + p.workers[1].params,
            whole->params + spec.model.config.vocab_size * spec.model.config.hidden_size);
  // ZeRO-1 over DP 2 halves the optimizer state; 1F1B keeps 2 micro-batches in flight on rank 0, 1 on rank 1.
  for (const PlanWorkerMemory& w : p.workers) EXPECT_EQ(w.optimizer_bytes, w.optimizer_unsharded_bytes / 2);
  EXPECT_EQ(p.workers[0].peak_in_flight, 2);
  EXPECT_EQ(p.workers[1].peak_in_flight, 1);
  EXPECT_EQ(p.workers[0].activation_bytes, 2 * p.workers[0].activation_bytes_per_microbatch[0]);
  // A CPU job is estimated at the CPU throughput.
  EXPECT_EQ(p.tflops, 0.1);
  EXPECT_EQ(p.device_memory_gib, 0);
}

TEST(PlanTest, RefusesAClusterThatIsTooSmall) {
  const JobSpec spec = LoadConfig("deepseek-v3-671b.yaml");
  PlanOptions o;
  o.cluster = "16x8";
  Result<PlanReport> r = BuildPlan(spec, o);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_THAT(r.status().message(), HasSubstr("placing on 16x8"));
}

}  // namespace
}  // namespace shoal::cli
