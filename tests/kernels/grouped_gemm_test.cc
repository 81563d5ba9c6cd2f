// Grouped (per-expert) GEMM against per-expert naive loops, for skewed routing, empty experts and several
// pool sizes; and the pure row partition it is built on.
#include "kernels/cpu/grouped_gemm.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

namespace shoal::kernels::cpu {
namespace {

std::vector<float> Random(int64_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.f, 1.f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(gen);
  return v;
}

std::vector<ExpertRows> Pieces(const std::vector<int32_t>& offsets, int64_t parts, int64_t part) {
  std::vector<ExpertRows> out;
  ForEachExpertRowsInPart(offsets.data(), static_cast<int64_t>(offsets.size()) - 1, parts, part,
                          [&](const ExpertRows& r) { out.push_back(r); });
  return out;
}

TEST(ExpertRowsPartitionTest, HandPickedSplit) {
  const std::vector<int32_t> offsets = {0, 3, 3, 10};  // expert 1 is empty
  auto p0 = Pieces(offsets, 2, 0), p1 = Pieces(offsets, 2, 1);
  ASSERT_EQ(p0.size(), 2u);
  EXPECT_EQ(p0[0].expert_idx, 0);
  EXPECT_EQ(p0[0].begin, 0);
  EXPECT_EQ(p0[0].end, 3);
  EXPECT_EQ(p0[1].expert_idx, 2);
  EXPECT_EQ(p0[1].begin, 3);
  EXPECT_EQ(p0[1].end, 5);
  ASSERT_EQ(p1.size(), 1u);
  EXPECT_EQ(p1[0].expert_idx, 2);
  EXPECT_EQ(p1[0].begin, 5);
  EXPECT_EQ(p1[0].end, 10);
}

TEST(ExpertRowsPartitionTest, EveryRowCoveredOnceWithItsExpertAndPartsBalanced) {
  std::mt19937 gen(3);
  for (int trial = 0; trial < 50; ++trial) {
    const int64_t num_experts = 1 + gen() % 20;
    std::vector<int32_t> offsets(num_experts + 1, 0);
    for (int64_t e = 0; e < num_experts; ++e) offsets[e + 1] = offsets[e] + (gen() % 3 == 0 ? 0 : gen() % 50);
    const int64_t total = offsets.back();
    for (int64_t parts : {1, 2, 3, 7}) {
      std::vector<int> seen(total, 0);
      for (int64_t p = 0; p < parts; ++p) {
        int64_t rows = 0;
        for (const ExpertRows& r : Pieces(offsets, parts, p)) {
          ASSERT_LT(r.begin, r.end);
          ASSERT_GE(r.begin, offsets[r.expert_idx]);
          ASSERT_LE(r.end, offsets[r.expert_idx + 1]);
          for (int64_t i = r.begin; i < r.end; ++i) ++seen[i];
          rows += r.end - r.begin;
        }
        EXPECT_LE(std::abs(rows - total / parts), 1) << "part " << p << " of " << parts;
      }
      for (int64_t i = 0; i < total; ++i) ASSERT_EQ(seen[i], 1) << "row " << i;
    }
  }
}

TEST(ExpertRowsPartitionTest, WeightGradSplitsByWholeExpertsOnlyWhenBalanced) {
  const std::vector<int32_t> uniform = {0, 10, 20, 30, 40};  // midpoints 5, 15, 25, 35 of 40 rows
  EXPECT_EQ(ExpertPart(uniform.data(), 4, 2, 0), 0);
  EXPECT_EQ(ExpertPart(uniform.data(), 4, 2, 1), 0);
  EXPECT_EQ(ExpertPart(uniform.data(), 4, 2, 2), 1);
  EXPECT_EQ(ExpertPart(uniform.data(), 4, 2, 3), 1);
  EXPECT_TRUE(SplitWeightGradByExperts(uniform.data(), 4, 2));
  const std::vector<int32_t> skewed = {0, 1, 2, 3, 100};  // one expert holds 97% of the rows
  EXPECT_EQ(ExpertPart(skewed.data(), 4, 2, 3), 1);
  EXPECT_FALSE(SplitWeightGradByExperts(skewed.data(), 4, 2));
  EXPECT_TRUE(SplitWeightGradByExperts(skewed.data(), 4, 1));
  const std::vector<int32_t> empty = {0, 0, 0};
  EXPECT_TRUE(SplitWeightGradByExperts(empty.data(), 2, 2));
  EXPECT_EQ(ExpertPart(empty.data(), 2, 2, 1), 0);
}

struct Problem {
  int64_t num_experts, K, N;
  std::vector<int32_t> offsets;
  std::vector<float> x, w, dy;
};

// Skewed routing: expert e gets ~ (e % 5)² · base rows, some get none. Uniform: base + e % 3 rows each.
Problem MakeProblem(int64_t num_experts, int64_t K, int64_t N, int64_t base, uint32_t seed, bool skewed = true) {
  Problem p{num_experts, K, N, std::vector<int32_t>(num_experts + 1, 0), {}, {}, {}};
  for (int64_t e = 0; e < num_experts; ++e) {
    p.offsets[e + 1] = p.offsets[e] + (skewed ? (e % 5) * (e % 5) * base : base) + (e % 3);
  }
  const int64_t R = p.offsets.back();
  p.x = Random(R * K, seed);
  p.w = Random(num_experts * N * K, seed + 1);
  p.dy = Random(R * N, seed + 2);
  return p;
}

double MaxRelErr(const std::vector<float>& x, const std::vector<double>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    num = std::max(num, std::fabs(x[i] - ref[i]));
    den = std::max(den, std::fabs(ref[i]));
  }
  return num / std::max(den, 1e-30);
}

struct GroupedCase {
  int threads;
  bool skewed;
};

class GroupedGemmTest : public ::testing::TestWithParam<GroupedCase> {};

TEST_P(GroupedGemmTest, ForwardAndBackwardMatchPerExpertNaive) {
  const auto [threads, skewed] = GetParam();
  ThreadPool pool(threads);
  Problem p = MakeProblem(/*num_experts=*/9, /*K=*/48, /*N=*/40, /*base=*/skewed ? 3 : 12, 100 + threads, skewed);
  if (!skewed && threads > 1) {
    ASSERT_TRUE(SplitWeightGradByExperts(p.offsets.data(), p.num_experts, threads));  // exercises that path
  }
  const int64_t R = p.offsets.back(), K = p.K, N = p.N;

  std::vector<double> ref_y(R * N, 0), ref_dx(R * K), ref_dw(p.num_experts * N * K);
  std::vector<float> y(R * N, std::nanf("")), dx = Random(R * K, 7), dw = Random(p.num_experts * N * K, 8);
  for (size_t i = 0; i < dx.size(); ++i) ref_dx[i] = dx[i];
  for (size_t i = 0; i < dw.size(); ++i) ref_dw[i] = dw[i];
  for (int64_t e = 0; e < p.num_experts; ++e) {
    const float* we = p.w.data() + e * N * K;
    for (int64_t r = p.offsets[e]; r < p.offsets[e + 1]; ++r) {
      for (int64_t n = 0; n < N; ++n) {
        double acc = 0;
        for (int64_t k = 0; k < K; ++k) acc += double(p.x[r * K + k]) * we[n * K + k];
        ref_y[r * N + n] = acc;
      }
      for (int64_t k = 0; k < K; ++k) {
        double acc = 0;
        for (int64_t n = 0; n < N; ++n) acc += double(p.dy[r * N + n]) * we[n * K + k];
        ref_dx[r * K + k] += acc;
      }
      for (int64_t n = 0; n < N; ++n) {
        for (int64_t k = 0; k < K; ++k) ref_dw[(e * N + n) * K + k] += double(p.dy[r * N + n]) * p.x[r * K + k];
      }
    }
  }
  grouped_matmul_forward(y.data(), p.x.data(), p.w.data(), p.offsets.data(), p.num_experts, K, N, &pool);
  grouped_matmul_backward(dx.data(), dw.data(), p.dy.data(), p.x.data(), p.w.data(), p.offsets.data(), p.num_experts, K,
                          N, &pool);
  EXPECT_LT(MaxRelErr(y, ref_y), 1e-5);
  EXPECT_LT(MaxRelErr(dx, ref_dx), 1e-5);
  EXPECT_LT(MaxRelErr(dw, ref_dw), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(PoolSizes, GroupedGemmTest,
                         ::testing::Values(GroupedCase{1, true}, GroupedCase{2, true}, GroupedCase{3, true},
                                           GroupedCase{5, true}, GroupedCase{2, false}, GroupedCase{3, false}),
                         [](const auto& info) {
                           return std::to_string(info.param.threads) + "threads" +
                                  (info.param.skewed ? "Skewed" : "Uniform");
                         });

TEST(GroupedGemmTest, EmptyExpertsLeaveTheirGradientsAlone) {
  ThreadPool pool(2);
  const int64_t E = 3, K = 8, N = 4;
  const std::vector<int32_t> offsets = {0, 0, 6, 6};  // only expert 1 has rows: the N-split path
  ASSERT_FALSE(SplitWeightGradByExperts(offsets.data(), E, 2));
  auto x = Random(6 * K, 1), w = Random(E * N * K, 2), dy = Random(6 * N, 3);
  std::vector<float> dw(E * N * K, 5.f);
  grouped_matmul_backward(nullptr, dw.data(), dy.data(), x.data(), w.data(), offsets.data(), E, K, N, &pool);
  for (int64_t i = 0; i < N * K; ++i) {
    EXPECT_EQ(dw[i], 5.f);              // expert 0
    EXPECT_EQ(dw[2 * N * K + i], 5.f);  // expert 2
  }
  int changed = 0;
  for (int64_t i = 0; i < N * K; ++i) changed += dw[N * K + i] != 5.f;
  EXPECT_EQ(changed, N * K);
}

}  // namespace
}  // namespace shoal::kernels::cpu
