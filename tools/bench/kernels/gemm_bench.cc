// CPU GEMM benchmarks: sgemm and bf16 GEMM at 1024³, the linear layers at dsv3-tiny / dsv3-small-fp8 shapes,
// and the grouped expert GEMM at the demo (H=128, I_m=64, 16 experts, 2048 tokens × top-2) and small
// (H=256, I_m=128, 16 experts, 4096 tokens × top-2) shapes. Each reports GFLOP/s and frac_peak, the fraction of
// the sgemm 1024³ peak measured in this run with the same thread count.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/blas.h"
#include "kernels/cpu/grouped_gemm.h"
#include "tools/bench/kernels/ceilings.h"

namespace shoal::bench {
namespace {

using benchmark::Counter;
namespace cpu = kernels::cpu;

void SetFlopCounters(benchmark::State& state, double flops_per_iter, int threads) {
  state.counters["GFLOPS"] = Counter(flops_per_iter / 1e9, Counter::kIsIterationInvariantRate);
  state.counters["frac_peak"] =
      Counter(flops_per_iter / (SgemmPeakGflops(threads) * 1e9), Counter::kIsIterationInvariantRate);
}

std::vector<float> Random(int64_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.f, 1.f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(gen);
  return v;
}

// ---- Single GEMMs

void BM_Sgemm(benchmark::State& state) {
  const int64_t n = state.range(0);
  const int threads = state.range(1) > 0 ? static_cast<int>(state.range(1)) : AllThreads();
  auto a = Random(n * n, 1), b = Random(n * n, 2);
  std::vector<float> c(n * n);
  cpu::ScopedBlasThreads scoped(threads);
  for (auto _ : state) {
    cpu::sgemm(false, true, n, n, n, 1.f, a.data(), n, b.data(), n, 0.f, c.data(), n);
    benchmark::DoNotOptimize(c.data());
  }
  SetFlopCounters(state, 2.0 * n * n * n, threads);
}
BENCHMARK(BM_Sgemm)->ArgNames({"n", "threads"})->Args({1024, 1})->Args({1024, 0})->UseRealTime();

void BM_GemmBf16(benchmark::State& state) {
  const int64_t n = state.range(0);
  auto fa = Random(n * n, 3), fb = Random(n * n, 4);
  std::vector<kernels::bf16_t> a(n * n), b(n * n);
  for (int64_t i = 0; i < n * n; ++i) {
    a[i] = kernels::f32_to_bf16(fa[i]);
    b[i] = kernels::f32_to_bf16(fb[i]);
  }
  std::vector<float> c(n * n);
  for (auto _ : state) {
    cpu::gemm_bf16(false, true, n, n, n, 1.f, a.data(), n, b.data(), n, 0.f, c.data(), n);
    benchmark::DoNotOptimize(c.data());
  }
  SetFlopCounters(state, 2.0 * n * n * n, AllThreads());
}
BENCHMARK(BM_GemmBf16)->ArgNames({"n"})->Arg(1024)->UseRealTime();

// Linear layer forward (out = inp·Wᵀ) and backward (dinp and dweight), rows × C -> OC.
void BM_MatmulForward(benchmark::State& state) {
  const int64_t N = state.range(0), C = state.range(1), OC = state.range(2);
  auto inp = Random(N * C, 5), w = Random(OC * C, 6);
  std::vector<float> out(N * OC);
  cpu::SetBlasThreads(0);
  for (auto _ : state) {
    cpu::matmul_forward(out.data(), inp.data(), w.data(), N, C, OC);
    benchmark::DoNotOptimize(out.data());
  }
  SetFlopCounters(state, 2.0 * N * C * OC, AllThreads());
}
void BM_MatmulBackward(benchmark::State& state) {
  const int64_t N = state.range(0), C = state.range(1), OC = state.range(2);
  auto inp = Random(N * C, 5), w = Random(OC * C, 6), dout = Random(N * OC, 7);
  std::vector<float> dinp(N * C), dw(OC * C);
  cpu::SetBlasThreads(0);
  for (auto _ : state) {
    cpu::matmul_backward(dinp.data(), dw.data(), dout.data(), inp.data(), w.data(), N, C, OC);
    benchmark::DoNotOptimize(dw.data());
  }
  SetFlopCounters(state, 4.0 * N * C * OC, AllThreads());
}
// dsv3-tiny dense FFN up (2048 tokens, 128 -> 384) and dsv3-small-fp8 (4096 tokens, 256 -> 768).
BENCHMARK(BM_MatmulForward)
    ->ArgNames({"rows", "C", "OC"})
    ->Args({2048, 128, 384})
    ->Args({4096, 256, 768})
    ->UseRealTime();
BENCHMARK(BM_MatmulBackward)
    ->ArgNames({"rows", "C", "OC"})
    ->Args({2048, 128, 384})
    ->Args({4096, 256, 768})
    ->UseRealTime();

// ---- Grouped expert GEMM

struct Routed {
  std::vector<int32_t> offsets;  // [E+1]
  int64_t rows = 0;
};

// tokens × top_k distinct uniformly random experts per token, sorted by expert.
Routed Route(int64_t tokens, int64_t num_experts, int64_t top_k, uint32_t seed) {
  std::mt19937 gen(seed);
  std::vector<int64_t> count(num_experts, 0);
  for (int64_t t = 0; t < tokens; ++t) {
    std::vector<int64_t> chosen;
    while (static_cast<int64_t>(chosen.size()) < top_k) {
      const int64_t e = gen() % num_experts;
      if (std::find(chosen.begin(), chosen.end(), e) == chosen.end()) chosen.push_back(e);
    }
    for (int64_t e : chosen) ++count[e];
  }
  Routed r;
  r.offsets.assign(num_experts + 1, 0);
  for (int64_t e = 0; e < num_experts; ++e) r.offsets[e + 1] = r.offsets[e] + static_cast<int32_t>(count[e]);
  r.rows = r.offsets[num_experts];
  return r;
}

// Args: H, I_m, experts, tokens, top_k, projection (0 = gate+up fused: K=H, N=2·I_m; 1 = down: K=I_m, N=H).
struct GroupedShape {
  int64_t K, N, E;
  Routed routed;
};
GroupedShape ShapeFrom(const benchmark::State& state) {
  const int64_t H = state.range(0), I = state.range(1), E = state.range(2), T = state.range(3), top_k = state.range(4);
  const bool down = state.range(5) == 1;
  return GroupedShape{down ? I : H, down ? H : 2 * I, E, Route(T, E, top_k, 42)};
}

void BM_GroupedForward(benchmark::State& state) {
  GroupedShape s = ShapeFrom(state);
  auto x = Random(s.routed.rows * s.K, 8), w = Random(s.E * s.N * s.K, 9);
  std::vector<float> y(s.routed.rows * s.N);
  for (auto _ : state) {
    cpu::grouped_matmul_forward(y.data(), x.data(), w.data(), s.routed.offsets.data(), s.E, s.K, s.N);
    benchmark::DoNotOptimize(y.data());
  }
  SetFlopCounters(state, 2.0 * s.routed.rows * s.K * s.N, AllThreads());
}
void BM_GroupedBackward(benchmark::State& state) {
  GroupedShape s = ShapeFrom(state);
  auto x = Random(s.routed.rows * s.K, 8), w = Random(s.E * s.N * s.K, 9), dy = Random(s.routed.rows * s.N, 10);
  std::vector<float> dx(s.routed.rows * s.K), dw(s.E * s.N * s.K);
  for (auto _ : state) {
    cpu::grouped_matmul_backward(dx.data(), dw.data(), dy.data(), x.data(), w.data(), s.routed.offsets.data(), s.E, s.K,
                                 s.N);
    benchmark::DoNotOptimize(dw.data());
  }
  SetFlopCounters(state, 4.0 * s.routed.rows * s.K * s.N, AllThreads());
}
// What one dense GEMM of the same total rows and K×N achieves (OpenBLAS threads): the grouped kernel's target.
void BM_GroupedDenseEquivalent(benchmark::State& state) {
  GroupedShape s = ShapeFrom(state);
  auto x = Random(s.routed.rows * s.K, 8), w = Random(s.N * s.K, 9);
  std::vector<float> y(s.routed.rows * s.N);
  cpu::SetBlasThreads(0);
  for (auto _ : state) {
    cpu::matmul_forward(y.data(), x.data(), w.data(), s.routed.rows, s.K, s.N);
    benchmark::DoNotOptimize(y.data());
  }
  SetFlopCounters(state, 2.0 * s.routed.rows * s.K * s.N, AllThreads());
}

void GroupedArgs(benchmark::internal::Benchmark* b) {
  b->ArgNames({"H", "I", "E", "T", "topk", "down"});
  for (int64_t down : {0, 1}) {
    b->Args({128, 64, 16, 2048, 2, down});   // demo
    b->Args({256, 128, 16, 4096, 2, down});  // small
  }
  b->UseRealTime();
}
BENCHMARK(BM_GroupedForward)->Apply(GroupedArgs);
BENCHMARK(BM_GroupedBackward)->Apply(GroupedArgs);
BENCHMARK(BM_GroupedDenseEquivalent)->Apply(GroupedArgs);

}  // namespace
}  // namespace shoal::bench
