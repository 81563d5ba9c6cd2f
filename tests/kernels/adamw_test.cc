#include "kernels/cpu/adamw.h"

#include <gtest/gtest.h>

#include <cmath>

#include "kernels/cpu/ops_ref.h"
#include "tests/kernels/gradcheck.h"

namespace shoal::kernels {
namespace {

using testing::RandomVecF;

// Scalar oracle in double (moments still stored as bf16 between steps).
struct ScalarAdamW {
  double p;
  bf16_t m = 0, v = 0;
  void Step(double g, int t, double lr, double b1, double b2, double eps, double wd) {
    const double mi = b1 * bf16_to_f32(m) + (1 - b1) * g;
    const double vi = b2 * bf16_to_f32(v) + (1 - b2) * g * g;
    p -= lr * wd * p;
    p -= lr * (mi / (1 - std::pow(b1, t))) / (std::sqrt(vi / (1 - std::pow(b2, t))) + eps);
    m = f32_to_bf16(static_cast<float>(mi));
    v = f32_to_bf16(static_cast<float>(vi));
  }
};

TEST(AdamWTest, FirstStepMovesEachWeightByAboutLr) {
  // Step 1: m̂ = g, v̂ = g², so the Adam step is lr·g/(|g| + eps) ≈ lr·sign(g); decay adds lr·wd·θ.
  std::vector<float> p = {1.0f, -2.0f, 0.5f}, g = {0.3f, -1e-3f, 0.0f};
  std::vector<bf16_t> m(3, 0), v(3, 0);
  adamw_update(p.data(), m.data(), v.data(), g.data(), 3, 1, 0.01f, 0.9f, 0.95f, 1e-8f, 0.1f);
  EXPECT_NEAR(p[0], 1.0 - 0.01 * 0.1 * 1.0 - 0.01, 1e-6);
  EXPECT_NEAR(p[1], -2.0 + 0.01 * 0.1 * 2.0 + 0.01, 1e-5);
  EXPECT_NEAR(p[2], 0.5 - 0.01 * 0.1 * 0.5, 1e-7);
  EXPECT_EQ(m[0], f32_to_bf16(0.1f * 0.3f));
}

TEST(AdamWTest, MatchesScalarReferenceOverManySteps) {
  const int n = 1000, steps = 20;
  auto p0 = RandomVecF(n, 1);
  std::vector<float> p = p0, p_ref = p0;
  std::vector<bf16_t> m(n, 0), v(n, 0), m_ref(n, 0), v_ref(n, 0);
  std::vector<ScalarAdamW> oracle(n);
  for (int i = 0; i < n; ++i) oracle[i].p = p0[i];
  for (int t = 1; t <= steps; ++t) {
    auto g = RandomVecF(n, 100 + t, -0.1f, 0.1f);
    adamw_update(p.data(), m.data(), v.data(), g.data(), n, t, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f);
    ref::adamw_update(p_ref.data(), m_ref.data(), v_ref.data(), g.data(), n, t, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f);
    for (int i = 0; i < n; ++i) oracle[i].Step(g[i], t, 1e-3, 0.9, 0.95, 1e-8, 0.1);
  }
  int moment_mismatch = 0;
  for (int i = 0; i < n; ++i) {
    EXPECT_NEAR(p[i], p_ref[i], 1e-6) << i;
    EXPECT_NEAR(p[i], oracle[i].p, 2e-5) << i;
    // Moments: fast vs ref within one bf16 ulp (an FMA may round the fp32 value across a boundary).
    EXPECT_LE(std::abs((int)m[i] - (int)m_ref[i]), 1) << i;
    EXPECT_LE(std::abs((int)v[i] - (int)v_ref[i]), 1) << i;
    moment_mismatch += m[i] != oracle[i].m;
  }
  EXPECT_LT(moment_mismatch, n / 20);
}

TEST(AdamWTest, MomentsAreRoundedToNearestEven) {
  // g chosen so that (1−β1)·g = 1 + 2^-8 exactly halfway between bf16 1.0 and 1 + 2^-7: RNE picks 1.0.
  std::vector<float> p = {0.0f}, g = {(1.0f + 1.0f / 256) / 0.5f};
  std::vector<bf16_t> m(1, 0), v(1, 0);
  adamw_update(p.data(), m.data(), v.data(), g.data(), 1, 1, 0.0f, 0.5f, 0.5f, 1e-8f, 0.0f);
  EXPECT_EQ(bf16_to_f32(m[0]), 1.0f);
  g[0] = (1.0f + 3.0f / 256) / 0.5f;  // halfway between 1 + 2^-7 and 1 + 2^-6 → even mantissa 1 + 2^-6
  m[0] = 0;
  adamw_update(p.data(), m.data(), v.data(), g.data(), 1, 1, 0.0f, 0.5f, 0.5f, 1e-8f, 0.0f);
  EXPECT_EQ(bf16_to_f32(m[0]), 1.0f + 1.0f / 64);
}

}  // namespace
}  // namespace shoal::kernels
