// Distributed training through the real binaries: a PP2·DP2·EP2 DualPipe job on four worker processes trains to
// SUCCEEDED over UCX, `shoal status` shows every rank's step and time split, the merged checkpoint exports to one
// Hugging Face directory; a worker killed mid-step makes its peers return from their communication with an error
// (no hang), and the job resumes from the last committed checkpoint once a replacement attaches.
#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>

#include "tests/integration/harness.h"

namespace shoal::testing {
namespace {
using namespace std::chrono_literals;
using nlohmann::json;

std::string DistSpec(const std::string& name, const std::string& parallel, int pretrain_steps, int every) {
  return "name: " + name + R"(
model: {preset: demo, num_hidden_layers: 4, hidden_size: 64, intermediate_size: 128, moe_intermediate_size: 32,
        q_lora_rank: 32, kv_lora_rank: 16, qk_nope_head_dim: 16, qk_rope_head_dim: 8, v_head_dim: 16,
        num_attention_heads: 2, num_key_value_heads: 2, n_routed_experts: 8, n_group: 2, topk_group: 1}
parallel: )" + parallel + R"(
train: {seq_len: 32, micro_batch: 2, global_batch: 16, lr: 3.0e-3, min_lr: 3.0e-4, warmup_steps: 5, seed: 7}
phases:
  - {name: pretrain, kind: pretrain, data: {builtin: arith}, steps: )" +
         std::to_string(pretrain_steps) + ", checkpoint: {every: " + std::to_string(every) + R"(}}
  - {name: sft, kind: sft, data: {builtin: arith-sft}, steps: 6, checkpoint: {every: 3}}
)";
}

TEST(DistributedTest, FourWorkerDualPipeJobTrainsReportsRanksAndExports) {
  Cluster c(Cluster::Training());
  c.StartCoordinator();
  for (const char* w : {"w0", "w1", "w2", "w3"}) c.StartWorker(w);
  std::string spec =
      c.WriteFile("dist.yaml", DistSpec("dist", "{pipeline: 2, data: 2, expert: 2, schedule: dualpipe}", 30, 15));
  auto submit = c.Cli({"submit", spec, "--follow"});
  ASSERT_EQ(submit.exit_code, 0) << submit.out << submit.err;
  EXPECT_NE(submit.out.find("SUCCEEDED"), std::string::npos) << submit.out;

  auto st = c.CliJson({"status", "dist"});
  ASSERT_EQ(st["state"], "SUCCEEDED") << st.dump(2);
  const auto& curve = st["loss_curve"];
  ASSERT_GE(curve.size(), 30u);
  EXPECT_EQ(curve[0]["step"], 1);  // one point per step: rank (0, 0)'s reports only
  EXPECT_EQ(curve[1]["step"], 2);
  EXPECT_LT(curve[29]["loss"].get<double>(), 0.8 * curve[0]["loss"].get<double>());
  // Every rank's latest step, with its time split into compute, communication and bubble.
  ASSERT_EQ(st["placement"]["ranks"].size(), 4u);
  for (const auto& r : st["placement"]["ranks"]) {
    ASSERT_FALSE(r["progress"].is_null()) << r.dump();
    EXPECT_EQ(r["progress"]["phase"], "sft");
    EXPECT_EQ(r["progress"]["step"], 6);
    EXPECT_GT(r["progress"]["compute_s"].get<double>(), 0.0);
    EXPECT_GE(r["progress"]["comm_s"].get<double>(), 0.0);
    EXPECT_GE(r["progress"]["bubble_s"].get<double>(), 0.0);
    EXPECT_GT(r["progress"]["tokens_per_s"].get<double>(), 0.0);
  }
  auto text = c.Cli({"status", "dist"});
  EXPECT_NE(text.out.find("BUBBLE"), std::string::npos) << text.out;

  // Checkpoints commit once all four shards are durable; the merged model exports and runs.
  auto ckpts = c.CliJson({"checkpoints", "dist"});
  ASSERT_EQ(ckpts.size(), 4u);  // pretrain 15, 30; sft 3, 6
  EXPECT_EQ(ckpts[3]["shards"].size(), 4u);
  std::string out = c.dir() + "/export";
  auto ex = c.Cli({"export", "dist", "--out", out, "--dtype", "f32"});
  ASSERT_EQ(ex.exit_code, 0) << ex.err;
  auto gen = c.Cli({"generate", "--model", out, "--prompt", "12+35=", "--max-new-tokens", "4", "--json"});
  ASSERT_EQ(gen.exit_code, 0) << gen.err;
  EXPECT_FALSE(json::parse(gen.out)["tokens"].empty());
}

TEST(DistributedTest, KilledWorkerEndsItsPeersStepWithAnErrorAndTheJobResumes) {
  Cluster c(Cluster::Training());
  c.StartCoordinator();
  c.StartWorker("w0");
  c.StartWorker("w1");
  std::string spec = c.WriteFile("pp.yaml", DistSpec("pp", "{pipeline: 2, data: 1}", 300, 20));
  ASSERT_EQ(c.Cli({"submit", spec}).exit_code, 0);
  ASSERT_TRUE(Cluster::Eventually([&] { return c.CliJson({"checkpoints", "pp"}).size() >= 1; }, 90s));
  auto placement = c.CliJson({"status", "pp"})["placement"]["ranks"];
  ASSERT_EQ(placement.size(), 2u);
  const std::string victim = placement[1]["worker"], survivor = placement[0]["worker"];
  c.KillWorker(victim, SIGKILL);
  // The survivor's pipeline step ends with an error from the data plane (the peer is gone), not a hang.
  ASSERT_TRUE(Cluster::Eventually(
      [&] {
        std::string log = c.ReadLog(survivor);
        return log.find("training failed") != std::string::npos || log.find("training stopped") != std::string::npos;
      },
      30s))
      << c.ReadLog(survivor);
  std::string log = c.ReadLog(survivor);
  EXPECT_TRUE(log.find("Unavailable") != std::string::npos || log.find("training stopped") != std::string::npos)
      << log;
  // A replacement attaches: the job is placed again and resumes from the committed checkpoint.
  c.StartWorker("w2");
  ASSERT_TRUE(Cluster::Eventually([&] { return c.CliJson({"status", "pp"})["state"] == "SUCCEEDED"; }, 240s))
      << c.Cli({"status", "pp"}).out;
  auto st = c.CliJson({"status", "pp"});
  EXPECT_GE(st["restarts"].get<int>(), 1);
  EXPECT_NE(c.ReadLog("w2").find("restored checkpoint"), std::string::npos) << c.ReadLog("w2");
}

}  // namespace
}  // namespace shoal::testing
