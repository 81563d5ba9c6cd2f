// The dsv3-micro golden fixture (tests/fixtures/dsv3-micro/README.md) in fp32: logits, MTP logits, every loss,
// every gradient (unselected experts exactly zero), expert loads, routing and the bias update, within the
// README's tolerances. Every size comes from the fixture's config.json.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <set>

#include "tests/worker/model/test_util.h"
#include "worker/model/model.h"

namespace shoal::model {
namespace {

using testing_util::Fixture;
using testing_util::MaxAbs;
using testing_util::MaxAbsDiff;

class GoldenTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto f = testing_util::LoadFixture();
    if (!f.ok()) {
      load_error_ = new std::string(f.status().ToString());
      return;
    }
    fixture_ = new Fixture(std::move(*f));
  }
  static void TearDownTestSuite() {
    delete fixture_;
    fixture_ = nullptr;
    delete load_error_;
    load_error_ = nullptr;
  }
  void SetUp() override {
    if (fixture_ == nullptr) {
      if (testing_util::FixtureDir().empty()) GTEST_SKIP() << "dsv3-micro fixture not found";
      FAIL() << "loading the fixture: " << (load_error_ ? *load_error_ : "?");
    }
  }

  std::unique_ptr<Model> MakeModel(ModelOptions options = {}) {
    const Fixture& f = *fixture_;
    options.max_batch = f.B;
    options.max_seq = f.S;
    auto model = Model::Create(f.config(), options);
    EXPECT_TRUE(model.ok()) << model.status();
    if (!model.ok()) return nullptr;
    Status st = (*model)->Load(testing_util::LookupIn(f.checkpoint.tensors));
    EXPECT_TRUE(st.ok()) << st;
    return std::move(*model);
  }

  static Fixture* fixture_;
  static std::string* load_error_;
};

Fixture* GoldenTest::fixture_ = nullptr;
std::string* GoldenTest::load_error_ = nullptr;

TEST_F(GoldenTest, LogitsAndMtpLogits) {
  const Fixture& f = *fixture_;
  auto model = MakeModel();
  ASSERT_NE(model, nullptr);
  const int64_t V = f.config().vocab_size, B = f.B, S = f.S;
  testing_util::Rows rows = f.rows();
  std::vector<float> logits(B * S * V), mtp_logits(B * S * V);
  auto losses = model->Forward(rows.Batch(), logits.data(), mtp_logits.data());
  ASSERT_TRUE(losses.ok()) << losses.status();

  std::vector<float> want = f.Expected("logits");
  ASSERT_EQ(want.size(), logits.size());
  const double d_logits = MaxAbsDiff(logits.data(), want.data(), static_cast<int64_t>(want.size()));
  EXPECT_LE(d_logits, 1e-4);

  // Expected MTP logits are slots 0..S-2 of each row ([B, S-1, V]); slot S-1 has no target.
  std::vector<float> want_mtp = f.Expected("mtp_logits");
  ASSERT_EQ(want_mtp.size(), static_cast<size_t>(B * (S - 1) * V));
  double d_mtp = 0;
  for (int64_t b = 0; b < B; ++b) {
    d_mtp = std::max(d_mtp, MaxAbsDiff(mtp_logits.data() + b * S * V, want_mtp.data() + b * (S - 1) * V, (S - 1) * V));
  }
  EXPECT_LE(d_mtp, 1e-4);
  // Forward's losses agree with the fixture too.
  EXPECT_NEAR(losses->main_sum / losses->main_count, f.Expected("loss_main")[0], 1e-5);
  EXPECT_NEAR(losses->mtp_sum / losses->mtp_count, f.Expected("loss_mtp")[0], 1e-5);
  std::printf("[golden] logits max|diff| %.3g, mtp_logits max|diff| %.3g (max|logit| %.3f)\n", d_logits, d_mtp,
              MaxAbs(want.data(), static_cast<int64_t>(want.size())));
}

TEST_F(GoldenTest, TrainingStep) {
  const Fixture& f = *fixture_;
  auto model = MakeModel();
  ASSERT_NE(model, nullptr);
  const ModelConfig& c = f.config();
  testing_util::Rows rows = f.rows();
  model->ZeroGrad();
  model->ZeroLoads();
  const int64_t main_targets = static_cast<int64_t>(f.B) * f.S, mtp_targets = static_cast<int64_t>(f.B) * (f.S - 1);
  const LossScales scales = MeanLossScales(main_targets, mtp_targets, c.num_nextn_predict_layers, 0.3f);
  auto losses = model->ForwardBackward(rows.Batch(), scales);
  ASSERT_TRUE(losses.ok()) << losses.status();

  // Losses.
  EXPECT_EQ(losses->main_count, main_targets);
  EXPECT_EQ(losses->mtp_count, mtp_targets);
  const double loss_main = losses->main_sum / losses->main_count;
  const double loss_mtp = losses->mtp_sum / losses->mtp_count;
  const double loss_total = loss_main + 0.3 * loss_mtp + losses->balance;
  const double want_main = f.Expected("loss_main")[0], want_mtp = f.Expected("loss_mtp")[0];
  const double want_bal = f.Expected("loss_balance")[0], want_total = f.Expected("loss_total")[0];
  EXPECT_NEAR(loss_main, want_main, 1e-5);
  EXPECT_NEAR(loss_mtp, want_mtp, 1e-5);
  EXPECT_NEAR(loss_total, want_total, 1e-5);
  EXPECT_NEAR(losses->balance, want_bal, 1e-4 * want_bal);
  std::printf("[golden] loss_main %.7f (want %.7f, diff %.2g), loss_mtp %.7f (%.7f, %.2g), balance %.7g (%.7g, rel %.2g),"
              " total %.7f (%.7f, %.2g)\n",
              loss_main, want_main, loss_main - want_main, loss_mtp, want_mtp, loss_mtp - want_mtp, losses->balance,
              want_bal, (losses->balance - want_bal) / want_bal, loss_total, want_total, loss_total - want_total);

  // Routing, balance per layer, loads.
  const int64_t K = c.num_experts_per_tok;
  std::vector<RoutingView> routing = model->LastRouting();
  ASSERT_EQ(routing.size(), static_cast<size_t>(c.num_moe_main_layers() + c.num_nextn_predict_layers));
  double worst_weight = 0;
  for (const RoutingView& r : routing) {
    const std::string l = std::to_string(r.layer);
    const double want_l = f.Expected("loss_balance." + l)[0];
    EXPECT_NEAR(r.balance_loss, want_l, 1e-4 * want_l) << "layer " << l;
    const checkpoint::Tensor* idx = f.ExpectedTensor("topk_idx." + l);
    ASSERT_NE(idx, nullptr) << l;
    auto want_idx = idx->values<int32_t>();
    std::vector<float> want_w = f.Expected("topk_weight." + l);
    ASSERT_EQ(static_cast<int64_t>(want_idx.size()), r.num_tokens * K);
    for (int64_t n = 0; n < r.num_tokens; ++n) {
      std::set<int32_t> got(r.topk_idx + n * K, r.topk_idx + (n + 1) * K);
      std::set<int32_t> want(want_idx.begin() + n * K, want_idx.begin() + (n + 1) * K);
      EXPECT_EQ(got, want) << "layer " << l << " token " << n;
      for (int64_t k = 0; k < K; ++k) {  // weights matched by expert, whatever the order
        const int32_t e = r.topk_idx[n * K + k];
        for (int64_t j = 0; j < K; ++j) {
          if (want_idx[n * K + j] != e) continue;
          const double d = std::abs(r.topk_weight[n * K + k] - want_w[n * K + j]);
          worst_weight = std::max(worst_weight, d);
          EXPECT_LE(d, 1e-5) << "layer " << l << " token " << n << " expert " << e;
        }
      }
    }
  }
  for (const auto& [layer, loads] : model->Loads()) {
    const checkpoint::Tensor* want = f.ExpectedTensor("expert_load." + std::to_string(layer));
    ASSERT_NE(want, nullptr) << layer;
    auto w = want->values<int32_t>();
    EXPECT_EQ(loads, std::vector<int32_t>(w.begin(), w.end())) << "layer " << layer;
  }

  // Every gradient: per tensor max|diff| <= 1e-3·max|expected|; all-zero expected tensors exactly zero.
  std::vector<NamedTensor> grads = model->Gradients();
  EXPECT_EQ(grads.size(), 166u);
  double worst_rel = 0;
  std::string worst_name;
  int zero_tensors = 0;
  for (const NamedTensor& g : grads) {
    std::vector<float> want = f.Expected("grad." + g.name);
    ASSERT_EQ(static_cast<int64_t>(want.size()), g.numel()) << g.name;
    const double scale = MaxAbs(want.data(), g.numel());
    const double diff = MaxAbsDiff(g.data, want.data(), g.numel());
    if (scale == 0) {
      ++zero_tensors;
      EXPECT_LE(diff, 1e-12) << g.name << " should be exactly zero";
      continue;
    }
    EXPECT_LE(diff, 1e-3 * scale) << g.name << " (max|expected| " << scale << ")";
    if (diff / scale > worst_rel) {
      worst_rel = diff / scale;
      worst_name = g.name;
    }
  }
  EXPECT_EQ(zero_tensors, 3 * (2 + 4 + 2));  // unselected experts: layer 1 {7,11}, 2 {0,4,6,7}, 3 {6,10}
  EXPECT_FALSE(model->IsTrainable("model.layers.1.mlp.gate.e_score_correction_bias"));
  std::printf("[golden] topk_weight max|diff| %.3g; worst gradient %s: max|diff| = %.3g x max|expected|; "
              "%d all-zero expert tensors exact\n",
              worst_weight, worst_name.c_str(), worst_rel, zero_tensors);

  // Bias update with γ = 1e-3 from this batch's loads.
  model->UpdateBias(1e-3f);
  double worst_bias = 0;
  for (const NamedTensor& p : model->Parameters()) {
    if (p.name.find("e_score_correction_bias") == std::string::npos) continue;
    const std::string layer = p.name.substr(13, p.name.find(".mlp") - 13);
    std::vector<float> want = f.Expected("bias_after." + layer);
    ASSERT_EQ(static_cast<int64_t>(want.size()), p.numel()) << p.name;
    const double d = MaxAbsDiff(p.data, want.data(), p.numel());
    worst_bias = std::max(worst_bias, d);
    EXPECT_LE(d, 1e-7) << p.name;
  }
  std::printf("[golden] bias_after max|diff| %.3g\n", worst_bias);
}

// Two micro-batches of one row each accumulate to the same gradients as the whole batch (the trainer's path).
TEST_F(GoldenTest, MicroBatchesAccumulate) {
  const Fixture& f = *fixture_;
  if (f.B < 2) GTEST_SKIP();
  auto model = MakeModel();
  ASSERT_NE(model, nullptr);
  const ModelConfig& c = f.config();
  testing_util::Rows rows = f.rows();
  const int64_t main_targets = static_cast<int64_t>(f.B) * f.S, mtp_targets = static_cast<int64_t>(f.B) * (f.S - 1);
  model->ZeroGrad();
  model->ZeroLoads();
  double total = 0;
  for (int b = 0; b < f.B; ++b) {
    MicroBatch mb = rows.Batch();
    const size_t off = static_cast<size_t>(b) * f.S;
    mb.inputs += off;
    mb.targets += off;
    mb.mtp_inputs += off;
    mb.mtp_targets += off;
    mb.B = 1;
    auto l = model->ForwardBackward(
        mb, MeanLossScales(main_targets, mtp_targets, c.num_nextn_predict_layers, 0.3f, 1.0 / f.B));
    ASSERT_TRUE(l.ok()) << l.status();
    total += l->main_sum / main_targets + 0.3 * l->mtp_sum / mtp_targets + l->balance / f.B;
  }
  EXPECT_NEAR(total, f.Expected("loss_total")[0], 1e-5);
  for (const NamedTensor& g : model->Gradients()) {
    std::vector<float> want = f.Expected("grad." + g.name);
    const double scale = MaxAbs(want.data(), g.numel());
    EXPECT_LE(MaxAbsDiff(g.data, want.data(), g.numel()), scale == 0 ? 1e-12 : 1e-3 * scale) << g.name;
  }
  for (const auto& [layer, loads] : model->Loads()) {
    auto w = f.ExpectedTensor("expert_load." + std::to_string(layer))->values<int32_t>();
    EXPECT_EQ(loads, std::vector<int32_t>(w.begin(), w.end())) << "layer " << layer;
  }
}

}  // namespace
}  // namespace shoal::model
