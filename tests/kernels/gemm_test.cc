// CPU GEMMs against naive double-precision loops: every transpose combination, strided (padded) operands,
// alpha/beta, bf16 inputs across tile edges, and the linear-layer forward/backward forms.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "kernels/cpu/blas.h"

namespace shoal::kernels::cpu {
namespace {

std::vector<float> Random(int64_t n, uint32_t seed, float scale = 1.f) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(gen);
  return v;
}

// C = alpha·op(A)·op(B) + beta·C in double; element accessors honour the stored layout and strides.
template <typename T, typename ToF>
void NaiveGemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const T* A, int64_t lda, const T* B,
               int64_t ldb, double beta, float* C, int64_t ldc, ToF to_f) {
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t n = 0; n < N; ++n) {
      double acc = 0;
      for (int64_t k = 0; k < K; ++k) {
        const double a = to_f(ta ? A[k * lda + m] : A[m * lda + k]);
        const double b = to_f(tb ? B[n * ldb + k] : B[k * ldb + n]);
        acc += a * b;
      }
      C[m * ldc + n] = static_cast<float>(alpha * acc + (beta == 0 ? 0.0 : beta * C[m * ldc + n]));
    }
  }
}

// max |x - ref| / max |ref| over the M×N block.
double RelErr(const float* x, const float* ref, int64_t M, int64_t N, int64_t ld) {
  double num = 0, den = 0;
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t n = 0; n < N; ++n) {
      num = std::max(num, std::fabs(double(x[m * ld + n]) - ref[m * ld + n]));
      den = std::max(den, std::fabs(double(ref[m * ld + n])));
    }
  }
  return num / std::max(den, 1e-30);
}

struct GemmCase {
  bool ta, tb;
};

class SgemmTransposeTest : public ::testing::TestWithParam<GemmCase> {};

TEST_P(SgemmTransposeTest, MatchesNaiveWithStridesAlphaBeta) {
  const auto [ta, tb] = GetParam();
  const int64_t M = 37, N = 53, K = 71, pad = 5;
  const int64_t lda = (ta ? M : K) + pad, ldb = (tb ? K : N) + pad, ldc = N + pad;
  auto A = Random((ta ? K : M) * lda, 1), B = Random((tb ? N : K) * ldb, 2), C = Random(M * ldc, 3);
  std::vector<float> ref = C;
  auto id = [](float x) { return double(x); };
  NaiveGemm(ta, tb, M, N, K, 0.5, A.data(), lda, B.data(), ldb, 0.25, ref.data(), ldc, id);
  sgemm(ta, tb, M, N, K, 0.5f, A.data(), lda, B.data(), ldb, 0.25f, C.data(), ldc);
  EXPECT_LT(RelErr(C.data(), ref.data(), M, N, ldc), 1e-5);
  // Padding columns of C are untouched.
  std::vector<float> C0 = Random(M * ldc, 3);
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t n = N; n < ldc; ++n) EXPECT_EQ(C[m * ldc + n], C0[m * ldc + n]);
  }
}

TEST_P(SgemmTransposeTest, Bf16MatchesNaiveAcrossTileEdges) {
  const auto [ta, tb] = GetParam();
  // > 256 in every dim, so several widened tiles (and ragged ones) in each direction.
  const int64_t M = 300, N = 270, K = 520;
  const int64_t lda = ta ? M : K, ldb = tb ? K : N, ldc = N;
  std::vector<bf16_t> A(M * K), B(N * K);
  auto fa = Random(M * K, 4), fb = Random(N * K, 5);
  for (size_t i = 0; i < A.size(); ++i) A[i] = f32_to_bf16(fa[i]);
  for (size_t i = 0; i < B.size(); ++i) B[i] = f32_to_bf16(fb[i]);
  auto C = Random(M * N, 6);
  std::vector<float> ref = C;
  NaiveGemm(ta, tb, M, N, K, 2.0, A.data(), lda, B.data(), ldb, -1.0, ref.data(), ldc,
            [](bf16_t h) { return double(bf16_to_f32(h)); });
  ThreadPool pool(2);
  gemm_bf16(ta, tb, M, N, K, 2.f, A.data(), lda, B.data(), ldb, -1.f, C.data(), ldc, &pool);
  EXPECT_LT(RelErr(C.data(), ref.data(), M, N, ldc), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(AllTransposes, SgemmTransposeTest,
                         ::testing::Values(GemmCase{false, false}, GemmCase{false, true}, GemmCase{true, false},
                                           GemmCase{true, true}),
                         [](const auto& info) {
                           return std::string(info.param.ta ? "T" : "N") + (info.param.tb ? "T" : "N");
                         });

TEST(SgemmTest, BetaZeroIgnoresNanInOutput) {
  const int64_t M = 4, N = 5, K = 6;
  auto A = Random(M * K, 7), B = Random(K * N, 8);
  std::vector<float> C(M * N, std::nanf("")), C2(M * N, std::nanf(""));
  sgemm(false, false, M, N, K, 1.f, A.data(), K, B.data(), N, 0.f, C.data(), N);
  std::vector<bf16_t> Ab(M * K), Bb(K * N);
  for (size_t i = 0; i < Ab.size(); ++i) Ab[i] = f32_to_bf16(A[i]);
  for (size_t i = 0; i < Bb.size(); ++i) Bb[i] = f32_to_bf16(B[i]);
  gemm_bf16(false, false, M, N, K, 1.f, Ab.data(), K, Bb.data(), N, 0.f, C2.data(), N);
  for (int64_t i = 0; i < M * N; ++i) {
    EXPECT_FALSE(std::isnan(C[i]));
    EXPECT_FALSE(std::isnan(C2[i]));
  }
}

TEST(SgemmTest, ZeroKScalesByBeta) {
  std::vector<float> C = {1, 2, 3, 4};
  sgemm(false, false, 2, 2, 0, 1.f, nullptr, 1, nullptr, 2, 0.5f, C.data(), 2);
  EXPECT_EQ(C, (std::vector<float>{0.5f, 1, 1.5f, 2}));
  sgemm(false, false, 2, 2, 0, 1.f, nullptr, 1, nullptr, 2, 0.f, C.data(), 2);
  EXPECT_EQ(C, (std::vector<float>{0, 0, 0, 0}));
}

TEST(MatmulTest, ForwardAndBackwardMatchNaiveAndAccumulate) {
  const int64_t N = 33, C = 40, OC = 24;
  auto inp = Random(N * C, 10), weight = Random(OC * C, 11), dout = Random(N * OC, 12);
  std::vector<float> out(N * OC), ref_out(N * OC);
  matmul_forward(out.data(), inp.data(), weight.data(), N, C, OC);
  auto id = [](float x) { return double(x); };
  NaiveGemm(false, true, N, OC, C, 1.0, inp.data(), C, weight.data(), C, 0.0, ref_out.data(), OC, id);
  EXPECT_LT(RelErr(out.data(), ref_out.data(), N, OC, OC), 1e-5);

  // Gradients accumulate onto what is already there.
  auto dinp = Random(N * C, 13), dweight = Random(OC * C, 14);
  std::vector<float> ref_dinp = dinp, ref_dweight = dweight;
  matmul_backward(dinp.data(), dweight.data(), dout.data(), inp.data(), weight.data(), N, C, OC);
  NaiveGemm(false, false, N, C, OC, 1.0, dout.data(), OC, weight.data(), C, 1.0, ref_dinp.data(), C, id);
  NaiveGemm(true, false, OC, C, N, 1.0, dout.data(), OC, inp.data(), C, 1.0, ref_dweight.data(), C, id);
  EXPECT_LT(RelErr(dinp.data(), ref_dinp.data(), N, C, C), 1e-5);
  EXPECT_LT(RelErr(dweight.data(), ref_dweight.data(), OC, C, C), 1e-5);

  // A null output is skipped.
  std::vector<float> dweight2 = ref_dweight;
  matmul_backward(nullptr, dweight2.data(), dout.data(), inp.data(), weight.data(), N, C, OC);
  NaiveGemm(true, false, OC, C, N, 1.0, dout.data(), OC, inp.data(), C, 1.0, ref_dweight.data(), C, id);
  EXPECT_LT(RelErr(dweight2.data(), ref_dweight.data(), OC, C, C), 1e-5);
}

TEST(MatmulTest, Bf16FormsEqualFp32FormsOnBf16Values) {
  const int64_t N = 300, C = 130, OC = 260;
  auto inp = Random(N * C, 20), weight = Random(OC * C, 21), dout = Random(N * OC, 22);
  std::vector<bf16_t> inp_b(inp.size()), weight_b(weight.size()), dout_b(dout.size());
  for (size_t i = 0; i < inp.size(); ++i) inp[i] = bf16_to_f32(inp_b[i] = f32_to_bf16(inp[i]));
  for (size_t i = 0; i < weight.size(); ++i) weight[i] = bf16_to_f32(weight_b[i] = f32_to_bf16(weight[i]));
  for (size_t i = 0; i < dout.size(); ++i) dout[i] = bf16_to_f32(dout_b[i] = f32_to_bf16(dout[i]));

  std::vector<float> out(N * OC), out_b(N * OC);
  matmul_forward(out.data(), inp.data(), weight.data(), N, C, OC);
  matmul_forward_bf16(out_b.data(), inp_b.data(), weight_b.data(), N, C, OC);
  EXPECT_LT(RelErr(out_b.data(), out.data(), N, OC, OC), 1e-5);

  std::vector<float> dinp(N * C, 1.f), dweight(OC * C, -1.f), dinp_b = dinp, dweight_b = dweight;
  matmul_backward(dinp.data(), dweight.data(), dout.data(), inp.data(), weight.data(), N, C, OC);
  matmul_backward_bf16(dinp_b.data(), dweight_b.data(), dout_b.data(), inp_b.data(), weight_b.data(), N, C, OC);
  EXPECT_LT(RelErr(dinp_b.data(), dinp.data(), N, C, C), 1e-5);
  EXPECT_LT(RelErr(dweight_b.data(), dweight.data(), OC, C, C), 1e-5);
}

TEST(BlasThreadsTest, ScopedThreadsRestorePreviousCount) {
  SetBlasThreads(2);
  EXPECT_EQ(BlasThreads(), 2);
  {
    ScopedBlasThreads single(1);
    EXPECT_EQ(BlasThreads(), 1);
  }
  EXPECT_EQ(BlasThreads(), 2);
  SetBlasThreads(0);  // back to the default pool size
  EXPECT_EQ(BlasThreads(), ThreadPool::Default().num_threads());
}

}  // namespace
}  // namespace shoal::kernels::cpu
