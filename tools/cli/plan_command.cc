#include "tools/cli/plan_command.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "coordinator/placement.h"
#include "schedule/schedule.h"
#include "schedule/simulator.h"
#include "spec/stage_layout.h"
#include "worker/model/model.h"

namespace shoal::cli {
namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

schedule::ScheduleKind ToScheduleKind(PipelineSchedule s) {
  switch (s) {
    case PipelineSchedule::k1F1B: return schedule::ScheduleKind::k1F1B;
    case PipelineSchedule::kZB1P: return schedule::ScheduleKind::kZB1P;
    case PipelineSchedule::kDualPipe: return schedule::ScheduleKind::kDualPipe;
    case PipelineSchedule::kDualPipeV: return schedule::ScheduleKind::kDualPipeV;
  }
  return schedule::ScheduleKind::k1F1B;
}

// "7" -> "007" (at least `width` digits).
std::string Padded(int v, int width) {
  std::string d = std::to_string(v);
  return d.size() >= static_cast<size_t>(width) ? d : std::string(width - d.size(), '0') + d;
}

ClusterView HypotheticalCluster(int nodes, int gpus, DeviceKind device, double memory_gib) {
  ClusterView c;
  const int host_digits = std::max<int>(3, static_cast<int>(std::to_string(nodes - 1).size()));
  for (int n = 0; n < nodes; ++n) {
    const std::string host = "node" + Padded(n, host_digits);
    for (int g = 0; g < gpus; ++g) {
      WorkerInfo w;
      w.worker_id = "w" + Padded(n * gpus + g, 6);
      w.name = host + (device == DeviceKind::kCuda ? "-gpu" : "-cpu") + std::to_string(g);
      w.host = host;
      w.device = device;
      w.device_memory_bytes = static_cast<int64_t>(memory_gib * kGiB);
      w.cores = 16;
      c.workers.push_back(std::move(w));
    }
  }
  return c;
}

// FLOPs of one micro-batch through one stage (see the header's cost model).
PlanStageCost StageFlops(const ModelConfig& c, const ParamCounts& p, const StageLayout& s, int64_t tokens,
                         int64_t seq_len) {
  const double attention = static_cast<double>(c.num_attention_heads) * (c.qk_head_dim() + c.v_head_dim) *
                           static_cast<double>(seq_len + 1);  // per token per layer, forward, causal
  const double head = static_cast<double>(c.vocab_size) * c.hidden_size;
  double params = 0, attn = 0;
  for (int64_t l = s.layer_begin; l < s.layer_end; ++l) {
    attn += attention;
    if (c.is_mtp_layer(l)) {
      const double module = static_cast<double>(p.mtp_unique) / std::max<int64_t>(1, c.num_nextn_predict_layers);
      params += module - static_cast<double>(p.moe_layer_total - p.moe_layer_activated) + head;  // + its head
    } else {
      params += static_cast<double>(c.is_moe_layer(l) ? p.moe_layer_activated : p.dense_layer);
    }
  }
  if (s.has_head) params += head;
  PlanStageCost out;
  out.stage = s.stage_idx;
  const double t = static_cast<double>(tokens);
  out.forward_flops = t * (2 * params + attn);
  out.backward_input_flops = t * (2 * params + 2 * attn);
  out.backward_weight_flops = t * 2 * params;
  return out;
}

// PlanMemory of one stage with an expert range.
Result<model::MemoryPlan> StageMemory(const JobSpec& spec, const StageLayout& s, int64_t expert_begin,
                                      int64_t expert_end) {
  model::ModelOptions o;
  o.precision = spec.precision;
  o.layer_begin = s.layer_begin;
  o.layer_end = s.layer_end;
  o.has_embedding = s.has_embedding;
  o.has_head = s.has_head;
  o.expert_begin = expert_begin;
  o.expert_end = expert_end;
  o.max_batch = spec.train.micro_batch;
  o.max_seq = spec.train.seq_len;
  o.defer_weight_grads = spec.parallel.schedule != PipelineSchedule::k1F1B;
  return model::PlanMemory(spec.model.config, o);
}

// The placement table with its worker rows cut to `keep` for big layouts.
// (indented by two spaces).
std::string ShortPlacement(const Placement& pl, size_t keep) {
  std::vector<std::string> lines;
  std::istringstream in(DescribePlacement(pl));
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  const size_t rank_header = 1 + (pl.stages.size() + 1);  // job line, stage table
  const bool cut = pl.ranks.size() > 32;
  std::string out;
  for (size_t i = 0; i < lines.size(); ++i) {
    const bool worker_row = i > rank_header && i <= rank_header + pl.ranks.size();
    if (cut && worker_row && i > rank_header + keep) continue;
    out += "  " + lines[i] + "\n";
    if (cut && worker_row && i == rank_header + keep) {
      out += "    ... " + std::to_string(pl.ranks.size() - keep) + " more workers (one row per worker for layouts of "
             "up to 32)\n";
    }
  }
  return out;
}

std::string Fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

// 671000000000 -> "671.0B", 3300000 -> "3.3M".
std::string Count(double v) {
  if (v >= 1e9) return Fixed(v / 1e9, 1) + "B";
  if (v >= 1e6) return Fixed(v / 1e6, 1) + "M";
  if (v >= 1e3) return Fixed(v / 1e3, 1) + "K";
  return Fixed(v, 0);
}

std::string Seconds(double s) {
  if (s >= 1) return Fixed(s, 2) + " s";
  if (s >= 1e-3) return Fixed(s * 1e3, 1) + " ms";
  return Fixed(s * 1e6, 1) + " us";
}

std::string Join(const std::vector<int>& v, const char* sep = ",") {
  std::string out;
  for (int x : v) out += (out.empty() ? "" : sep) + std::to_string(x);
  return out;
}

}  // namespace

Result<std::pair<int, int>> ParseCluster(std::string_view text) {
  const size_t x = text.find_first_of("xX");
  auto bad = [&] {
    return InvalidArgumentError("--cluster: expected NODESxGPUS with two positive integers (e.g. 256x8), got \"" +
                                std::string(text) + "\"");
  };
  if (x == std::string_view::npos) return bad();
  auto num = [](std::string_view s) -> int {
    if (s.empty() || s.size() > 6) return -1;
    int v = 0;
    for (char ch : s) {
      if (ch < '0' || ch > '9') return -1;
      v = v * 10 + (ch - '0');
    }
    return v;
  };
  const int nodes = num(text.substr(0, x)), gpus = num(text.substr(x + 1));
  if (nodes <= 0 || gpus <= 0) return bad();
  if (static_cast<int64_t>(nodes) * gpus > 1000000) return InvalidArgumentError("--cluster: more than 1M workers");
  return std::make_pair(nodes, gpus);
}

namespace {

void SummarizePlacement(const Placement& pl, PlanReport& rep) {
  rep.placement_text = ShortPlacement(pl, 8);
  rep.notes = pl.notes;
  rep.num_ep_groups = static_cast<int>(pl.ep_groups.size());
  rep.min_hosts_per_ep_group = pl.ep_groups.empty() ? 0 : INT_MAX;
  for (const EpGroupPlacement& g : pl.ep_groups) {
    const int h = static_cast<int>(g.hosts.size());
    rep.ep_groups_single_host += g.single_host() ? 1 : 0;
    rep.min_hosts_per_ep_group = std::min(rep.min_hosts_per_ep_group, h);
    rep.max_hosts_per_ep_group = std::max(rep.max_hosts_per_ep_group, h);
  }
  std::set<std::string> hosts;
  for (const RankPlacement& r : pl.ranks) hosts.insert(r.host);
  rep.hosts_used = static_cast<int>(hosts.size());
}

// Per-stage costs from FLOPs, then the simulated step.
Result<schedule::SimResult> SimulateStep(const JobSpec& spec, const Placement& pl, const schedule::Schedule& sched,
                                         PlanReport& rep) {
  const ModelConfig& cfg = spec.model.config;
  const ParamCounts counts = CountParams(cfg);
  const int64_t tokens = spec.train.micro_batch * spec.train.seq_len;
  rep.comm_latency_s = static_cast<double>(tokens * cfg.hidden_size * 2) / (rep.link_gbs * 1e9);
  const double flops_per_s = rep.tflops * 1e12;
  std::vector<schedule::OpCosts> costs;
  schedule::OpCosts mean;
  mean.f = mean.b = mean.w = 0;
  double flops_per_microbatch = 0;  // all stages, F + B + W
  for (const StageLayout& s : pl.stages) {
    PlanStageCost sc = StageFlops(cfg, counts, s, tokens, spec.train.seq_len);
    sc.f_s = sc.forward_flops / flops_per_s;
    sc.b_s = sc.backward_input_flops / flops_per_s;
    sc.w_s = sc.backward_weight_flops / flops_per_s;
    flops_per_microbatch += sc.forward_flops + sc.backward_input_flops + sc.backward_weight_flops;
    schedule::OpCosts c;
    c.f = sc.f_s;
    c.b = sc.b_s;
    c.w = sc.w_s;
    c.comm_latency = rep.comm_latency_s;
    costs.push_back(c);
    const double n = static_cast<double>(pl.stages.size());
    mean.f += c.f / n;
    mean.b += c.b / n;
    mean.w += c.w / n;
    rep.stage_costs.push_back(sc);
  }
  ASSIGN_OR_RETURN(schedule::SimResult sim, schedule::Simulate(sched, costs));
  rep.step_s = sim.makespan;
  rep.bubble_s = sim.max_bubble();
  rep.bubble_min_s = sim.min_bubble();
  rep.bubble_fraction = sim.bubble_fraction();
  rep.formula_bubble_s = schedule::FormulaBubble(sched.kind, sched.pp, mean);
  rep.model_flops_per_step = flops_per_microbatch * static_cast<double>(rep.num_micro_batches) * spec.parallel.data;
  const int world = spec.parallel.world_size();
  if (rep.step_s > 0) {
    rep.tokens_per_s_per_worker = static_cast<double>(rep.tokens_per_step) / rep.step_s / world;
    rep.utilization = rep.model_flops_per_step / (world * flops_per_s * rep.step_s);
  }
  return sim;
}

// Optimizer bytes of one stage after ZeRO-1: replicated tensors' state is sharded over the DP replicas; routed
// experts are replicated only DP/EP times, so theirs over DP/EP. The expert part is measured by planning one
// expert fewer (or, holding one, two).
Result<int64_t> ShardedOptimizerBytes(const JobSpec& spec, const StageLayout& layout, const RankPlacement& rp,
                                      const model::MemoryPlan& m) {
  const int64_t dp = spec.parallel.data, ep = spec.parallel.expert;
  int64_t expert_opt = 0;
  if (ep > 1) {
    const int64_t k = rp.expert_end - rp.expert_begin;
    if (k >= 2) {
      ASSIGN_OR_RETURN(model::MemoryPlan fewer, StageMemory(spec, layout, rp.expert_begin, rp.expert_end - 1));
      expert_opt = k * (m.optimizer_bytes - fewer.optimizer_bytes);
    } else {  // EP > 1 means there are at least two experts
      const int64_t b = rp.expert_end + 1 <= spec.model.config.n_routed_experts ? rp.expert_begin : rp.expert_begin - 1;
      ASSIGN_OR_RETURN(model::MemoryPlan more, StageMemory(spec, layout, b, b + 2));
      expert_opt = more.optimizer_bytes - m.optimizer_bytes;
    }
    expert_opt = std::clamp<int64_t>(expert_opt, 0, m.optimizer_bytes);
  }
  return (m.optimizer_bytes - expert_opt + dp - 1) / dp + (expert_opt + dp / ep - 1) / (dp / ep);
}

// Pipeline rank r's worker (data rank 0 stands for all: their expert ranges differ, their sizes do not).
Result<PlanWorkerMemory> WorkerMemory(const JobSpec& spec, const Placement& pl, const schedule::Schedule& sched,
                                      const schedule::SimResult& sim, int r) {
  const RankPlacement& rp = pl.at(r, 0);
  PlanWorkerMemory w;
  w.pipeline_rank = r;
  w.stages = rp.stages;
  w.expert_begin = rp.expert_begin;
  w.expert_end = rp.expert_end;
  w.peak_in_flight = sim.ranks[r].peak_in_flight;
  const std::vector<schedule::ChunkInfo>& chunks = sched.ranks[r].chunks;
  for (int s : rp.stages) {
    const StageLayout& layout = pl.stages[s];
    ASSIGN_OR_RETURN(model::MemoryPlan m, StageMemory(spec, layout, rp.expert_begin, rp.expert_end));
    w.params += m.params;
    w.param_bytes += m.param_bytes;
    w.grad_bytes += m.grad_bytes;
    w.weight_cache_bytes += m.weight_cache_bytes;
    w.optimizer_unsharded_bytes += m.optimizer_bytes;
    ASSIGN_OR_RETURN(int64_t opt, ShardedOptimizerBytes(spec, layout, rp, m));
    w.optimizer_bytes += opt;
    w.activation_bytes_per_microbatch.push_back(m.activation_bytes_per_microbatch);
    int in_flight = 0;
    for (size_t c = 0; c < chunks.size(); ++c) {
      if (chunks[c].stage == s) in_flight = sim.ranks[r].in_flight_at_peak[c];
    }
    w.in_flight_at_peak.push_back(in_flight);
    w.activation_bytes += in_flight * m.activation_bytes_per_microbatch;
  }
  return w;
}

}  // namespace

Result<PlanReport> BuildPlan(const JobSpec& spec, const PlanOptions& options) {
  RETURN_IF_ERROR(ValidateJobSpec(spec));
  ASSIGN_OR_RETURN(auto cluster, ParseCluster(options.cluster));
  PlanReport rep;
  rep.spec = spec;
  rep.nodes = cluster.first;
  rep.gpus_per_node = cluster.second;
  rep.device = spec.resources.device;
  const bool cuda = rep.device == DeviceKind::kCuda;
  rep.tflops = options.tflops > 0 ? options.tflops : (cuda ? 400.0 : 0.1);
  rep.link_gbs = options.link_gbs > 0 ? options.link_gbs : (cuda ? 50.0 : 5.0);
  rep.device_memory_gib = options.device_memory_gib >= 0 ? options.device_memory_gib : (cuda ? 80.0 : 0.0);
  const ParamCounts counts = CountParams(spec.model.config);
  rep.total_params = counts.main_total;
  rep.checkpoint_params = counts.checkpoint_total;
  rep.activated_params = counts.main_activated;
  rep.num_micro_batches = spec.num_micro_batches();
  rep.tokens_per_step = spec.train.global_batch * spec.train.seq_len;
  if (rep.num_micro_batches > INT_MAX) return InvalidArgumentError("too many micro-batches per step to simulate");

  const ClusterView view = HypotheticalCluster(rep.nodes, rep.gpus_per_node, rep.device, rep.device_memory_gib);
  Result<Placement> placed = Place(view, spec);
  if (!placed.ok()) return std::move(placed).status().WithContext("placing on " + options.cluster);
  SummarizePlacement(*placed, rep);

  ASSIGN_OR_RETURN(schedule::Schedule sched,
                   schedule::GenerateSchedule(ToScheduleKind(spec.parallel.schedule), spec.parallel.pipeline,
                                              static_cast<int>(rep.num_micro_batches)));
  ASSIGN_OR_RETURN(schedule::SimResult sim, SimulateStep(spec, *placed, sched, rep));
  for (int r = 0; r < spec.parallel.pipeline; ++r) {
    ASSIGN_OR_RETURN(PlanWorkerMemory w, WorkerMemory(spec, *placed, sched, sim, r));
    rep.workers.push_back(std::move(w));
  }
  return rep;
}

namespace {

void Line(std::string& out, const std::string& s) { out += s + "\n"; }

std::string MemorySection(const PlanReport& rep) {
  const ParallelSpec& par = rep.spec.parallel;
  std::string out;
  auto line = [&out](const std::string& s) { Line(out, s); };
  line("memory per worker, GiB (every data-parallel replica of a pipeline rank holds the same sizes)");
  line("  ZeRO-1: optimizer state sharded over " + std::to_string(par.data) + " replicas (routed experts over " +
       std::to_string(par.data / par.expert) + ")");
  struct Col {
    std::string head;
    std::vector<std::string> cells;
  };
  std::vector<Col> cols = {{"pp", {}},     {"stages", {}}, {"params", {}},    {"master", {}},
                           {"grads", {}},  {"optimizer", {}}, {"w-cache", {}}, {"activations (in flight x GiB)", {}},
                           {"total", {}}};
  double largest = 0, largest_activations = 0;
  for (const PlanWorkerMemory& w : rep.workers) {
    std::string act;
    for (size_t i = 0; i < w.stages.size(); ++i) {
      act += (i ? " + " : "") + std::to_string(w.in_flight_at_peak[i]) + "x" +
             Fixed(w.activation_bytes_per_microbatch[i] / kGiB, 2);
    }
    act += " = " + Fixed(w.activation_bytes / kGiB, 1);
    const double total = w.total_bytes() / kGiB;
    if (total > largest) {
      largest = total;
      largest_activations = w.activation_bytes / kGiB;
    }
    const std::string cells[] = {std::to_string(w.pipeline_rank), Join(w.stages), Count(static_cast<double>(w.params)),
                                 Fixed(w.param_bytes / kGiB, 1), Fixed(w.grad_bytes / kGiB, 1),
                                 Fixed(w.optimizer_bytes / kGiB, 2), Fixed(w.weight_cache_bytes / kGiB, 1), act,
                                 Fixed(total, 1)};
    for (size_t c = 0; c < cols.size(); ++c) cols[c].cells.push_back(cells[c]);
  }
  std::vector<size_t> width;
  for (const Col& c : cols) {
    size_t wd = c.head.size();
    for (const std::string& s : c.cells) wd = std::max(wd, s.size());
    width.push_back(wd);
  }
  auto row = [&](auto cell) {
    std::string s = " ";
    for (size_t c = 0; c < cols.size(); ++c) {
      const std::string v = cell(c);
      s += " " + (c == 1 || c == 7 ? v + std::string(width[c] - v.size(), ' ') : std::string(width[c] - v.size(), ' ') + v);
    }
    while (!s.empty() && s.back() == ' ') s.pop_back();
    line(s);
  };
  row([&](size_t c) { return cols[c].head; });
  for (size_t r = 0; r < rep.workers.size(); ++r) row([&](size_t c) { return cols[c].cells[r]; });
  std::string verdict = "  largest: " + Fixed(largest, 1) + " GiB (" + Fixed(largest - largest_activations, 1) +
                        " GiB of parameters, gradients, optimizer state and weight caches, " +
                        Fixed(largest_activations, 1) + " GiB of activations)";
  if (rep.device_memory_gib > 0) {
    verdict += std::string(largest <= rep.device_memory_gib ? "; fits " : "; DOES NOT FIT ") +
               Fixed(rep.device_memory_gib, 0) + " GiB per device";
  }
  line(verdict);
  line("  activations are the engine's arena for one micro-batch per held stage (worker/model PlanMemory: fp32,");
  line("  no recomputation) times the micro-batches in flight at the schedule's peak");
  line("");
  return out;
}

std::string ScheduleSection(const PlanReport& rep) {
  const ParallelSpec& par = rep.spec.parallel;
  std::string out;
  auto line = [&out](const std::string& s) { Line(out, s); };
  line("schedule " + std::string(ToString(par.schedule)) + ", estimated at " + Fixed(rep.tflops, rep.tflops < 1 ? 2 : 0) +
       " TFLOP/s per worker and " + Fixed(rep.link_gbs, 0) + " GB/s pipeline links");
  // Stage costs, runs of equal stages merged.
  for (size_t i = 0; i < rep.stage_costs.size();) {
    size_t j = i;
    auto same = [&](size_t a, size_t b) {
      return rep.stage_costs[a].forward_flops == rep.stage_costs[b].forward_flops &&
             rep.stage_costs[a].backward_input_flops == rep.stage_costs[b].backward_input_flops;
    };
    while (j + 1 < rep.stage_costs.size() && same(i, j + 1)) ++j;
    const PlanStageCost& c = rep.stage_costs[i];
    line(std::string("  ") + (i == 0 ? "per micro-batch " : "                ") +
         (i == j ? "stage " + std::to_string(i) : "stages " + std::to_string(i) + "-" + std::to_string(j)) + ": F " +
         Seconds(c.f_s) + ", B " + Seconds(c.b_s) + ", W " + Seconds(c.w_s));
    i = j + 1;
  }
  line("  messages        " + Seconds(rep.comm_latency_s) + " per activation or gradient");
  std::string formula;
  switch (par.schedule) {
    case PipelineSchedule::k1F1B: formula = "(PP-1)(F+B)"; break;
    case PipelineSchedule::kZB1P: formula = "(PP-1)(F+B-2W)"; break;
    case PipelineSchedule::kDualPipe: formula = "(PP/2-1)(F&B+B-3W)"; break;
    case PipelineSchedule::kDualPipeV: formula = "(PP-1)(F&B+B-3W) on PP devices"; break;
  }
  line("  bubble          " + Seconds(rep.bubble_min_s) + " on the busiest worker, " + Seconds(rep.bubble_s) +
       " at most; " + Fixed(rep.bubble_fraction * 100, 1) + "% of all workers' time (simulated with each stage's");
  line("                  own costs; the README's " + formula + " with the mean stage costs: " +
       Seconds(rep.formula_bubble_s) + ")");
  line("  step time       " + Seconds(rep.step_s) + ": " + Fixed(rep.tokens_per_s_per_worker, 0) +
       " tokens/s per worker, model FLOPs " + Fixed(rep.utilization * 100, 1) + "% of the assumed throughput");
  line("  not modelled: the expert all-to-all (DualPipe overlaps it with the paired micro-batch), the data-parallel");
  line("  gradient reduction and the optimizer step");
  return out;
}

}  // namespace

std::string PlanText(const PlanReport& rep) {
  const JobSpec& spec = rep.spec;
  const ParallelSpec& par = spec.parallel;
  const ModelConfig& cfg = spec.model.config;
  std::string out;
  auto line = [&out](const std::string& s) { out += s + "\n"; };
  const std::string device(ToString(rep.device));
  line("plan for job " + spec.name + " on " + std::to_string(rep.nodes) + " hosts x " +
       std::to_string(rep.gpus_per_node) + " " + device + " workers (" +
       std::to_string(rep.nodes * rep.gpus_per_node) + " workers)");
  line("  model     " + Count(static_cast<double>(rep.total_params)) + " parameters (" +
       Count(static_cast<double>(rep.checkpoint_params)) + " with MTP), " +
       Count(static_cast<double>(rep.activated_params)) + " activated per token; " +
       std::to_string(cfg.num_hidden_layers) + " layers + " + std::to_string(cfg.num_nextn_predict_layers) +
       " MTP, " + std::to_string(cfg.n_routed_experts) + " routed experts (top " +
       std::to_string(cfg.num_experts_per_tok) + "), " + std::string(ToString(spec.precision)));
  line("  layout    pipeline " + std::to_string(par.pipeline) + " x data " + std::to_string(par.data) + " = " +
       std::to_string(par.world_size()) + " workers, expert " + std::to_string(par.expert) + " (" +
       std::to_string(cfg.n_routed_experts / par.expert) + " routed experts per worker), schedule " +
       std::string(ToString(par.schedule)) + ", " + std::to_string(par.num_stages()) + " stages");
  line("  batch     " + std::to_string(spec.train.global_batch) + " sequences x " +
       std::to_string(spec.train.seq_len) + " tokens = " + Count(static_cast<double>(rep.tokens_per_step)) +
       " tokens per step; " + std::to_string(rep.num_micro_batches) + " micro-batches of " +
       std::to_string(spec.train.micro_batch) + " per pipeline");
  line("");
  line("placement (" + std::to_string(par.world_size()) + " workers on " + std::to_string(rep.hosts_used) +
       " hosts)");
  out += rep.placement_text;
  if (rep.num_ep_groups > 0) {
    const std::string span = rep.min_hosts_per_ep_group == rep.max_hosts_per_ep_group
                                 ? std::to_string(rep.min_hosts_per_ep_group)
                                 : std::to_string(rep.min_hosts_per_ep_group) + "-" +
                                       std::to_string(rep.max_hosts_per_ep_group);
    line("  EP groups: " + std::to_string(rep.num_ep_groups) + " of " + std::to_string(par.expert) +
         " workers, each on " + span + " host(s); " + std::to_string(rep.ep_groups_single_host) +
         " inside one host");
  }
  line("");
  out += MemorySection(rep);
  out += ScheduleSection(rep);
  return out;
}

std::string PlanJson(const PlanReport& rep) {
  using nlohmann::json;
  const JobSpec& spec = rep.spec;
  json j;
  j["job"] = spec.name;
  j["cluster"] = {{"hosts", rep.nodes},
                  {"workers_per_host", rep.gpus_per_node},
                  {"device", std::string(ToString(rep.device))},
                  {"tflops_per_worker", rep.tflops},
                  {"link_gbs", rep.link_gbs},
                  {"device_memory_gib", rep.device_memory_gib}};
  j["model"] = {{"params", rep.total_params},
                {"params_with_mtp", rep.checkpoint_params},
                {"activated_params_per_token", rep.activated_params},
                {"precision", std::string(ToString(spec.precision))}};
  j["layout"] = {{"pipeline", spec.parallel.pipeline},       {"data", spec.parallel.data},
                 {"expert", spec.parallel.expert},           {"schedule", std::string(ToString(spec.parallel.schedule))},
                 {"stages", spec.parallel.num_stages()},     {"workers", spec.parallel.world_size()},
                 {"num_micro_batches", rep.num_micro_batches}, {"tokens_per_step", rep.tokens_per_step}};
  j["placement"] = {{"hosts_used", rep.hosts_used},
                    {"ep_groups", rep.num_ep_groups},
                    {"ep_groups_single_host", rep.ep_groups_single_host},
                    {"min_hosts_per_ep_group", rep.min_hosts_per_ep_group},
                    {"max_hosts_per_ep_group", rep.max_hosts_per_ep_group},
                    {"notes", rep.notes}};
  json workers = json::array();
  for (const PlanWorkerMemory& w : rep.workers) {
    workers.push_back({{"pipeline_rank", w.pipeline_rank},
                       {"stages", w.stages},
                       {"experts", {w.expert_begin, w.expert_end}},
                       {"params", w.params},
                       {"param_bytes", w.param_bytes},
                       {"grad_bytes", w.grad_bytes},
                       {"optimizer_bytes", w.optimizer_bytes},
                       {"optimizer_unsharded_bytes", w.optimizer_unsharded_bytes},
                       {"weight_cache_bytes", w.weight_cache_bytes},
                       {"activation_bytes_per_microbatch", w.activation_bytes_per_microbatch},
                       {"in_flight_at_peak", w.in_flight_at_peak},
                       {"peak_in_flight", w.peak_in_flight},
                       {"activation_bytes", w.activation_bytes},
                       {"total_bytes", w.total_bytes()}});
  }
  j["workers"] = workers;
  json stages = json::array();
  for (const PlanStageCost& c : rep.stage_costs) {
    stages.push_back({{"stage", c.stage},
                      {"forward_flops", c.forward_flops},
                      {"backward_input_flops", c.backward_input_flops},
                      {"backward_weight_flops", c.backward_weight_flops},
                      {"f_s", c.f_s},
                      {"b_s", c.b_s},
                      {"w_s", c.w_s}});
  }
  j["schedule"] = {{"kind", std::string(ToString(spec.parallel.schedule))},
                   {"stage_costs", stages},
                   {"message_s", rep.comm_latency_s},
                   {"step_s", rep.step_s},
                   {"bubble_s", rep.bubble_s},
                   {"bubble_min_s", rep.bubble_min_s},
                   {"bubble_fraction", rep.bubble_fraction},
                   {"formula_bubble_s", rep.formula_bubble_s},
                   {"tokens_per_s_per_worker", rep.tokens_per_s_per_worker},
                   {"model_flops_per_step", rep.model_flops_per_step},
                   {"utilization", rep.utilization}};
  return j.dump(2) + "\n";
}

int PlanCommand(const PlanOptions& options, bool json) {
  auto fail = [](const Status& s) {
    std::string m = s.ToString();
    std::replace(m.begin(), m.end(), '\n', ' ');
    std::fprintf(stderr, "shoal: %s\n", m.c_str());
    return 1;
  };
  Result<JobSpec> spec = LoadJobSpec(options.spec_path);
  if (!spec.ok()) return fail(spec.status());
  Result<PlanReport> rep = BuildPlan(*spec, options);
  if (!rep.ok()) return fail(rep.status());
  std::fputs((json ? PlanJson(*rep) : PlanText(*rep)).c_str(), stdout);
  return 0;
}

}  // namespace shoal::cli
