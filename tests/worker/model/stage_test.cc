// The fixture's training step through two pipeline stages (ForwardStage / BackwardStage, the hidden state and its
// gradient handed across) gives the full model's gradients: the last stage's MTP embedding copy plus the first
// stage's embedding gradient is the shared embedding's gradient. Deferred weight gradients give the same values.
#include <gtest/gtest.h>

#include <map>

#include "tests/worker/model/test_util.h"
#include "worker/model/model.h"

namespace shoal::model {
namespace {

using testing_util::MaxAbs;
using testing_util::MaxAbsDiff;

class StageTest : public ::testing::TestWithParam<bool> {};

TEST_P(StageTest, TwoStagesReproduceTheFixture) {
  if (testing_util::FixtureDir().empty()) GTEST_SKIP() << "dsv3-micro fixture not found";
  auto f = testing_util::LoadFixture();
  ASSERT_TRUE(f.ok()) << f.status();
  const ModelConfig& c = f->config();
  const bool defer = GetParam();
  const int64_t L = c.num_hidden_layers, split = L / 2 + 1;
  ModelOptions first{.layer_begin = 0, .layer_end = split, .has_embedding = true, .has_head = false,
                     .max_batch = f->B, .max_seq = f->S, .defer_weight_grads = defer};
  ModelOptions last{.layer_begin = split, .layer_end = -1, .has_embedding = false, .has_head = true,
                    .max_batch = f->B, .max_seq = f->S, .defer_weight_grads = defer};
  auto a = Model::Create(c, first);
  auto b = Model::Create(c, last);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  ASSERT_TRUE((*a)->Load(testing_util::LookupIn(f->checkpoint.tensors)).ok());
  ASSERT_TRUE((*b)->Load(testing_util::LookupIn(f->checkpoint.tensors)).ok());
  (*a)->ZeroGrad();
  (*b)->ZeroGrad();

  testing_util::Rows rows = f->rows();
  const MicroBatch mb = rows.Batch();
  const LossScales scales =
      MeanLossScales(static_cast<int64_t>(f->B) * f->S, static_cast<int64_t>(f->B) * (f->S - 1), 1, 0.3f);
  std::vector<float> h(static_cast<size_t>(f->B) * f->S * c.hidden_size), dh(h.size());
  ASSERT_TRUE((*a)->ForwardStage(mb, nullptr, h.data(), true).ok());
  ASSERT_TRUE((*b)->ForwardStage(mb, h.data(), nullptr, true).ok());
  auto lb = (*b)->BackwardStage(mb, scales, nullptr, dh.data());
  ASSERT_TRUE(lb.ok()) << lb.status();
  auto la = (*a)->BackwardStage(mb, scales, dh.data(), nullptr);
  ASSERT_TRUE(la.ok()) << la.status();
  if (defer) {
    (*b)->BackwardWeightStage();
    (*a)->BackwardWeightStage();
  }
  const double total = lb->main_sum / lb->main_count + 0.3 * lb->mtp_sum / lb->mtp_count + la->balance + lb->balance;
  EXPECT_NEAR(total, f->Expected("loss_total")[0], 1e-5);

  std::map<std::string, std::vector<float>> grads;
  for (Model* m : {a->get(), b->get()}) {
    for (const NamedTensor& g : m->Gradients()) grads[g.name].assign(g.data, g.data + g.numel());
  }
  // The embedding: first stage's lookup + the last stage's MTP copy.
  const std::string copy = "model.layers." + std::to_string(L) + ".embed_tokens.weight";
  ASSERT_EQ(grads.count(copy), 1u);
  ASSERT_EQ(grads.count("model.embed_tokens.weight"), 1u);
  for (size_t i = 0; i < grads[copy].size(); ++i) grads["model.embed_tokens.weight"][i] += grads[copy][i];
  grads.erase(copy);
  EXPECT_EQ(grads.size(), 166u);
  for (const auto& [name, g] : grads) {
    std::vector<float> want = f->Expected("grad." + name);
    ASSERT_EQ(want.size(), g.size()) << name;
    const double scale = MaxAbs(want.data(), static_cast<int64_t>(want.size()));
    EXPECT_LE(MaxAbsDiff(g.data(), want.data(), static_cast<int64_t>(g.size())), scale == 0 ? 1e-12 : 1e-3 * scale)
        << name;
  }
}

INSTANTIATE_TEST_SUITE_P(WeightGradients, StageTest, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "Deferred" : "Immediate"; });

}  // namespace
}  // namespace shoal::model
