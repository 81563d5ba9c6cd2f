// The distributed trainer against the single-worker one: the same spec, seed and data under PP2, PP2·DP2·EP2
// and PP4 DualPipe (one thread and one Communicator per rank, real UCX between them) must give the loss curve
// of PP1·DP1 within fp32 reduction-order tolerance; a checkpoint written under one layout loads under another;
// a rank that dies mid-run makes every other rank return an error instead of hanging.
#include "worker/dist/dist_trainer.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <mutex>
#include <thread>

#include "common/thread_pool.h"
#include "worker/comm/communicator.h"
#include "worker/dist/dist_layout.h"
#include "worker/train/trainer.h"

namespace shoal::dist {
namespace {

using Clock = std::chrono::steady_clock;

// A demo-architecture model with 4 decoder layers (1 dense, 3 MoE with 8 routed experts) and one MTP layer.
// kDense: the same without MoE layers or MTP (every decision continuous in the weights).
constexpr char kDense[] = ", first_k_dense_replace: 4, num_nextn_predict_layers: 0";

std::string Spec(const std::string& parallel, int steps, int checkpoint_every, const std::string& extra = "") {
  const int global_batch = 16;
  return R"(name: equiv
model: {preset: demo, num_hidden_layers: 4, hidden_size: 64, intermediate_size: 128, moe_intermediate_size: 32,
        q_lora_rank: 32, kv_lora_rank: 16, qk_nope_head_dim: 16, qk_rope_head_dim: 8, v_head_dim: 16,
        num_attention_heads: 2, num_key_value_heads: 2, n_routed_experts: 8, n_group: 2, topk_group: 1,
        num_experts_per_tok: 2)" + extra + R"(}
parallel: )" + parallel + R"(
train: {seq_len: 32, micro_batch: 2, global_batch: )" +
         std::to_string(global_batch) + R"(, lr: 3.0e-3, min_lr: 3.0e-4, warmup_steps: 2, seed: 11}
phases:
  - {name: pretrain, kind: pretrain, data: {builtin: arith}, steps: )" +
         std::to_string(steps) + ", checkpoint: {every: " + std::to_string(checkpoint_every) + "}}\n";
}

struct Recorder : train::TrainerEvents {
  std::mutex mu;
  std::vector<train::StepMetrics> steps;
  std::vector<train::CheckpointWritten> checkpoints;
  void OnStep(const train::StepMetrics& m) override {
    std::lock_guard<std::mutex> lock(mu);
    steps.push_back(m);
  }
  void OnCheckpoint(const train::CheckpointWritten& w) override {
    std::lock_guard<std::mutex> lock(mu);
    checkpoints.push_back(w);
  }
  void OnCheckpointFailed(const Status& s) override { ADD_FAILURE() << s; }
};

class DistTrainerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { ThreadPool::SetDefaultThreads(1); }  // ranks share the process: no pool sharing

  void SetUp() override {
    char tmpl[] = "/tmp/shoal-dist-XXXXXX";
    dir_ = mkdtemp(tmpl);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  train::TrainerConfig Config(const std::string& yaml, const std::string& root) {
    auto spec = ParseJobSpec(yaml, "equiv.yaml");
    EXPECT_TRUE(spec.ok()) << spec.status();
    train::TrainerConfig c;
    c.spec = *spec;
    c.job_id = "job-equiv";
    c.epoch = 1;
    c.checkpoint_root = root;
    c.threads = 0;
    c.eval_batches = 0;
    return c;
  }

  // The single-worker trainer's losses.
  std::vector<double> RunSingle(const std::string& yaml) {
    Recorder rec;
    auto trainer = train::Trainer::Create(Config(yaml, dir_ + "/single"), &rec);
    EXPECT_TRUE(trainer.ok()) << trainer.status();
    if (!trainer.ok()) return {};
    std::atomic<bool> stop{false};
    Status s = (*trainer)->Run(stop);
    EXPECT_TRUE(s.ok()) << s;
    std::vector<double> out;
    for (const auto& m : rec.steps) out.push_back(m.loss);
    return out;
  }

  struct RankResult {
    Status status;
    std::vector<train::StepMetrics> steps;
    std::vector<train::CheckpointWritten> checkpoints;
    double seconds = 0;
    DistributedTrainer::ExchangeStats exchanges;
  };

  // Every rank of the layout on its own thread with its own Communicator. `die_rank` >= 0: that rank's thread
  // destroys its communicator (as a killed process closes its endpoints) once it reported `die_after` steps.
  std::vector<RankResult> RunRanks(const std::string& yaml, const std::string& root,
                                   std::optional<train::RestorePoint> restore = {}, int die_rank = -1,
                                   int die_after = 0, std::chrono::milliseconds timeout = std::chrono::seconds(60)) {
    auto spec = ParseJobSpec(yaml, "equiv.yaml");
    EXPECT_TRUE(spec.ok()) << spec.status();
    const int pp = spec->parallel.pipeline, dp = spec->parallel.data, world = pp * dp;
    std::vector<std::unique_ptr<comm::Communicator>> comms;
    std::map<int, std::string> peers;
    for (int r = 0; r < world; ++r) {
      auto c = comm::Communicator::Create({});
      EXPECT_TRUE(c.ok()) << c.status();
      if (!c.ok()) return {};
      peers[r] = (*c)->address();
      comms.push_back(std::move(*c));
    }
    std::vector<RankResult> results(static_cast<size_t>(world));
    std::vector<std::thread> threads;
    for (int p = 0; p < pp; ++p) {
      for (int d = 0; d < dp; ++d) {
        const int rank = JobRank(p, d, dp);
        threads.emplace_back([&, p, d, rank] {
          struct Events : Recorder {
            std::atomic<bool>* stop = nullptr;
            int die_after = -1;
            void OnStep(const train::StepMetrics& m) override {
              Recorder::OnStep(m);
              if (die_after >= 0 && m.step >= die_after) *stop = true;
            }
          } events;
          std::atomic<bool> stop{false};
          events.stop = &stop;
          events.die_after = rank == die_rank ? die_after : -1;
          DistConfig config;
          config.trainer = Config(yaml, root);
          config.trainer.pp_rank = static_cast<uint32_t>(p);
          config.trainer.dp_rank = static_cast<uint32_t>(d);
          config.trainer.restore = restore;
          config.peers = peers;
          config.comm_timeout = timeout;
          const auto t0 = Clock::now();
          RankResult& out = results[static_cast<size_t>(rank)];
          auto trainer = DistributedTrainer::Create(std::move(config), comms[static_cast<size_t>(rank)].get(), &events);
          if (!trainer.ok()) {
            out.status = trainer.status();
          } else {
            out.status = (*trainer)->Run(stop);
            out.exchanges = (*trainer)->exchange_stats();
            if (rank == die_rank) comms[static_cast<size_t>(rank)].reset();  // the process is gone
            trainer->reset();
          }
          out.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
          out.steps = events.steps;
          out.checkpoints = events.checkpoints;
        });
      }
    }
    for (auto& t : threads) t.join();
    return results;
  }

  static std::vector<double> Losses(const RankResult& r) {
    std::vector<double> out;
    for (const auto& m : r.steps) out.push_back(m.loss);
    return out;
  }

  static double MaxRelDiff(const std::vector<double>& a, const std::vector<double>& b) {
    double worst = 0;
    for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
      worst = std::max(worst, std::abs(a[i] - b[i]) / std::max(1e-12, std::abs(b[i])));
    }
    return worst;
  }

  // MoE (the default): the curves agree to ~1e-7 until the first routing decision flips (a token's top-k or an
  // expert's bias-update sign decided by a last-bit difference); after that they drift apart as one worker does
  // from itself under another accumulation order (NoiseFloor: ~0.6% after 50 steps). Dense: no such decisions,
  // the curves stay within fp32 reduction-order tolerance throughout.
  std::vector<RankResult> ExpectSameCurve(const std::string& parallel, int steps, bool dense = false) {
    const std::string extra = dense ? kDense : "";
    const std::vector<double> single = RunSingle(Spec("{pipeline: 1, data: 1}", steps, steps, extra));
    EXPECT_EQ(single.size(), static_cast<size_t>(steps));
    auto ranks = RunRanks(Spec(parallel, steps, steps, extra), dir_ + "/dist");
    EXPECT_FALSE(ranks.empty());
    if (ranks.empty() || single.size() != static_cast<size_t>(steps)) return {};
    for (size_t r = 0; r < ranks.size(); ++r) {
      EXPECT_TRUE(ranks[r].status.ok()) << "rank " << r << ": " << ranks[r].status;
      EXPECT_EQ(ranks[r].steps.size(), static_cast<size_t>(steps)) << "rank " << r;
      if (ranks[r].steps.size() != static_cast<size_t>(steps)) return {};
      // Every rank reports the world's loss.
      EXPECT_EQ(Losses(ranks[r]), Losses(ranks[0])) << "rank " << r;
    }
    const auto dist = Losses(ranks[0]);
    const size_t early = std::min<size_t>(10, single.size());
    const double diff = MaxRelDiff(dist, single);
    const double early_diff = MaxRelDiff(std::vector<double>(dist.begin(), dist.begin() + early),
                                         std::vector<double>(single.begin(), single.begin() + early));
    std::printf("[ equiv ] %s%s: %d steps, loss %.5f -> %.5f (one worker %.5f -> %.5f), max relative difference: "
                "first %zu steps %.3g, all %d steps %.3g\n",
                dense ? "dense " : "MoE+MTP ", parallel.c_str(), steps, dist.front(), dist.back(), single.front(), single.back(), early, early_diff,
                steps, diff);
    EXPECT_LT(early_diff, 1e-5) << parallel;
    EXPECT_LT(diff, dense ? 1e-4 : 2e-2) << parallel;
    EXPECT_LT(single.back(), single.front());  // it trained
    return ranks;
  }

  std::string dir_;
};

// The noise floor: one worker against itself with another gradient-accumulation split (2 x 8 vs 4 x 4 rows per
// step), which changes nothing but the order of fp32 additions.
TEST_F(DistTrainerTest, NoiseFloor) {
  const std::vector<double> a = RunSingle(Spec("{pipeline: 1, data: 1}", 50, 50));
  std::string spec4 = Spec("{pipeline: 1, data: 1}", 50, 50);
  spec4.replace(spec4.find("micro_batch: 2"), 14, "micro_batch: 4");
  const std::vector<double> b = RunSingle(spec4);
  ASSERT_EQ(a.size(), 50u);
  ASSERT_EQ(b.size(), 50u);
  const double early = MaxRelDiff(std::vector<double>(a.begin(), a.begin() + 20), std::vector<double>(b.begin(), b.begin() + 20));
  std::printf("[ floor ] one worker, micro-batches 2 vs 4: max relative difference: first 20 steps %.3g, all 50 "
              "steps %.3g\n", early, MaxRelDiff(a, b));
  EXPECT_LT(early, 1e-5);
  EXPECT_GT(MaxRelDiff(a, b), 0.0);  // the orders differ
}

TEST_F(DistTrainerTest, OneRankLayoutMatchesTheSingleWorkerTrainer) { ExpectSameCurve("{pipeline: 1, data: 1}", 50); }

TEST_F(DistTrainerTest, DenseModelCurvesAgreeOverFiftyStepsInEveryLayout) {
  ExpectSameCurve("{pipeline: 2, data: 1}", 50, /*dense=*/true);
  ExpectSameCurve("{pipeline: 2, data: 2}", 50, /*dense=*/true);
  ExpectSameCurve("{pipeline: 4, data: 1, schedule: dualpipe}", 50, /*dense=*/true);
}

TEST_F(DistTrainerTest, TwoStagePipelineMatchesOneWorker) { ExpectSameCurve("{pipeline: 2, data: 1}", 50); }

TEST_F(DistTrainerTest, ZeroBubblePipelineMatchesOneWorker) {
  ExpectSameCurve("{pipeline: 2, data: 1, schedule: zb1p}", 6);
}

TEST_F(DistTrainerTest, PipelineDataAndExpertParallelMatchOneWorker) {
  ExpectSameCurve("{pipeline: 2, data: 2, expert: 2}", 50);
}

// DualPipe with expert parallelism: the F&B pairs run their halves as interleaved lanes, each half's all-to-all
// in flight while the other computes; the numbers are those of one worker.
TEST_F(DistTrainerTest, DualPipeWithExpertParallelOverlapsPairsAndMatchesOneWorker) {
  auto ranks = ExpectSameCurve("{pipeline: 2, data: 2, expert: 2, schedule: dualpipe}", 12);
  ASSERT_EQ(ranks.size(), 4u);
  for (const auto& r : ranks) {
    EXPECT_GT(r.exchanges.exchanges, 0);
    EXPECT_GT(r.exchanges.bytes_sent, 0);
    EXPECT_GT(r.exchanges.overlap_yields, 0);  // one half computed while the other's all-to-all was in flight
  }
}

TEST_F(DistTrainerTest, FourRankDualPipeMatchesOneWorker) {
  ExpectSameCurve("{pipeline: 4, data: 1, schedule: dualpipe}", 50);
}

TEST_F(DistTrainerTest, DualPipeVMatchesOneWorker) {
  ExpectSameCurve("{pipeline: 2, data: 1, schedule: dualpipev}", 6);
}

// A checkpoint written by PP2·DP2·EP2 at step 3 restores into one worker, and the continued curve is the one of
// an uninterrupted run.
TEST_F(DistTrainerTest, CheckpointFromOneLayoutLoadsIntoAnother) {
  const int steps = 6;
  auto ranks = RunRanks(Spec("{pipeline: 2, data: 2, expert: 2}", steps, 3), dir_ + "/dist");
  ASSERT_FALSE(ranks.empty());
  for (const auto& r : ranks) ASSERT_TRUE(r.status.ok()) << r.status;
  const auto full = Losses(ranks[0]);
  const train::CheckpointWritten* at3 = nullptr;
  for (const auto& w : ranks[0].checkpoints) {
    if (w.step == 3) at3 = &w;
  }
  ASSERT_NE(at3, nullptr);
  train::RestorePoint restore;
  restore.phase_index = 0;
  restore.step = 3;
  restore.step_dir = at3->step_dir;
  restore.cursor_json = at3->cursor_json;

  // Into the single-worker trainer.
  Recorder rec;
  auto config = Config(Spec("{pipeline: 1, data: 1}", steps, 3), dir_ + "/single");
  config.restore = restore;
  auto trainer = train::Trainer::Create(std::move(config), &rec);
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  std::atomic<bool> stop{false};
  ASSERT_TRUE((*trainer)->Run(stop).ok());
  ASSERT_EQ(rec.steps.size(), 3u);
  std::vector<double> tail;
  for (const auto& m : rec.steps) tail.push_back(m.loss);
  const std::vector<double> expected(full.begin() + 3, full.end());
  std::printf("[ equiv ] PP2xDP2xEP2 checkpoint -> PP1: max relative difference %.3g\n", MaxRelDiff(tail, expected));
  EXPECT_LT(MaxRelDiff(tail, expected), 2e-4);

  // Into PP4 DualPipe.
  auto again = RunRanks(Spec("{pipeline: 4, data: 1, schedule: dualpipe}", steps, 3), dir_ + "/dualpipe", restore);
  ASSERT_FALSE(again.empty());
  for (const auto& r : again) ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_LT(MaxRelDiff(Losses(again[0]), expected), 2e-4);
}

// A rank that goes away after step 2 (its communicator closed, as when its process is killed): every other rank
// returns an error from its communication within the deadline instead of hanging.
TEST_F(DistTrainerTest, ADeadRankEndsEveryOtherRankWithAnErrorNotAHang) {
  const auto timeout = std::chrono::seconds(10);
  auto ranks = RunRanks(Spec("{pipeline: 2, data: 2, expert: 2}", 50, 50), dir_ + "/dist", {}, /*die_rank=*/1,
                        /*die_after=*/2, timeout);
  ASSERT_EQ(ranks.size(), 4u);
  EXPECT_EQ(ranks[1].status.code(), StatusCode::kCancelled) << ranks[1].status;
  for (int r : {0, 2, 3}) {
    const auto& res = ranks[static_cast<size_t>(r)];
    EXPECT_FALSE(res.status.ok()) << "rank " << r;
    EXPECT_TRUE(res.status.code() == StatusCode::kUnavailable || res.status.code() == StatusCode::kDeadlineExceeded ||
                res.status.code() == StatusCode::kAborted)
        << "rank " << r << ": " << res.status;
    EXPECT_LT(res.steps.size(), 50u) << "rank " << r;
    std::printf("[ failure ] rank %d: %s after %.2f s\n", r, res.status.ToString().c_str(), res.seconds);
  }
}

// A peer that hangs without dying (connected, never sends): the job's stop flag (the coordinator releasing the
// job) ends the waiting rank's step at once instead of after the data-plane deadline.
TEST_F(DistTrainerTest, StopEndsAWaitOnAHungPeer) {
  auto spec = Spec("{pipeline: 2, data: 1}", 50, 50);
  std::vector<std::unique_ptr<comm::Communicator>> comms;
  std::map<int, std::string> peers;
  for (int r = 0; r < 2; ++r) {
    auto c = comm::Communicator::Create({});
    ASSERT_TRUE(c.ok()) << c.status();
    peers[r] = (*c)->address();
    comms.push_back(std::move(*c));
  }
  ASSERT_TRUE(comms[0]->Connect(1, 0, peers).ok());  // rank 0 is there but never trains
  Recorder events;
  DistConfig config;
  config.trainer = Config(spec, dir_ + "/hung");
  config.trainer.pp_rank = 1;  // waits for rank 0's activations from its first op on
  config.peers = peers;
  config.comm_timeout = std::chrono::seconds(60);
  auto trainer = DistributedTrainer::Create(std::move(config), comms[1].get(), &events);
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  std::atomic<bool> stop{false};
  Status result;
  const auto t0 = Clock::now();
  std::thread run([&] { result = (*trainer)->Run(stop); });
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  stop = true;
  run.join();
  const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  EXPECT_EQ(result.code(), StatusCode::kCancelled) << result;
  EXPECT_LT(seconds, 10.0);  // not the 60 s deadline
  EXPECT_TRUE(events.steps.empty());
}

// The recipe's payloads (reference/deepseek-v3.md §5.5): dispatch in FP8 with power-of-two scales, combine in
// BF16. Fewer bytes cross the wire and the curve stays close to the fp32 exchange's.
TEST_F(DistTrainerTest, Fp8DispatchAndBf16CombineMoveFewerBytesAndTrainAlike) {
  auto fp32 = RunRanks(Spec("{pipeline: 1, data: 2, expert: 2}", 12, 12), dir_ + "/fp32");
  auto low = RunRanks(Spec("{pipeline: 1, data: 2, expert: 2, dispatch: fp8, combine: bf16}", 12, 12), dir_ + "/low");
  ASSERT_EQ(fp32.size(), 2u);
  ASSERT_EQ(low.size(), 2u);
  for (const auto& r : fp32) ASSERT_TRUE(r.status.ok()) << r.status;
  for (const auto& r : low) ASSERT_TRUE(r.status.ok()) << r.status;
  const double diff = MaxRelDiff(Losses(low[0]), Losses(fp32[0]));
  const double bytes_ratio =
      static_cast<double>(low[0].exchanges.bytes_sent) / static_cast<double>(fp32[0].exchanges.bytes_sent);
  std::printf("[ payload ] fp8 dispatch + bf16 combine vs fp32: %.3f of the bytes, max relative loss difference "
              "over 12 steps %.3g\n", bytes_ratio, diff);
  EXPECT_GT(diff, 0.0);  // the low-precision path ran
  EXPECT_LT(diff, 1e-2);
  EXPECT_LT(bytes_ratio, 0.5);  // (1 + 4/128)/4 of fp32 for the dispatches, 1/2 for the combines
}

// Node-limited routing: every router group must lie on one host of the EP group.
TEST(NodeLimitTest, GroupsMustLieOnOneHost) {
  auto spec = ParseJobSpec(Spec("{pipeline: 1, data: 4, expert: 4, max_nodes_per_token: 1}", 1, 1), "n.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status();  // 8 experts, n_group 2, topk_group 1: 2 experts per EP rank
  auto layout = MakeDistLayout(*spec, 0, 0);
  ASSERT_TRUE(layout.ok()) << layout.status();
  int max_hosts = 0;
  // Two hosts holding two EP ranks each: group 0 (experts 0-3) on host a, group 1 on host b.
  EXPECT_TRUE(CheckNodeLimit(*spec, *layout, {{0, "a"}, {1, "a"}, {2, "b"}, {3, "b"}}, &max_hosts).ok());
  EXPECT_EQ(max_hosts, 1);
  // Four hosts: group 0 spans a and b.
  Status bad = CheckNodeLimit(*spec, *layout, {{0, "a"}, {1, "b"}, {2, "c"}, {3, "d"}});
  EXPECT_EQ(bad.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.message().find("expert group 0"), std::string::npos) << bad;
  EXPECT_NE(bad.message().find("a, b"), std::string::npos) << bad;
  // No limit asked: nothing to check.
  auto free = ParseJobSpec(Spec("{pipeline: 1, data: 4, expert: 4}", 1, 1), "n.yaml");
  ASSERT_TRUE(free.ok());
  EXPECT_TRUE(CheckNodeLimit(*free, *MakeDistLayout(*free, 0, 0), {{0, "a"}, {1, "b"}, {2, "c"}, {3, "d"}}).ok());
}

}  // namespace
}  // namespace shoal::dist
