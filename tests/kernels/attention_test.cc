#include "kernels/cpu/attention.h"

#include <gtest/gtest.h>

#include <cmath>

#include "kernels/cpu/ops_ref.h"
#include "tests/kernels/gradcheck.h"

namespace shoal::kernels {
namespace {

using testing::AllClose;
using testing::RandomVec;
using testing::RandomVecF;

struct Shape {
  int B, T, NH, Dqk, Dv;
};

// Two packed samples per sequence plus a third, with a boundary that does not fall on a tile edge.
std::vector<int32_t> Segments(int B, int T) {
  std::vector<int32_t> seg((size_t)B * T);
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t) seg[(size_t)b * T + t] = t < T / 3 ? 0 : t < (2 * T) / 3 + 1 ? 1 : 2;
  return seg;
}

TEST(AttentionTest, ReferenceSingleKeyCopiesValue) {
  // Query 0 sees only key 0: out = v[0], lse = scale·q·k.
  std::vector<double> q = {1, 2}, k = {3, 4}, v = {5, 6, 7}, out(3), lse(1);
  ref::attention_forward(out.data(), lse.data(), q.data(), k.data(), v.data(), nullptr, 1, 1, 1, 2, 3, 0.5f);
  EXPECT_EQ(out, v);
  EXPECT_DOUBLE_EQ(lse[0], 0.5 * 11);
}

void GradCheck(const int32_t* seg, const Shape& s) {
  const size_t nq = (size_t)s.B * s.T * s.NH * s.Dqk, nv = (size_t)s.B * s.T * s.NH * s.Dv;
  auto q = RandomVec(nq, 1), k = RandomVec(nq, 2), v = RandomVec(nv, 3), r = RandomVec(nv, 4);
  std::vector<double> out(nv), lse((size_t)s.B * s.NH * s.T);
  const float scale = 0.7f;
  auto loss = [&] {
    ref::attention_forward(out.data(), lse.data(), q.data(), k.data(), v.data(), seg, s.B, s.T, s.NH, s.Dqk, s.Dv,
                           scale);
    return testing::Dot(out, r);
  };
  loss();
  std::vector<double> dq(nq, 0.0), dk(nq, 0.0), dv(nv, 0.0);
  ref::attention_backward(dq.data(), dk.data(), dv.data(), r.data(), out.data(), lse.data(), q.data(), k.data(),
                          v.data(), seg, s.B, s.T, s.NH, s.Dqk, s.Dv, scale);
  EXPECT_TRUE(testing::CheckGradient(loss, q, dq));
  EXPECT_TRUE(testing::CheckGradient(loss, k, dk));
  EXPECT_TRUE(testing::CheckGradient(loss, v, dv));
}

TEST(AttentionTest, ReferenceGradientsMatchFiniteDifferences) {
  const Shape s{2, 7, 2, 5, 3};
  GradCheck(nullptr, s);
  auto seg = Segments(s.B, s.T);
  GradCheck(seg.data(), s);
}

// seg_mode: 0 = plain causal, 1 = contiguous packed samples, 2 = random (non-contiguous) segment ids.
void CompareFastWithReference(const Shape& s, int seg_mode) {
  SCOPED_TRACE(::testing::Message() << "B=" << s.B << " T=" << s.T << " NH=" << s.NH << " Dqk=" << s.Dqk
                                    << " Dv=" << s.Dv << " seg_mode=" << seg_mode);
  const size_t nq = (size_t)s.B * s.T * s.NH * s.Dqk, nv = (size_t)s.B * s.T * s.NH * s.Dv;
  const size_t nl = (size_t)s.B * s.NH * s.T;
  auto q = RandomVecF(nq, 11, -2, 2), k = RandomVecF(nq, 12, -2, 2), v = RandomVecF(nv, 13);
  auto seg_v = seg_mode == 2 ? testing::RandomInts((size_t)s.B * s.T, 19, 0, 2) : Segments(s.B, s.T);
  const int32_t* seg = seg_mode != 0 ? seg_v.data() : nullptr;
  const float scale = 1.0f / std::sqrt(static_cast<float>(s.Dqk));
  std::vector<float> out(nv), lse(nl), out_ref(nv), lse_ref(nl);
  attention_forward(out.data(), lse.data(), q.data(), k.data(), v.data(), seg, s.B, s.T, s.NH, s.Dqk, s.Dv, scale);
  ref::attention_forward(out_ref.data(), lse_ref.data(), q.data(), k.data(), v.data(), seg, s.B, s.T, s.NH, s.Dqk,
                         s.Dv, scale);
  EXPECT_TRUE(AllClose(out, out_ref, 1e-4, 1e-5));
  EXPECT_TRUE(AllClose(lse, lse_ref, 1e-5, 1e-5));

  auto dout = RandomVecF(nv, 14);
  auto dq0 = RandomVecF(nq, 15), dk0 = RandomVecF(nq, 16), dv0 = RandomVecF(nv, 17);
  std::vector<float> dq = dq0, dk = dk0, dv = dv0, dq_ref = dq0, dk_ref = dk0, dv_ref = dv0;
  attention_backward(dq.data(), dk.data(), dv.data(), dout.data(), out_ref.data(), lse_ref.data(), q.data(), k.data(),
                     v.data(), seg, s.B, s.T, s.NH, s.Dqk, s.Dv, scale);
  ref::attention_backward(dq_ref.data(), dk_ref.data(), dv_ref.data(), dout.data(), out_ref.data(), lse_ref.data(),
                          q.data(), k.data(), v.data(), seg, s.B, s.T, s.NH, s.Dqk, s.Dv, scale);
  EXPECT_TRUE(AllClose(dq, dq_ref, 1e-3, 1e-4));
  EXPECT_TRUE(AllClose(dk, dk_ref, 1e-3, 1e-4));
  EXPECT_TRUE(AllClose(dv, dv_ref, 1e-3, 1e-4));
}

TEST(AttentionTest, FastMatchesReference) {
  for (const Shape& s : {Shape{2, 128, 4, 48, 32}, Shape{1, 70, 2, 96, 64}, Shape{2, 33, 3, 20, 12},
                         Shape{1, 5, 1, 192, 128}, Shape{1, 100, 1, 7, 200}})
    for (int seg_mode : {0, 1, 2}) CompareFastWithReference(s, seg_mode);
}

TEST(AttentionTest, BlockDiagonalMaskBlocksOtherSegments) {
  // Changing q/k/v of every token outside segment 1 must leave segment 1's outputs and gradients unchanged,
  // bit for bit; and segment 1's first token attends only to itself (out = v).
  const Shape s{1, 90, 2, 16, 16};
  const size_t nq = (size_t)s.T * s.NH * s.Dqk, nv = (size_t)s.T * s.NH * s.Dv;
  auto seg = Segments(s.B, s.T);
  auto q = RandomVecF(nq, 21), k = RandomVecF(nq, 22), v = RandomVecF(nv, 23), dout = RandomVecF(nv, 24);
  auto q2 = q, k2 = k, v2 = v;
  auto noise = RandomVecF(nq, 25, -5, 5);
  for (int t = 0; t < s.T; ++t) {
    if (seg[t] == 1) continue;
    for (int i = 0; i < s.NH * s.Dqk; ++i) q2[t * s.NH * s.Dqk + i] += noise[i], k2[t * s.NH * s.Dqk + i] -= noise[i];
    for (int i = 0; i < s.NH * s.Dv; ++i) v2[t * s.NH * s.Dv + i] += noise[i];
  }
  for (bool fast : {true, false}) {
    auto run = [&](const std::vector<float>& qq, const std::vector<float>& kk, const std::vector<float>& vv,
                   std::vector<float>& out, std::vector<float>& dq, std::vector<float>& dk, std::vector<float>& dv) {
      std::vector<float> lse((size_t)s.NH * s.T);
      out.assign(nv, 0.0f), dq.assign(nq, 0.0f), dk.assign(nq, 0.0f), dv.assign(nv, 0.0f);
      auto fwd = fast ? &attention_forward : &ref::attention_forward<float>;
      auto bwd = fast ? &attention_backward : &ref::attention_backward<float>;
      fwd(out.data(), lse.data(), qq.data(), kk.data(), vv.data(), seg.data(), 1, s.T, s.NH, s.Dqk, s.Dv, 0.25f);
      bwd(dq.data(), dk.data(), dv.data(), dout.data(), out.data(), lse.data(), qq.data(), kk.data(), vv.data(),
          seg.data(), 1, s.T, s.NH, s.Dqk, s.Dv, 0.25f);
    };
    std::vector<float> o1, dq1, dk1, dv1, o2, dq2, dk2, dv2;
    run(q, k, v, o1, dq1, dk1, dv1);
    run(q2, k2, v2, o2, dq2, dk2, dv2);
    int first = -1;
    for (int t = 0; t < s.T; ++t) {
      if (seg[t] != 1) continue;
      if (first < 0) first = t;
      for (int i = 0; i < s.NH * s.Dv; ++i) {
        ASSERT_EQ(o1[t * s.NH * s.Dv + i], o2[t * s.NH * s.Dv + i]) << "fast=" << fast << " t=" << t;
        ASSERT_EQ(dv1[t * s.NH * s.Dv + i], dv2[t * s.NH * s.Dv + i]) << "fast=" << fast << " t=" << t;
      }
      for (int i = 0; i < s.NH * s.Dqk; ++i) {
        ASSERT_EQ(dq1[t * s.NH * s.Dqk + i], dq2[t * s.NH * s.Dqk + i]) << "fast=" << fast << " t=" << t;
        ASSERT_EQ(dk1[t * s.NH * s.Dqk + i], dk2[t * s.NH * s.Dqk + i]) << "fast=" << fast << " t=" << t;
      }
    }
    for (int i = 0; i < s.NH * s.Dv; ++i) EXPECT_FLOAT_EQ(o1[first * s.NH * s.Dv + i], v[first * s.NH * s.Dv + i]);
    // And without the segment ids the outputs do change (the test can fail).
    std::vector<float> lse((size_t)s.NH * s.T), p1(nv), p2(nv);
    attention_forward(p1.data(), lse.data(), q.data(), k.data(), v.data(), nullptr, 1, s.T, s.NH, s.Dqk, s.Dv, 0.25f);
    attention_forward(p2.data(), lse.data(), q2.data(), k2.data(), v2.data(), nullptr, 1, s.T, s.NH, s.Dqk, s.Dv,
                      0.25f);
    EXPECT_NE(p1[first * s.NH * s.Dv], p2[first * s.NH * s.Dv]);
  }
}

}  // namespace
}  // namespace shoal::kernels
