#include "worker/train/trainer.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <cmath>

#include "common/file_util.h"
#include "common/thread_pool.h"
#include "kernels/cpu/blas.h"
#include "kernels/cpu/clip.h"
#include "worker/checkpoint/async_writer.h"
#include "worker/checkpoint/model_dir.h"
#include "worker/data/data_source.h"
#include "worker/data/tokenizer.h"
#include "worker/model/model.h"
#include "worker/train/grpo.h"
#include "worker/train/lr_schedule.h"
#include "worker/train/optimizer.h"

namespace shoal::train {
namespace {

using Clock = std::chrono::steady_clock;

bool IsBuiltinArith(const DataSpec& d) { return d.is_builtin() && d.builtin.rfind("arith", 0) == 0; }

}  // namespace

std::string ShardName(uint32_t pp, uint32_t dp) { return "pp" + std::to_string(pp) + "-dp" + std::to_string(dp); }

bool IsCheckpointStep(const PhaseSpec& phase, int64_t step) {
  return step == phase.steps || (phase.checkpoint.every > 0 && step % phase.checkpoint.every == 0);
}

double ExpertImbalance(const std::vector<std::pair<int64_t, std::vector<int32_t>>>& loads) {
  double imbalance = 0;
  for (const auto& [layer, l] : loads) {
    double sum = 0, mx = 0;
    for (int32_t x : l) {
      sum += x;
      mx = std::max<double>(mx, x);
    }
    if (sum > 0) imbalance += mx / (sum / static_cast<double>(l.size()));
  }
  if (!loads.empty()) imbalance /= static_cast<double>(loads.size());
  return imbalance;
}

double TrainingFlopsPerToken(const ModelConfig& c, int64_t seq_len) {
  auto counts = CountParams(c);
  const double H = static_cast<double>(c.hidden_size);
  // One MoE block as a token sees it: attention + shared expert + K routed experts + router.
  double mla = static_cast<double>(counts.mla_per_layer);
  double active_moe = mla + 3.0 * H * c.moe_intermediate_size * (c.n_shared_experts + c.num_experts_per_tok) +
                      H * c.n_routed_experts;
  double mtp = c.num_nextn_predict_layers * (2.0 * H * H + active_moe + H * c.vocab_size);
  double params = static_cast<double>(counts.main_activated_excl_embedding) + mtp;
  double layers = static_cast<double>(c.num_hidden_layers + c.num_nextn_predict_layers);
  double attention = 3.0 * seq_len * c.num_attention_heads *
                     static_cast<double>(c.qk_nope_head_dim + c.qk_rope_head_dim + c.v_head_dim);
  return 6.0 * params + layers * attention;
}

struct Trainer::State {
  TrainerConfig config;
  TrainerEvents* events = nullptr;
  std::unique_ptr<data::Tokenizer> tokenizer;
  std::unique_ptr<model::Model> model;
  std::unique_ptr<checkpoint::AsyncCheckpointWriter> writer;  // per phase root
  std::string writer_root;
  double flops_per_token = 0;
  bool init_chat = false;  // model.init_from holds a model fine-tuned with the chat template

  Status RunPhase(size_t phase_index, const std::optional<RestorePoint>& restore, const std::atomic<bool>& stop);
  Status RunGrpoPhase(size_t phase_index, const std::optional<RestorePoint>& restore, const std::atomic<bool>& stop);
  Status LoadCheckpoint(const RestorePoint& restore, AdamW* optimizer);
  Status SubmitCheckpoint(size_t phase_index, int64_t step, const std::string& cursor_json, bool phase_done,
                          const AdamW& optimizer);
  double Evaluate(const PhaseSpec& phase, int batches);
  std::vector<OptimizedTensor> TrainableTensors();
  std::string PhaseRoot(const PhaseSpec& phase) const { return config.checkpoint_root + "/" + phase.name; }
};

Trainer::Trainer(std::unique_ptr<State> state) : s_(std::move(state)) {}

Trainer::~Trainer() {
  if (s_->writer) s_->writer->WaitIdle();
}

model::Model& Trainer::model() { return *s_->model; }

Result<std::unique_ptr<Trainer>> Trainer::Create(TrainerConfig config, TrainerEvents* events) {
  auto s = std::make_unique<State>();
  s->config = std::move(config);
  s->events = events;
  const JobSpec& spec = s->config.spec;
  if (spec.parallel.world_size() != 1) {
    return UnimplementedError("this worker runs single-worker layouts (pipeline 1, data 1); the job asks for " +
                              std::to_string(spec.parallel.pipeline) + "x" + std::to_string(spec.parallel.data));
  }
  if (s->config.threads > 0) ThreadPool::SetDefaultThreads(s->config.threads);
  kernels::cpu::SetBlasThreads(0);
  ASSIGN_OR_RETURN(s->tokenizer, data::LoadTokenizer("byte"));
  const ModelConfig& mc = spec.model.config;
  RETURN_IF_ERROR(data::CheckTokenizerFitsModel(*s->tokenizer, mc.vocab_size, mc.bos_token_id, mc.eos_token_id));
  model::ModelOptions options;
  options.precision = spec.precision;
  options.max_batch = spec.train.micro_batch;
  options.max_seq = spec.train.seq_len;
  options.balance_alpha = static_cast<float>(spec.train.balance_alpha);
  options.mtp_lambda = static_cast<float>(spec.train.mtp_lambda);
  ASSIGN_OR_RETURN(s->model, model::Model::Create(mc, options));
  s->model->InitRandom(spec.train.seed, static_cast<float>(spec.train.init_std));
  if (!spec.model.init_from.empty()) {
    ASSIGN_OR_RETURN(auto init, s->config.restore ? checkpoint::InspectModelDir(spec.model.init_from)
                                                   : checkpoint::LoadModelDir(spec.model.init_from));
    s->init_chat = init.chat;
    if (!s->config.restore) {  // a restore point supersedes the initial weights
      Status loaded = s->model->Load([&](const std::string& name, const std::vector<int64_t>& shape) {
        return checkpoint::FindF32(init.tensors, name, shape);
      });
      if (!loaded.ok()) return loaded.WithContext("model.init_from " + spec.model.init_from);
      spdlog::info("initialised the model from {} ({})", spec.model.init_from, init.kind);
    }
  }
  s->flops_per_token = TrainingFlopsPerToken(mc, spec.train.seq_len);
  if (!s->config.checkpoint_root.empty()) {
    // Beside the checkpoints: what they are (shoal generate/eval and export read these).
    RETURN_IF_ERROR(MakeDirs(s->config.checkpoint_root));
    RETURN_IF_ERROR(WriteFileAtomic(s->config.checkpoint_root + "/config.json", ToHfConfigJson(mc)));
    RETURN_IF_ERROR(WriteFileAtomic(s->config.checkpoint_root + "/job.yaml", JobSpecToYaml(spec)));
  }
  return std::unique_ptr<Trainer>(new Trainer(std::move(s)));
}

std::vector<OptimizedTensor> Trainer::State::TrainableTensors() {
  std::vector<OptimizedTensor> out;
  auto params = model->Parameters();
  auto grads = model->Gradients();
  std::map<std::string, const float*> grad_of;
  for (const auto& g : grads) grad_of[g.name] = g.data;
  for (const auto& p : params) {
    if (!model->IsTrainable(p.name)) continue;
    OptimizedTensor t;
    t.name = p.name;
    t.param = p.data;
    t.grad = grad_of.at(p.name);
    t.numel = p.numel();
    t.decay = p.shape.size() >= 2;  // no weight decay on RMSNorm weights
    out.push_back(t);
  }
  return out;
}

Status Trainer::Run(const std::atomic<bool>& stop) {
  const JobSpec& spec = s_->config.spec;
  size_t first = 0;
  std::optional<RestorePoint> restore = s_->config.restore;
  if (restore) {
    first = restore->phase_index + (restore->phase_done ? 1 : 0);
    if (restore->phase_done) {
      // Weights only: the next phase starts a fresh optimizer and data stream.
      RETURN_IF_ERROR(s_->LoadCheckpoint(*restore, nullptr));
      restore.reset();
    }
  }
  for (size_t p = first; p < spec.phases.size(); ++p) {
    if (stop.load()) return CancelledError("stopped");
    Status st = spec.phases[p].kind == PhaseKind::kGrpo ? s_->RunGrpoPhase(p, restore, stop)
                                                        : s_->RunPhase(p, restore, stop);
    RETURN_IF_ERROR(st);
    restore.reset();
  }
  if (s_->writer) s_->writer->WaitIdle();
  return Status::OK();
}

Status Trainer::State::LoadCheckpoint(const RestorePoint& restore, AdamW* optimizer) {
  ASSIGN_OR_RETURN(auto merged, checkpoint::LoadMerged(restore.step_dir));
  RETURN_IF_ERROR(model->Load([&](const std::string& name, const std::vector<int64_t>& shape) {
    return checkpoint::FindF32(merged.params, name, shape);
  }));
  if (optimizer) {
    optimizer->set_step(merged.optimizer_step);
    for (const auto& t : optimizer->tensors()) {
      auto m = merged.moments.find(t.name + ".exp_avg");
      auto v = merged.moments.find(t.name + ".exp_avg_sq");
      if (m == merged.moments.end() || v == merged.moments.end()) {
        return DataLossError("checkpoint " + restore.step_dir + " has no optimizer state for " + t.name);
      }
      RETURN_IF_ERROR(optimizer->LoadMoments(t.name, m->second.values<uint16_t>().data(),
                                             v->second.values<uint16_t>().data(),
                                             t.numel));
    }
  }
  spdlog::info("restored checkpoint {} (step {}, optimizer step {})", restore.step_dir, merged.step,
               merged.optimizer_step);
  return Status::OK();
}

Status Trainer::State::SubmitCheckpoint(size_t phase_index, int64_t step, const std::string& cursor_json,
                                        bool phase_done, const AdamW& optimizer) {
  if (config.checkpoint_root.empty()) return Status::OK();
  const PhaseSpec& phase = config.spec.phases[phase_index];
  std::string root = PhaseRoot(phase);
  if (!writer || writer_root != root) {
    if (writer) writer->WaitIdle();
    writer = std::make_unique<checkpoint::AsyncCheckpointWriter>(root);
    writer_root = root;
  }
  checkpoint::ShardWriteRequest req;
  req.shard = ShardName(config.pp_rank, config.dp_rank);
  req.state.step = step;
  req.state.phase = phase.name;
  req.state.epoch = static_cast<int64_t>(config.epoch);
  req.state.data_cursor_json = cursor_json;
  req.state.extra_json["phase_index"] = std::to_string(phase_index);
  req.state.extra_json["phase_done"] = phase_done ? "true" : "false";
  req.optimizer_step = optimizer.step();
  for (const auto& p : model->Parameters()) {
    req.params.emplace(p.name, checkpoint::TensorRef{checkpoint::DType::kF32, p.shape, p.data});
  }
  auto& opt = const_cast<AdamW&>(optimizer);
  for (size_t i = 0; i < opt.tensors().size(); ++i) {
    const auto& t = opt.tensors()[i];
    std::vector<int64_t> shape;
    for (const auto& p : model->Parameters()) {
      if (p.name == t.name) shape = p.shape;
    }
    req.moments.emplace(t.name + ".exp_avg", checkpoint::TensorRef{checkpoint::DType::kBF16, shape, opt.exp_avg(i)});
    req.moments.emplace(t.name + ".exp_avg_sq",
                        checkpoint::TensorRef{checkpoint::DType::kBF16, shape, opt.exp_avg_sq(i)});
  }
  std::string step_dir = checkpoint::StepDir(root, step);
  TrainerEvents* ev = events;
  uint32_t pi = static_cast<uint32_t>(phase_index);
  std::string phase_name = phase.name;
  return writer->Submit(req, [ev, pi, phase_name, step, step_dir, cursor_json,
                              phase_done](Result<checkpoint::ShardManifest> r) {
    if (!r.ok()) {
      ev->OnCheckpointFailed(r.status());
      return;
    }
    ev->OnCheckpoint(CheckpointWritten{phase_name, pi, step, step_dir, *r, cursor_json, phase_done});
  });
}

double Trainer::State::Evaluate(const PhaseSpec& phase, int batches) {
  if (!IsBuiltinArith(phase.data) || batches <= 0) return NAN;
  const JobSpec& spec = config.spec;
  data::DataOptions options;
  options.seq_len = spec.train.seq_len;
  options.seed = spec.train.seed;
  options.split = data::ArithSplit::kEval;
  auto source = data::OpenDataSource(phase.data, phase.kind == PhaseKind::kGrpo ? PhaseKind::kSft : phase.kind,
                                     *tokenizer, options);
  if (!source.ok()) return NAN;
  double sum = 0;
  int64_t count = 0;
  auto cursor = (*source)->Start();
  int64_t rows = spec.train.micro_batch;
  for (int b = 0; b < batches; ++b) {
    auto batch = (*source)->Next(cursor, rows);
    if (!batch.ok()) return NAN;
    model::MicroBatch mb{batch->inputs.data(),  batch->targets.data(),   batch->mtp_inputs.data(),
                         batch->mtp_targets.data(), batch->positions.data(),
                         batch->block_diagonal ? batch->segment_ids.data() : nullptr,
                         static_cast<int>(batch->num_rows), static_cast<int>(batch->seq_len)};
    auto losses = model->Forward(mb, nullptr, nullptr);
    if (!losses.ok()) return NAN;
    sum += losses->main_sum;
    count += losses->main_count;
    auto next = (*source)->Advance(cursor, rows);
    if (!next.ok()) return NAN;
    cursor = *next;
  }
  return count > 0 ? sum / static_cast<double>(count) : NAN;
}

Status Trainer::State::RunPhase(size_t phase_index, const std::optional<RestorePoint>& restore,
                                const std::atomic<bool>& stop) {
  const JobSpec& spec = config.spec;
  const PhaseSpec& phase = spec.phases[phase_index];
  data::DataOptions options;
  options.seq_len = spec.train.seq_len;
  options.seed = spec.train.seed;
  ASSIGN_OR_RETURN(auto source, data::OpenDataSource(phase.data, phase.kind, *tokenizer, options));

  AdamW optimizer(TrainableTensors(), AdamWParams{spec.train.beta1, spec.train.beta2, spec.train.eps,
                                                  spec.train.weight_decay});
  data::DataCursor cursor = source->Start();
  int64_t start_step = 0;
  if (restore && restore->phase_index == phase_index) {
    RETURN_IF_ERROR(LoadCheckpoint(*restore, &optimizer));
    ASSIGN_OR_RETURN(cursor, data::DataCursor::FromJson(restore->cursor_json));
    start_step = restore->step;
  }
  const LrScheduleParams schedule = ScheduleOf(spec, phase_index);
  const int64_t micro = spec.train.micro_batch;
  const int64_t global = spec.train.global_batch;
  const int64_t num_micro = global / micro;
  const float gamma = static_cast<float>(spec.train.bias_update_speed);
  const float lambda = static_cast<float>(phase.effective_mtp_lambda(spec.train));
  spdlog::info("phase '{}' ({}): steps {}..{}, {} micro-batches of {} x {} tokens per step", phase.name,
               ToString(phase.kind), start_step + 1, phase.steps, num_micro, micro, spec.train.seq_len);

  for (int64_t step = start_step + 1; step <= phase.steps; ++step) {
    if (stop.load()) return CancelledError("stopped at step " + std::to_string(step) + " of phase " + phase.name);
    auto t0 = Clock::now();
    ASSIGN_OR_RETURN(data::Batch batch, source->ReadStep(cursor, global, 0, 1));
    int64_t main_count = 0, mtp_count = 0;
    for (auto m : batch.loss_mask) main_count += m;
    for (auto m : batch.mtp_mask) mtp_count += m;
    model::LossScales scales;
    scales.main = main_count > 0 ? 1.0f / static_cast<float>(main_count) : 0.0f;
    scales.mtp = mtp_count > 0 ? lambda / static_cast<float>(mtp_count) : 0.0f;
    scales.balance = 1.0f / static_cast<float>(num_micro);

    model->ZeroGrad();
    model->ZeroLoads();
    double main_sum = 0, mtp_sum = 0, balance = 0;
    for (int64_t m = 0; m < num_micro; ++m) {
      data::Batch mb_rows = batch.Slice(m * micro, micro);
      model::MicroBatch mb{mb_rows.inputs.data(),     mb_rows.targets.data(),   mb_rows.mtp_inputs.data(),
                           mb_rows.mtp_targets.data(), mb_rows.positions.data(),
                           mb_rows.block_diagonal ? mb_rows.segment_ids.data() : nullptr,
                           static_cast<int>(micro), static_cast<int>(batch.seq_len)};
      ASSIGN_OR_RETURN(model::StepLosses l, model->ForwardBackward(mb, scales));
      main_sum += l.main_sum;
      mtp_sum += l.mtp_sum;
      balance += l.balance / static_cast<double>(num_micro);
    }
    if (!std::isfinite(main_sum)) {
      return InternalError("loss is not finite at step " + std::to_string(step) + " of phase " + phase.name +
                           "; lower the learning rate or check the data");
    }
    double grad_norm = optimizer.ClipGradNorm(spec.train.grad_clip);
    double lr = LearningRate(schedule, step);
    optimizer.Step(lr);
    // Expert loads of the whole step decide the bias update (aux-loss-free balancing).
    double imbalance = ExpertImbalance(model->Loads());
    model->UpdateBias(gamma);
    ASSIGN_OR_RETURN(cursor, source->Advance(cursor, global));

    double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    StepMetrics metrics;
    metrics.phase = phase.name;
    metrics.phase_index = static_cast<uint32_t>(phase_index);
    metrics.step = step;
    metrics.total_steps = phase.steps;
    metrics.loss = main_count > 0 ? main_sum / static_cast<double>(main_count) : 0;
    metrics.mtp_loss = mtp_count > 0 ? mtp_sum / static_cast<double>(mtp_count) : 0;
    metrics.balance_loss = balance;
    metrics.grad_norm = grad_norm;
    metrics.lr = lr;
    double tokens = static_cast<double>(global * spec.train.seq_len);
    metrics.tokens_per_s = tokens / seconds;
    metrics.gflops = tokens * flops_per_token / seconds * 1e-9;
    metrics.expert_imbalance = imbalance;
    metrics.seconds = seconds;
    bool phase_done = step == phase.steps;
    bool checkpoint_now = IsCheckpointStep(phase, step);
    if (checkpoint_now) metrics.eval_loss = Evaluate(phase, config.eval_batches);
    events->OnStep(metrics);
    if (checkpoint_now) RETURN_IF_ERROR(SubmitCheckpoint(phase_index, step, cursor.ToJson(), phase_done, optimizer));
  }
  return Status::OK();
}

Status Trainer::State::RunGrpoPhase(size_t phase_index, const std::optional<RestorePoint>& restore,
                                    const std::atomic<bool>& stop) {
  bool chat = init_chat;
  for (size_t p = 0; p < phase_index; ++p) chat = chat || config.spec.phases[p].kind == PhaseKind::kSft;
  GrpoContext ctx{config, *model, *tokenizer, events, chat};
  AdamW optimizer(TrainableTensors(), AdamWParams{config.spec.train.beta1, config.spec.train.beta2,
                                                  config.spec.train.eps, config.spec.train.weight_decay});
  std::optional<std::string> cursor_json;
  int64_t start_step = 0;
  if (restore && restore->phase_index == phase_index) {
    RETURN_IF_ERROR(LoadCheckpoint(*restore, &optimizer));
    cursor_json = restore->cursor_json;
    start_step = restore->step;
  }
  return RunGrpo(ctx, phase_index, start_step, cursor_json, optimizer, stop,
                 [this, phase_index, &optimizer](int64_t step, const std::string& cursor, bool done) {
                   return SubmitCheckpoint(phase_index, step, cursor, done, optimizer);
                 });
}

}  // namespace shoal::train
