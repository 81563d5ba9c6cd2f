// `shoal plan SPEC --cluster NODESxGPUS`: what a job would look like on a hypothetical cluster, without one.
// Places the job (coordinator/placement.h) on NODES hosts of GPUS workers each, sizes every pipeline rank's memory
// (worker/model PlanMemory per held stage and expert range; ZeRO-1 optimizer state; activations times the peak
// in-flight micro-batches of the schedule), and simulates the pipeline schedule (schedule/simulator.h) with
// per-stage op costs estimated from the model's FLOPs and an assumed device throughput, for the bubble and a
// step time. Pure apart from reading the spec file; BuildPlan is what the tests call.
//
// Cost model (an estimate, said so in the output): per micro-batch and stage, F = 2·activated parameters·tokens
// + causal attention (2·n_h·(d_qk + d_v)·(T+1)/2 per token per layer), B = the same with attention twice, W =
// 2·activated parameters·tokens (attention has no weights); the head counts for the last stage and for each MTP
// layer. Seconds = FLOPs / (tflops·1e12). A pipeline message costs its bf16 activation bytes / link bandwidth.
// Not modelled: the expert all-to-all (DualPipe hides it behind the paired micro-batch), the data-parallel
// gradient reduction and the optimizer step.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "spec/job_spec.h"

namespace shoal::cli {

struct PlanOptions {
  std::string spec_path;
  std::string cluster;             // "NODESxGPUS", e.g. "256x8"
  double tflops = 0;               // achieved TFLOP/s per worker; 0 = 400 (cuda) or 0.1 (cpu)
  double link_gbs = 0;             // pipeline link GB/s; 0 = 50 (cuda, InfiniBand) or 5 (cpu, TCP)
  double device_memory_gib = -1;   // per worker; < 0 = 80 (cuda, H800) or unchecked (cpu)
};

struct PlanStageCost {
  int stage = 0;
  double forward_flops = 0, backward_input_flops = 0, backward_weight_flops = 0;  // per micro-batch
  double f_s = 0, b_s = 0, w_s = 0;
};

// One pipeline rank's worker (every data-parallel replica of it has the same sizes).
struct PlanWorkerMemory {
  int pipeline_rank = 0;
  std::vector<int> stages;
  int64_t expert_begin = 0, expert_end = 0;
  int64_t params = 0;                    // elements held
  int64_t param_bytes = 0;               // fp32 master weights
  int64_t grad_bytes = 0;
  int64_t optimizer_bytes = 0;           // after ZeRO-1 sharding
  int64_t optimizer_unsharded_bytes = 0;
  int64_t weight_cache_bytes = 0;        // bf16/fp8 copies
  std::vector<int64_t> activation_bytes_per_microbatch;  // per held stage
  int peak_in_flight = 0;
  std::vector<int> in_flight_at_peak;    // per held stage
  int64_t activation_bytes = 0;          // Σ in_flight_at_peak · activation_bytes_per_microbatch
  int64_t total_bytes() const {
    return param_bytes + grad_bytes + optimizer_bytes + weight_cache_bytes + activation_bytes;
  }
};

struct PlanReport {
  JobSpec spec;
  int nodes = 0, gpus_per_node = 0;
  DeviceKind device = DeviceKind::kCpu;
  double tflops = 0, link_gbs = 0, device_memory_gib = 0;  // 0 memory = unchecked
  // Model.
  int64_t total_params = 0;       // main model (embedding, layers, head)
  int64_t checkpoint_params = 0;  // incl. MTP
  int64_t activated_params = 0;   // per token, main model incl. embedding and head
  // Placement.
  std::string placement_text;     // DescribePlacement, its worker rows cut to a few for big layouts
  int num_ep_groups = 0;
  int ep_groups_single_host = 0;
  int min_hosts_per_ep_group = 0, max_hosts_per_ep_group = 0;
  int hosts_used = 0;
  std::vector<std::string> notes;
  // Memory and schedule.
  std::vector<PlanWorkerMemory> workers;  // per pipeline rank
  std::vector<PlanStageCost> stage_costs;
  int64_t num_micro_batches = 0;
  int64_t tokens_per_step = 0;
  double step_s = 0;
  double bubble_s = 0;            // the largest rank's bubble
  double bubble_min_s = 0;        // the busiest rank's (the schedule's own bubble when stages differ)
  double bubble_fraction = 0;     // idle share of all ranks' time
  double formula_bubble_s = 0;    // ANCHORS.md's formula with the mean stage costs
  double comm_latency_s = 0;
  double model_flops_per_step = 0;  // Σ over stages and micro-batches of F + B + W FLOPs, times DP
  double tokens_per_s_per_worker = 0;
  double utilization = 0;         // model FLOPs / (workers · tflops · step)
};

// Parses "NODESxGPUS" (both positive).
Result<std::pair<int, int>> ParseCluster(std::string_view text);

// The plan of `spec` on the cluster of `options` (options.spec_path is not read).
Result<PlanReport> BuildPlan(const JobSpec& spec, const PlanOptions& options);

std::string PlanText(const PlanReport& report);
std::string PlanJson(const PlanReport& report);

// The command: 0, or 1 with the reason on stderr.
int PlanCommand(const PlanOptions& options, bool json);

}  // namespace shoal::cli
