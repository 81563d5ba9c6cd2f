// Training through the real binaries: a job trains to SUCCEEDED with falling loss and committed checkpoints,
// exports to a Hugging Face directory that gives the same logits as the checkpoint, and survives the loss of
// its worker by resuming from the last committed checkpoint on another one.
#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>
#include <fstream>

#include "tests/integration/harness.h"

namespace shoal::testing {
namespace {
using namespace std::chrono_literals;
using nlohmann::json;

std::string TinySpec(const std::string& name, int pretrain_steps, int every) {
  return "name: " + name + R"(
model: {preset: demo, num_hidden_layers: 2, hidden_size: 64, intermediate_size: 128, moe_intermediate_size: 32,
        q_lora_rank: 32, kv_lora_rank: 16, qk_nope_head_dim: 16, qk_rope_head_dim: 8, v_head_dim: 16,
        num_attention_heads: 2, num_key_value_heads: 2}
train: {seq_len: 32, micro_batch: 4, global_batch: 8, lr: 3.0e-3, min_lr: 3.0e-4, warmup_steps: 5, seed: 7}
phases:
  - {name: pretrain, kind: pretrain, data: {builtin: arith}, steps: )" +
         std::to_string(pretrain_steps) + ", checkpoint: {every: " + std::to_string(every) + R"(}}
  - {name: sft, kind: sft, data: {builtin: arith-sft}, steps: 10, checkpoint: {every: 5}}
)";
}

std::string Slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

TEST(TrainingTest, TrainsToSuccessExportsAndTheExportMatchesTheCheckpoint) {
  Cluster c(Cluster::Training());
  c.StartCoordinator();
  c.StartWorker("w0");
  std::string spec = c.WriteFile("tiny.yaml", TinySpec("tiny", 40, 20));
  auto submit = c.Cli({"submit", spec, "--follow"});
  ASSERT_EQ(submit.exit_code, 0) << submit.out << submit.err;
  EXPECT_NE(submit.out.find("SUCCEEDED"), std::string::npos);

  auto st = c.CliJson({"status", "tiny"});
  EXPECT_EQ(st["state"], "SUCCEEDED");
  ASSERT_EQ(st["phases"].size(), 2u);
  EXPECT_EQ(st["phases"][0]["state"], "done");
  EXPECT_EQ(st["phases"][0]["step"], 40);
  // The loss curve is durable and falls.
  const auto& curve = st["loss_curve"];
  ASSERT_GE(curve.size(), 40u);
  EXPECT_LT(curve[39]["loss"].get<double>(), 0.7 * curve[0]["loss"].get<double>());
  auto ckpts = c.CliJson({"checkpoints", "tiny"});
  ASSERT_EQ(ckpts.size(), 4u);  // pretrain 20, 40; sft 5, 10
  EXPECT_EQ(ckpts[3]["id"], "sft-000010");
  EXPECT_TRUE(ckpts[3]["phase_done"].get<bool>());

  std::string out = c.dir() + "/export";
  auto ex = c.Cli({"export", "tiny", "--out", out, "--dtype", "f32"});
  ASSERT_EQ(ex.exit_code, 0) << ex.err;
  EXPECT_TRUE(std::filesystem::exists(out + "/config.json"));
  EXPECT_TRUE(std::filesystem::exists(out + "/model.safetensors"));
  std::string ck_dir = ckpts[3]["dir"];
  auto a = c.Cli({"eval", "--model", ck_dir, "--tokens", "16,65,66,67,60,1", "--dump-logits", c.dir() + "/a.npy"});
  auto b = c.Cli({"eval", "--model", out, "--tokens", "16,65,66,67,60,1", "--dump-logits", c.dir() + "/b.npy"});
  ASSERT_EQ(a.exit_code, 0) << a.err;
  ASSERT_EQ(b.exit_code, 0) << b.err;
  std::string la = Slurp(c.dir() + "/a.npy"), lb = Slurp(c.dir() + "/b.npy");
  EXPECT_GT(la.size(), 128u);
  EXPECT_EQ(la, lb);  // f32 export: bit-identical logits
  auto gen = c.Cli({"generate", "--model", out, "--prompt", "12+35=", "--max-new-tokens", "4", "--json"});
  ASSERT_EQ(gen.exit_code, 0) << gen.err;
  EXPECT_EQ(json::parse(gen.out)["tokens"].size() > 0, true);
  // An older checkpoint can be exported by id too; an unknown one is an error.
  EXPECT_EQ(c.Cli({"export", "tiny", "--checkpoint", "pretrain-000020", "--out", c.dir() + "/e2"}).exit_code, 0);
  auto bad = c.Cli({"export", "tiny", "--checkpoint", "nope", "--out", c.dir() + "/e3"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("no checkpoint 'nope'"), std::string::npos);
}

TEST(TrainingTest, LostWorkerResumesFromTheLastCommittedCheckpointElsewhere) {
  Cluster c(Cluster::Training());
  c.StartCoordinator();
  c.StartWorker("w0");
  std::string spec = c.WriteFile("tiny.yaml", TinySpec("resume", 400, 25));
  ASSERT_EQ(c.Cli({"submit", spec}).exit_code, 0);
  // Wait for the first committed checkpoint, then kill the worker.
  ASSERT_TRUE(Cluster::Eventually([&] { return c.CliJson({"checkpoints", "resume"}).size() >= 1; }, 60s));
  c.KillWorker("w0", SIGKILL);
  auto committed = c.CliJson({"checkpoints", "resume"});
  int64_t restored_step = committed.back()["step"];
  c.StartWorker("w1");
  ASSERT_TRUE(Cluster::Eventually([&] { return c.CliJson({"status", "resume"})["state"] == "SUCCEEDED"; }, 120s))
      << c.Cli({"status", "resume"}).out;
  auto st = c.CliJson({"status", "resume"});
  EXPECT_EQ(st["restarts"], 1);
  EXPECT_EQ(st["epoch"], 2);
  // The new worker restored the committed checkpoint and went on from the step after it.
  std::string log = c.ReadLog("w1");
  EXPECT_NE(log.find("restored checkpoint"), std::string::npos) << log;
  EXPECT_NE(log.find("steps " + std::to_string(restored_step + 1) + "..400"), std::string::npos) << log;
}

}  // namespace
}  // namespace shoal::testing
