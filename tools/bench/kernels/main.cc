// bench_kernels: Google Benchmark over the kernels, printing the machine's ceilings first so that every
// ratio (frac_peak, frac_memcpy) is against numbers measured in this same run. GPU benchmarks are registered
// only when a CUDA device is present.
#include <benchmark/benchmark.h>

#include <cstring>

#include "kernels/device.h"
#include "tools/bench/kernels/ceilings.h"

namespace shoal::bench {
// Defined in fp8_bench.cc (a no-op in builds without CUDA).
void RegisterGpuBenchmarks();
}  // namespace shoal::bench

int main(int argc, char** argv) {
  bool list_only = false;
  for (int i = 1; i < argc; ++i) list_only |= std::strncmp(argv[i], "--benchmark_list_tests", 22) == 0;
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  if (!list_only) shoal::bench::PrintCeilings(stdout);
  if (shoal::kernels::CudaDeviceCount() > 0) shoal::bench::RegisterGpuBenchmarks();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
