// The training loop on a small model: loss falls, checkpoints restore bitwise, phases chain.
#include "worker/train/trainer.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <mutex>

#include "worker/model/model.h"

namespace shoal::train {
namespace {

// A demo-architecture model, smaller and shorter, so the loop runs in seconds.
constexpr char kSpec[] = R"(name: tiny
model: {preset: demo, num_hidden_layers: 2, hidden_size: 64, intermediate_size: 128, moe_intermediate_size: 32,
        q_lora_rank: 32, kv_lora_rank: 16, qk_nope_head_dim: 16, qk_rope_head_dim: 8, v_head_dim: 16,
        num_attention_heads: 2, num_key_value_heads: 2}
train: {seq_len: 32, micro_batch: 4, global_batch: 8, lr: 3.0e-3, min_lr: 3.0e-4, warmup_steps: 5, seed: 7}
phases:
  - {name: pretrain, kind: pretrain, data: {builtin: arith}, steps: 8, checkpoint: {every: 4}}
  - {name: sft, kind: sft, data: {builtin: arith-sft}, steps: 4, checkpoint: {every: 2}}
)";

struct Recorder : TrainerEvents {
  std::mutex mu;
  std::vector<StepMetrics> steps;
  std::vector<CheckpointWritten> checkpoints;
  void OnStep(const StepMetrics& m) override {
    std::lock_guard<std::mutex> lock(mu);
    steps.push_back(m);
  }
  void OnCheckpoint(const CheckpointWritten& w) override {
    std::lock_guard<std::mutex> lock(mu);
    checkpoints.push_back(w);
  }
  void OnCheckpointFailed(const Status& s) override { ADD_FAILURE() << s; }
};

class TrainerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/shoal-trainer-XXXXXX";
    dir_ = mkdtemp(tmpl);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  TrainerConfig Config(const std::string& yaml) {
    auto spec = ParseJobSpec(yaml, "tiny.yaml");
    EXPECT_TRUE(spec.ok()) << spec.status();
    TrainerConfig c;
    c.spec = *spec;
    c.job_id = "job-test";
    c.epoch = 1;
    c.checkpoint_root = dir_;
    c.threads = 1;
    return c;
  }

  std::string dir_;
};

TEST_F(TrainerTest, RunsEveryPhaseAndCheckpointsOnSchedule) {
  Recorder rec;
  auto trainer = Trainer::Create(Config(kSpec), &rec);
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  std::atomic<bool> stop{false};
  ASSERT_TRUE((*trainer)->Run(stop).ok());
  trainer->reset();
  ASSERT_EQ(rec.steps.size(), 12u);
  EXPECT_EQ(rec.steps[0].phase, "pretrain");
  EXPECT_EQ(rec.steps[8].phase, "sft");
  EXPECT_EQ(rec.steps[8].step, 1);
  ASSERT_EQ(rec.checkpoints.size(), 4u);  // pretrain 4, 8 (final); sft 2, 4 (final)
  EXPECT_EQ(rec.checkpoints[1].step, 8);
  EXPECT_TRUE(rec.checkpoints[1].phase_done);
  EXPECT_FALSE(rec.checkpoints[2].phase_done);
  EXPECT_TRUE(std::filesystem::exists(dir_ + "/config.json"));
  EXPECT_TRUE(std::filesystem::exists(dir_ + "/pretrain/step-8"));
  // Evaluation ran on checkpoint steps only.
  EXPECT_FALSE(std::isnan(rec.steps[3].eval_loss));
  EXPECT_TRUE(std::isnan(rec.steps[2].eval_loss));
  for (const auto& s : rec.steps) {
    EXPECT_TRUE(std::isfinite(s.loss));
    EXPECT_GT(s.tokens_per_s, 0);
  }
}

TEST_F(TrainerTest, LossFallsOnArithmetic) {
  std::string yaml = kSpec;
  yaml.replace(yaml.find("steps: 8"), 8, "steps: 60");
  Recorder rec;
  auto trainer = Trainer::Create(Config(yaml), &rec);
  ASSERT_TRUE(trainer.ok());
  std::atomic<bool> stop{false};
  ASSERT_TRUE((*trainer)->Run(stop).ok());
  double first = (rec.steps[0].loss + rec.steps[1].loss) / 2;
  double last = (rec.steps[58].loss + rec.steps[59].loss) / 2;
  EXPECT_LT(last, 0.6 * first) << "first " << first << " last " << last;
  EXPECT_LT(last, 2.69);  // below the unigram entropy of the arith stream (worker/data)
}

TEST_F(TrainerTest, ResumingFromACheckpointIsBitwiseTheUninterruptedRun) {
  Recorder full;
  {
    auto trainer = Trainer::Create(Config(kSpec), &full);
    ASSERT_TRUE(trainer.ok());
    std::atomic<bool> stop{false};
    ASSERT_TRUE((*trainer)->Run(stop).ok());
  }
  // Restart from pretrain step 4 (mid-phase: weights, moments, step count and data cursor).
  const CheckpointWritten& mid = full.checkpoints[0];
  ASSERT_EQ(mid.step, 4);
  std::string root2 = dir_ + "/again";
  auto config = Config(kSpec);
  config.checkpoint_root = root2;
  config.restore = RestorePoint{0, 4, mid.step_dir, mid.cursor_json, false};
  Recorder resumed;
  {
    auto trainer = Trainer::Create(config, &resumed);
    ASSERT_TRUE(trainer.ok());
    std::atomic<bool> stop{false};
    ASSERT_TRUE((*trainer)->Run(stop).ok());
  }
  ASSERT_EQ(resumed.steps.size(), full.steps.size() - 4);
  for (size_t i = 0; i < resumed.steps.size(); ++i) {
    const auto& a = full.steps[i + 4];
    const auto& b = resumed.steps[i];
    EXPECT_EQ(a.phase, b.phase);
    EXPECT_EQ(a.step, b.step);
    EXPECT_EQ(a.loss, b.loss) << "step " << a.step << " of " << a.phase;  // bitwise
    EXPECT_EQ(a.mtp_loss, b.mtp_loss);
    EXPECT_EQ(a.grad_norm, b.grad_norm);
  }
}

TEST_F(TrainerTest, StopIsHonouredBetweenSteps) {
  Recorder rec;
  auto trainer = Trainer::Create(Config(kSpec), &rec);
  ASSERT_TRUE(trainer.ok());
  std::atomic<bool> stop{true};
  Status s = (*trainer)->Run(stop);
  EXPECT_EQ(s.code(), StatusCode::kCancelled);
  EXPECT_TRUE(rec.steps.empty());
}

// The MTP loss weight per phase (a schedule across phases): with λ = 0 in the second phase the MTP layer gets no
// gradient there, so the main loss of that phase follows another path than with the default λ.
TEST_F(TrainerTest, PhaseMtpLambdaOverridesTheJobsWeight) {
  auto run = [&](const std::string& yaml, const std::string& sub) {
    Recorder rec;
    auto c = Config(yaml);
    c.checkpoint_root = dir_ + "/" + sub;
    auto trainer = Trainer::Create(std::move(c), &rec);
    EXPECT_TRUE(trainer.ok()) << trainer.status();
    std::atomic<bool> stop{false};
    EXPECT_TRUE((*trainer)->Run(stop).ok());
    std::vector<double> losses;
    for (const auto& m : rec.steps) losses.push_back(m.loss);
    return losses;
  };
  std::string with_zero = kSpec;
  with_zero.replace(with_zero.find("steps: 4, checkpoint"), 5, "mtp_lambda: 0.0, steps");
  auto spec = ParseJobSpec(with_zero, "tiny.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->phases[1].mtp_lambda, 0.0);
  EXPECT_DOUBLE_EQ(spec->phases[0].effective_mtp_lambda(spec->train), spec->train.mtp_lambda);
  const auto a = run(kSpec, "a"), b = run(with_zero, "b");
  ASSERT_EQ(a.size(), 12u);
  ASSERT_EQ(b.size(), 12u);
  for (int i = 0; i < 9; ++i) EXPECT_EQ(a[i], b[i]) << i;  // the same until the first update of phase 2
  bool differs = false;
  for (int i = 9; i < 12; ++i) differs = differs || a[i] != b[i];
  EXPECT_TRUE(differs);
}

}  // namespace
}  // namespace shoal::train
