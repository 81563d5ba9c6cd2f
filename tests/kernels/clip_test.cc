#include "kernels/cpu/clip.h"

#include <gtest/gtest.h>

#include <cmath>

#include "kernels/cpu/ops_ref.h"
#include "tests/kernels/gradcheck.h"

namespace shoal::kernels {
namespace {

TEST(ClipTest, NormIsExactOnRepresentableSums) {
  // Values ±0.5, ±1, ±2 (squares are exact and their sums stay exact in fp64): the norm is exact.
  std::vector<float> a(300000), b(7);
  double want = 0;
  for (size_t i = 0; i < a.size(); ++i) a[i] = (i % 3 == 0 ? 0.5f : i % 3 == 1 ? -1.0f : 2.0f), want += a[i] * a[i];
  for (size_t i = 0; i < b.size(); ++i) b[i] = 2.0f, want += 4;
  const float* bufs[] = {a.data(), b.data()};
  const int64_t sizes[] = {(int64_t)a.size(), (int64_t)b.size()};
  EXPECT_EQ(global_norm(bufs, sizes, 2), std::sqrt(want));
  EXPECT_EQ(ref::global_norm(bufs, sizes, 2), std::sqrt(want));
}

TEST(ClipTest, ScaleAndApply) {
  EXPECT_EQ(clip_scale(0.5, 1.0f), 1.0f);
  EXPECT_FLOAT_EQ(clip_scale(4.0, 1.0f), static_cast<float>(1.0 / (4.0 + 1e-6)));
  EXPECT_EQ(clip_scale(4.0, 1.0f), ref::clip_scale(4.0, 1.0f));

  auto a = testing::RandomVecF(100000, 1), b = testing::RandomVecF(33, 2);
  auto a_ref = a, b_ref = b;
  float* bufs[] = {a.data(), b.data()};
  float* bufs_ref[] = {a_ref.data(), b_ref.data()};
  const int64_t sizes[] = {(int64_t)a.size(), (int64_t)b.size()};
  const double before = ref::global_norm(bufs_ref, sizes, 2);
  const double norm = clip_grad_norm(bufs, sizes, 2, 1.0f);
  EXPECT_NEAR(norm, before, 1e-12 * before);
  ref::scale_buffers(bufs_ref, sizes, 2, ref::clip_scale(norm, 1.0f));
  EXPECT_EQ(a, a_ref);
  EXPECT_EQ(b, b_ref);
  EXPECT_NEAR(global_norm(bufs, sizes, 2), 1.0, 1e-5);
  // Below the threshold nothing changes.
  auto a2 = a;
  clip_grad_norm(bufs, sizes, 2, 10.0f);
  EXPECT_EQ(a, a2);
}

}  // namespace
}  // namespace shoal::kernels
