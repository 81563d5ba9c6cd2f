// FP8 benchmarks. CPU: quantisation bandwidth (vs memcpy), the FP8-emulated block-scaled GEMM's speed (vs sgemm
// peak) and its relative error against fp32 per shape, next to per-tensor scaling; and block vs per-tensor
// scaling on data with outliers. GPU (registered only with a device): bf16 cuBLASLt vs FP8 block-scaled
// cuBLASLt (and our SIMT kernel) in TFLOP/s on 8192×8192×7168 and DeepSeek-V3 expert shapes.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/blas.h"
#include "kernels/cpu/fp8_gemm.h"
#include "kernels/fp8.h"
#include "tools/bench/kernels/ceilings.h"

#ifdef SHOAL_HAVE_CUDA
#include <cuda_runtime.h>

#include "kernels/arena.h"
#include "kernels/cuda/fp8.h"
#include "kernels/cuda/gemm.h"
#endif

namespace shoal::bench {
namespace {

using benchmark::Counter;
using kernels::Fp8Matrix;
using kernels::Fp8Tiling;
namespace cpu = kernels::cpu;

std::vector<float> Random(int64_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.f, 1.f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(gen);
  return v;
}

struct Quantised {
  std::vector<uint8_t> q;
  std::vector<float> s;
  Fp8Matrix m;
};

Quantised Quantise(const std::vector<float>& x, int64_t rows, int64_t cols, Fp8Tiling tiling) {
  Quantised out{std::vector<uint8_t>(rows * cols), std::vector<float>(kernels::Fp8NumScales(rows, cols, tiling)), {}};
  kernels::quantize_fp8(out.q.data(), out.s.data(), x.data(), rows, cols, tiling, false);
  out.m = Fp8Matrix{out.q.data(), out.s.data(), rows, cols, tiling};
  return out;
}

// ||x - ref||_F / ||ref||_F over the rows in [0, rows) for which keep(row) holds.
template <typename Keep>
double FrobRelErr(const std::vector<float>& x, const std::vector<float>& ref, int64_t cols, Keep&& keep) {
  double num = 0, den = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    if (!keep(static_cast<int64_t>(i) / cols)) continue;
    num += (double(x[i]) - ref[i]) * (double(x[i]) - ref[i]);
    den += double(ref[i]) * ref[i];
  }
  return std::sqrt(num / den);
}

Fp8Tiling TilingArg(int64_t a) {
  return a == 0 ? kernels::kFp8Tile1x128 : a == 1 ? kernels::kFp8Block128x128 : kernels::kFp8Tile128x1;
}

// Bytes moved: fp32 read + 1 byte written per element (scales are noise).
void BM_Fp8Quantize(benchmark::State& state) {
  const int64_t rows = state.range(0), cols = state.range(1);
  const Fp8Tiling tiling = TilingArg(state.range(2));
  auto x = Random(rows * cols, 1);
  std::vector<uint8_t> q(rows * cols);
  std::vector<float> s(kernels::Fp8NumScales(rows, cols, tiling));
  for (auto _ : state) {
    kernels::quantize_fp8(q.data(), s.data(), x.data(), rows, cols, tiling, false);
    benchmark::DoNotOptimize(q.data());
  }
  const double bytes = 5.0 * rows * cols;
  state.counters["GBps"] = Counter(bytes / 1e9, Counter::kIsIterationInvariantRate);
  state.counters["frac_memcpy"] = Counter(bytes / (MemcpyGBs() * 1e9), Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_Fp8Quantize)
    ->ArgNames({"rows", "cols", "tiling"})  // tiling: 0 = 1x128, 1 = 128x128, 2 = 128x1
    ->Args({4096, 4096, 0})
    ->Args({4096, 4096, 1})
    ->Args({4096, 4096, 2})
    ->UseRealTime();

// out[M,N] = x[M,K] (1×128) · w[N,K]ᵀ (128×128), against fp32 sgemm on the same unquantised data.
void BM_Fp8Gemm(benchmark::State& state) {
  const int64_t M = state.range(0), N = state.range(1), K = state.range(2);
  auto x = Random(M * K, 2), w = Random(N * K, 3);
  Quantised qx = Quantise(x, M, K, kernels::kFp8Tile1x128), qw = Quantise(w, N, K, kernels::kFp8Block128x128);
  Quantised tx = Quantise(x, M, K, kernels::Fp8PerTensor(M, K)), tw = Quantise(w, N, K, kernels::Fp8PerTensor(N, K));
  std::vector<float> ref(M * N), out(M * N), out_tensor(M * N);
  cpu::sgemm(false, true, M, N, K, 1.f, x.data(), K, w.data(), K, 0.f, ref.data(), N);
  cpu::fp8_gemm(out_tensor.data(), tx.m, false, tw.m, true, false);
  for (auto _ : state) {
    cpu::fp8_gemm(out.data(), qx.m, false, qw.m, true, false);
    benchmark::DoNotOptimize(out.data());
  }
  auto all = [](int64_t) { return true; };
  const double flops = 2.0 * M * N * K;
  state.counters["GFLOPS"] = Counter(flops / 1e9, Counter::kIsIterationInvariantRate);
  state.counters["frac_peak"] = Counter(flops / (SgemmPeakGflops(0) * 1e9), Counter::kIsIterationInvariantRate);
  state.counters["err%_block"] = 100 * FrobRelErr(out, ref, N, all);
  state.counters["err%_tensor"] = 100 * FrobRelErr(out_tensor, ref, N, all);
}
BENCHMARK(BM_Fp8Gemm)
    ->ArgNames({"M", "N", "K"})
    ->Args({1024, 1024, 1024})
    ->Args({2048, 384, 128})  // dsv3-tiny dense FFN up
    ->Args({4096, 768, 256})  // dsv3-small-fp8 dense FFN up
    ->Args({4096, 256, 768})  // dsv3-small-fp8 dense FFN down
    ->Args({512, 512, 4096})  // long K
    ->UseRealTime();

// Activations with a few outliers (×10^range(0)); errors over the tokens without one and over all tokens.
void BM_Fp8Outliers(benchmark::State& state) {
  const int64_t M = 256, N = 256, K = 1024;
  const float magnitude = std::pow(10.f, static_cast<float>(state.range(0)));
  auto x = Random(M * K, 4), w = Random(N * K, 5);
  std::vector<bool> outlier_row(M, false);
  for (int i = 0; i < 8; ++i) {
    x[(i * 37 % M) * K + (i * 101 % K)] *= magnitude;
    outlier_row[i * 37 % M] = true;
  }
  Quantised qx = Quantise(x, M, K, kernels::kFp8Tile1x128), qw = Quantise(w, N, K, kernels::kFp8Block128x128);
  Quantised tx = Quantise(x, M, K, kernels::Fp8PerTensor(M, K)), tw = Quantise(w, N, K, kernels::Fp8PerTensor(N, K));
  std::vector<float> ref(M * N), blk(M * N), ten(M * N);
  cpu::sgemm(false, true, M, N, K, 1.f, x.data(), K, w.data(), K, 0.f, ref.data(), N);
  cpu::fp8_gemm(ten.data(), tx.m, false, tw.m, true, false);
  for (auto _ : state) {
    cpu::fp8_gemm(blk.data(), qx.m, false, qw.m, true, false);
    benchmark::DoNotOptimize(blk.data());
  }
  auto others = [&](int64_t r) { return !outlier_row[r]; };
  auto all = [](int64_t) { return true; };
  state.counters["err%_block_others"] = 100 * FrobRelErr(blk, ref, N, others);
  state.counters["err%_tensor_others"] = 100 * FrobRelErr(ten, ref, N, others);
  state.counters["err%_block_all"] = 100 * FrobRelErr(blk, ref, N, all);
  state.counters["err%_tensor_all"] = 100 * FrobRelErr(ten, ref, N, all);
}
BENCHMARK(BM_Fp8Outliers)->ArgNames({"log10_outlier"})->DenseRange(2, 6)->Iterations(3)->UseRealTime();

}  // namespace

#ifdef SHOAL_HAVE_CUDA
namespace {

namespace kcuda = kernels::cuda;

struct Gpu {
  std::unique_ptr<kcuda::BlasContext> ctx;
  cudaStream_t stream = nullptr;
  cudaEvent_t start = nullptr, stop = nullptr;
};

Gpu& TheGpu() {
  static Gpu gpu = [] {
    Gpu g;
    auto ctx = kcuda::BlasContext::Create();
    if (ctx.ok()) g.ctx = std::move(*ctx);
    cudaStreamCreate(&g.stream);
    cudaEventCreate(&g.start);
    cudaEventCreate(&g.stop);
    return g;
  }();
  return gpu;
}

std::map<std::string, double>& Bf16Tflops() {
  static std::map<std::string, double> m;
  return m;
}

std::string ShapeKey(int64_t M, int64_t N, int64_t K) {
  return std::to_string(M) + "x" + std::to_string(N) + "x" + std::to_string(K);
}

// Uniform [-1, 1) fill, cheap enough for 10^8 elements.
void FillDevice(float* dst, int64_t n, uint32_t seed) {
  std::vector<float> host(n);
  uint32_t s = seed * 2654435761u + 1;
  for (float& v : host) {
    s = s * 1664525u + 1013904223u;
    v = static_cast<float>(s >> 8) * (2.f / 16777216.f) - 1.f;
  }
  cudaMemcpy(dst, host.data(), n * sizeof(float), cudaMemcpyHostToDevice);
}

// Times launch() with CUDA events; reports TFLOP/s and returns it (0 when it failed).
template <typename Launch>
double TimeOnGpu(benchmark::State& state, double flops, Launch&& launch) {
  Gpu& gpu = TheGpu();
  for (int i = 0; i < 2; ++i) {  // warm up (heuristics, clocks)
    Status st = launch();
    if (!st.ok()) {
      state.SkipWithError(st.ToString().c_str());
      return 0;
    }
  }
  cudaStreamSynchronize(gpu.stream);
  double total_s = 0;
  int64_t iters = 0;
  for (auto _ : state) {
    cudaEventRecord(gpu.start, gpu.stream);
    Status st = launch();
    cudaEventRecord(gpu.stop, gpu.stream);
    cudaEventSynchronize(gpu.stop);
    float ms = 0;
    cudaEventElapsedTime(&ms, gpu.start, gpu.stop);
    state.SetIterationTime(ms / 1e3);
    if (!st.ok()) {
      state.SkipWithError(st.ToString().c_str());
      return 0;
    }
    total_s += ms / 1e3;
    ++iters;
  }
  state.counters["TFLOPS"] = Counter(flops / 1e12, Counter::kIsIterationInvariantRate);
  return total_s > 0 ? flops * iters / total_s / 1e12 : 0;
}

void GpuBf16(benchmark::State& state, int64_t M, int64_t N, int64_t K) {
  Gpu& gpu = TheGpu();
  if (!gpu.ctx) return state.SkipWithError("cuBLASLt context could not be created");
  using kernels::DType;
  auto arena = kernels::Arena::Create({{"x", DType::kF32, {M, K}},
                                       {"w", DType::kF32, {N, K}},
                                       {"xb", DType::kBF16, {M, K}},
                                       {"wb", DType::kBF16, {N, K}},
                                       {"y", DType::kBF16, {M, N}}},
                                      kernels::CudaAllocator());
  if (!arena.ok()) return state.SkipWithError(arena.status().ToString().c_str());
  kernels::Arena& a = **arena;
  // bf16 operands: fill fp32 on the device, then round through a bf16 copy on the host.
  std::vector<kernels::bf16_t> hx(M * K), hw(N * K);
  {
    std::vector<float> tmp(std::max(M, N) * K);
    FillDevice(a.view(0).as<float>(), M * K, 1);
    FillDevice(a.view(1).as<float>(), N * K, 2);
    cudaMemcpy(tmp.data(), a.view(0).data, M * K * sizeof(float), cudaMemcpyDeviceToHost);
    for (int64_t i = 0; i < M * K; ++i) hx[i] = kernels::f32_to_bf16(tmp[i]);
    cudaMemcpy(tmp.data(), a.view(1).data, N * K * sizeof(float), cudaMemcpyDeviceToHost);
    for (int64_t i = 0; i < N * K; ++i) hw[i] = kernels::f32_to_bf16(tmp[i]);
  }
  cudaMemcpy(a.view(2).data, hx.data(), hx.size() * 2, cudaMemcpyHostToDevice);
  cudaMemcpy(a.view(3).data, hw.data(), hw.size() * 2, cudaMemcpyHostToDevice);
  const double tflops = TimeOnGpu(state, 2.0 * M * N * K, [&] {
    return kcuda::gemm(*gpu.ctx, false, true, M, N, K, 1.f, a.view(2).data, K, a.view(3).data, K, 0.f, a.view(4).data,
                       N, DType::kBF16, DType::kBF16, gpu.stream);
  });
  if (tflops > 0) Bf16Tflops()[ShapeKey(M, N, K)] = tflops;  // for the FP8 rows' x_bf16 ratio
}

// Quantises x (1×128) and w (128×128) on the device, then runs `backend` (0: cuBLASLt, 1: SIMT kernel).
void GpuFp8(benchmark::State& state, int64_t M, int64_t N, int64_t K, int backend) {
  Gpu& gpu = TheGpu();
  if (!gpu.ctx) return state.SkipWithError("cuBLASLt context could not be created");
  using kernels::DType;
  const auto t1 = kernels::kFp8Tile1x128, t2 = kernels::kFp8Block128x128;
  auto arena = kernels::Arena::Create({{"x", DType::kF32, {M, K}},
                                       {"w", DType::kF32, {N, K}},
                                       {"xq", DType::kF8E4M3, {M, K}},
                                       {"wq", DType::kF8E4M3, {N, K}},
                                       {"xs", DType::kF32, {kernels::Fp8NumScales(M, K, t1)}},
                                       {"ws", DType::kF32, {kernels::Fp8NumScales(N, K, t2)}},
                                       {"xs_lt", DType::kF32, {kcuda::CublasLtScaleCount(M, K, t1)}},
                                       {"ws_lt", DType::kF32, {kcuda::CublasLtScaleCount(N, K, t2)}},
                                       {"y", backend == 0 ? DType::kBF16 : DType::kF32, {M, N}}},
                                      kernels::CudaAllocator());
  if (!arena.ok()) return state.SkipWithError(arena.status().ToString().c_str());
  kernels::Arena& a = **arena;
  FillDevice(a.view(0).as<float>(), M * K, 1);
  FillDevice(a.view(1).as<float>(), N * K, 2);
  Fp8Matrix x{a.view(2).as<uint8_t>(), a.view(4).as<float>(), M, K, t1};
  Fp8Matrix w{a.view(3).as<uint8_t>(), a.view(5).as<float>(), N, K, t2};
  Status st = kcuda::quantize_fp8(a.view(2).as<uint8_t>(), a.view(4).as<float>(), a.view(0).as<float>(), M, K, t1,
                                  false, gpu.stream);
  if (st.ok()) {
    st = kcuda::quantize_fp8(a.view(3).as<uint8_t>(), a.view(5).as<float>(), a.view(1).as<float>(), N, K, t2, false,
                             gpu.stream);
  }
  if (st.ok()) st = kcuda::fp8_scales_to_cublaslt(a.view(6).as<float>(), x, gpu.stream);
  if (st.ok()) st = kcuda::fp8_scales_to_cublaslt(a.view(7).as<float>(), w, gpu.stream);
  if (!st.ok()) return state.SkipWithError(st.ToString().c_str());
  Fp8Matrix x_lt = x, w_lt = w;
  x_lt.scale = a.view(6).as<float>();
  w_lt.scale = a.view(7).as<float>();
  const double tflops = TimeOnGpu(state, 2.0 * M * N * K, [&] {
    if (backend == 0) return kcuda::fp8_gemm_cublaslt(*gpu.ctx, a.view(8).data, DType::kBF16, x_lt, w_lt, gpu.stream);
    return kcuda::fp8_gemm(a.view(8).as<float>(), x, false, w, true, false, gpu.stream);
  });
  // FP8 speed over bf16 cuBLASLt on the same shape, both measured in this run.
  auto bf16 = Bf16Tflops().find(ShapeKey(M, N, K));
  if (tflops > 0 && bf16 != Bf16Tflops().end()) state.counters["x_bf16"] = tflops / bf16->second;
}

void GpuQuantize(benchmark::State& state, int64_t rows, int64_t cols) {
  Gpu& gpu = TheGpu();
  using kernels::DType;
  const auto t1 = kernels::kFp8Tile1x128;
  auto arena = kernels::Arena::Create({{"x", DType::kF32, {rows, cols}},
                                       {"q", DType::kF8E4M3, {rows, cols}},
                                       {"s", DType::kF32, {kernels::Fp8NumScales(rows, cols, t1)}}},
                                      kernels::CudaAllocator());
  if (!arena.ok()) return state.SkipWithError(arena.status().ToString().c_str());
  kernels::Arena& a = **arena;
  FillDevice(a.view(0).as<float>(), rows * cols, 3);
  TimeOnGpu(state, 0, [&] {
    return kcuda::quantize_fp8(a.view(1).as<uint8_t>(), a.view(2).as<float>(), a.view(0).as<float>(), rows, cols, t1,
                               false, gpu.stream);
  });
  state.counters.erase("TFLOPS");
  state.counters["GBps"] = Counter(5.0 * rows * cols / 1e9, Counter::kIsIterationInvariantRate);
}

}  // namespace

void RegisterGpuBenchmarks() {
  struct Shape {
    int64_t M, N, K;
    const char* name;
  };
  const Shape shapes[] = {
      {8192, 8192, 7168, "dense_8192x8192x7168"},
      {4096, 4096, 7168, "v3_expert_gate_up_4096tok"},  // gate+up fused: 2 × 2048 outputs, K = 7168
      {4096, 7168, 2048, "v3_expert_down_4096tok"},
  };
  for (const Shape& s : shapes) {
    benchmark::RegisterBenchmark(("GPU/bf16_cublaslt/" + std::string(s.name)).c_str(), [s](benchmark::State& st) {
      GpuBf16(st, s.M, s.N, s.K);
    })->UseManualTime();
    benchmark::RegisterBenchmark(("GPU/fp8_blockscaled_cublaslt/" + std::string(s.name)).c_str(),
                                 [s](benchmark::State& st) { GpuFp8(st, s.M, s.N, s.K, 0); })
        ->UseManualTime();
  }
  // Our SIMT kernel is a correctness twin, not a fast path: one modest shape for scale.
  benchmark::RegisterBenchmark("GPU/fp8_blockscaled_simt/2048x2048x2048", [](benchmark::State& st) {
    GpuFp8(st, 2048, 2048, 2048, 1);
  })->UseManualTime();
  benchmark::RegisterBenchmark("GPU/quantize_1x128/8192x7168", [](benchmark::State& st) {
    GpuQuantize(st, 8192, 7168);
  })->UseManualTime();
}
#else
void RegisterGpuBenchmarks() {}
#endif

}  // namespace shoal::bench
