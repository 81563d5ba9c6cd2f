#include "kernels/cpu/swiglu.h"

#include <gtest/gtest.h>

#include <cmath>

#include "kernels/cpu/ops_ref.h"
#include "tests/kernels/gradcheck.h"

namespace shoal::kernels {
namespace {

using testing::AllClose;
using testing::RandomVec;
using testing::RandomVecF;

TEST(SwigluTest, ReferenceForwardHandComputed) {
  // Row = [a0, a1 | b0, b1].
  std::vector<double> gu = {0.0, 2.0, 3.0, -1.5}, out(2);
  ref::swiglu_forward(out.data(), gu.data(), 1, 2);
  EXPECT_DOUBLE_EQ(out[0], 0.0);
  EXPECT_NEAR(out[1], 2.0 / (1 + std::exp(-2.0)) * -1.5, 1e-15);
}

TEST(SwigluTest, ReferenceGradientMatchesFiniteDifferences) {
  const int N = 4, I = 6;
  auto gu = RandomVec(N * 2 * I, 1, -4, 4), r = RandomVec(N * I, 2);
  std::vector<double> out(N * I);
  auto loss = [&] {
    ref::swiglu_forward(out.data(), gu.data(), N, I);
    return testing::Dot(out, r);
  };
  std::vector<double> dgu(gu.size(), 0.0);
  ref::swiglu_backward(dgu.data(), r.data(), gu.data(), N, I);
  EXPECT_TRUE(testing::CheckGradient(loss, gu, dgu));
}

TEST(SwigluTest, FastMatchesReference) {
  for (int I : {64, 384, 21}) {
    const int N = 257;
    auto gu = RandomVecF((size_t)N * 2 * I, 3, -12, 12), dout = RandomVecF((size_t)N * I, 4);
    std::vector<float> out((size_t)N * I), out_ref((size_t)N * I);
    swiglu_forward(out.data(), gu.data(), N, I);
    ref::swiglu_forward(out_ref.data(), gu.data(), N, I);
    EXPECT_TRUE(AllClose(out, out_ref, 1e-5, 1e-6)) << "I=" << I;
    auto init = RandomVecF(gu.size(), 5);
    std::vector<float> d = init, d_ref = init;
    swiglu_backward(d.data(), dout.data(), gu.data(), N, I);
    ref::swiglu_backward(d_ref.data(), dout.data(), gu.data(), N, I);
    EXPECT_TRUE(AllClose(d, d_ref, 1e-5, 1e-6)) << "I=" << I;
  }
}

}  // namespace
}  // namespace shoal::kernels
