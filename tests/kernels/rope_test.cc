#include "kernels/cpu/rope.h"

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

std::vector<float> Table(int P, int D, float base = 10000.0f, const YarnConfig* yarn = nullptr) {
  std::vector<float> inv(D / 2), cs((size_t)P * D);
  rope_inv_freq(inv.data(), D, base, yarn);
  rope_table(cs.data(), inv.data(), P, D);
  return cs;
}

TEST(RopeTest, PlainInverseFrequencies) {
  std::vector<float> inv(32);
  rope_inv_freq(inv.data(), 64, 10000.0f, nullptr);
  for (int j = 0; j < 32; ++j) EXPECT_FLOAT_EQ(inv[j], std::pow(10000.0, -2.0 * j / 64)) << j;
}

TEST(RopeTest, YarnFrequenciesAndMscaleMatchSpec) {
  // Spec §2.4 (671B): d_R = 64, base 1e4, s = 40, L0 = 4096, β_fast 32, β_slow 1 → low 10, high 23.
  YarnConfig yarn{40.0f, 4096, 32.0f, 1.0f};
  std::vector<float> plain(32), inv(32);
  rope_inv_freq(plain.data(), 64, 10000.0f, nullptr);
  rope_inv_freq(inv.data(), 64, 10000.0f, &yarn);
  for (int j = 0; j <= 10; ++j) EXPECT_FLOAT_EQ(inv[j], plain[j]) << j;
  for (int j = 23; j < 32; ++j) EXPECT_FLOAT_EQ(inv[j], plain[j] / 40.0f) << j;
  for (int j = 11; j < 23; ++j) {
    const double ramp = (j - 10) / 13.0;
    EXPECT_NEAR(inv[j], plain[j] * (1 - ramp) + plain[j] / 40.0 * ramp, 1e-6 * plain[j]) << j;
  }
  EXPECT_NEAR(yarn_mscale(40.0f, 1.0f), 1.3688879, 1e-6);
  EXPECT_NEAR(std::pow(192.0, -0.5) * std::pow(yarn_mscale(40.0f, 1.0f), 2), 0.1352338, 1e-6);
  EXPECT_EQ(yarn_mscale(1.0f, 1.0f), 1.0f);
}

TEST(RopeTest, InterleavedEqualsHfPermuteThenRotateHalf) {
  // HF (rope_interleave = true): permute [x0..x63] → [x0,x2,..,x62, x1,x3,..,x63], then
  // x·cat(cos,cos) + rotate_half(x)·cat(sin,sin). Ours rotates the pairs in place; the two agree up to that
  // permutation, so every q·k dot product is identical (Appendix B item 2).
  const int D = 64, P = 300;
  auto cs = Table(P, D);
  std::vector<float> inv(D / 2);
  rope_inv_freq(inv.data(), D, 10000.0f, nullptr);
  auto hf = [&](const std::vector<float>& x, int pos) {
    std::vector<double> p(D), out(D);
    for (int j = 0; j < D / 2; ++j) p[j] = x[2 * j], p[D / 2 + j] = x[2 * j + 1];
    for (int i = 0; i < D; ++i) {
      const double ang = static_cast<double>(static_cast<float>(pos) * inv[i % (D / 2)]);
      const double rot = i < D / 2 ? -p[i + D / 2] : p[i - D / 2];
      out[i] = p[i] * std::cos(ang) + rot * std::sin(ang);
    }
    return out;
  };
  for (auto [pq, pk] : {std::pair{0, 0}, {5, 3}, {299, 17}, {128, 255}}) {
    auto q = RandomVecF(D, 100 + pq), k = RandomVecF(D, 200 + pk);
    std::vector<float> qr(D), kr(D);
    ref::rope_forward(qr.data(), q.data(), &pq, cs.data(), 1, 1, D, D);
    ref::rope_forward(kr.data(), k.data(), &pk, cs.data(), 1, 1, D, D);
    auto qh = hf(q, pq), kh = hf(k, pk);
    for (int j = 0; j < D / 2; ++j) {
      EXPECT_NEAR(qr[2 * j], qh[j], 1e-5);
      EXPECT_NEAR(qr[2 * j + 1], qh[D / 2 + j], 1e-5);
    }
    double ours = 0, theirs = 0;
    for (int i = 0; i < D; ++i) ours += (double)qr[i] * kr[i], theirs += qh[i] * kh[i];
    EXPECT_NEAR(ours, theirs, 1e-4) << pq << "," << pk;
  }
}

TEST(RopeTest, DotProductDependsOnlyOnRelativePosition) {
  const int D = 16, P = 64;
  auto cs = Table(P, D);
  auto q = RandomVec(D, 1), k = RandomVec(D, 2);
  auto dot_at = [&](int pq, int pk) {
    std::vector<double> qr(D), kr(D);
    ref::rope_forward(qr.data(), q.data(), &pq, cs.data(), 1, 1, D, D);
    ref::rope_forward(kr.data(), k.data(), &pk, cs.data(), 1, 1, D, D);
    return testing::Dot(qr, kr);
  };
  EXPECT_NEAR(dot_at(10, 3), dot_at(40, 33), 1e-5);
  EXPECT_GT(std::abs(dot_at(10, 3) - dot_at(10, 4)), 1e-3);
}

TEST(RopeTest, ReferenceBackwardIsTransposeAndMatchesFiniteDifferences) {
  const int N = 6, NH = 3, D = 8, ld = 11, P = 32;
  auto cs = Table(P, D);
  auto pos = RandomInts(N, 1, 0, P - 1);
  auto x = RandomVec((size_t)N * NH * ld, 2), r = RandomVec((size_t)N * NH * ld, 3);
  // The loss only sees the rotated slice; mask r outside it.
  for (size_t i = 0; i < r.size(); ++i)
    if (static_cast<int>(i % ld) >= D) r[i] = 0;
  std::vector<double> out(x.size());
  auto loss = [&] {
    ref::rope_forward(out.data(), x.data(), pos.data(), cs.data(), N, NH, D, ld);
    return testing::Dot(out, r);
  };
  std::vector<double> dx(x.size(), 0.0);
  ref::rope_backward(dx.data(), r.data(), pos.data(), cs.data(), N, NH, D, ld);
  EXPECT_TRUE(testing::CheckGradient(loss, x, dx));
}

TEST(RopeTest, FastMatchesReferenceStridedAndInPlace) {
  struct Case { int N, NH, D, ld, off; };
  for (Case c :
       {Case{2048, 4, 16, 48, 32}, Case{100, 2, 64, 64, 0}, Case{33, 3, 6, 10, 4}, Case{50, 1, 32, 160, 128}}) {
    const int P = 512;
    auto cs = Table(P, c.D);
    auto pos = RandomInts(c.N, 7, 0, P - 1);
    const size_t n = (size_t)c.N * c.NH * c.ld;
    auto x = RandomVecF(n, 8);
    std::vector<float> out = x, out_ref = x;
    rope_forward(out.data() + c.off, x.data() + c.off, pos.data(), cs.data(), c.N, c.NH, c.D, c.ld);
    ref::rope_forward(out_ref.data() + c.off, x.data() + c.off, pos.data(), cs.data(), c.N, c.NH, c.D, c.ld);
    EXPECT_TRUE(AllClose(out, out_ref, 1e-6, 1e-6)) << "D=" << c.D;
    // In place, and the backward undoes the forward (orthogonal rotation), in place too.
    std::vector<float> y = x;
    rope_forward(y.data() + c.off, y.data() + c.off, pos.data(), cs.data(), c.N, c.NH, c.D, c.ld);
    EXPECT_TRUE(AllClose(y, out_ref, 1e-6, 1e-6));
    rope_backward(y.data() + c.off, y.data() + c.off, pos.data(), cs.data(), c.N, c.NH, c.D, c.ld);
    EXPECT_TRUE(AllClose(y, x, 1e-5, 1e-6)) << "D=" << c.D;
    std::vector<float> dx(n, 0.0f), dx_ref(n, 0.0f);
    rope_backward(dx.data() + c.off, x.data() + c.off, pos.data(), cs.data(), c.N, c.NH, c.D, c.ld);
    ref::rope_backward(dx_ref.data() + c.off, x.data() + c.off, pos.data(), cs.data(), c.N, c.NH, c.D, c.ld);
    EXPECT_TRUE(AllClose(dx, dx_ref, 1e-6, 1e-6));
  }
}

TEST(RopeTest, PositionsRestartPerPackedSample) {
  // Two packed samples with positions 0..3 and 0..2: the second sample's rows rotate exactly like a fresh
  // sequence.
  const int D = 8, P = 16;
  auto cs = Table(P, D);
  auto x = RandomVecF(7 * D, 9);
  std::vector<int32_t> pos = {0, 1, 2, 3, 0, 1, 2};
  std::vector<float> out(x.size()), fresh(3 * D);
  rope_forward(out.data(), x.data(), pos.data(), cs.data(), 7, 1, D, D);
  std::vector<int32_t> pos2 = {0, 1, 2};
  rope_forward(fresh.data(), x.data() + 4 * D, pos2.data(), cs.data(), 3, 1, D, D);
  for (int i = 0; i < 3 * D; ++i) EXPECT_EQ(out[4 * D + i], fresh[i]);
  for (int i = 0; i < D; ++i) EXPECT_EQ(out[i], x[i]);  // position 0 is the identity
}

}  // namespace
}  // namespace shoal::kernels
