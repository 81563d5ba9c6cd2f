#include "kernels/cpu/router.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <set>

#include "kernels/cpu/ops_ref.h"
#include "tests/kernels/gradcheck.h"

namespace shoal::kernels {
namespace {

using testing::AllClose;
using testing::RandomVec;
using testing::RandomVecF;

struct Cfg {
  int N, E, K, G, topk_group;
};

TEST(RouterTest, InvariantsOfGroupLimitedSelection) {
  // Appendix B item 3: K distinct experts, all inside ≤ topk_group groups, Σ_k g_k = routed_scale, and the
  // selection is the top-K of s + b among the kept groups.
  for (Cfg c : {Cfg{300, 16, 2, 4, 2}, Cfg{200, 64, 6, 8, 3}, Cfg{100, 256, 8, 8, 4}}) {
    auto logits = RandomVecF((size_t)c.N * c.E, 1, -3, 3);
    auto bias = RandomVecF(c.E, 2, -0.1f, 0.1f);
    std::vector<float> s((size_t)c.N * c.E), w((size_t)c.N * c.K);
    std::vector<int32_t> idx((size_t)c.N * c.K);
    for (bool fast : {true, false}) {
      if (fast)
        router_forward(s.data(), idx.data(), w.data(), logits.data(), bias.data(), c.N, c.E, c.K, c.G, c.topk_group,
                       2.5f);
      else
        ref::router_forward(s.data(), idx.data(), w.data(), logits.data(), bias.data(), c.N, c.E, c.K, c.G,
                            c.topk_group, 2.5f);
      const int gs = c.E / c.G;
      for (int n = 0; n < c.N; ++n) {
        std::set<int> experts, groups;
        float wsum = 0, prev = INFINITY;
        for (int k = 0; k < c.K; ++k) {
          const int e = idx[n * c.K + k];
          ASSERT_TRUE(e >= 0 && e < c.E);
          experts.insert(e);
          groups.insert(e / gs);
          wsum += w[n * c.K + k];
          const float sb = s[n * c.E + e] + bias[e];
          EXPECT_LE(sb, prev) << "not in decreasing order of s+b";
          prev = sb;
          EXPECT_NEAR(s[n * c.E + e], 1 / (1 + std::exp(-logits[n * c.E + e])), 1e-6);
        }
        EXPECT_EQ((int)experts.size(), c.K) << "token " << n;
        EXPECT_LE((int)groups.size(), c.topk_group) << "token " << n;
        EXPECT_NEAR(wsum, 2.5f, 1e-5) << "token " << n;
        // Any unselected expert in a selected group has s+b ≤ the K-th selected.
        for (int e = 0; e < c.E; ++e)
          if (!experts.count(e) && groups.count(e / gs)) {
            EXPECT_LE(s[n * c.E + e] + bias[e], prev);
          }
      }
    }
  }
}

TEST(RouterTest, GroupScoreIsSumOfTopTwo) {
  // 4 experts, 2 groups, keep 1 group. Group 0 = {0.9, 0.1} (max 0.9, top-2 sum 1.0); group 1 = {0.8, 0.7}
  // (sum 1.5). Top-2 sum keeps group 1 although group 0 holds the best expert.
  auto logit = [](double p) { return static_cast<float>(std::log(p / (1 - p))); };
  std::vector<float> logits = {logit(0.9), logit(0.1), logit(0.8), logit(0.7)};
  std::vector<float> s(4), w(2);
  std::vector<int32_t> idx(2);
  router_forward(s.data(), idx.data(), w.data(), logits.data(), nullptr, 1, 4, 2, 2, 1, 1.0f);
  EXPECT_EQ(idx, (std::vector<int32_t>{2, 3}));
  EXPECT_NEAR(w[0], 0.8 / 1.5, 1e-6);
  ref::router_forward(s.data(), idx.data(), w.data(), logits.data(), nullptr, 1, 4, 2, 2, 1, 1.0f);
  EXPECT_EQ(idx, (std::vector<int32_t>{2, 3}));
}

TEST(RouterTest, NoBiasOneGroupIsPlainTopK) {
  const int N = 500, E = 32, K = 4;
  auto logits = RandomVecF((size_t)N * E, 3, -4, 4);
  std::vector<float> s((size_t)N * E), w((size_t)N * K);
  std::vector<int32_t> idx((size_t)N * K);
  router_forward(s.data(), idx.data(), w.data(), logits.data(), nullptr, N, E, K, 1, 1, 1.0f);
  for (int n = 0; n < N; ++n) {
    std::vector<int> order(E);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](int a, int b) { return logits[n * E + a] > logits[n * E + b]; });
    for (int k = 0; k < K; ++k) EXPECT_EQ(idx[n * K + k], order[k]) << "token " << n;
  }
}

TEST(RouterTest, BiasChangesSelectionButNotWeights) {
  // A large bias on expert 5 forces it in; its weight still comes from the unbiased score.
  const int E = 8, K = 2;
  std::vector<float> logits = {3, 2, 1, 0, -1, -2, -3, -4};
  std::vector<float> bias(E, 0.0f);
  bias[5] = 10.0f;
  std::vector<float> s(E), w(K);
  std::vector<int32_t> idx(K);
  router_forward(s.data(), idx.data(), w.data(), logits.data(), bias.data(), 1, E, K, 1, 1, 1.0f);
  EXPECT_EQ(idx, (std::vector<int32_t>{5, 0}));
  const float s5 = 1 / (1 + std::exp(2.0f)), s0 = 1 / (1 + std::exp(-3.0f));
  EXPECT_NEAR(w[0], s5 / (s5 + s0), 1e-6);
  EXPECT_NEAR(w[1], s0 / (s5 + s0), 1e-6);
}

TEST(RouterTest, FastMatchesReference) {
  for (Cfg c : {Cfg{1000, 16, 2, 4, 2}, Cfg{300, 256, 8, 8, 4}, Cfg{77, 20, 3, 1, 1}}) {
    auto logits = RandomVecF((size_t)c.N * c.E, 4, -3, 3);
    auto bias = RandomVecF(c.E, 5, -0.05f, 0.05f);
    std::vector<float> s((size_t)c.N * c.E), w((size_t)c.N * c.K), s_ref(s.size()), w_ref(w.size());
    std::vector<int32_t> idx((size_t)c.N * c.K), idx_ref(idx.size());
    router_forward(s.data(), idx.data(), w.data(), logits.data(), bias.data(), c.N, c.E, c.K, c.G, c.topk_group, 2.5f);
    ref::router_forward(s_ref.data(), idx_ref.data(), w_ref.data(), logits.data(), bias.data(), c.N, c.E, c.K, c.G,
                        c.topk_group, 2.5f);
    EXPECT_TRUE(AllClose(s, s_ref, 1e-6, 1e-7));
    EXPECT_EQ(idx, idx_ref);
    EXPECT_TRUE(AllClose(w, w_ref, 1e-5, 1e-6));

    auto dw = RandomVecF(w.size(), 6);
    auto init = RandomVecF(s.size(), 7);
    std::vector<float> dl = init, dl_ref = init;
    router_backward(dl.data(), dw.data(), s.data(), idx.data(), c.N, c.E, c.K, 2.5f);
    ref::router_backward(dl_ref.data(), dw.data(), s.data(), idx.data(), c.N, c.E, c.K, 2.5f);
    EXPECT_TRUE(AllClose(dl, dl_ref, 1e-5, 1e-6));

    const int T = c.N % 10 == 0 ? 10 : 7;
    const int B = c.N / T;
    dl = init, dl_ref = init;
    const float loss = router_balance_loss(dl.data(), s.data(), B, T, c.E, c.K, 1e-2f, 0.5f);
    const float loss_ref = ref::router_balance_loss(dl_ref.data(), s.data(), B, T, c.E, c.K, 1e-2f, 0.5f);
    EXPECT_NEAR(loss, loss_ref, 1e-6 * std::abs(loss_ref));
    EXPECT_TRUE(AllClose(dl, dl_ref, 1e-4, 1e-9));
  }
}

TEST(RouterTest, GatingGradientMatchesFiniteDifferences) {
  // L = Σ r ⊙ topk_weight as a function of the logits (selection fixed under small perturbations).
  const int N = 6, E = 12, K = 3, G = 3, TG = 2;
  auto logits = RandomVec((size_t)N * E, 8, -2, 2);
  auto bias = RandomVecF(E, 9, -0.1f, 0.1f);
  auto r = RandomVec((size_t)N * K, 10);
  std::vector<double> s((size_t)N * E), w((size_t)N * K);
  std::vector<int32_t> idx((size_t)N * K), idx0;
  auto loss = [&] {
    ref::router_forward(s.data(), idx.data(), w.data(), logits.data(), bias.data(), N, E, K, G, TG, 2.5f);
    return testing::Dot(w, r);
  };
  loss();
  idx0 = idx;
  std::vector<double> dl((size_t)N * E, 0.0);
  ref::router_backward(dl.data(), r.data(), s.data(), idx.data(), N, E, K, 2.5f);
  EXPECT_TRUE(testing::CheckGradient(loss, logits, dl));
  loss();
  EXPECT_EQ(idx, idx0) << "selection moved during the check";
}

TEST(RouterTest, BalanceLossValueAndGradient) {
  // Value: 2 experts, K = 1, one sequence of 2 tokens with s = (0.8, 0.2) and (0.3, 0.6):
  // f = E/(K·T)·counts = (1, 1); P = ((0.8/1.0 + 0.3/0.9)/2, (0.2/1.0 + 0.6/0.9)/2); L = α(P0 + P1) = α.
  std::vector<double> s = {0.8, 0.2, 0.3, 0.6};
  EXPECT_NEAR(ref::router_balance_loss<double>(nullptr, s.data(), 1, 2, 2, 1, 0.1f, 1.0f), 0.1, 1e-7);
  std::vector<float> sf = {0.9f, 0.1f, 0.7f, 0.2f};  // both pick expert 0: f = (2, 0)
  const double P0 = (0.9 / 1.0 + 0.7 / 0.9) / 2;
  EXPECT_NEAR(router_balance_loss(nullptr, sf.data(), 1, 2, 2, 1, 0.1f, 1.0f), 0.1 * 2 * P0, 1e-6);

  // Gradient through the sigmoid, f held constant (FD is exact as long as the top-K does not change).
  const int B = 3, T = 5, E = 8, K = 2;
  auto logits = RandomVec((size_t)B * T * E, 11, -2, 2);
  std::vector<double> sc(logits.size());
  auto loss = [&] {
    for (size_t i = 0; i < logits.size(); ++i) sc[i] = 1 / (1 + std::exp(-logits[i]));
    return ref::router_balance_loss<double>(nullptr, sc.data(), B, T, E, K, 0.3f, 1.0f);
  };
  loss();
  std::vector<double> dl(logits.size(), 0.0);
  ref::router_balance_loss<double>(dl.data(), sc.data(), B, T, E, K, 0.3f, 1.0f);
  EXPECT_TRUE(testing::CheckGradient(loss, logits, dl));
}

TEST(RouterTest, CountLoadsAndBiasUpdate) {
  std::vector<int32_t> idx = {0, 1, 0, 2, 0, 3, 1, 2};  // N = 4, K = 2
  std::vector<int32_t> loads(4, 0), loads_ref(4, 0);
  router_count_loads(loads.data(), idx.data(), 4, 2, 4);
  ref::router_count_loads(loads_ref.data(), idx.data(), 4, 2, 4);
  EXPECT_EQ(loads, (std::vector<int32_t>{3, 2, 2, 1}));
  EXPECT_EQ(loads, loads_ref);
  router_count_loads(loads.data(), idx.data(), 4, 2, 4);  // accumulates
  EXPECT_EQ(loads, (std::vector<int32_t>{6, 4, 4, 2}));

  // Appendix B item 4: each b moves by exactly ±γ or 0 (mean = 4: overloaded −γ, underloaded +γ, equal 0).
  const float gamma = 0.001f;
  std::vector<float> b0 = {0.0f, 0.25f, -0.5f, 0.125f};
  std::vector<float> b = b0, b_ref = b0;
  router_update_bias(b.data(), loads.data(), 4, gamma);
  ref::router_update_bias(b_ref.data(), loads.data(), 4, gamma);
  EXPECT_EQ(b, b_ref);
  EXPECT_EQ(b[0], b0[0] - gamma);
  EXPECT_EQ(b[1], b0[1]);
  EXPECT_EQ(b[2], b0[2]);
  EXPECT_EQ(b[3], b0[3] + gamma);
}

}  // namespace
}  // namespace shoal::kernels
