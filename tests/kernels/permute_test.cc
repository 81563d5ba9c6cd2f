#include "kernels/cpu/permute.h"

#include <gtest/gtest.h>

#include "kernels/cpu/ops_ref.h"
#include "tests/kernels/gradcheck.h"

namespace shoal::kernels {
namespace {

using testing::AllClose;
using testing::RandomInts;
using testing::RandomVec;
using testing::RandomVecF;

TEST(PermuteTest, PlanIsStableAndConsistent) {
  // N = 3 tokens, K = 2: rows r = n·K + k → experts {1, 0, 1, 2, 0, 1}.
  std::vector<int32_t> idx = {1, 0, 1, 2, 0, 1};
  std::vector<int32_t> off(4), sorted(6), pos(6);
  moe_permute_plan(off.data(), sorted.data(), pos.data(), idx.data(), 3, 2, 3);
  EXPECT_EQ(off, (std::vector<int32_t>{0, 2, 5, 6}));
  EXPECT_EQ(sorted, (std::vector<int32_t>{1, 4, 0, 2, 5, 3}));
  for (int p = 0; p < 6; ++p) EXPECT_EQ(pos[sorted[p]], p);
  std::vector<int32_t> off_r(4), sorted_r(6), pos_r(6);
  ref::moe_permute_plan(off_r.data(), sorted_r.data(), pos_r.data(), idx.data(), 3, 2, 3);
  EXPECT_EQ(off, off_r);
  EXPECT_EQ(sorted, sorted_r);
  EXPECT_EQ(pos, pos_r);
}

TEST(PermuteTest, FastMatchesReference) {
  const int N = 1000, K = 3, E = 16;
  for (int C : {128, 33}) {
    auto idx = RandomInts((size_t)N * K, 1, 0, E - 1);
    std::vector<int32_t> off(E + 1), sorted((size_t)N * K), pos((size_t)N * K);
    moe_permute_plan(off.data(), sorted.data(), pos.data(), idx.data(), N, K, E);
    for (int e = 0; e < E; ++e)
      for (int p = off[e]; p < off[e + 1]; ++p) {
        ASSERT_EQ(idx[sorted[p]], e);
        if (p > off[e]) {
          ASSERT_LT(sorted[p - 1], sorted[p]) << "not stable";
        }
      }
    auto x = RandomVecF((size_t)N * C, 2);
    std::vector<float> xs((size_t)N * K * C), xs_ref(xs.size());
    moe_permute_forward(xs.data(), x.data(), sorted.data(), N, K, C);
    ref::moe_permute_forward(xs_ref.data(), x.data(), sorted.data(), N, K, C);
    EXPECT_EQ(xs, xs_ref);

    auto dxs = RandomVecF(xs.size(), 3), dx0 = RandomVecF(x.size(), 4);
    std::vector<float> dx = dx0, dx_ref = dx0;
    moe_permute_backward(dx.data(), dxs.data(), pos.data(), N, K, C);
    ref::moe_permute_backward(dx_ref.data(), dxs.data(), pos.data(), N, K, C);
    EXPECT_EQ(dx, dx_ref);

    auto ys = RandomVecF(xs.size(), 5), w = RandomVecF((size_t)N * K, 6), out0 = RandomVecF(x.size(), 7);
    std::vector<float> out = out0, out_ref = out0;
    moe_unpermute_forward(out.data(), ys.data(), w.data(), pos.data(), N, K, C);
    ref::moe_unpermute_forward(out_ref.data(), ys.data(), w.data(), pos.data(), N, K, C);
    EXPECT_TRUE(AllClose(out, out_ref, 1e-6, 1e-6));

    auto dout = RandomVecF(x.size(), 8), dys0 = RandomVecF(ys.size(), 9), dw0 = RandomVecF(w.size(), 10);
    std::vector<float> dys = dys0, dw = dw0, dys_ref = dys0, dw_ref = dw0;
    moe_unpermute_backward(dys.data(), dw.data(), dout.data(), ys.data(), w.data(), pos.data(), N, K, C);
    ref::moe_unpermute_backward(dys_ref.data(), dw_ref.data(), dout.data(), ys.data(), w.data(), pos.data(), N, K, C);
    EXPECT_TRUE(AllClose(dys, dys_ref, 1e-6, 1e-6));
    EXPECT_TRUE(AllClose(dw, dw_ref, 1e-5, 1e-5));
  }
}

TEST(PermuteTest, RoundTripThroughIdentityExpertsIsWeightedSum) {
  // permute → (identity experts) → unpermute gives out = (Σ_k w[n,k])·x[n].
  const int N = 50, K = 2, E = 4, C = 8;
  auto idx = RandomInts((size_t)N * K, 11, 0, E - 1);
  for (int n = 0; n < N; ++n)
    if (idx[n * K] == idx[n * K + 1]) idx[n * K + 1] = (idx[n * K] + 1) % E;
  std::vector<int32_t> off(E + 1), sorted((size_t)N * K), pos((size_t)N * K);
  moe_permute_plan(off.data(), sorted.data(), pos.data(), idx.data(), N, K, E);
  auto x = RandomVecF((size_t)N * C, 12), w = RandomVecF((size_t)N * K, 13);
  std::vector<float> xs((size_t)N * K * C), out((size_t)N * C, 0.0f);
  moe_permute_forward(xs.data(), x.data(), sorted.data(), N, K, C);
  moe_unpermute_forward(out.data(), xs.data(), w.data(), pos.data(), N, K, C);
  for (int n = 0; n < N; ++n)
    for (int c = 0; c < C; ++c)
      EXPECT_NEAR(out[n * C + c], (w[n * K] + w[n * K + 1]) * x[n * C + c], 1e-6);
}

TEST(PermuteTest, ReferenceGradientsMatchFiniteDifferences) {
  // L = Σ r ⊙ unpermute(permute(x)·a, w): checks permute_backward and both unpermute gradients.
  const int N = 5, K = 2, E = 3, C = 4;
  auto idx = RandomInts((size_t)N * K, 14, 0, E - 1);
  std::vector<int32_t> off(E + 1), sorted((size_t)N * K), pos((size_t)N * K);
  ref::moe_permute_plan(off.data(), sorted.data(), pos.data(), idx.data(), N, K, E);
  auto x = RandomVec((size_t)N * C, 15), w = RandomVec((size_t)N * K, 16), r = RandomVec((size_t)N * C, 17);
  auto a = RandomVec((size_t)N * K * C, 18);  // elementwise "expert" so the ys depend on x nonlinearly-free
  std::vector<double> xs((size_t)N * K * C), ys(xs.size()), out((size_t)N * C);
  auto loss = [&] {
    ref::moe_permute_forward(xs.data(), x.data(), sorted.data(), N, K, C);
    for (size_t i = 0; i < xs.size(); ++i) ys[i] = xs[i] * a[i];
    std::fill(out.begin(), out.end(), 0.0);
    ref::moe_unpermute_forward(out.data(), ys.data(), w.data(), pos.data(), N, K, C);
    return testing::Dot(out, r);
  };
  loss();
  std::vector<double> dys(ys.size(), 0.0), dw(w.size(), 0.0), dx(x.size(), 0.0);
  ref::moe_unpermute_backward(dys.data(), dw.data(), r.data(), ys.data(), w.data(), pos.data(), N, K, C);
  for (size_t i = 0; i < dys.size(); ++i) dys[i] *= a[i];
  ref::moe_permute_backward(dx.data(), dys.data(), pos.data(), N, K, C);
  EXPECT_TRUE(testing::CheckGradient(loss, x, dx));
  EXPECT_TRUE(testing::CheckGradient(loss, w, dw));
}

}  // namespace
}  // namespace shoal::kernels
