// Training throughput and precision: runs the real training loop (worker/train) in this process on the demo and
// small presets and prints tokens/s and achieved model GFLOP/s as a fraction of the sgemm peak measured in the
// same run; then trains the same seed and data in fp32, bf16 and fp8 and prints the relative differences of the
// final losses (DeepSeek-V3's bar: FP8 within 0.25% of BF16).
//
//   bench_train [--steps 30] [--precision-steps 200] [--threads 0] [--skip-precision]
#include <CLI/CLI.hpp>
#include <cmath>
#include <cstdio>
#include <mutex>

#include "common/thread_pool.h"
#include "tools/bench/kernels/ceilings.h"
#include "worker/train/trainer.h"

namespace {
using namespace shoal;

struct Collect : train::TrainerEvents {
  std::mutex mu;
  std::vector<train::StepMetrics> steps;
  void OnStep(const train::StepMetrics& m) override {
    std::lock_guard<std::mutex> lock(mu);
    steps.push_back(m);
  }
  void OnCheckpoint(const train::CheckpointWritten&) override {}
  void OnCheckpointFailed(const Status&) override {}
};

std::string Spec(const std::string& preset, const std::string& precision, int steps, int seq_len, int micro,
                 int global) {
  char buf[1024];
  std::snprintf(buf, sizeof(buf),
                "name: bench\nmodel: {preset: %s}\nprecision: %s\n"
                "train: {seq_len: %d, micro_batch: %d, global_batch: %d, lr: 2.0e-3, min_lr: 2.0e-4, warmup_steps: "
                "%d, seed: 1234}\n"
                "phases:\n  - {name: pretrain, kind: pretrain, data: {builtin: arith}, steps: %d}\n",
                preset.c_str(), precision.c_str(), seq_len, micro, global, std::min(50, steps / 4 + 1), steps);
  return buf;
}

Result<std::vector<train::StepMetrics>> Train(const std::string& yaml, int threads) {
  ASSIGN_OR_RETURN(JobSpec spec, ParseJobSpec(yaml, "bench.yaml"));
  train::TrainerConfig config;
  config.spec = spec;
  config.job_id = "bench";
  config.threads = threads;
  config.eval_batches = 0;
  Collect events;
  ASSIGN_OR_RETURN(auto trainer, train::Trainer::Create(config, &events));
  std::atomic<bool> stop{false};
  RETURN_IF_ERROR(trainer->Run(stop));
  return events.steps;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"bench_train: training throughput vs the sgemm peak, and fp32/bf16/fp8 loss agreement"};
  int steps = 30, precision_steps = 200, threads = 0;
  bool skip_precision = false;
  app.add_option("--steps", steps, "Steps per throughput run (the first 5 are warm-up)")->default_val(30);
  app.add_option("--precision-steps", precision_steps, "Steps of each precision run")->default_val(200);
  app.add_option("--threads", threads, "Compute threads (0: all cores)")->default_val(0);
  app.add_flag("--skip-precision", skip_precision, "Only the throughput part");
  CLI11_PARSE(app, argc, argv);
  int nthreads = threads > 0 ? threads : bench::AllThreads();
  double peak = bench::SgemmPeakGflops(nthreads);
  std::printf("sgemm peak (1024^3, %d threads, measured now): %.1f GFLOP/s\n\n", nthreads, peak);

  std::printf("%-8s %-6s %10s %12s %10s %10s\n", "preset", "prec", "tokens/s", "GFLOP/s", "of peak", "loss");
  struct Run {
    const char* preset;
    const char* precision;
    int seq, micro, global;
  };
  for (Run r : {Run{"demo", "fp32", 128, 8, 16}, Run{"small", "fp32", 128, 8, 16}, Run{"small", "bf16", 128, 8, 16},
                Run{"small", "fp8", 128, 8, 16}}) {
    auto out = Train(Spec(r.preset, r.precision, steps, r.seq, r.micro, r.global), threads);
    if (!out.ok()) {
      std::fprintf(stderr, "%s %s: %s\n", r.preset, r.precision, out.status().ToString().c_str());
      return 1;
    }
    double tps = 0, gf = 0;
    int n = 0;
    for (size_t i = 5; i < out->size(); ++i, ++n) {
      tps += (*out)[i].tokens_per_s;
      gf += (*out)[i].gflops;
    }
    tps /= std::max(1, n);
    gf /= std::max(1, n);
    std::printf("%-8s %-6s %10.0f %12.1f %9.1f%% %10.4f\n", r.preset, r.precision, tps, gf, 100.0 * gf / peak,
                out->back().loss);
  }
  if (skip_precision) return 0;

  std::printf("\nSame seed and data, demo preset, %d steps; final loss = mean of the last 20 steps:\n",
              precision_steps);
  double final_loss[3] = {0, 0, 0};
  const char* names[3] = {"fp32", "bf16", "fp8"};
  for (int p = 0; p < 3; ++p) {
    auto out = Train(Spec("demo", names[p], precision_steps, 128, 8, 16), threads);
    if (!out.ok()) {
      std::fprintf(stderr, "%s: %s\n", names[p], out.status().ToString().c_str());
      return 1;
    }
    double sum = 0;
    int n = 0;
    for (size_t i = out->size() > 20 ? out->size() - 20 : 0; i < out->size(); ++i, ++n) sum += (*out)[i].loss;
    final_loss[p] = sum / n;
    std::printf("  %-5s final loss %.5f (first step %.4f)\n", names[p], final_loss[p], out->front().loss);
  }
  std::printf("  bf16 vs fp32: %+.3f%%   fp8 vs fp32: %+.3f%%   fp8 vs bf16: %+.3f%%  (paper's bar for fp8 vs bf16: "
              "< 0.25%%)\n",
              100 * (final_loss[1] / final_loss[0] - 1), 100 * (final_loss[2] / final_loss[0] - 1),
              100 * (final_loss[2] / final_loss[1] - 1));
  return 0;
}
