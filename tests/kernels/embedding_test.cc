#include "kernels/cpu/embedding.h"

#include <gtest/gtest.h>

#include "kernels/cpu/ops_ref.h"
#include "tests/kernels/gradcheck.h"

namespace shoal::kernels {
namespace {

using testing::AllClose;
using testing::Cast;
using testing::RandomInts;
using testing::RandomVec;

TEST(EmbeddingTest, ReferenceLooksUpRows) {
  const int N = 3, C = 2, V = 4;
  std::vector<double> table = {0, 1, 10, 11, 20, 21, 30, 31};
  std::vector<int32_t> tok = {2, 0, 2};
  std::vector<double> out(N * C);
  ref::embedding_forward(out.data(), tok.data(), table.data(), N, C, V);
  EXPECT_EQ(out, (std::vector<double>{20, 21, 0, 1, 20, 21}));
}

TEST(EmbeddingTest, ReferenceGradientMatchesFiniteDifferences) {
  const int N = 9, C = 5, V = 6;
  auto table = RandomVec(V * C, 1);
  auto tok = RandomInts(N, 2, 0, V - 1);
  tok[3] = tok[7];  // a repeated token must accumulate
  auto r = RandomVec(N * C, 3);
  std::vector<double> out(N * C);
  auto loss = [&] {
    ref::embedding_forward(out.data(), tok.data(), table.data(), N, C, V);
    return testing::Dot(out, r);
  };
  std::vector<double> dtable(V * C, 0.0);
  ref::embedding_backward(dtable.data(), r.data(), tok.data(), N, C, V);
  EXPECT_TRUE(testing::CheckGradient(loss, table, dtable));
}

TEST(EmbeddingTest, FastMatchesReferenceAndAccumulates) {
  for (int C : {16, 128, 37}) {
    const int N = 700, V = 50;
    auto table = testing::RandomVecF(V * C, 4);
    auto tok = RandomInts(N, 5, 0, V - 1);
    std::vector<float> out(N * C), out_ref(N * C);
    embedding_forward(out.data(), tok.data(), table.data(), N, C, V);
    ref::embedding_forward(out_ref.data(), tok.data(), table.data(), N, C, V);
    EXPECT_EQ(out, out_ref) << "C=" << C;

    auto dout = testing::RandomVecF(N * C, 6);
    auto init = testing::RandomVecF(V * C, 7);
    std::vector<float> d = init, d_ref = init;
    embedding_backward(d.data(), dout.data(), tok.data(), N, C, V);
    ref::embedding_backward(d_ref.data(), dout.data(), tok.data(), N, C, V);
    // Same summation order (token order per column): bit-identical.
    EXPECT_EQ(d, d_ref) << "C=" << C;
  }
}

}  // namespace
}  // namespace shoal::kernels
