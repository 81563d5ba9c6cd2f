#include "worker/training_runner.h"

#include <capnp/message.h>
#include <spdlog/spdlog.h>

#include <optional>

#include "common/clock.h"
#include "spec/job_spec.h"
#include "worker/dist/dist_trainer.h"
#include "worker/train/trainer.h"

namespace shoal::worker {
namespace {

std::string Str(capnp::Text::Reader t) { return std::string(t.cStr(), t.size()); }

}  // namespace

// One job's training: its thread, stop flag and identity; reports go out through the session.
struct TrainingJobRunner::Run : public train::TrainerEvents {
  TrainingJobRunner::SendFn send;
  std::string job_id;
  uint64_t epoch = 0;
  uint32_t pp_rank = 0, dp_rank = 0;
  std::atomic<bool> stop{false};
  std::thread thread;

  void OnStep(const train::StepMetrics& m) override {
    capnp::MallocMessageBuilder b;
    auto r = b.initRoot<proto::Envelope>().initStepReport();
    r.setJobId(job_id);
    r.setEpoch(epoch);
    r.setPhase(m.phase);
    r.setPhaseIndex(m.phase_index);
    r.setStep(static_cast<uint64_t>(m.step));
    r.setPpRank(pp_rank);
    r.setDpRank(dp_rank);
    r.setLoss(m.loss);
    r.setTimeMs(WallMillis());
    std::vector<std::pair<const char*, double>> metrics = {
        {"mtp_loss", m.mtp_loss},       {"balance_loss", m.balance_loss}, {"grad_norm", m.grad_norm},
        {"lr", m.lr},                   {"tokens_per_s", m.tokens_per_s}, {"gflops", m.gflops},
        {"expert_imbalance", m.expert_imbalance}, {"step_seconds", m.seconds}};
    // Where the step's time went (multi-worker layouts): compute, waiting on collectives and exchanges, and
    // pipeline bubble (blocked on a neighbour's activation or gradient).
    if (!std::isnan(m.compute_s)) metrics.emplace_back("compute_s", m.compute_s);
    if (!std::isnan(m.comm_s)) metrics.emplace_back("comm_s", m.comm_s);
    if (!std::isnan(m.idle_s)) metrics.emplace_back("bubble_s", m.idle_s);
    if (!std::isnan(m.eval_loss)) metrics.emplace_back("eval_loss", m.eval_loss);
    if (!std::isnan(m.reward)) metrics.emplace_back("reward", m.reward);
    if (!std::isnan(m.kl)) metrics.emplace_back("kl", m.kl);
    auto list = r.initMetrics(static_cast<unsigned>(metrics.size()));
    for (size_t i = 0; i < metrics.size(); ++i) {
      list[static_cast<unsigned>(i)].setName(metrics[i].first);
      list[static_cast<unsigned>(i)].setValue(metrics[i].second);
    }
    send(b);
    if (m.step % 10 == 0 || m.step == m.total_steps || m.step == 1) {
      spdlog::info("{} step {}/{}: loss {:.4f} mtp {:.4f} lr {:.2e} grad_norm {:.3f} {:.0f} tok/s{}{}", m.phase, m.step,
                   m.total_steps, m.loss, m.mtp_loss, m.lr, m.grad_norm, m.tokens_per_s,
                   std::isnan(m.eval_loss) ? "" : fmt::format(" eval {:.4f}", m.eval_loss),
                   std::isnan(m.reward) ? "" : fmt::format(" reward {:.3f} kl {:.4f}", m.reward, m.kl));
    }
  }

  void OnCheckpoint(const train::CheckpointWritten& w) override {
    capnp::MallocMessageBuilder b;
    auto s = b.initRoot<proto::Envelope>().initCheckpointShard();
    s.setJobId(job_id);
    s.setEpoch(epoch);
    s.setPhase(w.phase);
    s.setPhaseIndex(w.phase_index);
    s.setStep(static_cast<uint64_t>(w.step));
    s.setPpRank(pp_rank);
    s.setDpRank(dp_rank);
    s.setDir(w.step_dir);
    s.setCursor(w.cursor_json);
    s.setPhaseDone(w.phase_done);
    auto files = s.initFiles(static_cast<unsigned>(w.manifest.files.size()));
    for (size_t i = 0; i < w.manifest.files.size(); ++i) {
      auto f = files[static_cast<unsigned>(i)];
      f.setName(w.manifest.files[i].name);
      f.setBytes(w.manifest.files[i].digest.bytes);
      f.setXxh3(w.manifest.files[i].digest.xxh3);
    }
    send(b);
    spdlog::info("checkpoint {} step {} written ({} bytes)", w.phase, w.step, w.manifest.total_bytes());
  }

  void OnCheckpointFailed(const Status& status) override {
    spdlog::error("checkpoint failed: {}", status.ToString());
    ReportFailure(status.WithContext("writing a checkpoint"));
  }

  void ReportFailure(const Status& status) {
    capnp::MallocMessageBuilder b;
    auto f = b.initRoot<proto::Envelope>().initRankFailed();
    f.setJobId(job_id);
    f.setEpoch(epoch);
    f.setMessage(status.ToString());
    f.setCode(static_cast<int32_t>(status.code()));
    send(b);
  }
};

TrainingJobRunner::TrainingJobRunner(SendFn send, int threads, comm::Communicator* comm)
    : send_(std::move(send)), threads_(threads), comm_(comm) {}

TrainingJobRunner::~TrainingJobRunner() { StopCurrent(); }

void TrainingJobRunner::StopCurrent() {
  if (!run_) return;
  run_->stop = true;
  if (run_->thread.joinable()) run_->thread.join();
  run_.reset();
}

void TrainingJobRunner::Start(protocol::MessagePtr assignment) {
  StopCurrent();
  auto a = assignment->envelope().getAssignment();
  auto run = std::make_unique<Run>();
  run->send = send_;
  run->job_id = Str(a.getJobId());
  run->epoch = a.getEpoch();
  run->pp_rank = a.getSelf().getPpRank();
  run->dp_rank = a.getSelf().getDpRank();

  train::TrainerConfig config;
  auto spec = ParseJobSpec(Str(a.getSpecYaml()), "assignment of job " + run->job_id);
  config.job_id = run->job_id;
  config.epoch = run->epoch;
  config.pp_rank = run->pp_rank;
  config.dp_rank = run->dp_rank;
  config.checkpoint_root = Str(a.getCheckpointRoot());
  config.threads = threads_;
  if (a.getHasRestore()) {
    auto r = a.getRestore();
    train::RestorePoint restore;
    restore.phase_index = r.getPhaseIndex();
    restore.step = static_cast<int64_t>(r.getStep());
    restore.step_dir = Str(r.getDir());
    restore.phase_done = r.getPhaseDone();
    if (r.getShards().size() > 0) restore.cursor_json = Str(r.getShards()[0].getCursor());
    config.restore = restore;
  }
  Run* raw = run.get();
  if (!spec.ok()) {
    raw->ReportFailure(spec.status());
    run_ = std::move(run);
    return;
  }
  config.spec = std::move(*spec);
  // Multi-worker layouts: every rank's data-plane address, and what the placement says this rank holds.
  std::optional<dist::DistConfig> dist;
  if (config.spec.parallel.world_size() > 1) {
    dist.emplace();
    const uint32_t dp = config.spec.parallel.data;
    for (auto peer : a.getPeers()) {
      const int r = static_cast<int>(peer.getPpRank() * dp + peer.getDpRank());
      dist->peers[r] = Str(peer.getDataAddress());
      dist->hosts[r] = Str(peer.getHost());
    }
    for (auto st : a.getSelf().getStages()) dist->stages.push_back(static_cast<int>(st));
    dist->expert_begin = a.getSelf().getExpertBegin();
    dist->expert_end = a.getSelf().getExpertEnd();
  }
  comm::Communicator* comm = comm_;
  run->thread = std::thread([raw, comm, config = std::move(config), dist = std::move(dist)]() mutable {
    Status s;
    if (dist) {
      dist->trainer = std::move(config);
      auto trainer = dist::DistributedTrainer::Create(std::move(*dist), comm, raw);
      s = trainer.ok() ? (*trainer)->Run(raw->stop) : trainer.status();
    } else {
      auto trainer = train::Trainer::Create(std::move(config), raw);
      s = trainer.ok() ? (*trainer)->Run(raw->stop) : trainer.status();
    }
    if (s.ok()) {
      spdlog::info("job {}: every phase finished on this worker", raw->job_id);
    } else if (s.code() == StatusCode::kCancelled) {
      spdlog::info("job {}: training stopped ({})", raw->job_id, s.message());
    } else {
      spdlog::error("job {}: training failed: {}", raw->job_id, s.ToString());
      raw->ReportFailure(s);
    }
  });
  run_ = std::move(run);
}

void TrainingJobRunner::Stop(const std::string& job_id, const std::string& reason) {
  if (run_ && run_->job_id == job_id) {
    spdlog::info("stopping job {}: {}", job_id, reason);
    StopCurrent();
  }
}

}  // namespace shoal::worker
