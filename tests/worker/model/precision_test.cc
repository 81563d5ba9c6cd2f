// fp32 vs bf16 vs fp8 (reference/deepseek-v3.md §5) on the dsv3-micro fixture: the losses agree within bounds
// sized by each format's rounding, the gradients point the same way, the routing of the low precisions is
// mostly the fixture's, and the low-precision paths really round (they differ from fp32).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>

#include "tests/worker/model/test_util.h"
#include "worker/model/model.h"

namespace shoal::model {
namespace {

struct RunResult {
  double main = 0, mtp = 0, balance = 0, total = 0;
  std::vector<std::vector<float>> grads;
  std::vector<std::vector<int32_t>> routing;
};

RunResult RunFixture(const testing_util::Fixture& f, Precision precision) {
  RunResult r;
  ModelOptions o;
  o.precision = precision;
  o.max_batch = f.B;
  o.max_seq = f.S;
  auto model = Model::Create(f.config(), o);
  EXPECT_TRUE(model.ok()) << model.status();
  if (!model.ok()) return r;
  EXPECT_TRUE((*model)->Load(testing_util::LookupIn(f.checkpoint.tensors)).ok());
  testing_util::Rows rows = f.rows();
  const int64_t nm = static_cast<int64_t>(f.B) * f.S, nt = static_cast<int64_t>(f.B) * (f.S - 1);
  (*model)->ZeroGrad();
  auto l = (*model)->ForwardBackward(rows.Batch(), MeanLossScales(nm, nt, 1, 0.3f));
  EXPECT_TRUE(l.ok()) << l.status();
  if (!l.ok()) return r;
  r.main = l->main_sum / l->main_count;
  r.mtp = l->mtp_sum / l->mtp_count;
  r.balance = l->balance;
  r.total = r.main + 0.3 * r.mtp + r.balance;
  for (const NamedTensor& g : (*model)->Gradients()) r.grads.emplace_back(g.data, g.data + g.numel());
  for (const RoutingView& v : (*model)->LastRouting()) r.routing.emplace_back(v.topk_idx, v.topk_idx + v.num_tokens * v.k);
  return r;
}

// Cosine similarity of all gradients together, and of the worst single tensor (among tensors with a norm).
std::pair<double, double> GradCosine(const RunResult& a, const RunResult& b) {
  double dot = 0, na = 0, nb = 0, worst = 1;
  for (size_t t = 0; t < a.grads.size(); ++t) {
    double d = 0, x = 0, y = 0;
    for (size_t i = 0; i < a.grads[t].size(); ++i) {
      d += static_cast<double>(a.grads[t][i]) * b.grads[t][i];
      x += static_cast<double>(a.grads[t][i]) * a.grads[t][i];
      y += static_cast<double>(b.grads[t][i]) * b.grads[t][i];
    }
    dot += d;
    na += x;
    nb += y;
    if (x > 0 && y > 0) worst = std::min(worst, d / std::sqrt(x * y));
  }
  return {dot / std::sqrt(na * nb), worst};
}

double RoutingAgreement(const RunResult& a, const RunResult& b) {
  int64_t same = 0, total = 0;
  for (size_t l = 0; l < a.routing.size(); ++l) {
    for (size_t i = 0; i < a.routing[l].size(); ++i) {
      ++total;
      same += a.routing[l][i] == b.routing[l][i] ? 1 : 0;
    }
  }
  return total ? static_cast<double>(same) / total : 0;
}

TEST(PrecisionTest, Fp32Bf16Fp8AgreeOnTheFixture) {
  if (testing_util::FixtureDir().empty()) GTEST_SKIP() << "dsv3-micro fixture not found";
  auto f = testing_util::LoadFixture();
  ASSERT_TRUE(f.ok()) << f.status();
  RunResult fp32 = RunFixture(*f, Precision::kFp32);
  RunResult bf16 = RunFixture(*f, Precision::kBf16);
  RunResult fp8 = RunFixture(*f, Precision::kFp8);
  ASSERT_FALSE(fp32.grads.empty());
  ASSERT_FALSE(bf16.grads.empty());
  ASSERT_FALSE(fp8.grads.empty());
  EXPECT_NEAR(fp32.total, f->Expected("loss_total")[0], 1e-5);

  auto [cos_bf16, worst_bf16] = GradCosine(fp32, bf16);
  auto [cos_fp8, worst_fp8] = GradCosine(fp32, fp8);
  const double route_bf16 = RoutingAgreement(fp32, bf16), route_fp8 = RoutingAgreement(fp32, fp8);
  std::printf("[precision] loss_main  fp32 %.7f  bf16 %.7f (%+.2e)  fp8 %.7f (%+.2e)\n", fp32.main, bf16.main,
              bf16.main - fp32.main, fp8.main, fp8.main - fp32.main);
  std::printf("[precision] loss_mtp   fp32 %.7f  bf16 %.7f (%+.2e)  fp8 %.7f (%+.2e)\n", fp32.mtp, bf16.mtp,
              bf16.mtp - fp32.mtp, fp8.mtp, fp8.mtp - fp32.mtp);
  std::printf("[precision] balance    fp32 %.6e  bf16 %.6e  fp8 %.6e\n", fp32.balance, bf16.balance, fp8.balance);
  std::printf("[precision] loss_total fp32 %.7f  bf16 %.7f (rel %+.2e)  fp8 %.7f (rel %+.2e)\n", fp32.total,
              bf16.total, (bf16.total - fp32.total) / fp32.total, fp8.total, (fp8.total - fp32.total) / fp32.total);
  std::printf("[precision] gradient cosine vs fp32: bf16 %.6f (worst tensor %.4f), fp8 %.6f (worst tensor %.4f)\n",
              cos_bf16, worst_bf16, cos_fp8, worst_fp8);
  std::printf("[precision] routing slots equal to fp32: bf16 %.1f%%, fp8 %.1f%%\n", 100 * route_bf16,
              100 * route_fp8);

  // Losses: bf16 rounds GEMM inputs to 8 significant bits (2^-9 relative), fp8 E4M3 to 4 (2^-4, with per-tile
  // scales); the fixture's logits are O(0.5), so the loss moves by ~1e-5 relative. fp8 vs bf16 within V3's
  // acceptance bound for FP8 training (0.25% relative loss error, §5.6).
  EXPECT_LE(std::abs(bf16.total - fp32.total) / fp32.total, 2e-4);
  EXPECT_LE(std::abs(fp8.total - fp32.total) / fp32.total, 2e-3);
  EXPECT_LE(std::abs(fp8.total - bf16.total) / bf16.total, 2.5e-3);
  EXPECT_LE(std::abs(bf16.balance - fp32.balance) / fp32.balance, 1e-3);
  EXPECT_LE(std::abs(fp8.balance - fp32.balance) / fp32.balance, 1e-2);
  // And they do round: identical results would mean the precision is ignored.
  EXPECT_NE(bf16.total, fp32.total);
  EXPECT_NE(fp8.total, bf16.total);
  // Gradients point the same way.
  EXPECT_GE(cos_bf16, 0.999);
  EXPECT_GE(cos_fp8, 0.99);
  EXPECT_GE(worst_bf16, 0.99);
  EXPECT_GE(worst_fp8, 0.8);
  EXPECT_GE(route_bf16, 0.9);
  EXPECT_GE(route_fp8, 0.7);
}

}  // namespace
}  // namespace shoal::model
