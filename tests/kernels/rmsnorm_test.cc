#include "kernels/cpu/rmsnorm.h"

#include <gtest/gtest.h>

#include <cmath>

#include "common/thread_pool.h"
#include "kernels/cpu/ops_ref.h"
#include "tests/kernels/gradcheck.h"

namespace shoal::kernels {
namespace {

using testing::AllClose;
using testing::RandomVec;
using testing::RandomVecF;

TEST(RmsNormTest, ReferenceForwardHandComputed) {
  std::vector<double> x = {3, 4}, w = {1, 2}, out(2), rstd(1);
  ref::rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), 1, 2, 0.0);
  const double r = 1 / std::sqrt(12.5);
  EXPECT_NEAR(rstd[0], r, 1e-15);
  EXPECT_NEAR(out[0], 3 * r, 1e-15);
  EXPECT_NEAR(out[1], 8 * r, 1e-15);
}

TEST(RmsNormTest, ReferenceGradientsMatchFiniteDifferences) {
  const int N = 5, C = 7;
  auto x = RandomVec(N * C, 1), w = RandomVec(C, 2, 0.5, 1.5), r = RandomVec(N * C, 3);
  std::vector<double> out(N * C), rstd(N);
  auto loss = [&] {
    ref::rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), N, C, 1e-6);
    return testing::Dot(out, r);
  };
  loss();
  std::vector<double> dx(N * C, 0.0), dw(C, 0.0);
  ref::rmsnorm_backward(dx.data(), dw.data(), r.data(), rstd.data(), x.data(), w.data(), N, C);
  EXPECT_TRUE(testing::CheckGradient(loss, x, dx));
  EXPECT_TRUE(testing::CheckGradient(loss, w, dw));
}

TEST(RmsNormTest, FastMatchesReference) {
  for (int C : {128, 256, 45}) {
    const int N = 300;
    auto x = RandomVecF(N * C, 4, -3, 3), w = RandomVecF(C, 5, 0.5, 1.5);
    std::vector<float> out(N * C), rstd(N), out_ref(N * C), rstd_ref(N);
    rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), N, C, 1e-6f);
    ref::rmsnorm_forward(out_ref.data(), rstd_ref.data(), x.data(), w.data(), N, C, 1e-6f);
    EXPECT_TRUE(AllClose(rstd, rstd_ref, 1e-5, 0)) << "C=" << C;
    EXPECT_TRUE(AllClose(out, out_ref, 1e-5, 1e-6)) << "C=" << C;

    auto dout = RandomVecF(N * C, 6);
    auto dx0 = RandomVecF(N * C, 7), dw0 = RandomVecF(C, 8);  // += semantics
    std::vector<float> dx = dx0, dw = dw0, dx_ref = dx0, dw_ref = dw0;
    std::vector<float> scratch(rmsnorm_backward_scratch_floats(N, C));
    rmsnorm_backward(dx.data(), dw.data(), scratch.data(), dout.data(), rstd.data(), x.data(), w.data(), N, C);
    ref::rmsnorm_backward(dx_ref.data(), dw_ref.data(), dout.data(), rstd.data(), x.data(), w.data(), N, C);
    EXPECT_TRUE(AllClose(dx, dx_ref, 1e-4, 1e-5)) << "C=" << C;
    EXPECT_TRUE(AllClose(dw, dw_ref, 1e-4, 1e-4)) << "C=" << C;
  }
}

TEST(RmsNormTest, WeightGradientIsDeterministicAcrossThreadCounts) {
  const int N = 1000, C = 96;
  auto x = RandomVecF(N * C, 9), w = RandomVecF(C, 10), dout = RandomVecF(N * C, 11);
  std::vector<float> out(N * C), rstd(N), scratch(rmsnorm_backward_scratch_floats(N, C));
  rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), N, C, 1e-6f);
  std::vector<std::vector<float>> dws;
  for (int threads : {1, 2, 3}) {
    ThreadPool::SetDefaultThreads(threads);
    std::vector<float> dx(N * C, 0.0f), dw(C, 0.0f);
    rmsnorm_backward(dx.data(), dw.data(), scratch.data(), dout.data(), rstd.data(), x.data(), w.data(), N, C);
    dws.push_back(dw);
  }
  ThreadPool::SetDefaultThreads(0);
  EXPECT_EQ(dws[0], dws[1]);
  EXPECT_EQ(dws[0], dws[2]);
}

}  // namespace
}  // namespace shoal::kernels
