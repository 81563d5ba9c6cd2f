#include "kernels/cpu/cross_entropy.h"

#include <gtest/gtest.h>

#include <cmath>

#include "kernels/cpu/ops_ref.h"
#include "tests/kernels/gradcheck.h"

namespace shoal::kernels {
namespace {

using testing::AllClose;
using testing::RandomInts;
using testing::RandomVec;
using testing::RandomVecF;

// Unfused oracle written out in full here: logits → softmax → NLL, all in double.
double UnfusedLoss(const std::vector<float>& z, const std::vector<float>& W, const std::vector<int32_t>& tgt, int N,
                   int C, int V, std::vector<double>* probs) {
  double total = 0;
  probs->assign((size_t)N * V, 0.0);
  for (int n = 0; n < N; ++n) {
    std::vector<double> lg(V);
    for (int v = 0; v < V; ++v) {
      double acc = 0;
      for (int c = 0; c < C; ++c) acc += (double)z[n * C + c] * W[v * C + c];
      lg[v] = acc;
    }
    double mx = lg[0];
    for (double x : lg) mx = std::max(mx, x);
    double sum = 0;
    for (double x : lg) sum += std::exp(x - mx);
    for (int v = 0; v < V; ++v) (*probs)[(size_t)n * V + v] = std::exp(lg[v] - mx) / sum;
    if (tgt[n] >= 0) total -= std::log((*probs)[(size_t)n * V + tgt[n]]);
  }
  return total;
}

TEST(CrossEntropyTest, FusedEqualsUnfusedSoftmaxNll) {
  const int N = 300, C = 64, V = 200;
  for (int chunk : {64, 7, 1000}) {
    auto z = RandomVecF((size_t)N * C, 1), W = RandomVecF((size_t)V * C, 2, -0.3f, 0.3f);
    auto tgt = RandomInts(N, 3, -1, V - 1);  // some ignored
    int valid = 0;
    for (int t : tgt) valid += t >= 0;
    ASSERT_GT(valid, 0);
    ASSERT_LT(valid, N);
    const float scale = 1.0f / valid;
    std::vector<double> probs;
    const double want = UnfusedLoss(z, W, tgt, N, C, V, &probs);

    auto dz0 = RandomVecF(z.size(), 4), dW0 = RandomVecF(W.size(), 5);  // += semantics
    std::vector<float> dz = dz0, dW = dW0, tl(N);
    std::vector<float> scratch(cross_entropy_scratch_floats(V, chunk));
    const double got = cross_entropy_forward_backward(dz.data(), dW.data(), tl.data(), scratch.data(), z.data(),
                                                      W.data(), tgt.data(), N, C, V, chunk, scale);
    EXPECT_NEAR(got, want, 1e-5 * want) << "chunk " << chunk;
    // Gradients from the unfused probabilities.
    std::vector<double> dz_want(dz0.begin(), dz0.end()), dW_want(dW0.begin(), dW0.end());
    for (int n = 0; n < N; ++n) {
      if (tgt[n] < 0) {
        EXPECT_EQ(tl[n], 0.0f);
        continue;
      }
      EXPECT_NEAR(tl[n], -std::log(probs[(size_t)n * V + tgt[n]]), 1e-4);
      for (int v = 0; v < V; ++v) {
        const double g = (probs[(size_t)n * V + v] - (v == tgt[n])) * scale;
        for (int c = 0; c < C; ++c) {
          dz_want[n * C + c] += g * W[v * C + c];
          dW_want[v * C + c] += g * z[n * C + c];
        }
      }
    }
    EXPECT_TRUE(AllClose(dz, dz_want, 1e-4, 1e-6)) << "chunk " << chunk;
    EXPECT_TRUE(AllClose(dW, dW_want, 1e-4, 1e-6)) << "chunk " << chunk;

    // The library's own reference agrees too.
    std::vector<float> dz_r = dz0, dW_r = dW0;
    const double got_r = ref::cross_entropy<float>(dz_r.data(), dW_r.data(), nullptr, nullptr, z.data(), W.data(),
                                                   tgt.data(), N, C, V, scale);
    EXPECT_NEAR(got_r, want, 1e-5 * want);
    EXPECT_TRUE(AllClose(dz, dz_r, 1e-4, 1e-6));
  }
}

TEST(CrossEntropyTest, ForwardOnlyWritesLogitsAndLoss) {
  const int N = 40, C = 16, V = 50;
  auto z = RandomVecF((size_t)N * C, 6), W = RandomVecF((size_t)V * C, 7);
  auto tgt = RandomInts(N, 8, 0, V - 1);
  std::vector<float> logits((size_t)N * V), logits_ref((size_t)N * V), tl(N), tl_ref(N);
  const double loss = cross_entropy_forward(logits.data(), tl.data(), nullptr, z.data(), W.data(), tgt.data(), N, C,
                                            V, 16);
  const double loss_ref = ref::cross_entropy<float>(nullptr, nullptr, logits_ref.data(), tl_ref.data(), z.data(),
                                                    W.data(), tgt.data(), N, C, V, 1.0f);
  EXPECT_TRUE(AllClose(logits, logits_ref, 1e-5, 1e-5));
  EXPECT_TRUE(AllClose(tl, tl_ref, 1e-5, 1e-5));
  EXPECT_NEAR(loss, loss_ref, 1e-5 * loss_ref);
  // With scratch instead of logits, and without targets.
  std::vector<float> scratch(cross_entropy_scratch_floats(V, 16));
  EXPECT_NEAR(cross_entropy_forward(nullptr, nullptr, scratch.data(), z.data(), W.data(), tgt.data(), N, C, V, 16),
              loss, 1e-9 * loss);
  EXPECT_EQ(cross_entropy_forward(logits.data(), nullptr, nullptr, z.data(), W.data(), nullptr, N, C, V, 16), 0.0);
}

TEST(CrossEntropyTest, StableForHugeLogits) {
  // Logits around ±1e4: a naive exp overflows; the max-subtracted form gives the exact answer.
  const int N = 2, C = 1, V = 3;
  std::vector<float> z = {1000.0f, -1000.0f}, W = {10.0f, 9.0f, -10.0f};
  std::vector<int32_t> tgt = {1, 2};
  std::vector<float> dz(2, 0.0f), dW(3, 0.0f), scratch(cross_entropy_scratch_floats(V, 2));
  const double loss = cross_entropy_forward_backward(dz.data(), dW.data(), nullptr, scratch.data(), z.data(),
                                                     W.data(), tgt.data(), N, C, V, 2, 1.0f);
  // Row 0: logits (1e4, 9e3, −1e4), target 1 → loss ≈ 1000. Row 1: (−1e4, −9e3, 1e4), target 2 → ≈ 0.
  EXPECT_NEAR(loss, 1000.0, 1e-3);
  for (float g : dz) EXPECT_TRUE(std::isfinite(g));
  EXPECT_NEAR(dz[0], 10.0f - 9.0f, 1e-3);
}

TEST(CrossEntropyTest, ReferenceGradientMatchesFiniteDifferences) {
  const int N = 4, C = 3, V = 5;
  auto z = RandomVec((size_t)N * C, 9), W = RandomVec((size_t)V * C, 10);
  std::vector<int32_t> tgt = {0, -1, 4, 2};
  auto loss = [&] {
    return 0.5 * ref::cross_entropy<double>(nullptr, nullptr, nullptr, nullptr, z.data(), W.data(), tgt.data(), N, C,
                                            V, 1.0f);
  };
  std::vector<double> dz(z.size(), 0.0), dW(W.size(), 0.0);
  ref::cross_entropy<double>(dz.data(), dW.data(), nullptr, nullptr, z.data(), W.data(), tgt.data(), N, C, V, 0.5f);
  EXPECT_TRUE(testing::CheckGradient(loss, z, dz));
  EXPECT_TRUE(testing::CheckGradient(loss, W, dW));
}

}  // namespace
}  // namespace shoal::kernels
