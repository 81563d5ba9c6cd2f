#include "tools/bench/kernels/ceilings.h"

#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "common/thread_pool.h"
#include "kernels/cpu/blas.h"
#include "kernels/device.h"

// GCC 12's AVX-512 reductions start from _mm256_undefined_*() and trip -Wuninitialized falsely.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace shoal::bench {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Memoises f(threads) per thread count.
template <typename F>
double Cached(std::map<int, double>& cache, std::mutex& mu, int threads, F&& measure) {
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(threads);
  if (it != cache.end()) return it->second;
  const double v = measure();
  cache[threads] = v;
  return v;
}

double MeasureSgemm(int threads) {
  constexpr int64_t n = 1024;
  std::vector<float> a(n * n), b(n * n), c(n * n);
  for (int64_t i = 0; i < n * n; ++i) {
    a[i] = static_cast<float>((i * 7) % 13) * 0.01f;
    b[i] = static_cast<float>((i * 5) % 11) * 0.01f;
  }
  kernels::cpu::ScopedBlasThreads scoped(threads);
  double best = 1e30;
  for (int rep = 0; rep < 12; ++rep) {  // the first runs warm up caches and OpenBLAS's threads
    const auto t0 = Clock::now();
    kernels::cpu::sgemm(false, false, n, n, n, 1.f, a.data(), n, b.data(), n, 0.f, c.data(), n);
    best = std::min(best, Seconds(t0));
  }
  return 2.0 * n * n * n / best / 1e9;
}

constexpr int kFmaChains = 12;  // independent accumulators: > latency × pipes

__attribute__((target("avx512f"))) float FmaLoopAvx512(int64_t iters) {
  __m512 acc[kFmaChains];
  for (int j = 0; j < kFmaChains; ++j) acc[j] = _mm512_set1_ps(0.5f + j);
  const __m512 mul = _mm512_set1_ps(0.999f), add = _mm512_set1_ps(0.001f);
  for (int64_t i = 0; i < iters; ++i) {
#pragma GCC unroll 12  // keeps the accumulators in registers
    for (int j = 0; j < kFmaChains; ++j) acc[j] = _mm512_fmadd_ps(acc[j], mul, add);
  }
  __m512 sum = acc[0];
  for (int j = 1; j < kFmaChains; ++j) sum = _mm512_add_ps(sum, acc[j]);
  return _mm512_reduce_add_ps(sum);
}

__attribute__((target("avx2,fma"))) float FmaLoopAvx2(int64_t iters) {
  __m256 acc[kFmaChains];
  for (int j = 0; j < kFmaChains; ++j) acc[j] = _mm256_set1_ps(0.5f + j);
  const __m256 mul = _mm256_set1_ps(0.999f), add = _mm256_set1_ps(0.001f);
  for (int64_t i = 0; i < iters; ++i) {
#pragma GCC unroll 12
    for (int j = 0; j < kFmaChains; ++j) acc[j] = _mm256_fmadd_ps(acc[j], mul, add);
  }
  float out[8];
  __m256 sum = acc[0];
  for (int j = 1; j < kFmaChains; ++j) sum = _mm256_add_ps(sum, acc[j]);
  _mm256_storeu_ps(out, sum);
  return out[0];
}

double MeasureFma(int threads) {
  const bool avx512 = __builtin_cpu_supports("avx512f");
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (!avx512 && !avx2) return 0;
  const int lanes = avx512 ? 16 : 8;
  const int64_t iters = 20'000'000;
  double best = 1e30;
  std::vector<float> sink(threads);
  for (int rep = 0; rep < 3; ++rep) {
    std::vector<std::thread> workers;
    const auto t0 = Clock::now();
    for (int t = 0; t < threads; ++t) {
      workers.emplace_back([&, t] { sink[t] = avx512 ? FmaLoopAvx512(iters) : FmaLoopAvx2(iters); });
    }
    for (auto& w : workers) w.join();
    best = std::min(best, Seconds(t0));
  }
  return 2.0 * lanes * kFmaChains * iters * threads / best / 1e9;
}

double MeasureMemcpy() {
  constexpr size_t kBytes = size_t{256} << 20;
  std::unique_ptr<char[]> src(new char[kBytes]), dst(new char[kBytes]);
  std::memset(src.get(), 1, kBytes);  // fault the pages in before timing
  std::memset(dst.get(), 2, kBytes);
  double best = 1e30;
  for (int rep = 0; rep < 5; ++rep) {
    const auto t0 = Clock::now();
    std::memcpy(dst.get(), src.get(), kBytes);
    best = std::min(best, Seconds(t0));
  }
  return kBytes / best / 1e9;
}

int Resolve(int threads) { return threads > 0 ? threads : AllThreads(); }

}  // namespace

int AllThreads() { return ThreadPool::Default().num_threads(); }

double SgemmPeakGflops(int threads) {
  static std::mutex mu;
  static std::map<int, double> cache;
  const int n = Resolve(threads);
  return Cached(cache, mu, n, [n] { return MeasureSgemm(n); });
}

double FmaPeakGflops(int threads) {
  static std::mutex mu;
  static std::map<int, double> cache;
  const int n = Resolve(threads);
  return Cached(cache, mu, n, [n] { return MeasureFma(n); });
}

double MemcpyGBs() {
  static std::mutex mu;
  static std::map<int, double> cache;
  return Cached(cache, mu, 0, [] { return MeasureMemcpy(); });
}

void PrintCeilings(std::FILE* out) {
  const int all = AllThreads();
  std::fprintf(out, "shoal bench_kernels: machine ceilings, measured in this run\n");
  std::fprintf(out, "  %-40s %8.1f GFLOP/s\n", "OpenBLAS sgemm 1024^3, 1 thread", SgemmPeakGflops(1));
  if (all > 1) {
    std::fprintf(out, "  %-40s %8.1f GFLOP/s\n", ("OpenBLAS sgemm 1024^3, " + std::to_string(all) + " threads").c_str(),
                 SgemmPeakGflops(all));
  }
  std::fprintf(out, "  %-40s %8.1f GFLOP/s\n", "FP32 FMA loop, 1 thread", FmaPeakGflops(1));
  if (all > 1) {
    std::fprintf(out, "  %-40s %8.1f GFLOP/s\n", ("FP32 FMA loop, " + std::to_string(all) + " threads").c_str(),
                 FmaPeakGflops(all));
  }
  std::fprintf(out, "  %-40s %8.1f GB/s\n", "memcpy 256 MB, 1 thread", MemcpyGBs());
  std::fprintf(out, "  %-40s %s\n", "CUDA device", kernels::CudaDeviceDescription().c_str());
  std::fprintf(out, "  frac_peak counters are relative to the sgemm line with the same thread count\n\n");
  std::fflush(out);
}

}  // namespace shoal::bench
