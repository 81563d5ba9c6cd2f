// CPU benchmarks of the model ops (kernels/cpu/<op>.h) at the demo shapes (dsv3-tiny: N = 2048 tokens,
// C = 128, NH = 4, Dqk = 48, Dv = 32, T = 128, E = 16, K = 2, V = 512, I = 384, rope D = 16) and the small
// shapes (dsv3-small-fp8: N = 4096, C = 256, NH = 4, Dqk = 96, Dv = 64, T = 256, E = 16, K = 2, V = 1024,
// I = 768, rope D = 32). Each op reports the ratio of whichever ceiling bounds it, measured in this run:
//   memory-bound ops: GBps and frac_memcpy = achieved bytes/s ÷ MemcpyGBs() (single-thread 256 MB memcpy;
//     working sets here are mostly cache-resident, so values above 1 are possible and honest);
//   attention and the fused cross-entropy: GFLOPS and frac_peak = achieved FLOP/s ÷ SgemmPeakGflops(all
//     threads). Attention counts causal FLOPs only (T(T+1)/2 pairs): forward 2·(Dqk+Dv) per pair, backward
//     2·(3·Dqk+2·Dv) per pair (the S = QKᵀ recomputation included, as FlashAttention counts it).
// Bytes are the minimum traffic of the op (each tensor read or written once; += outputs read and written).
#include <benchmark/benchmark.h>

#include <cmath>
#include <random>
#include <vector>

#include "kernels/cpu/adamw.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/clip.h"
#include "kernels/cpu/cross_entropy.h"
#include "kernels/cpu/embedding.h"
#include "kernels/cpu/permute.h"
#include "kernels/cpu/rmsnorm.h"
#include "kernels/cpu/rope.h"
#include "kernels/cpu/router.h"
#include "kernels/cpu/swiglu.h"
#include "tools/bench/kernels/ceilings.h"

namespace shoal::bench {
namespace {

using benchmark::Counter;
namespace k = kernels;

struct Shapes {
  int N, C, NH, Dqk, Dv, T, E, K, G, topk_group, V, I, D;
  int B() const { return N / T; }
};
// Arg 0 = demo, 1 = small.
Shapes ShapesFor(int which) {
  if (which == 0) return Shapes{2048, 128, 4, 48, 32, 128, 16, 2, 4, 2, 512, 384, 16};
  return Shapes{4096, 256, 4, 96, 64, 256, 16, 2, 4, 2, 1024, 768, 32};
}

std::vector<float> Random(size_t n, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(gen);
  return v;
}

std::vector<int32_t> RandomInts(size_t n, uint32_t seed, int hi_exclusive) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int32_t> dist(0, hi_exclusive - 1);
  std::vector<int32_t> v(n);
  for (auto& x : v) x = dist(gen);
  return v;
}

void MemoryCounters(benchmark::State& state, double bytes_per_iter) {
  state.counters["GBps"] = Counter(bytes_per_iter / 1e9, Counter::kIsIterationInvariantRate);
  state.counters["frac_memcpy"] = Counter(bytes_per_iter / (MemcpyGBs() * 1e9), Counter::kIsIterationInvariantRate);
}

void FlopCounters(benchmark::State& state, double flops_per_iter) {
  state.counters["GFLOPS"] = Counter(flops_per_iter / 1e9, Counter::kIsIterationInvariantRate);
  state.counters["frac_peak"] =
      Counter(flops_per_iter / (SgemmPeakGflops(AllThreads()) * 1e9), Counter::kIsIterationInvariantRate);
}

// ---- attention

void BM_AttentionForward(benchmark::State& state) {
  const Shapes s = ShapesFor(static_cast<int>(state.range(0)));
  const bool seg = state.range(1) != 0;
  const size_t nq = (size_t)s.N * s.NH * s.Dqk, nv = (size_t)s.N * s.NH * s.Dv;
  auto q = Random(nq, 1), kk = Random(nq, 2), v = Random(nv, 3);
  std::vector<float> out(nv), lse((size_t)s.N * s.NH);
  std::vector<int32_t> segs(s.N, 0);
  const float scale = 1.0f / std::sqrt(static_cast<float>(s.Dqk));
  for (auto _ : state) {
    k::attention_forward(out.data(), lse.data(), q.data(), kk.data(), v.data(), seg ? segs.data() : nullptr, s.B(),
                         s.T, s.NH, s.Dqk, s.Dv, scale);
    benchmark::DoNotOptimize(out.data());
  }
  const double pairs = (double)s.B() * s.NH * s.T * (s.T + 1) / 2;
  FlopCounters(state, pairs * 2.0 * (s.Dqk + s.Dv));
}

void BM_AttentionBackward(benchmark::State& state) {
  const Shapes s = ShapesFor(static_cast<int>(state.range(0)));
  const size_t nq = (size_t)s.N * s.NH * s.Dqk, nv = (size_t)s.N * s.NH * s.Dv;
  auto q = Random(nq, 1), kk = Random(nq, 2), v = Random(nv, 3), dout = Random(nv, 4);
  std::vector<float> out(nv), lse((size_t)s.N * s.NH), dq(nq), dk(nq), dv(nv);
  const float scale = 1.0f / std::sqrt(static_cast<float>(s.Dqk));
  k::attention_forward(out.data(), lse.data(), q.data(), kk.data(), v.data(), nullptr, s.B(), s.T, s.NH, s.Dqk, s.Dv,
                       scale);
  for (auto _ : state) {
    k::attention_backward(dq.data(), dk.data(), dv.data(), dout.data(), out.data(), lse.data(), q.data(), kk.data(),
                          v.data(), nullptr, s.B(), s.T, s.NH, s.Dqk, s.Dv, scale);
    benchmark::DoNotOptimize(dq.data());
  }
  const double pairs = (double)s.B() * s.NH * s.T * (s.T + 1) / 2;
  FlopCounters(state, pairs * 2.0 * (3 * s.Dqk + 2 * s.Dv));
}

// ---- normalisation, activation, rotary

void BM_RmsNormForward(benchmark::State& state) {
  const Shapes s = ShapesFor(static_cast<int>(state.range(0)));
  auto x = Random((size_t)s.N * s.C, 1), w = Random(s.C, 2);
  std::vector<float> out(x.size()), rstd(s.N);
  for (auto _ : state) {
    k::rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), s.N, s.C, 1e-6f);
    benchmark::DoNotOptimize(out.data());
  }
  MemoryCounters(state, 4.0 * (2.0 * s.N * s.C + s.N));
}

void BM_RmsNormBackward(benchmark::State& state) {
  const Shapes s = ShapesFor(static_cast<int>(state.range(0)));
  auto x = Random((size_t)s.N * s.C, 1), w = Random(s.C, 2), dout = Random(x.size(), 3);
  std::vector<float> out(x.size()), rstd(s.N), dx(x.size()), dw(s.C);
  std::vector<float> scratch(k::rmsnorm_backward_scratch_floats(s.N, s.C));
  k::rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), s.N, s.C, 1e-6f);
  for (auto _ : state) {
    k::rmsnorm_backward(dx.data(), dw.data(), scratch.data(), dout.data(), rstd.data(), x.data(), w.data(), s.N, s.C);
    benchmark::DoNotOptimize(dx.data());
  }
  MemoryCounters(state, 4.0 * (4.0 * s.N * s.C + s.N));
}

void BM_SwigluForward(benchmark::State& state) {
  const Shapes s = ShapesFor(static_cast<int>(state.range(0)));
  auto gu = Random((size_t)s.N * 2 * s.I, 1, -4, 4);
  std::vector<float> out((size_t)s.N * s.I);
  for (auto _ : state) {
    k::swiglu_forward(out.data(), gu.data(), s.N, s.I);
    benchmark::DoNotOptimize(out.data());
  }
  MemoryCounters(state, 4.0 * 3.0 * s.N * s.I);
}

void BM_SwigluBackward(benchmark::State& state) {
  const Shapes s = ShapesFor(static_cast<int>(state.range(0)));
  auto gu = Random((size_t)s.N * 2 * s.I, 1, -4, 4), dout = Random((size_t)s.N * s.I, 2);
  std::vector<float> dgu(gu.size());
  for (auto _ : state) {
    k::swiglu_backward(dgu.data(), dout.data(), gu.data(), s.N, s.I);
    benchmark::DoNotOptimize(dgu.data());
  }
  MemoryCounters(state, 4.0 * 7.0 * s.N * s.I);
}

// In place on the rope slice of q ([N, NH, Dqk], last D dims), as MLA uses it.
void BM_Rope(benchmark::State& state) {
  const Shapes s = ShapesFor(static_cast<int>(state.range(0)));
  const bool backward = state.range(1) != 0;
  const int P = s.T;
  std::vector<float> inv(s.D / 2), cs((size_t)P * s.D);
  k::rope_inv_freq(inv.data(), s.D, 10000.0f, nullptr);
  k::rope_table(cs.data(), inv.data(), P, s.D);
  std::vector<int32_t> pos(s.N);
  for (int n = 0; n < s.N; ++n) pos[n] = n % s.T;
  auto q = Random((size_t)s.N * s.NH * s.Dqk, 1);
  float* slice = q.data() + (s.Dqk - s.D);
  for (auto _ : state) {
    if (backward)
      k::rope_backward(slice, slice, pos.data(), cs.data(), s.N, s.NH, s.D, s.Dqk);
    else
      k::rope_forward(slice, slice, pos.data(), cs.data(), s.N, s.NH, s.D, s.Dqk);
    benchmark::DoNotOptimize(q.data());
  }
  MemoryCounters(state, 4.0 * (2.0 * s.N * s.NH * s.D + (double)s.N * s.D) + 4.0 * s.N);
}

void BM_EmbeddingForward(benchmark::State& state) {
  const Shapes s = ShapesFor(static_cast<int>(state.range(0)));
  auto table = Random((size_t)s.V * s.C, 1);
  auto tok = RandomInts(s.N, 2, s.V);
  std::vector<float> out((size_t)s.N * s.C);
  for (auto _ : state) {
    k::embedding_forward(out.data(), tok.data(), table.data(), s.N, s.C, s.V);
    benchmark::DoNotOptimize(out.data());
  }
  MemoryCounters(state, 4.0 * 2.0 * s.N * s.C);
}

void BM_EmbeddingBackward(benchmark::State& state) {
  const Shapes s = ShapesFor(static_cast<int>(state.range(0)));
  auto dout = Random((size_t)s.N * s.C, 1);
  auto tok = RandomInts(s.N, 2, s.V);
  std::vector<float> dtable((size_t)s.V * s.C);
  for (auto _ : state) {
    k::embedding_backward(dtable.data(), dout.data(), tok.data(), s.N, s.C, s.V);
    benchmark::DoNotOptimize(dtable.data());
  }
  MemoryCounters(state, 4.0 * 3.0 * s.N * s.C);
}

// ---- MoE routing and permutation

void BM_RouterForward(benchmark::State& state) {
  const Shapes s = ShapesFor(static_cast<int>(state.range(0)));
  auto logits = Random((size_t)s.N * s.E, 1, -3, 3), bias = Random(s.E, 2, -0.01f, 0.01f);
  std::vector<float> scores(logits.size()), w((size_t)s.N * s.K);
  std::vector<int32_t> idx((size_t)s.N * s.K);
  for (auto _ : state) {
    k::router_forward(scores.data(), idx.data(), w.data(), logits.data(), bias.data(), s.N, s.E, s.K, s.G,
                      s.topk_group, 2.5f);
    benchmark::DoNotOptimize(w.data());
  }
  MemoryCounters(state, 4.0 * (2.0 * s.N * s.E + 2.0 * s.N * s.K));
}

void BM_RouterBackward(benchmark::State& state) {
  const Shapes s = ShapesFor(static_cast<int>(state.range(0)));
  auto logits = Random((size_t)s.N * s.E, 1, -3, 3), dw = Random((size_t)s.N * s.K, 3);
  std::vector<float> scores(logits.size()), w((size_t)s.N * s.K), dl(logits.size());
  std::vector<int32_t> idx((size_t)s.N * s.K);
  k::router_forward(scores.data(), idx.data(), w.data(), logits.data(), nullptr, s.N, s.E, s.K, s.G, s.topk_group,
                    2.5f);
  for (auto _ : state) {
    k::router_backward(dl.data(), dw.data(), scores.data(), idx.data(), s.N, s.E, s.K, 2.5f);
    benchmark::DoNotOptimize(dl.data());
  }
  // Touches the K selected scores and dlogits per token, plus the weights and indices.
  MemoryCounters(state, 4.0 * (3.0 * s.N * s.K + 2.0 * s.N * s.K));
}

void BM_RouterBalanceLoss(benchmark::State& state) {
  const Shapes s = ShapesFor(static_cast<int>(state.range(0)));
  auto logits = Random((size_t)s.N * s.E, 1, -3, 3);
  std::vector<float> scores(logits.size()), dl(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) scores[i] = 1.0f / (1.0f + std::exp(-logits[i]));
  for (auto _ : state) {
    benchmark::DoNotOptimize(k::router_balance_loss(dl.data(), scores.data(), s.B(), s.T, s.E, s.K, 1e-4f, 1.0f));
  }
  MemoryCounters(state, 4.0 * 3.0 * s.N * s.E);
}

struct Plan {
  std::vector<int32_t> idx, offsets, sorted, pos;
};
Plan MakePlan(const Shapes& s) {
  Plan p;
  p.idx = RandomInts((size_t)s.N * s.K, 7, s.E);
  p.offsets.resize(s.E + 1);
  p.sorted.resize(p.idx.size());
  p.pos.resize(p.idx.size());
  k::moe_permute_plan(p.offsets.data(), p.sorted.data(), p.pos.data(), p.idx.data(), s.N, s.K, s.E);
  return p;
}

void BM_PermutePlan(benchmark::State& state) {
  const Shapes s = ShapesFor(static_cast<int>(state.range(0)));
  Plan p = MakePlan(s);
  for (auto _ : state) {
    k::moe_permute_plan(p.offsets.data(), p.sorted.data(), p.pos.data(), p.idx.data(), s.N, s.K, s.E);
    benchmark::DoNotOptimize(p.sorted.data());
  }
  MemoryCounters(state, 4.0 * 3.0 * s.N * s.K);
}

void BM_Permute(benchmark::State& state) {
  const Shapes s = ShapesFor(static_cast<int>(state.range(0)));
  const bool backward = state.range(1) != 0;
  Plan p = MakePlan(s);
  auto x = Random((size_t)s.N * s.C, 1), xs = Random((size_t)s.N * s.K * s.C, 2);
  for (auto _ : state) {
    if (backward)
      k::moe_permute_backward(x.data(), xs.data(), p.pos.data(), s.N, s.K, s.C);
    else
      k::moe_permute_forward(xs.data(), x.data(), p.sorted.data(), s.N, s.K, s.C);
    benchmark::DoNotOptimize(xs.data());
    benchmark::DoNotOptimize(x.data());
  }
  MemoryCounters(state, backward ? 4.0 * ((double)s.N * s.K * s.C + 2.0 * s.N * s.C) : 4.0 * 2.0 * s.N * s.K * s.C);
}

void BM_Unpermute(benchmark::State& state) {
  const Shapes s = ShapesFor(static_cast<int>(state.range(0)));
  const bool backward = state.range(1) != 0;
  Plan p = MakePlan(s);
  auto out = Random((size_t)s.N * s.C, 1), ys = Random((size_t)s.N * s.K * s.C, 2), w = Random((size_t)s.N * s.K, 3);
  std::vector<float> dys(ys.size()), dw(w.size());
  for (auto _ : state) {
    if (backward)
      k::moe_unpermute_backward(dys.data(), dw.data(), out.data(), ys.data(), w.data(), p.pos.data(), s.N, s.K, s.C);
    else
      k::moe_unpermute_forward(out.data(), ys.data(), w.data(), p.pos.data(), s.N, s.K, s.C);
    benchmark::DoNotOptimize(out.data());
    benchmark::DoNotOptimize(dys.data());
  }
  const double nkc = (double)s.N * s.K * s.C, nc = (double)s.N * s.C;
  MemoryCounters(state, backward ? 4.0 * (nc + 3.0 * nkc) : 4.0 * (nkc + 2.0 * nc));
}

// ---- loss, optimizer, clipping

void BM_CrossEntropy(benchmark::State& state) {
  const Shapes s = ShapesFor(static_cast<int>(state.range(0)));
  const bool with_grad = state.range(1) != 0;
  const int chunk = 256;
  auto z = Random((size_t)s.N * s.C, 1), W = Random((size_t)s.V * s.C, 2, -0.1f, 0.1f);
  auto tgt = RandomInts(s.N, 3, s.V);
  std::vector<float> dz(z.size()), dW(W.size()), scratch(k::cross_entropy_scratch_floats(s.V, chunk));
  for (auto _ : state) {
    double loss;
    if (with_grad)
      loss = k::cross_entropy_forward_backward(dz.data(), dW.data(), nullptr, scratch.data(), z.data(), W.data(),
                                               tgt.data(), s.N, s.C, s.V, chunk, 1.0f / s.N);
    else
      loss = k::cross_entropy_forward(nullptr, nullptr, scratch.data(), z.data(), W.data(), tgt.data(), s.N, s.C, s.V,
                                      chunk);
    benchmark::DoNotOptimize(loss);
  }
  FlopCounters(state, (with_grad ? 3.0 : 1.0) * 2.0 * s.N * s.V * s.C);
}

// Parameters: the dsv3-tiny (2,380,000) and dsv3-small-fp8 (9,745,152) checkpoint totals.
int64_t ParamCount(int which) { return which == 0 ? 2380000 : 9745152; }

void BM_AdamW(benchmark::State& state) {
  const int64_t n = ParamCount(static_cast<int>(state.range(0)));
  auto p = Random(n, 1), g = Random(n, 2, -0.01f, 0.01f);
  std::vector<kernels::bf16_t> m(n, 0), v(n, 0);
  int step = 0;
  for (auto _ : state) {
    k::adamw_update(p.data(), m.data(), v.data(), g.data(), n, ++step, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f);
    benchmark::DoNotOptimize(p.data());
  }
  MemoryCounters(state, 20.0 * n);  // read θ, g, m, v; write θ, m, v
}

void BM_ClipGradNorm(benchmark::State& state) {
  const int64_t n = ParamCount(static_cast<int>(state.range(0)));
  auto g = Random(n, 1, -0.01f, 0.01f);
  float* bufs[] = {g.data()};
  const int64_t sizes[] = {n};
  for (auto _ : state) {
    // max_norm above the norm: measures the norm pass only (+ a no-op apply).
    benchmark::DoNotOptimize(k::clip_grad_norm(bufs, sizes, 1, 1e30f));
  }
  MemoryCounters(state, 4.0 * n);
}

void ShapeArg(benchmark::internal::Benchmark* b) { b->ArgNames({"shapes"})->Arg(0)->Arg(1)->UseRealTime(); }
void ShapeAndFlag(const char* flag, benchmark::internal::Benchmark* b) {
  b->ArgNames({"shapes", flag})->Args({0, 0})->Args({0, 1})->Args({1, 0})->Args({1, 1})->UseRealTime();
}
void ShapeSeg(benchmark::internal::Benchmark* b) { ShapeAndFlag("seg", b); }
void ShapeBackward(benchmark::internal::Benchmark* b) { ShapeAndFlag("backward", b); }
void ShapeGrad(benchmark::internal::Benchmark* b) { ShapeAndFlag("grad", b); }

BENCHMARK(BM_AttentionForward)->Apply(ShapeSeg);
BENCHMARK(BM_AttentionBackward)->Apply(ShapeArg);
BENCHMARK(BM_RmsNormForward)->Apply(ShapeArg);
BENCHMARK(BM_RmsNormBackward)->Apply(ShapeArg);
BENCHMARK(BM_SwigluForward)->Apply(ShapeArg);
BENCHMARK(BM_SwigluBackward)->Apply(ShapeArg);
BENCHMARK(BM_Rope)->Apply(ShapeBackward);
BENCHMARK(BM_EmbeddingForward)->Apply(ShapeArg);
BENCHMARK(BM_EmbeddingBackward)->Apply(ShapeArg);
BENCHMARK(BM_RouterForward)->Apply(ShapeArg);
BENCHMARK(BM_RouterBackward)->Apply(ShapeArg);
BENCHMARK(BM_RouterBalanceLoss)->Apply(ShapeArg);
BENCHMARK(BM_PermutePlan)->Apply(ShapeArg);
BENCHMARK(BM_Permute)->Apply(ShapeBackward);
BENCHMARK(BM_Unpermute)->Apply(ShapeBackward);
BENCHMARK(BM_CrossEntropy)->Apply(ShapeGrad);
BENCHMARK(BM_AdamW)->Apply(ShapeArg);
BENCHMARK(BM_ClipGradNorm)->Apply(ShapeArg);

}  // namespace
}  // namespace shoal::bench
