// The machine's ceilings, measured in the same run as the benchmarks that are judged against them
// (STYLE.md §16): OpenBLAS sgemm 1024³, a register-blocked FMA loop, and memcpy of 256 MB. Each is measured
// once, lazily, on first use and cached for the rest of the process. Benchmarks report ratios:
//
//   #include "tools/bench/kernels/ceilings.h"
//   state.counters["frac_peak"] = benchmark::Counter(flops_per_iter / (shoal::bench::SgemmPeakGflops(0) * 1e9),
//                                                    benchmark::Counter::kIsIterationInvariantRate);
//   state.counters["frac_memcpy"] = benchmark::Counter(bytes_per_iter / (shoal::bench::MemcpyGBs() * 1e9),
//                                                      benchmark::Counter::kIsIterationInvariantRate);
// (with ->UseRealTime(), so the rate is per wall-clock second).
#pragma once

#include <cstdio>

namespace shoal::bench {

// Threads the kernels use by default (ThreadPool::Default()).
int AllThreads();
// Best-of-N OpenBLAS sgemm 1024×1024×1024 in GFLOP/s with `threads` OpenBLAS threads (<= 0: AllThreads()).
double SgemmPeakGflops(int threads);
// FP32 FMA peak of a register-blocked loop (AVX-512, else AVX2+FMA, else 0) on `threads` threads.
double FmaPeakGflops(int threads);
// Single-threaded memcpy of 256 MB, bytes copied per second / 1e9.
double MemcpyGBs();
// The table printed when bench_kernels starts.
void PrintCeilings(std::FILE* out);

}  // namespace shoal::bench
