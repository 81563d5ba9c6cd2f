// The whole training step in use: plain SGD on ForwardBackward's gradients lowers the loss of a fixed batch in
// every precision, a model without its MTP layers trains, evaluation without mtp_inputs skips the MTP module,
// the aux-loss-free bias update moves biases by exactly ±γ or 0, and malformed micro-batches are refused.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <random>

#include "kernels/cpu/clip.h"
#include "tests/worker/model/test_util.h"
#include "worker/model/model.h"

namespace shoal::model {
namespace {

ModelConfig Demo() {
  auto c = ModelPreset("demo");
  EXPECT_TRUE(c.ok());
  return *c;
}

testing_util::Rows RandomRows(const ModelConfig& c, int B, int T, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> tokens(static_cast<size_t>(B) * (T + 1));
  // A learnable stream: each row counts up from a random start.
  for (int b = 0; b < B; ++b) {
    const int32_t start = static_cast<int32_t>(rng() % c.vocab_size);
    for (int i = 0; i <= T; ++i) tokens[b * (T + 1) + i] = static_cast<int32_t>((start + i) % c.vocab_size);
  }
  return testing_util::Rows::FromTokens(tokens, B, T);
}

double MeanLoss(const StepLosses& l) { return l.main_sum / l.main_count; }

class TrainingTest : public ::testing::TestWithParam<Precision> {};

TEST_P(TrainingTest, SgdLowersTheLossOfAFixedBatch) {
  const ModelConfig c = Demo();
  const int B = 4, T = 16;
  ModelOptions o{.precision = GetParam(), .max_batch = B, .max_seq = T};
  auto model = Model::Create(c, o);
  ASSERT_TRUE(model.ok()) << model.status();
  Model& m = **model;
  m.InitRandom(3, 0.02f);
  testing_util::Rows rows = RandomRows(c, B, T, 5);
  const LossScales scales = MeanLossScales(B * T, B * (T - 1), 1, 0.3f);
  double first = 0, first_mtp = 0, last = 0, last_mtp = 0;
  for (int step = 0; step < 40; ++step) {
    m.ZeroGrad();
    m.ZeroLoads();
    auto l = m.ForwardBackward(rows.Batch(), scales);
    ASSERT_TRUE(l.ok()) << l.status();
    if (std::getenv("TRAIN_VERBOSE")) std::printf("step %d main %.4f mtp %.4f bal %.3g\n", step, MeanLoss(*l), l->mtp_sum / l->mtp_count, l->balance);
    ASSERT_TRUE(std::isfinite(l->main_sum) && std::isfinite(l->mtp_sum));
    if (step == 0) {
      first = MeanLoss(*l);
      first_mtp = l->mtp_sum / l->mtp_count;
    }
    last = MeanLoss(*l);
    last_mtp = l->mtp_sum / l->mtp_count;
    std::vector<NamedTensor> params = m.Parameters(), grads = m.Gradients();
    // Clip to global norm 1 (as the trainer does), then SGD.
    std::vector<float*> bufs;
    std::vector<int64_t> sizes;
    for (const NamedTensor& g : grads) {
      bufs.push_back(g.data);
      sizes.push_back(g.numel());
    }
    kernels::clip_grad_norm(bufs.data(), sizes.data(), static_cast<int>(bufs.size()), 1.0f);
    size_t gi = 0;
    for (NamedTensor& p : params) {
      if (!m.IsTrainable(p.name)) continue;
      const NamedTensor& g = grads[gi++];
      ASSERT_EQ(g.name, p.name);
      for (int64_t i = 0; i < p.numel(); ++i) p.data[i] -= 0.5f * g.data[i];
    }
    m.UpdateBias(1e-3f);
  }
  std::printf("[training] %s: main loss %.3f -> %.3f, MTP loss %.3f -> %.3f over 40 SGD steps\n",
              std::string(ToString(GetParam())).c_str(), first, last, first_mtp, last_mtp);
  EXPECT_NEAR(first, std::log(static_cast<double>(c.vocab_size)), 0.25);
  EXPECT_LT(last, 1.0);
  EXPECT_LT(last_mtp, 1.0);
}

INSTANTIATE_TEST_SUITE_P(Precisions, TrainingTest,
                         ::testing::Values(Precision::kFp32, Precision::kBf16, Precision::kFp8),
                         [](const auto& info) { return std::string(ToString(info.param)); });

TEST(ModelTest, WithoutMtpLayers) {
  const ModelConfig c = Demo();
  auto model = Model::Create(c, {.layer_end = c.num_hidden_layers, .max_batch = 2, .max_seq = 8});
  ASSERT_TRUE(model.ok()) << model.status();
  (*model)->InitRandom(1, 0.02f);
  testing_util::Rows rows = RandomRows(c, 2, 8, 1);
  MicroBatch mb = rows.Batch();
  mb.mtp_inputs = mb.mtp_targets = nullptr;
  auto l = (*model)->ForwardBackward(mb, MeanLossScales(16, 0, 1, 0.3f));
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_EQ(l->mtp_count, 0);
  EXPECT_EQ(l->main_count, 16);
  EXPECT_EQ((*model)->Loads().size(), static_cast<size_t>(c.num_moe_main_layers()));
  for (const NamedTensor& t : (*model)->Parameters()) EXPECT_EQ(t.name.find("layers.4."), std::string::npos) << t.name;
}

TEST(ModelTest, EvaluationWithoutMtpInputsSkipsTheMtpModule) {
  const ModelConfig c = Demo();
  auto model = Model::Create(c, {.max_batch = 2, .max_seq = 8});
  ASSERT_TRUE(model.ok());
  (*model)->InitRandom(2, 0.02f);
  testing_util::Rows rows = RandomRows(c, 2, 8, 2);
  std::vector<float> a(2 * 8 * c.vocab_size), b(a.size()), mtp(a.size());
  auto with = (*model)->Forward(rows.Batch(), a.data(), mtp.data());
  ASSERT_TRUE(with.ok()) << with.status();
  EXPECT_EQ((*model)->LastRouting().size(), static_cast<size_t>(c.num_moe_main_layers() + 1));
  MicroBatch mb = rows.Batch();
  mb.mtp_inputs = mb.mtp_targets = nullptr;
  auto without = (*model)->Forward(mb, b.data(), nullptr);
  ASSERT_TRUE(without.ok()) << without.status();
  EXPECT_EQ(a, b);
  EXPECT_EQ(without->mtp_count, 0);
  EXPECT_EQ((*model)->LastRouting().size(), static_cast<size_t>(c.num_moe_main_layers()));
  EXPECT_EQ(with->main_sum, without->main_sum);
  // MTP logits need the MTP inputs.
  EXPECT_EQ((*model)->Forward(mb, nullptr, mtp.data()).status().code(), StatusCode::kInvalidArgument);
  // Forward counts no loads.
  for (const auto& [layer, loads] : (*model)->Loads()) {
    for (int32_t v : loads) EXPECT_EQ(v, 0) << layer;
  }
}

TEST(ModelTest, BiasUpdateMovesByGammaOrZero) {
  const ModelConfig c = Demo();
  auto model = Model::Create(c, {.max_batch = 2, .max_seq = 8});
  ASSERT_TRUE(model.ok());
  (*model)->InitRandom(4, 0.02f);
  testing_util::Rows rows = RandomRows(c, 2, 8, 4);
  (*model)->ZeroLoads();
  ASSERT_TRUE((*model)->ForwardBackward(rows.Batch(), MeanLossScales(16, 14, 1, 0.3f)).ok());
  std::vector<float> before;
  for (const NamedTensor& t : (*model)->Parameters()) {
    if (t.name.ends_with("e_score_correction_bias")) before.insert(before.end(), t.data, t.data + t.numel());
  }
  // A synthetic load for the first MoE layer: expert 0 overloaded, expert 1 at the mean, the rest underloaded.
  const int64_t E = c.n_routed_experts;
  std::vector<int32_t> loads(E, 1);
  loads[0] = 1 + static_cast<int32_t>(E);  // mean = 2
  loads[1] = 2;
  const int64_t first_moe = c.first_k_dense_replace;
  ASSERT_TRUE((*model)->SetLoads(first_moe, loads).ok());
  EXPECT_FALSE((*model)->SetLoads(0, loads).ok());  // dense layer
  EXPECT_FALSE((*model)->SetLoads(first_moe, std::vector<int32_t>(3)).ok());
  const auto all_loads = (*model)->Loads();
  (*model)->UpdateBias(0.25f);
  size_t i = 0, layer = 0;
  for (const NamedTensor& t : (*model)->Parameters()) {
    if (!t.name.ends_with("e_score_correction_bias")) continue;
    const std::vector<int32_t>& l = all_loads[layer++].second;
    double mean = 0;
    for (int32_t v : l) mean += v;
    mean /= static_cast<double>(l.size());
    for (int64_t e = 0; e < t.numel(); ++e, ++i) {
      const double want = before[i] + (l[e] < mean ? 0.25 : l[e] > mean ? -0.25 : 0.0);
      EXPECT_FLOAT_EQ(t.data[e], static_cast<float>(want)) << t.name << " expert " << e;
    }
  }
}

std::vector<std::vector<float>> GradsOf(Model& m) {
  std::vector<std::vector<float>> out;
  for (const NamedTensor& g : m.Gradients()) out.emplace_back(g.data, g.data + g.numel());
  return out;
}

double MaxRelDiff(const std::vector<std::vector<float>>& a, const std::vector<std::vector<float>>& b, double k = 1) {
  double worst = 0;
  for (size_t t = 0; t < a.size(); ++t) {
    double scale = 0, diff = 0;
    for (size_t i = 0; i < a[t].size(); ++i) {
      scale = std::max(scale, std::abs(static_cast<double>(b[t][i])));
      diff = std::max(diff, std::abs(a[t][i] - k * b[t][i]));
    }
    worst = std::max(worst, scale > 0 ? diff / (k * scale) : diff);
  }
  return worst;
}

// Per-target weights scale each target's gradient (GRPO) and skip the MTP module when it has no inputs: weights
// 2 double the gradient; weight 0 equals an ignored target; the loss values stay unweighted.
TEST(ModelTest, TargetWeightsWeighTheMainLossGradient) {
  const ModelConfig c = Demo();
  const int B = 2, T = 8;
  auto model = Model::Create(c, {.max_batch = B, .max_seq = T});
  ASSERT_TRUE(model.ok());
  Model& m = **model;
  m.InitRandom(12, 0.05f);
  testing_util::Rows rows = RandomRows(c, B, T, 13);
  const LossScales scales{0.1f, 0.f, 0.f};
  MicroBatch mb = rows.Batch();
  mb.mtp_inputs = mb.mtp_targets = nullptr;  // RL: no MTP

  m.ZeroGrad();
  auto plain = m.ForwardBackward(mb, scales);
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ(plain->mtp_count, 0);
  const auto g1 = GradsOf(m);
  for (const NamedTensor& g : m.Gradients()) {  // the MTP layer did not run
    if (g.name.starts_with("model.layers.4.")) {
      EXPECT_EQ(testing_util::MaxAbs(g.data, g.numel()), 0.0) << g.name;
    }
  }
  std::vector<float> twos(B * T, 2.f);
  mb.target_weights = twos.data();
  m.ZeroGrad();
  auto doubled = m.ForwardBackward(mb, scales);
  ASSERT_TRUE(doubled.ok());
  EXPECT_NEAR(doubled->main_sum, plain->main_sum, 1e-4 * plain->main_sum);
  EXPECT_LE(MaxRelDiff(GradsOf(m), g1, 2.0), 1e-4);

  // Weight 0 on the second row == that row's targets ignored.
  std::vector<float> half(B * T, 1.f);
  std::fill(half.begin() + T, half.end(), 0.f);
  mb.target_weights = half.data();
  m.ZeroGrad();
  ASSERT_TRUE(m.ForwardBackward(mb, scales).ok());
  const auto gw = GradsOf(m);
  testing_util::Rows masked = rows;
  std::fill(masked.targets.begin() + T, masked.targets.end(), -1);
  MicroBatch mm = masked.Batch();
  mm.mtp_inputs = mm.mtp_targets = nullptr;
  m.ZeroGrad();
  auto l = m.ForwardBackward(mm, scales);
  ASSERT_TRUE(l.ok());
  EXPECT_EQ(l->main_count, T);
  EXPECT_LE(MaxRelDiff(gw, GradsOf(m)), 1e-4);
}

// Packed samples (block-diagonal mask, positions restarting at 0) see nothing of each other: the second sample's
// logits inside a packed row equal its logits as a row of its own.
TEST(ModelTest, PackedSamplesAreIndependent) {
  const ModelConfig c = Demo();
  const int T = 12, split = 5;
  auto model = Model::Create(c, {.max_batch = 1, .max_seq = T});
  ASSERT_TRUE(model.ok());
  (*model)->InitRandom(8, 0.05f);
  std::mt19937_64 rng(9);
  std::vector<int32_t> tokens(T), positions(T), segments(T);
  for (int t = 0; t < T; ++t) {
    tokens[t] = static_cast<int32_t>(rng() % c.vocab_size);
    positions[t] = t < split ? t : t - split;
    segments[t] = t < split ? 1 : 2;
  }
  MicroBatch packed{.inputs = tokens.data(), .positions = positions.data(), .segment_ids = segments.data(), .B = 1,
                    .T = T};
  std::vector<float> a(static_cast<size_t>(T) * c.vocab_size), b((T - split) * c.vocab_size);
  ASSERT_TRUE((*model)->Forward(packed, a.data(), nullptr).ok());
  MicroBatch alone{.inputs = tokens.data() + split, .B = 1, .T = T - split};
  ASSERT_TRUE((*model)->Forward(alone, b.data(), nullptr).ok());
  EXPECT_LE(testing_util::MaxAbsDiff(a.data() + split * c.vocab_size, b.data(), static_cast<int64_t>(b.size())), 1e-5);
  // Without the mask the second sample sees the first: the logits differ.
  packed.segment_ids = nullptr;
  ASSERT_TRUE((*model)->Forward(packed, a.data(), nullptr).ok());
  EXPECT_GT(testing_util::MaxAbsDiff(a.data() + split * c.vocab_size, b.data(), static_cast<int64_t>(b.size())), 1e-4);
}

// RoPE only sees relative positions, with plain RoPE and with YaRN (§2.4, whose mscale also changes the softmax
// scale): shifting every position by a constant leaves the logits unchanged, a different spacing does not.
TEST(ModelTest, RopeDependsOnRelativePositions) {
  for (bool yarn : {false, true}) {
    ModelConfig c = Demo();
    if (yarn) {
      c.rope_scaling = RopeScaling{.factor = 4.0, .original_max_position_embeddings = 64, .mscale = 0.707,
                                   .mscale_all_dim = 1.0};
      ASSERT_NE(c.yarn_attention_factor(), 1.0);
    }
    const int T = 10;
    auto model = Model::Create(c, {.max_batch = 1, .max_seq = T});
    ASSERT_TRUE(model.ok()) << model.status();
    (*model)->InitRandom(10, 0.05f);
    std::mt19937_64 rng(11);
    std::vector<int32_t> tokens(T), p0(T), p1(T), p2(T);
    for (int t = 0; t < T; ++t) {
      tokens[t] = static_cast<int32_t>(rng() % c.vocab_size);
      p0[t] = t;
      p1[t] = t + 37;
      p2[t] = 2 * t;
    }
    std::vector<float> l0(static_cast<size_t>(T) * c.vocab_size), l1(l0.size()), l2(l0.size());
    for (auto [pos, out] : {std::pair{&p0, &l0}, std::pair{&p1, &l1}, std::pair{&p2, &l2}}) {
      MicroBatch mb{.inputs = tokens.data(), .positions = pos->data(), .B = 1, .T = T};
      ASSERT_TRUE((*model)->Forward(mb, out->data(), nullptr).ok());
    }
    const int64_t n = static_cast<int64_t>(l0.size());
    EXPECT_LE(testing_util::MaxAbsDiff(l0.data(), l1.data(), n), 2e-5) << (yarn ? "yarn" : "plain");
    EXPECT_GT(testing_util::MaxAbsDiff(l0.data(), l2.data(), n), 1e-4) << (yarn ? "yarn" : "plain");
  }
}

TEST(ModelTest, RefusesMalformedMicroBatches) {
  const ModelConfig c = Demo();
  auto model = Model::Create(c, {.max_batch = 2, .max_seq = 8});
  ASSERT_TRUE(model.ok());
  testing_util::Rows rows = RandomRows(c, 2, 8, 6);
  const LossScales s;
  MicroBatch too_big = rows.Batch();
  too_big.B = 3;
  EXPECT_EQ((*model)->ForwardBackward(too_big, s).status().code(), StatusCode::kInvalidArgument);
  testing_util::Rows bad = rows;
  bad.inputs[5] = static_cast<int32_t>(c.vocab_size);
  auto st = (*model)->ForwardBackward(bad.Batch(), s).status();
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("inputs[5]"), std::string::npos) << st;
  bad = rows;
  bad.targets[0] = -2;
  EXPECT_EQ((*model)->ForwardBackward(bad.Batch(), s).status().code(), StatusCode::kInvalidArgument);
  MicroBatch no_mtp_targets = rows.Batch();
  no_mtp_targets.mtp_targets = nullptr;
  EXPECT_EQ((*model)->ForwardBackward(no_mtp_targets, s).status().code(), StatusCode::kInvalidArgument);
  std::vector<float> weights(16, 1.f);
  weights[3] = std::nanf("");
  MicroBatch nan_weight = rows.Batch();
  nan_weight.target_weights = weights.data();
  EXPECT_EQ((*model)->ForwardBackward(nan_weight, s).status().code(), StatusCode::kInvalidArgument);
  std::vector<int32_t> positions(16, static_cast<int32_t>(c.max_position_embeddings));
  MicroBatch far = rows.Batch();
  far.positions = positions.data();
  EXPECT_EQ((*model)->ForwardBackward(far, s).status().code(), StatusCode::kInvalidArgument);
  // A stage cannot run ForwardBackward; BackwardStage needs a forward first.
  auto stage = Model::Create(c, {.layer_begin = 1, .layer_end = 3, .has_embedding = false, .has_head = false,
                                 .max_batch = 2, .max_seq = 8});
  ASSERT_TRUE(stage.ok());
  EXPECT_EQ((*stage)->ForwardBackward(rows.Batch(), s).status().code(), StatusCode::kFailedPrecondition);
  std::vector<float> h(2 * 8 * c.hidden_size);
  EXPECT_EQ((*stage)->BackwardStage(rows.Batch(), s, h.data(), h.data()).status().code(),
            StatusCode::kFailedPrecondition);
  EXPECT_EQ((*stage)->ForwardStage(rows.Batch(), nullptr, h.data(), true).code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace shoal::model
