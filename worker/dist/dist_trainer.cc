#include "worker/dist/dist_trainer.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>

#include "common/file_util.h"
#include "common/thread_pool.h"
#include "kernels/cpu/blas.h"
#include "worker/checkpoint/async_writer.h"
#include "worker/checkpoint/model_dir.h"
#include "common/check.h"
#include "worker/comm/communicator.h"
#include "worker/data/data_source.h"
#include "worker/data/tokenizer.h"
#include "worker/dist/dist_layout.h"
#include "worker/dist/ep_exchange.h"
#include "worker/dist/pipeline_executor.h"
#include "worker/dist/zero_optimizer.h"
#include "worker/model/model.h"
#include "worker/train/lr_schedule.h"

namespace shoal::dist {
namespace {

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

bool IsBuiltinArith(const DataSpec& d) { return d.is_builtin() && d.builtin.rfind("arith", 0) == 0; }

// The MTP layer's own copy of the embedding (held by a last stage without model.embed_tokens).
bool IsEmbeddingCopy(const std::string& name) {
  return name.rfind("model.layers.", 0) == 0 && name.size() > 20 &&
         name.compare(name.size() - 20, 20, ".embed_tokens.weight") == 0;
}
constexpr char kEmbedding[] = "model.embed_tokens.weight";

model::MicroBatch MicroBatchOf(const data::Batch& rows) {
  return model::MicroBatch{rows.inputs.data(),      rows.targets.data(),   rows.mtp_inputs.data(),
                           rows.mtp_targets.data(), rows.positions.data(),
                           rows.block_diagonal ? rows.segment_ids.data() : nullptr,
                           static_cast<int>(rows.num_rows), static_cast<int>(rows.seq_len)};
}

}  // namespace

struct DistributedTrainer::State {
  DistConfig config;
  comm::Communicator* comm = nullptr;
  train::TrainerEvents* events = nullptr;
  DistLayout layout;
  WaitPolicy wait;
  std::unique_ptr<data::Tokenizer> tokenizer;
  std::unique_ptr<EpExchange> ep;                     // EP > 1; before the models that point at it
  std::unique_ptr<EpExchange> ep_lane1;               // EP > 1: the backward half of overlapped F&B pairs
  std::vector<std::unique_ptr<model::Model>> models;  // chunk order
  std::unique_ptr<PipelineExecutor> exec;
  std::optional<comm::Group> dp_group, replica_group, world;
  std::unique_ptr<checkpoint::AsyncCheckpointWriter> writer;  // per phase root
  std::string writer_root;
  double flops_per_token = 0;
  PipelineTiming timing;  // Σ over the steps run
  int64_t steps_run = 0;

  const JobSpec& spec() const { return config.trainer.spec; }
  Status RunPhase(size_t phase_index, const std::optional<train::RestorePoint>& restore,
                  const std::atomic<bool>& stop);
  Result<std::unique_ptr<ZeroOptimizer>> MakeOptimizer();
  Status LoadCheckpoint(const train::RestorePoint& restore, ZeroOptimizer* optimizer);
  Status LoadWeights(const std::function<const float*(const std::string&, const std::vector<int64_t>&)>& find);
  Status SubmitCheckpoint(size_t phase_index, int64_t step, const std::string& cursor_json, bool phase_done,
                          const ZeroOptimizer& optimizer);
  Status ExchangeEmbeddingGrad(double* waited);
  Result<double> SumLoads(double* waited);
  Result<double> Evaluate(const PhaseSpec& phase);
  // Sums `values` over `group` in member order (fp64, bitwise equal on every member).
  Status SumOver(const std::optional<comm::Group>& group, std::vector<double>& values, double* waited);
  std::vector<size_t> ChunksByStage() const;
  std::string PhaseRoot(const PhaseSpec& phase) const { return config.trainer.checkpoint_root + "/" + phase.name; }
};

DistributedTrainer::DistributedTrainer(std::unique_ptr<State> state) : s_(std::move(state)) {}

DistributedTrainer::~DistributedTrainer() {
  if (s_->writer) s_->writer->WaitIdle();
}

const DistLayout& DistributedTrainer::layout() const { return s_->layout; }

const PipelineTiming& DistributedTrainer::pipeline_timing() const { return s_->timing; }
int64_t DistributedTrainer::steps_run() const { return s_->steps_run; }

DistributedTrainer::ExchangeStats DistributedTrainer::exchange_stats() const {
  ExchangeStats out;
  for (const EpExchange* e : {s_->ep.get(), s_->ep_lane1.get()}) {
    if (e == nullptr) continue;
    out.exchanges += e->stats().exchanges;
    out.bytes_sent += e->stats().bytes_sent;
    out.wait_seconds += e->stats().wait_seconds;
  }
  if (s_->exec) out.overlap_yields = s_->exec->overlap_yields();
  return out;
}

std::vector<model::Model*> DistributedTrainer::chunks() {
  std::vector<model::Model*> out;
  for (auto& m : s_->models) out.push_back(m.get());
  return out;
}

std::vector<size_t> DistributedTrainer::State::ChunksByStage() const {
  std::vector<size_t> order(layout.chunks.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(),
            [&](size_t a, size_t b) { return layout.chunks[a].stage_idx < layout.chunks[b].stage_idx; });
  return order;
}

Result<std::unique_ptr<DistributedTrainer>> DistributedTrainer::Create(DistConfig config, comm::Communicator* comm,
                                                                      train::TrainerEvents* events) {
  auto s = std::make_unique<State>();
  s->config = std::move(config);
  s->comm = comm;
  s->events = events;
  s->wait.timeout = s->config.comm_timeout;
  const JobSpec& spec = s->config.trainer.spec;
  const auto& tc = s->config.trainer;
  ASSIGN_OR_RETURN(s->layout, MakeDistLayout(spec, static_cast<int>(tc.pp_rank), static_cast<int>(tc.dp_rank)));
  const DistLayout& l = s->layout;
  if (!s->config.stages.empty()) {
    std::vector<int> mine;
    for (const auto& c : l.chunks) mine.push_back(c.stage_idx);
    if (mine != s->config.stages) {
      return InvalidArgumentError("the placement gives rank " + std::to_string(l.rank) +
                                  " other stages than the job's layout: " + l.DebugString());
    }
  }
  if (s->config.expert_begin >= 0 &&
      (s->config.expert_begin != l.expert_begin || s->config.expert_end != l.expert_end)) {
    return InvalidArgumentError("the placement gives rank " + std::to_string(l.rank) + " routed experts [" +
                                std::to_string(s->config.expert_begin) + ", " + std::to_string(s->config.expert_end) +
                                "), the layout says [" + std::to_string(l.expert_begin) + ", " +
                                std::to_string(l.expert_end) + ")");
  }
  for (const auto& phase : spec.phases) {
    if (phase.kind == PhaseKind::kGrpo) {
      return UnimplementedError("phase '" + phase.name +
                                "' is GRPO, which runs on single-worker layouts only for now; use parallel "
                                "{pipeline: 1, data: 1} or drop the phase");
    }
  }
  const int world = static_cast<int>(l.world.size());
  if (world > 1) {
    if (comm == nullptr) {
      return FailedPreconditionError("this worker has no data plane (UCX did not start) and cannot run a " +
                                     std::to_string(world) + "-worker layout");
    }
    for (int r = 0; r < world; ++r) {
      if (!s->config.peers.count(r)) {
        return InvalidArgumentError("the assignment lists no data address for rank " + std::to_string(r));
      }
    }
    if (s->config.connect) {
      RETURN_IF_ERROR(comm->Connect(tc.epoch, l.rank, s->config.peers).WithContext("joining the job's data plane"));
    }
    auto group = [](const std::vector<int>& members, uint32_t id) -> Result<std::optional<comm::Group>> {
      if (members.size() <= 1) return std::optional<comm::Group>();
      ASSIGN_OR_RETURN(comm::Group g, comm::Group::Create(members, id));
      return std::optional<comm::Group>(std::move(g));
    };
    ASSIGN_OR_RETURN(s->dp_group, group(l.dp_group, l.dp_group_id));
    ASSIGN_OR_RETURN(s->replica_group, group(l.replica_group, l.replica_group_id));
    ASSIGN_OR_RETURN(s->world, group(l.world, kWorldGroupId));
  }
  if (tc.threads > 0) ThreadPool::SetDefaultThreads(tc.threads);
  kernels::cpu::SetBlasThreads(0);
  ASSIGN_OR_RETURN(s->tokenizer, data::LoadTokenizer("byte"));
  const ModelConfig& mc = spec.model.config;
  RETURN_IF_ERROR(data::CheckTokenizerFitsModel(*s->tokenizer, mc.vocab_size, mc.bos_token_id, mc.eos_token_id));

  ASSIGN_OR_RETURN(schedule::Schedule sched, schedule::GenerateSchedule(l.kind, l.pp, l.num_micro_batches));
  schedule::RankSchedule ops = sched.ranks[static_cast<size_t>(l.pp_rank)];
  const std::vector<int> peak = PeakInFlight(ops);
  if (l.ep > 1) {
    ASSIGN_OR_RETURN(comm::Group g, comm::Group::Create(l.ep_members, l.ep_group_id));
    EpExchangeOptions eo;
    eo.deadline = s->config.comm_timeout;
    eo.serialize = s->config.serialize_exchanges;
    eo.precision.dispatch_fp8 = DispatchInFp8(spec);
    eo.precision.combine_bf16 = CombineInBf16(spec);
    if (spec.parallel.max_nodes_per_token > 0 && !s->config.hosts.empty()) {
      int max_hosts = 0;
      RETURN_IF_ERROR(CheckNodeLimit(spec, l, s->config.hosts, &max_hosts));
      if (l.rank == 0) {
        spdlog::info("node-limited routing: a token's experts span at most {} host(s) (limit {})", max_hosts,
                     spec.parallel.max_nodes_per_token);
      }
    }
    ASSIGN_OR_RETURN(comm::Group g1, comm::Group::Create(l.ep_members, l.ep_overlap_group_id));
    ASSIGN_OR_RETURN(s->ep, EpExchange::Create(comm, std::move(g), eo));
    ASSIGN_OR_RETURN(s->ep_lane1, EpExchange::Create(comm, std::move(g1), eo));
  }
  for (size_t c = 0; c < l.chunks.size(); ++c) {
    const StageLayout& st = l.chunks[c];
    model::ModelOptions o;
    o.precision = spec.precision;
    o.layer_begin = st.layer_begin;
    o.layer_end = st.layer_end;
    o.has_embedding = st.has_embedding;
    o.has_head = st.has_head;
    o.expert_begin = l.expert_begin;
    o.expert_end = l.expert_end;
    o.max_batch = spec.train.micro_batch;
    o.max_seq = spec.train.seq_len;
    o.balance_alpha = static_cast<float>(spec.train.balance_alpha);
    o.mtp_lambda = static_cast<float>(spec.train.mtp_lambda);
    o.defer_weight_grads = SplitsBackward(ops, static_cast<int>(c));
    o.activation_slots = std::max(1, peak[c]);
    auto m = model::Model::Create(mc, o);
    if (!m.ok()) return m.status().WithContext("stage " + std::to_string(st.stage_idx) + " of rank " + std::to_string(l.rank));
    (*m)->InitRandom(spec.train.seed, static_cast<float>(spec.train.init_std));
    if (s->ep) RETURN_IF_ERROR((*m)->SetExpertExchange(s->ep.get()));
    s->models.push_back(std::move(*m));
  }
  if (!spec.model.init_from.empty() && !tc.restore) {
    ASSIGN_OR_RETURN(auto init, checkpoint::LoadModelDir(spec.model.init_from));
    Status loaded = s->LoadWeights([&](const std::string& name, const std::vector<int64_t>& shape) {
      return checkpoint::FindF32(init.tensors, name, shape);
    });
    if (!loaded.ok()) return loaded.WithContext("model.init_from " + spec.model.init_from);
  }
  std::vector<model::Model*> raw;
  for (auto& m : s->models) raw.push_back(m.get());
  ASSIGN_OR_RETURN(s->exec, PipelineExecutor::Create(l, std::move(ops), raw, comm, spec.train.micro_batch,
                                                     spec.train.seq_len, mc.hidden_size, s->wait));
  if (s->ep && s->config.overlap_pairs) s->exec->SetOverlapExchanges(s->ep.get(), s->ep_lane1.get());
  s->flops_per_token = train::TrainingFlopsPerToken(mc, spec.train.seq_len);
  if (!tc.checkpoint_root.empty()) {
    RETURN_IF_ERROR(MakeDirs(tc.checkpoint_root));
    if (l.rank == 0) {  // beside the checkpoints: what they are (shoal generate/eval and export read these)
      RETURN_IF_ERROR(WriteFileAtomic(tc.checkpoint_root + "/config.json", ToHfConfigJson(mc)));
      RETURN_IF_ERROR(WriteFileAtomic(tc.checkpoint_root + "/job.yaml", JobSpecToYaml(spec)));
    }
  }
  spdlog::info("{}", l.DebugString());
  return std::unique_ptr<DistributedTrainer>(new DistributedTrainer(std::move(s)));
}

Status DistributedTrainer::State::LoadWeights(
    const std::function<const float*(const std::string&, const std::vector<int64_t>&)>& find) {
  for (auto& m : models) {
    RETURN_IF_ERROR(m->Load([&](const std::string& name, const std::vector<int64_t>& shape) -> const float* {
      const float* p = find(name, shape);
      // A layout whose last stage holds the embedding (one stage) stores no copy: it is the embedding.
      if (p == nullptr && IsEmbeddingCopy(name)) p = find(kEmbedding, shape);
      return p;
    }));
  }
  return Status::OK();
}

Result<std::unique_ptr<ZeroOptimizer>> DistributedTrainer::State::MakeOptimizer() {
  ZeroBucketSpec replicated{"replicated", layout.replica_group, layout.replica_group_id, {}};
  ZeroBucketSpec experts{"experts", layout.expert_group, layout.expert_group_id, {}};
  for (size_t c : ChunksByStage()) {
    model::Model& m = *models[c];
    std::map<std::string, float*> grad_of;
    for (const auto& g : m.Gradients()) grad_of[g.name] = g.data;
    for (const auto& p : m.Parameters()) {
      if (!m.IsTrainable(p.name)) continue;
      ZeroTensor t;
      t.name = p.name;
      t.shape = p.shape;
      t.param = p.data;
      t.grad = grad_of.at(p.name);
      t.numel = p.numel();
      t.decay = p.shape.size() >= 2;  // no weight decay on RMSNorm weights (as the single-worker AdamW)
      t.in_norm = !IsEmbeddingCopy(p.name);
      (layout.ep > 1 && IsExpertTensor(p.name) ? experts : replicated).tensors.push_back(std::move(t));
    }
  }
  std::vector<ZeroBucketSpec> buckets;
  buckets.push_back(std::move(replicated));
  if (!experts.tensors.empty()) buckets.push_back(std::move(experts));
  const TrainSpec& t = spec().train;
  return ZeroOptimizer::Create(comm, layout.rank, layout.world, std::move(buckets),
                               train::AdamWParams{t.beta1, t.beta2, t.eps, t.weight_decay}, wait);
}

Status DistributedTrainer::Run(const std::atomic<bool>& stop) {
  s_->wait.stop = &stop;
  s_->exec->SetWaitPolicy(s_->wait);
  if (s_->ep) s_->ep->SetStop(&stop);
  if (s_->ep_lane1) s_->ep_lane1->SetStop(&stop);
  const JobSpec& spec = s_->spec();
  size_t first = 0;
  std::optional<train::RestorePoint> restore = s_->config.trainer.restore;
  if (restore) {
    first = restore->phase_index + (restore->phase_done ? 1 : 0);
    if (restore->phase_done) {
      RETURN_IF_ERROR(s_->LoadCheckpoint(*restore, nullptr));  // weights only: a fresh optimizer and data stream
      restore.reset();
    }
  }
  for (size_t p = first; p < spec.phases.size(); ++p) {
    if (stop.load()) return CancelledError("stopped");
    RETURN_IF_ERROR(s_->RunPhase(p, restore, stop));
    restore.reset();
  }
  if (s_->writer) s_->writer->WaitIdle();
  return Status::OK();
}

Status DistributedTrainer::State::LoadCheckpoint(const train::RestorePoint& restore, ZeroOptimizer* optimizer) {
  ASSIGN_OR_RETURN(auto merged, checkpoint::LoadMerged(restore.step_dir));
  RETURN_IF_ERROR(LoadWeights([&](const std::string& name, const std::vector<int64_t>& shape) {
    return checkpoint::FindF32(merged.params, name, shape);
  }));
  if (optimizer) {
    optimizer->set_step(merged.optimizer_step);
    for (const auto& o : optimizer->owned()) {
      const std::string& name = o.tensor->name;
      auto m = merged.moments.find(name + ".exp_avg");
      auto v = merged.moments.find(name + ".exp_avg_sq");
      if ((m == merged.moments.end() || v == merged.moments.end()) && IsEmbeddingCopy(name)) {
        m = merged.moments.find(std::string(kEmbedding) + ".exp_avg");
        v = merged.moments.find(std::string(kEmbedding) + ".exp_avg_sq");
      }
      if (m == merged.moments.end() || v == merged.moments.end()) {
        return DataLossError("checkpoint " + restore.step_dir + " has no optimizer state for " + name);
      }
      RETURN_IF_ERROR(optimizer->LoadMoments(name, m->second.values<uint16_t>().data(),
                                             v->second.values<uint16_t>().data(), o.tensor->numel));
    }
  }
  spdlog::info("rank {}: restored checkpoint {} (step {}, optimizer step {})", layout.rank, restore.step_dir,
               merged.step, merged.optimizer_step);
  return Status::OK();
}

Status DistributedTrainer::State::SubmitCheckpoint(size_t phase_index, int64_t step, const std::string& cursor_json,
                                                   bool phase_done, const ZeroOptimizer& optimizer) {
  if (config.trainer.checkpoint_root.empty()) return Status::OK();
  const PhaseSpec& phase = spec().phases[phase_index];
  std::string root = PhaseRoot(phase);
  if (!writer || writer_root != root) {
    if (writer) writer->WaitIdle();
    writer = std::make_unique<checkpoint::AsyncCheckpointWriter>(root);
    writer_root = root;
  }
  checkpoint::ShardWriteRequest req;
  req.shard = train::ShardName(config.trainer.pp_rank, config.trainer.dp_rank);
  req.state.step = step;
  req.state.phase = phase.name;
  req.state.epoch = static_cast<int64_t>(config.trainer.epoch);
  req.state.data_cursor_json = cursor_json;
  req.state.extra_json["phase_index"] = std::to_string(phase_index);
  req.state.extra_json["phase_done"] = phase_done ? "true" : "false";
  req.optimizer_step = optimizer.step();
  // Each trainable tensor once across the job: by its ZeRO owner, with its moments.
  for (const auto& o : optimizer.owned()) {
    const ZeroTensor& t = *o.tensor;
    req.params.emplace(t.name, checkpoint::TensorRef{checkpoint::DType::kF32, t.shape, t.param});
    req.moments.emplace(t.name + ".exp_avg", checkpoint::TensorRef{checkpoint::DType::kBF16, t.shape, o.exp_avg});
    req.moments.emplace(t.name + ".exp_avg_sq",
                        checkpoint::TensorRef{checkpoint::DType::kBF16, t.shape, o.exp_avg_sq});
  }
  // Buffers without a gradient (e_score_correction_bias) are identical on every replica: the first writes them.
  if (layout.rank == layout.replica_group.front()) {
    for (auto& m : models) {
      for (const auto& p : m->Parameters()) {
        if (!m->IsTrainable(p.name)) req.params.emplace(p.name, checkpoint::TensorRef{checkpoint::DType::kF32, p.shape, p.data});
      }
    }
  }
  std::string step_dir = checkpoint::StepDir(root, step);
  train::TrainerEvents* ev = events;
  uint32_t pi = static_cast<uint32_t>(phase_index);
  std::string phase_name = phase.name;
  return writer->Submit(req, [ev, pi, phase_name, step, step_dir, cursor_json,
                              phase_done](Result<checkpoint::ShardManifest> r) {
    if (!r.ok()) {
      ev->OnCheckpointFailed(r.status());
      return;
    }
    ev->OnCheckpoint(train::CheckpointWritten{phase_name, pi, step, step_dir, *r, cursor_json, phase_done});
  });
}

Status DistributedTrainer::State::SumOver(const std::optional<comm::Group>& group, std::vector<double>& values,
                                          double* waited) {
  if (!group) return Status::OK();
  const size_t n = values.size();
  std::vector<double> all(n * static_cast<size_t>(group->size()));
  comm::CommHandle h = comm->AllGather(*group, std::as_bytes(std::span<const double>(values)),
                                       std::as_writable_bytes(std::span<double>(all)));
  RETURN_IF_ERROR(WaitFor(h, wait, waited));
  std::fill(values.begin(), values.end(), 0.0);
  for (int m = 0; m < group->size(); ++m) {
    for (size_t i = 0; i < n; ++i) values[i] += all[static_cast<size_t>(m) * n + i];
  }
  return Status::OK();
}

// The MTP layer's embedding copy and model.embed_tokens get the sum of both gradients, so that the two copies
// take identical updates (a + b is commutative in IEEE arithmetic: both sides compute the same bits).
Status DistributedTrainer::State::ExchangeEmbeddingGrad(double* waited) {
  if (layout.mtp_pairing == DistLayout::MtpPairing::kNone) return Status::OK();
  float* embed = nullptr;
  float* copy = nullptr;
  int64_t numel = 0;
  for (auto& m : models) {
    for (const auto& g : m->Gradients()) {
      if (g.name == kEmbedding) embed = g.data;
      if (IsEmbeddingCopy(g.name)) copy = g.data;
      if (g.name == kEmbedding || IsEmbeddingCopy(g.name)) numel = g.numel();
    }
  }
  if (layout.mtp_pairing == DistLayout::MtpPairing::kLocal) {
    CHECK(embed != nullptr && copy != nullptr) << "rank " << layout.rank << " holds both embedding copies";
    for (int64_t i = 0; i < numel; ++i) copy[i] = embed[i] = embed[i] + copy[i];
    return Status::OK();
  }
  float* mine = embed != nullptr ? embed : copy;
  CHECK(mine != nullptr) << "rank " << layout.rank << " exchanges an embedding gradient it does not hold";
  std::vector<float> other(static_cast<size_t>(numel));
  const uint32_t tag = PipeTag(PipeTensor::kMtpEmbedGrad, 0, 0);
  comm::CommHandle send = comm->Send(layout.mtp_pair_rank, tag, std::as_bytes(std::span<const float>(mine, numel)));
  comm::CommHandle recv = comm->Recv(layout.mtp_pair_rank, tag, std::as_writable_bytes(std::span<float>(other)));
  RETURN_IF_ERROR(WaitFor(recv, wait, waited).WithContext("MTP embedding gradient"));
  RETURN_IF_ERROR(WaitFor(send, wait, waited).WithContext("MTP embedding gradient"));
  for (int64_t i = 0; i < numel; ++i) mine[i] = mine[i] + other[static_cast<size_t>(i)];
  return Status::OK();
}

// Expert loads summed over every replica of this rank's stages (their DP replicas and DualPipe's other copy),
// set back into the models; returns the step's expert imbalance over these stages.
Result<double> DistributedTrainer::State::SumLoads(double* waited) {
  std::vector<std::pair<size_t, std::pair<int64_t, std::vector<int32_t>>>> layers;  // (chunk, (layer, loads))
  std::vector<double> flat;
  for (size_t c : ChunksByStage()) {
    for (auto& entry : models[c]->Loads()) {
      for (int32_t x : entry.second) flat.push_back(static_cast<double>(x));
      layers.emplace_back(c, std::move(entry));
    }
  }
  if (flat.empty()) return 0.0;
  RETURN_IF_ERROR(SumOver(replica_group, flat, waited));
  std::vector<std::pair<int64_t, std::vector<int32_t>>> summed;
  size_t at = 0;
  for (auto& [c, entry] : layers) {
    for (auto& x : entry.second) x = static_cast<int32_t>(flat[at++]);
    RETURN_IF_ERROR(models[c]->SetLoads(entry.first, entry.second));
    summed.push_back(entry);
  }
  return train::ExpertImbalance(summed);
}

Result<double> DistributedTrainer::State::Evaluate(const PhaseSpec& phase) {
  const int batches = config.trainer.eval_batches;
  if (!IsBuiltinArith(phase.data) || batches <= 0) return NAN;
  data::DataOptions options;
  options.seq_len = spec().train.seq_len;
  options.seed = spec().train.seed;
  options.split = data::ArithSplit::kEval;
  ASSIGN_OR_RETURN(auto source, data::OpenDataSource(phase.data, phase.kind, *tokenizer, options));
  std::vector<data::Batch> rows;
  auto cursor = source->Start();
  const int64_t n = spec().train.micro_batch;
  for (int b = 0; b < batches; ++b) {
    ASSIGN_OR_RETURN(auto batch, source->Next(cursor, n));
    rows.push_back(std::move(batch));
    ASSIGN_OR_RETURN(cursor, source->Advance(cursor, n));
  }
  std::vector<model::MicroBatch> mbs;
  for (const auto& r : rows) mbs.push_back(MicroBatchOf(r));
  ASSIGN_OR_RETURN(model::StepLosses losses, exec->Evaluate(mbs));
  const int last_rank = schedule::RankOfStage(layout.kind, layout.pp, layout.num_micro_batches, layout.num_stages - 1, 0);
  if (last_rank != layout.pp_rank || losses.main_count == 0) return NAN;
  return losses.main_sum / static_cast<double>(losses.main_count);
}

Status DistributedTrainer::State::RunPhase(size_t phase_index, const std::optional<train::RestorePoint>& restore,
                                           const std::atomic<bool>& stop) {
  const JobSpec& sp = spec();
  const PhaseSpec& phase = sp.phases[phase_index];
  data::DataOptions options;
  options.seq_len = sp.train.seq_len;
  options.seed = sp.train.seed;
  ASSIGN_OR_RETURN(auto source, data::OpenDataSource(phase.data, phase.kind, *tokenizer, options));
  ASSIGN_OR_RETURN(auto optimizer, MakeOptimizer());
  data::DataCursor cursor = source->Start();
  int64_t start_step = 0;
  if (restore && restore->phase_index == phase_index) {
    RETURN_IF_ERROR(LoadCheckpoint(*restore, optimizer.get()));
    ASSIGN_OR_RETURN(cursor, data::DataCursor::FromJson(restore->cursor_json));
    start_step = restore->step;
  }
  const train::LrScheduleParams lr_schedule = train::ScheduleOf(sp, phase_index);
  const int64_t micro = sp.train.micro_batch;
  const int64_t global = sp.train.global_batch;
  const int m = layout.num_micro_batches;
  const float gamma = static_cast<float>(sp.train.bias_update_speed);
  if (layout.rank == 0) {
    spdlog::info("phase '{}' ({}): steps {}..{}, {} micro-batches of {} x {} tokens per pipeline, {} {}x{}",
                 phase.name, ToString(phase.kind), start_step + 1, phase.steps, m, micro, sp.train.seq_len,
                 schedule::ToString(layout.kind), layout.pp, layout.dp);
  }
  for (int64_t step = start_step + 1; step <= phase.steps; ++step) {
    if (stop.load()) return CancelledError("stopped at step " + std::to_string(step) + " of phase " + phase.name);
    const auto t0 = Clock::now();
    double comm_s = 0;
    ASSIGN_OR_RETURN(data::Batch batch, source->ReadStep(cursor, global, layout.dp_rank, layout.dp));
    std::vector<double> counts = {0, 0};
    for (auto x : batch.loss_mask) counts[0] += x;
    for (auto x : batch.mtp_mask) counts[1] += x;
    RETURN_IF_ERROR(SumOver(dp_group, counts, &comm_s).WithContext("global target counts"));
    const model::LossScales scales = model::MeanLossScales(
        static_cast<int64_t>(counts[0]), static_cast<int64_t>(counts[1]), sp.model.config.num_nextn_predict_layers,
        static_cast<float>(phase.effective_mtp_lambda(sp.train)), static_cast<double>(micro) / static_cast<double>(global));
    std::vector<data::Batch> rows;
    std::vector<model::MicroBatch> mbs;
    rows.reserve(static_cast<size_t>(m));
    for (int i = 0; i < m; ++i) rows.push_back(batch.Slice(i * micro, micro));
    for (const auto& r : rows) mbs.push_back(MicroBatchOf(r));
    for (auto& model : models) {
      model->ZeroGrad();
      model->ZeroLoads();
    }
    auto pipe = exec->RunStep(mbs, scales);
    if (!pipe.ok()) return pipe.status().WithContext("step " + std::to_string(step) + " of phase " + phase.name);
    timing.Add(pipe->timing);
    ++steps_run;
    RETURN_IF_ERROR(ExchangeEmbeddingGrad(&comm_s));
    const double lr = train::LearningRate(lr_schedule, step);
    const auto t_opt = Clock::now();
    auto opt = optimizer->Step(lr, sp.train.grad_clip);
    if (!opt.ok()) return opt.status().WithContext("optimizer step " + std::to_string(step) + " of phase " + phase.name);
    const double opt_compute = Since(t_opt) - opt->comm_wait_s;
    comm_s += opt->comm_wait_s;
    ASSIGN_OR_RETURN(double imbalance, SumLoads(&comm_s));
    for (auto& model : models) model->UpdateBias(gamma);
    // Losses over the world: the head holders' sums (every rank sees the same totals).
    std::vector<double> sums = {pipe->losses.main_sum, static_cast<double>(pipe->losses.main_count),
                                pipe->losses.mtp_sum, static_cast<double>(pipe->losses.mtp_count),
                                pipe->losses.balance};
    RETURN_IF_ERROR(SumOver(world, sums, &comm_s).WithContext("step losses"));
    if (!std::isfinite(sums[0])) {
      return InternalError("loss is not finite at step " + std::to_string(step) + " of phase " + phase.name +
                           "; lower the learning rate or check the data");
    }
    ASSIGN_OR_RETURN(cursor, source->Advance(cursor, global));

    const double seconds = Since(t0);
    train::StepMetrics metrics;
    metrics.phase = phase.name;
    metrics.phase_index = static_cast<uint32_t>(phase_index);
    metrics.step = step;
    metrics.total_steps = phase.steps;
    metrics.loss = sums[1] > 0 ? sums[0] / sums[1] : 0;
    metrics.mtp_loss = sums[3] > 0 ? sums[2] / sums[3] : 0;
    metrics.balance_loss = sums[4] / (static_cast<double>(global) / static_cast<double>(micro));
    metrics.grad_norm = opt->grad_norm;
    metrics.lr = lr;
    const double tokens = static_cast<double>(global * sp.train.seq_len);
    metrics.tokens_per_s = tokens / seconds;
    metrics.gflops = tokens * flops_per_token / seconds * 1e-9 / static_cast<double>(layout.world.size());
    metrics.expert_imbalance = imbalance;
    metrics.seconds = seconds;
    metrics.compute_s = pipe->timing.compute_s + opt_compute;
    metrics.comm_s = comm_s;
    metrics.idle_s = pipe->timing.recv_wait_s + pipe->timing.send_wait_s;
    const bool phase_done = step == phase.steps;
    const bool checkpoint_now = train::IsCheckpointStep(phase, step);
    if (checkpoint_now) { ASSIGN_OR_RETURN(metrics.eval_loss, Evaluate(phase)); }
    events->OnStep(metrics);
    if (checkpoint_now) {
      RETURN_IF_ERROR(SubmitCheckpoint(phase_index, step, cursor.ToJson(), phase_done, *optimizer));
    }
  }
  return Status::OK();
}

}  // namespace shoal::dist
