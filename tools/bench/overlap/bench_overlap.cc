// Overlap benchmark (STYLE.md §16), three parts, every figure measured in this run:
//
// 1. Expert all-to-all hidden behind compute, EP = 2. Two ranks (one thread and one Communicator each, real UCX
//    shared memory between them) train the same MoE model with the routed experts split in halves. Each MoE
//    layer starts its dispatch / combine and computes the shared expert (and, backward, the routed experts'
//    weight gradients) while the rows move (worker/model/moe.h). The same steps run twice:
//      serialized  every exchange completes before the layer goes on (EpExchangeOptions::serialize): the time
//                  spent is the whole all-to-all time
//      overlapped  as in training: only what compute did not cover is waited for
//    hidden = 1 − exposed(overlapped) / exposed(serialized), per step, over the MoE layers' counts, dispatch and
//    combine (forward and backward). The counts exchange (a few bytes, needed before the dispatch can be sized)
//    is inherently exposed and included.
//
// 2. DualPipe's overlapped F&B pairs with EP = 2 (PP2 x DP2 x EP2, four ranks): the exchanges' exposed time
//    serialized, with the layer's own overlap only, and with the pair's two halves interleaved as lanes
//    (worker/dist/overlap_lanes.h), each half computing while the other's all-to-all is in flight.
//
// 3. Pipeline idle time against the simulator. A real PP-rank run of the distributed trainer (one thread and one
//    Communicator per rank; on a machine with fewer cores than ranks the ranks share cores, which shows as
//    extra idle time) records each op's cost per stage; schedule::Simulate replays the same op lists with those
//    costs and predicts each rank's bubble; both are printed per rank.
//
//   bench_overlap [--steps 8] [--pp 4] [--schedules 1f1b,zb1p,dualpipe]
#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <random>
#include <sstream>
#include <thread>

#include "common/thread_pool.h"
#include "kernels/cpu/blas.h"
#include "schedule/simulator.h"
#include "spec/job_spec.h"
#include "worker/comm/communicator.h"
#include "worker/dist/dist_layout.h"
#include "worker/dist/dist_trainer.h"
#include "worker/dist/ep_exchange.h"
#include "worker/dist/pipeline_executor.h"
#include "worker/model/model.h"

namespace {

using namespace shoal;
using Clock = std::chrono::steady_clock;

[[noreturn]] void Fail(const std::string& what, const Status& s) {
  std::fprintf(stderr, "bench_overlap: %s: %s\n", what.c_str(), s.ToString().c_str());
  std::exit(1);
}

std::vector<std::unique_ptr<comm::Communicator>> Connect(int world) {
  std::vector<std::unique_ptr<comm::Communicator>> comms;
  std::map<int, std::string> peers;
  for (int r = 0; r < world; ++r) {
    auto c = comm::Communicator::Create({});
    if (!c.ok()) Fail("creating a communicator", c.status());
    peers[r] = (*c)->address();
    comms.push_back(std::move(*c));
  }
  std::vector<std::thread> threads;
  std::vector<Status> status(static_cast<size_t>(world));
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] { status[static_cast<size_t>(r)] = comms[static_cast<size_t>(r)]->Connect(1, r, peers); });
  }
  for (auto& t : threads) t.join();
  for (const auto& s : status) {
    if (!s.ok()) Fail("connecting", s);
  }
  return comms;
}

// ---- part 1: EP = 2 overlap ----------------------------------------------------------------------------------

struct EpRun {
  double step_s = 0;     // mean step time (forward + backward)
  double exposed_s = 0;  // mean time per step blocked on the exchanges
  double bytes = 0;      // payload bytes sent to the peer per step
  int64_t exchanges = 0; // per step
};

struct EpCase {
  std::string name;
  ModelConfig config;
  int64_t batch = 0, seq = 0;
};

// Both ranks run `steps` measured steps (after one warm-up) in the given mode; returns rank 0's and rank 1's.
std::vector<EpRun> RunEp(const EpCase& c, bool serialize, int steps, std::vector<std::unique_ptr<comm::Communicator>>& comms) {
  std::vector<EpRun> out(2);
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      const int64_t E = c.config.n_routed_experts;
      model::ModelOptions o;
      o.max_batch = c.batch;
      o.max_seq = c.seq;
      o.expert_begin = r * E / 2;
      o.expert_end = (r + 1) * E / 2;
      auto m = model::Model::Create(c.config, o);
      if (!m.ok()) Fail("model", m.status());
      (*m)->InitRandom(7, 0.02f);
      auto group = comm::Group::Create({0, 1}, 77);
      if (!group.ok()) Fail("group", group.status());
      dist::EpExchangeOptions eo;
      eo.serialize = serialize;
      auto ep = dist::EpExchange::Create(comms[static_cast<size_t>(r)].get(), *group, eo);
      if (!ep.ok()) Fail("exchange", ep.status());
      Status set = (*m)->SetExpertExchange(ep->get());
      if (!set.ok()) Fail("SetExpertExchange", set);
      // Each rank its own tokens.
      std::mt19937 rng(static_cast<uint32_t>(100 + r));
      const int64_t n = c.batch * c.seq;
      std::vector<int32_t> inputs(static_cast<size_t>(n)), targets(static_cast<size_t>(n));
      for (auto& x : inputs) x = static_cast<int32_t>(rng() % static_cast<uint32_t>(c.config.vocab_size));
      for (auto& x : targets) x = static_cast<int32_t>(rng() % static_cast<uint32_t>(c.config.vocab_size));
      model::MicroBatch mb;
      mb.inputs = inputs.data();
      mb.targets = targets.data();
      mb.B = static_cast<int>(c.batch);
      mb.T = static_cast<int>(c.seq);
      const model::LossScales scales = model::MeanLossScales(2 * n, 0, 0, 0.0f, 1.0);
      double total = 0;
      for (int s = 0; s <= steps; ++s) {
        if (s == 1) (*ep)->ResetStats();
        (*m)->ZeroGrad();
        const auto t0 = Clock::now();
        auto losses = (*m)->ForwardBackward(mb, scales);
        if (!losses.ok()) Fail("step", losses.status());
        if (s >= 1) total += std::chrono::duration<double>(Clock::now() - t0).count();
      }
      const auto& st = (*ep)->stats();
      EpRun& run = out[static_cast<size_t>(r)];
      run.step_s = total / steps;
      run.exposed_s = st.wait_seconds / steps;
      run.bytes = static_cast<double>(st.bytes_sent) / steps;
      run.exchanges = st.exchanges / steps;
    });
  }
  for (auto& t : threads) t.join();
  return out;
}

void EpOverlap(int steps) {
  std::printf("== expert all-to-all hidden behind compute: EP = 2 (2 ranks, one thread each, UCX shm) ==\n");
  auto comms = Connect(2);
  std::vector<EpCase> cases;
  {
    auto demo = ModelPreset("demo");
    auto small = ModelPreset("small");
    if (!demo.ok() || !small.ok()) Fail("presets", demo.ok() ? small.status() : demo.status());
    cases.push_back({"demo  4x128 tokens", *demo, 4, 128});
    ModelConfig s = *small;
    s.num_hidden_layers = 4;  // the per-layer picture is the same; keeps the run short
    cases.push_back({"small 2x256 tokens (4 layers)", s, 2, 256});
  }
  std::printf("%-31s %9s %9s %10s %10s %11s %9s %8s\n", "model", "step ser", "step ovl", "a2a ser", "a2a ovl",
              "MB/step", "exch/step", "hidden");
  for (const auto& c : cases) {
    auto ser = RunEp(c, true, steps, comms);
    auto ovl = RunEp(c, false, steps, comms);
    // The ranks' means (they wait on each other; rank-to-rank differences are load imbalance).
    auto mean = [](const std::vector<EpRun>& v, double EpRun::*f) { return (v[0].*f + v[1].*f) / 2; };
    const double a2a_ser = mean(ser, &EpRun::exposed_s), a2a_ovl = mean(ovl, &EpRun::exposed_s);
    const double hidden = a2a_ser > 0 ? 1.0 - a2a_ovl / a2a_ser : 0;
    std::printf("%-31s %8.2fms %8.2fms %9.2fms %9.2fms %11.2f %9lld %7.0f%%\n", c.name.c_str(),
                1e3 * mean(ser, &EpRun::step_s), 1e3 * mean(ovl, &EpRun::step_s), 1e3 * a2a_ser, 1e3 * a2a_ovl,
                mean(ovl, &EpRun::bytes) / 1e6, static_cast<long long>(ovl[0].exchanges), 100 * hidden);
  }
  std::printf("a2a ser: time in the exchanges when each completes before the layer goes on (the whole all-to-all "
              "time);\na2a ovl: time still waited for when the shared expert / weight gradients run meanwhile; "
              "hidden = 1 - ovl/ser.\n\n");
}

struct NullEvents : train::TrainerEvents {
  void OnStep(const train::StepMetrics&) override {}
  void OnCheckpoint(const train::CheckpointWritten&) override {}
  void OnCheckpointFailed(const Status& s) override { Fail("checkpoint", s); }
};

// Every rank of `spec`'s layout on its own thread with its own Communicator, trained to the end; `tweak` adjusts
// each rank's config, `done(rank, trainer, seconds)` reads the results (on that rank's thread).
void RunAllRanks(const JobSpec& spec, const std::function<void(dist::DistConfig&)>& tweak,
                 const std::function<void(int, dist::DistributedTrainer&, double)>& done) {
  const int dp = spec.parallel.data, world = spec.parallel.world_size();
  auto comms = Connect(world);
  const std::string root =
      std::filesystem::temp_directory_path() / ("shoal-bench-overlap-" + std::to_string(getpid()));
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      NullEvents events;
      dist::DistConfig config;
      config.trainer.spec = spec;
      config.trainer.job_id = "bench";
      config.trainer.epoch = 1;
      config.trainer.pp_rank = static_cast<uint32_t>(r / dp);
      config.trainer.dp_rank = static_cast<uint32_t>(r % dp);
      config.trainer.checkpoint_root = root;
      config.trainer.threads = 0;
      config.trainer.eval_batches = 0;
      config.connect = false;
      for (int p = 0; p < world; ++p) config.peers[p] = comms[static_cast<size_t>(p)]->address();
      tweak(config);
      auto t = dist::DistributedTrainer::Create(std::move(config), comms[static_cast<size_t>(r)].get(), &events);
      if (!t.ok()) Fail("trainer", t.status());
      std::atomic<bool> stop{false};
      const auto t0 = Clock::now();
      Status s = (*t)->Run(stop);
      if (!s.ok()) Fail("run", s);
      done(r, **t, std::chrono::duration<double>(Clock::now() - t0).count());
    });
  }
  for (auto& t : threads) t.join();
  std::filesystem::remove_all(root);
}

// ---- part 2: DualPipe's F&B pairs with EP = 2 -----------------------------------------------------------------

struct PairRun {
  double step_s = 0, exposed_s = 0, bytes = 0;
  int64_t yields = 0;
};

// Every rank of a PP2 x DP2 x EP2 DualPipe job on the demo model, `steps` steps; the ranks' mean per step.
PairRun RunPairs(bool serialize, bool overlap_pairs, int steps) {
  const std::string yaml = std::string("name: bench-pairs\nmodel: {preset: demo}\n") +
                           "parallel: {pipeline: 2, data: 2, expert: 2, schedule: dualpipe}\n" +
                           "train: {seq_len: 128, micro_batch: 2, global_batch: 16, seed: 5, warmup_steps: 1}\n" +
                           "phases:\n  - {name: pretrain, kind: pretrain, data: {builtin: arith}, steps: " +
                           std::to_string(steps) + ", checkpoint: {every: " + std::to_string(steps) + "}}\n";
  auto spec = ParseJobSpec(yaml, "bench-pairs.yaml");
  if (!spec.ok()) Fail("spec", spec.status());
  const int world = 4;
  std::vector<PairRun> runs(world);
  RunAllRanks(
      *spec,
      [&](dist::DistConfig& config) {
        config.serialize_exchanges = serialize;
        config.overlap_pairs = overlap_pairs;
      },
      [&](int r, dist::DistributedTrainer& t, double seconds) {
        const auto ex = t.exchange_stats();
        PairRun& out = runs[static_cast<size_t>(r)];
        out.step_s = seconds / steps;
        out.exposed_s = ex.wait_seconds / steps;
        out.bytes = static_cast<double>(ex.bytes_sent) / steps;
        out.yields = ex.overlap_yields / steps;
      });
  PairRun mean;
  for (const auto& r : runs) {
    mean.step_s += r.step_s / world;
    mean.exposed_s += r.exposed_s / world;
    mean.bytes += r.bytes / world;
    mean.yields += r.yields / world;
  }
  return mean;
}

void PairOverlap(int steps) {
  std::printf("== DualPipe F&B pairs, EP = 2: demo model, PP 2 x DP 2 x EP 2 (4 ranks, one thread each, on %u cores) ==\n",
              std::thread::hardware_concurrency());
  const PairRun ser = RunPairs(true, false, steps);
  const PairRun layer = RunPairs(false, false, steps);
  const PairRun pairs = RunPairs(false, true, steps);
  std::printf("%-44s %10s %12s %9s %8s\n", "mode", "step", "a2a waited", "MB/step", "hidden");
  auto row = [&](const char* name, const PairRun& r) {
    std::printf("%-44s %8.1fms %10.2fms %9.2f %7.0f%%\n", name, 1e3 * r.step_s, 1e3 * r.exposed_s, r.bytes / 1e6,
                ser.exposed_s > 0 ? 100 * (1 - r.exposed_s / ser.exposed_s) : 0.0);
  };
  row("serialized (no overlap: the all-to-all time)", ser);
  row("shared expert / weight grads meanwhile", layer);
  row("+ F&B pair halves interleaved (lanes)", pairs);
  std::printf("lanes: %lld baton hand-overs per step (one half computing while the other's all-to-all is in flight)\n\n",
              static_cast<long long>(pairs.yields));
}

// ---- part 3: pipeline idle vs the simulator -----------------------------------------------------------------

std::string PipeSpec(int pp, const std::string& schedule, int steps) {
  // 2·PP layers so that DualPipe's 2 stages per rank... every rank gets the same number of layers.
  std::ostringstream os;
  os << "name: bench-pipeline\n"
     << "model: {preset: demo, num_hidden_layers: " << 2 * pp << ", first_k_dense_replace: 0}\n"
     << "parallel: {pipeline: " << pp << ", data: 1, schedule: " << schedule << "}\n"
     << "train: {seq_len: 128, micro_batch: 2, global_batch: " << 2 * 4 * pp << ", seed: 3, warmup_steps: 1}\n"
     << "phases:\n  - {name: pretrain, kind: pretrain, data: {builtin: arith}, steps: " << steps
     << ", checkpoint: {every: " << steps << "}}\n";
  return os.str();
}

void PipelineIdle(int pp, const std::vector<std::string>& schedules, int steps) {
  std::printf("== pipeline idle per rank: measured (real %d-rank run, one thread per rank on %u cores) vs "
              "simulated from the measured op costs ==\n",
              pp, std::thread::hardware_concurrency());
  for (const auto& name : schedules) {
    const std::string yaml = PipeSpec(pp, name, steps);
    auto spec = ParseJobSpec(yaml, "bench-pipeline.yaml");
    if (!spec.ok()) Fail("spec", spec.status());
    std::vector<dist::PipelineTiming> timing(static_cast<size_t>(pp));
    std::vector<dist::DistLayout> layouts(static_cast<size_t>(pp));
    std::vector<int64_t> steps_run(static_cast<size_t>(pp));
    RunAllRanks(*spec, [](dist::DistConfig&) {}, [&](int r, dist::DistributedTrainer& t, double) {
      timing[static_cast<size_t>(r)] = t.pipeline_timing();
      layouts[static_cast<size_t>(r)] = t.layout();
      steps_run[static_cast<size_t>(r)] = t.steps_run();
    });

    // Per-stage op costs, averaged over every rank and micro-batch that ran the stage.
    const dist::DistLayout& l0 = layouts[0];
    struct Acc {
      double sec[5] = {0, 0, 0, 0, 0};
      int n[5] = {0, 0, 0, 0, 0};
    };
    std::vector<Acc> acc(static_cast<size_t>(l0.num_stages));
    for (int r = 0; r < pp; ++r) {
      const auto& l = layouts[static_cast<size_t>(r)];
      for (size_t c = 0; c < l.chunks.size(); ++c) {
        for (int k = 0; k < 5; ++k) {
          acc[static_cast<size_t>(l.chunks[c].stage_idx)].sec[k] += timing[static_cast<size_t>(r)].ops[c][static_cast<size_t>(k)].seconds;
          acc[static_cast<size_t>(l.chunks[c].stage_idx)].n[k] += timing[static_cast<size_t>(r)].ops[c][static_cast<size_t>(k)].count;
        }
      }
    }
    std::vector<schedule::OpCosts> costs(acc.size());
    for (size_t s = 0; s < acc.size(); ++s) {
      auto avg = [&](int k) { return acc[s].n[k] ? acc[s].sec[k] / acc[s].n[k] : -1.0; };
      const double f = avg(0), b = avg(1), w = avg(2), bw = avg(3), fb = avg(4);
      costs[s].f = f;
      if (b >= 0) {
        costs[s].b = b;
        costs[s].w = w >= 0 ? w : 0;
      } else {  // fused backwards only: B = the fused cost, W = 0
        costs[s].b = bw >= 0 ? bw : (fb >= 0 ? fb - f : 0);
        costs[s].w = 0;
      }
      costs[s].f_and_b = fb;
    }
    auto sched = schedule::GenerateSchedule(l0.kind, pp, l0.num_micro_batches);
    if (!sched.ok()) Fail("schedule", sched.status());
    auto sim = schedule::Simulate(*sched, costs);
    if (!sim.ok()) Fail("simulate", sim.status());
    const double steps_d = static_cast<double>(steps_run[0]);
    std::printf("%s, PP %d, %d micro-batches, %d steps:\n", name.c_str(), pp, l0.num_micro_batches,
                static_cast<int>(steps_run[0]));
    std::printf("  rank  span/step  compute  measured idle  simulated bubble  simulated span\n");
    for (int r = 0; r < pp; ++r) {
      const auto& t = timing[static_cast<size_t>(r)];
      const double span = t.span_s / steps_d, idle = (t.recv_wait_s + t.send_wait_s) / steps_d;
      const auto& sr = sim->ranks[static_cast<size_t>(r)];
      std::printf("  %4d  %8.1fms %7.1fms %9.1fms %4.0f%% %10.1fms %4.0f%% %11.1fms\n", r, 1e3 * span,
                  1e3 * t.compute_s / steps_d, 1e3 * idle, 100 * idle / span, 1e3 * sr.bubble,
                  100 * sr.bubble / sim->makespan, 1e3 * sim->makespan);
    }
  }
  std::printf("measured idle: blocked on a neighbour's activation or gradient (RECV) or on outstanding sends; "
              "simulated: schedule::Simulate with each stage's measured mean F/B/W costs.\n");
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"bench_overlap: expert all-to-all hidden behind compute (EP 2), pipeline idle vs simulator"};
  int steps = 8, pp = 4;
  std::string schedules = "1f1b,zb1p,dualpipe";
  bool skip_ep = false, skip_pipeline = false, skip_pairs = false;
  app.add_option("--steps", steps, "measured steps per case");
  app.add_option("--pp", pp, "pipeline ranks of the idle-time run");
  app.add_option("--schedules", schedules, "schedules of the idle-time run");
  app.add_flag("--no-ep", skip_ep, "skip the EP overlap part");
  app.add_flag("--no-pipeline", skip_pipeline, "skip the pipeline part");
  app.add_flag("--no-pairs", skip_pairs, "skip the DualPipe F&B pairs part");
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::warn);
  ThreadPool::SetDefaultThreads(1);  // ranks share this process: one compute thread each
  kernels::cpu::SetBlasThreads(1);
  if (!skip_ep) EpOverlap(steps);
  if (!skip_pairs) PairOverlap(steps);
  if (!skip_pipeline) {
    std::vector<std::string> list;
    std::stringstream ss(schedules);
    for (std::string s; std::getline(ss, s, ',');) list.push_back(s);
    PipelineIdle(pp, list, steps);
  }
  return 0;
}
