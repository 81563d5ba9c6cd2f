#include "coordinator/job_manager.h"

#include <capnp/message.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <sstream>

#include "common/clock.h"
#include "common/ids.h"
#include "coordinator/worker_registry.h"

namespace shoal::coordinator {
namespace {

std::string Str(capnp::Text::Reader t) { return std::string(t.cStr(), t.size()); }

bool Schedulable(const WorkerInfo& w) { return w.state == WorkerState::ALIVE; }

// A placed worker in one of these states can no longer run its rank.
bool Lost(const WorkerInfo& w) {
  return w.state == WorkerState::DEAD || w.state == WorkerState::DRAINING || w.state == WorkerState::DETACHED;
}

}  // namespace

JobManager::JobManager(boost::asio::io_context& io, StateStore* store, WorkerDirectory* directory,
                       PlacementPolicy policy, Options options, std::shared_ptr<HandlerRegistry> handlers)
    : Actor(io, "JobManager", std::move(handlers)),
      store_(store),
      directory_(directory),
      policy_(std::move(policy)),
      options_(options),
      jobs_table_(store, Table::kJobs, EncodeJob, DecodeJob),
      placements_table_(store, Table::kPlacements, EncodePlacement, DecodePlacement),
      events_table_(store, Table::kEvents, EncodeEvent, DecodeEvent),
      checkpoints_table_(store, Table::kCheckpoints, EncodeCheckpoint, DecodeCheckpoint),
      metrics_table_(store, Table::kMetrics, EncodeStepReport, DecodeStepReport) {}

Status JobManager::Initialize() {
  ASSIGN_OR_RETURN(auto jobs, jobs_table_.Scan());
  ASSIGN_OR_RETURN(auto placements, placements_table_.Scan());
  for (auto& [id, info] : jobs) {
    Job job;
    job.info = std::move(info);
    auto spec = ParseJobSpec(job.info.spec_yaml, job.info.spec_file);
    if (!spec.ok()) {
      // A spec this version cannot read any more: keep the record, fail the job, say why.
      spdlog::error("job {} has a spec this coordinator cannot parse: {}", id, spec.status().ToString());
      if (!IsTerminal(job.info.state)) {
        job.info.state = JobState::FAILED;
        job.info.reason = "stored spec no longer parses: " + spec.status().message();
      }
    } else {
      job.spec = std::move(*spec);
    }
    jobs_.emplace(id, std::move(job));
  }
  for (auto& [id, p] : placements) {
    auto it = jobs_.find(id);
    if (it != jobs_.end()) it->second.placement = std::move(p);
  }
  ASSIGN_OR_RETURN(auto checkpoints, checkpoints_table_.Scan());
  for (auto& [key, c] : checkpoints) {  // keys sort by job, then commit order
    auto it = jobs_.find(c.job_id);
    if (it != jobs_.end()) it->second.latest_checkpoint = std::move(c);
  }
  spdlog::info("JobManager: recovered {} jobs, {} placements", jobs_.size(), placements.size());
  PublishCounts();
  return Status::OK();
}

JobManager::Job* JobManager::Find(const std::string& id_or_name) {
  auto it = jobs_.find(id_or_name);
  if (it != jobs_.end()) return &it->second;
  // By name: the newest job of that name (names are unique among live jobs).
  Job* best = nullptr;
  for (auto& [_, j] : jobs_) {
    if (j.info.name == id_or_name && (!best || j.info.submitted_at_ms >= best->info.submitted_at_ms)) best = &j;
  }
  return best;
}

Status JobManager::Persist(const Job& job, const std::string& event_kind, const std::string& event_message,
                           bool with_placement) {
  WriteBatch batch;
  jobs_table_.Put(batch, job.info.job_id, job.info);
  if (with_placement) {
    if (job.placement) {
      placements_table_.Put(batch, job.info.job_id, *job.placement);
    } else {
      placements_table_.Delete(batch, job.info.job_id);
    }
  }
  if (!event_kind.empty()) {
    AppendEvent(events_table_, batch, EventInfo{0, job.info.job_id, "", event_kind, event_message});
  }
  Status s = store_->Write(batch);
  if (!s.ok()) spdlog::error("persisting job {} failed: {}", job.info.job_id, s.ToString());
  return s;
}

void JobManager::SetState(Job& job, JobState to, std::string reason) {
  JobState from = job.info.state;
  job.info.state = to;
  job.info.reason = std::move(reason);
  job.info.updated_at_ms = WallMillis();
  if (to == JobState::RUNNING && job.info.phase_index < job.info.phases.size()) {
    job.info.phases[job.info.phase_index].state = "running";
  }
  std::string message = std::string(JobStateName(from)) + " -> " + JobStateName(to) +
                        (job.info.reason.empty() ? "" : ": " + job.info.reason);
  spdlog::info("job {} ({}) {}", job.info.name, job.info.job_id, message);
  std::string kind = std::string("job.") + JobStateName(to);
  for (auto& c : kind) c = static_cast<char>(tolower(c));
  Persist(job, kind, message, /*with_placement=*/true).IgnoreError();
  PublishCounts();
}

std::set<std::string> JobManager::BusyWorkers(const std::string& except_job_id) const {
  std::set<std::string> busy;
  for (const auto& [id, j] : jobs_) {
    if (id == except_job_id || IsTerminal(j.info.state) || !j.placement) continue;
    for (const auto& r : j.placement->ranks) busy.insert(r.worker_id);
  }
  return busy;
}

void JobManager::AnnounceWorkers(const Job& job, bool assigned) {
  if (!on_worker_job_ || !job.placement) return;
  for (const auto& r : job.placement->ranks) on_worker_job_(r.worker_id, assigned ? job.info.job_id : "");
}

void JobManager::HandleSubmit(protocol::ConnectionPtr conn, protocol::MessagePtr msg) {
  Post("JobManager.HandleSubmit", [this, conn, msg] {
    auto req = msg->envelope().getSubmit();
    std::string file = Str(req.getSpecFile());
    if (file.empty()) file = "<submitted spec>";
    auto spec = ParseJobSpec(Str(req.getSpecYaml()), file);
    if (!spec.ok()) {
      conn->ReplyError(*msg, spec.status());
      return;
    }
    for (const auto& [_, j] : jobs_) {
      if (j.info.name == spec->name && !IsTerminal(j.info.state)) {
        conn->ReplyError(*msg, AlreadyExistsError("job '" + spec->name + "' is already " +
                                                  JobStateName(j.info.state) + " as " + j.info.job_id +
                                                  "; cancel it (`shoal cancel " + spec->name +
                                                  "`) or submit under another name"));
        return;
      }
    }
    Job job;
    job.info.job_id = NewId("job");
    job.info.name = spec->name;
    job.info.spec_yaml = JobSpecToYaml(*spec);
    job.info.spec_file = file;
    job.info.state = JobState::PENDING;
    job.info.submitted_at_ms = job.info.updated_at_ms = WallMillis();
    job.info.workers_needed = static_cast<uint32_t>(spec->parallel.world_size());
    for (const auto& p : spec->phases) {
      job.info.phases.push_back(PhaseInfo{p.name, std::string(ToString(p.kind)), "pending", 0,
                                          static_cast<uint64_t>(p.steps)});
    }
    job.spec = std::move(*spec);
    // The job exists once this write returns; only then is the user told.
    job.info.state = JobState::PLACING;
    job.info.reason = "waiting for placement";
    Status s = Persist(job, "job.submitted", "submitted from " + file + " by " + conn->peer_name(), false);
    if (!s.ok()) {
      conn->ReplyError(*msg, UnavailableError("could not persist the job: " + s.message() + "; nothing was submitted"));
      return;
    }
    auto& stored = jobs_.emplace(job.info.job_id, std::move(job)).first->second;
    spdlog::info("job {} ({}) submitted: {} workers needed", stored.info.name, stored.info.job_id,
                 stored.info.workers_needed);
    TryPlace(stored);
    PublishCounts();
    capnp::MallocMessageBuilder b;
    ToProto(stored.info, b.initRoot<proto::Envelope>().initSubmitReply());
    conn->Reply(*msg, b);
  });
}

void JobManager::TryPlaceAll() {
  for (auto& [_, j] : jobs_) {
    if (j.info.state == JobState::PLACING || j.info.state == JobState::RECOVERING) TryPlace(j);
  }
}

void JobManager::TryPlace(Job& job) {
  if (job.placement && (job.info.state == JobState::PLACING || job.info.state == JobState::RECOVERING)) {
    // Already placed at this epoch and waiting for acks; re-place only if a placed worker was lost.
    bool lost = false;
    for (const auto& r : job.placement->ranks) {
      auto it = cluster_.find(r.worker_id);
      if (it == cluster_.end() || Lost(it->second)) lost = true;
    }
    if (!lost) return;
  }
  auto busy = BusyWorkers(job.info.job_id);
  std::vector<WorkerInfo> free;
  for (const auto& [id, w] : cluster_) {
    if (Schedulable(w) && !busy.count(id)) free.push_back(w);
  }
  auto placed = policy_(free, job.spec);
  if (!placed.ok()) {
    std::string reason = placed.status().message();
    if (job.placement) {
      AnnounceWorkers(job, false);
      job.placement.reset();
    }
    if (reason != job.info.reason) {
      job.info.reason = reason;
      job.info.updated_at_ms = WallMillis();
      Persist(job, "job.waiting", reason, true).IgnoreError();
      spdlog::info("job {} ({}) waits: {}", job.info.name, job.info.job_id, reason);
    }
    return;
  }
  if (job.placement) AnnounceWorkers(job, false);
  job.info.epoch += 1;
  placed->job_id = job.info.job_id;
  placed->epoch = job.info.epoch;
  placed->created_at_ms = WallMillis();
  for (auto& r : placed->ranks) {
    r.acked = false;
    auto it = cluster_.find(r.worker_id);
    if (it != cluster_.end()) r.data_address = it->second.data_address;
  }
  job.placement = std::move(*placed);
  job.info.reason = "placed at epoch " + std::to_string(job.info.epoch) + "; waiting for " +
                    std::to_string(job.placement->ranks.size()) + " acknowledgements";
  job.info.updated_at_ms = WallMillis();
  if (!Persist(job, "job.placed", job.info.reason, true).ok()) return;
  AnnounceWorkers(job, true);
  for (const auto& r : job.placement->ranks) SendAssignment(job, r);
}

void JobManager::SendAssignment(const Job& job, const RankInfo& rank) {
  capnp::MallocMessageBuilder b;
  auto a = b.initRoot<proto::Envelope>().initAssignment();
  a.setJobId(job.info.job_id);
  a.setJobName(job.info.name);
  a.setEpoch(job.info.epoch);
  a.setSpecYaml(job.info.spec_yaml);
  a.setPhaseIndex(job.info.phase_index);
  ToProto(rank, a.initSelf());
  const auto& ranks = job.placement->ranks;
  auto peers = a.initPeers(static_cast<unsigned>(ranks.size()));
  for (size_t i = 0; i < ranks.size(); ++i) ToProto(ranks[i], peers[static_cast<unsigned>(i)]);
  const auto& stages = job.placement->stages;
  auto st = a.initStages(static_cast<unsigned>(stages.size()));
  for (size_t i = 0; i < stages.size(); ++i) {
    auto s = st[static_cast<unsigned>(i)];
    s.setStage(stages[i].stage);
    s.setLayerBegin(stages[i].layer_begin);
    s.setLayerEnd(stages[i].layer_end);
    s.setHasEmbedding(stages[i].has_embedding);
    s.setHasHead(stages[i].has_head);
  }
  a.setCheckpointRoot(CheckpointDir(job));
  if (job.latest_checkpoint) {
    a.setHasRestore(true);
    ToProto(*job.latest_checkpoint, a.initRestore());
  }
  if (!directory_->Send(rank.worker_id, b)) {
    spdlog::info("job {}: worker {} is not connected; the assignment goes out when it reconnects",
                 job.info.job_id, rank.worker_name);
  }
}

void JobManager::Release(const Job& job, const std::string& reason) {
  if (!job.placement) return;
  for (const auto& r : job.placement->ranks) {
    capnp::MallocMessageBuilder b;
    auto rel = b.initRoot<proto::Envelope>().initRelease();
    rel.setJobId(job.info.job_id);
    rel.setEpoch(job.info.epoch);
    rel.setReason(reason);
    directory_->Send(r.worker_id, b);
  }
}

void JobManager::HandleAssignmentAck(protocol::ConnectionPtr conn, protocol::MessagePtr msg) {
  Post("JobManager.HandleAssignmentAck", [this, conn, msg] {
    auto ack = msg->envelope().getAssignmentAck();
    auto it = jobs_.find(Str(ack.getJobId()));
    if (it == jobs_.end()) return;
    Job& job = it->second;
    if (ack.getEpoch() != job.info.epoch || !job.placement || IsTerminal(job.info.state)) {
      spdlog::info("job {}: ignoring ack for epoch {} (current {})", job.info.job_id, ack.getEpoch(), job.info.epoch);
      return;
    }
    RankInfo* rank = nullptr;
    for (auto& r : job.placement->ranks) {
      auto w = directory_->Get(r.worker_id);
      if (w && w->connection_id() == conn->connection_id()) rank = &r;
    }
    if (rank == nullptr) return;
    if (!ack.getAccepted()) {
      std::string why = "worker " + rank->worker_name + " refused its assignment: " + Str(ack.getMessage());
      spdlog::warn("job {}: {}", job.info.job_id, why);
      job.info.reason = why;
      Persist(job, "job.assignment_refused", why, false).IgnoreError();
      return;
    }
    if (rank->acked) return;
    rank->acked = true;
    if (job.placement->AllAcked() &&
        (job.info.state == JobState::PLACING || job.info.state == JobState::RECOVERING)) {
      SetState(job, JobState::RUNNING,
               "every worker acknowledged epoch " + std::to_string(job.info.epoch) + "; phase '" +
                   job.info.CurrentPhaseName() + "'");
    } else {
      Persist(job, "", "", true).IgnoreError();
    }
  });
}

void JobManager::HandleStepReport(protocol::ConnectionPtr conn, protocol::MessagePtr msg) {
  Post("JobManager.HandleStepReport", [this, conn, msg] {
    StepReportInfo report = FromProto(msg->envelope().getStepReport());
    auto it = jobs_.find(report.job_id);
    if (it == jobs_.end() || report.epoch != it->second.info.epoch) return;  // zombie or unknown
    Job& job = it->second;
    if (IsTerminal(job.info.state)) return;
    if (report.phase_index > job.info.phase_index && report.phase_index < job.info.phases.size()) {
      AdvancePhase(job, report.phase_index);
    }
    if (report.phase_index < job.info.phases.size()) {
      auto& p = job.info.phases[report.phase_index];
      if (report.step > p.step) p.step = report.step;
    }
    // The loss curve is durable: one row per (phase, step, rank), keyed to sort in training order.
    char key[96];
    std::snprintf(key, sizeof(key), "%s/%03u/%09llu/%03u-%03u", report.job_id.c_str(), report.phase_index,
                  static_cast<unsigned long long>(report.step), report.pp_rank, report.dp_rank);
    WriteBatch batch;
    metrics_table_.Put(batch, key, report);
    Status s = store_->Write(batch);
    if (!s.ok()) spdlog::warn("job {}: step report not persisted: {}", job.info.job_id, s.ToString());
    job.recent_steps.push_back(std::move(report));
    while (job.recent_steps.size() > options_.recent_steps_kept) job.recent_steps.pop_front();
  });
}

void JobManager::HandleCancel(protocol::ConnectionPtr conn, protocol::MessagePtr msg) {
  Post("JobManager.HandleCancel", [this, conn, msg] {
    std::string target = Str(msg->envelope().getCancel().getJob());
    Job* job = Find(target);
    if (!job) {
      conn->ReplyError(*msg, NotFoundError("no job '" + target + "'; see `shoal jobs`"));
      return;
    }
    if (IsTerminal(job->info.state)) {
      conn->ReplyError(*msg, FailedPreconditionError("job '" + job->info.name + "' (" + job->info.job_id +
                                                     ") already ended: " + JobStateName(job->info.state)));
      return;
    }
    Release(*job, "cancelled by " + conn->peer_name());
    AnnounceWorkers(*job, false);
    SetState(*job, JobState::CANCELLED, "cancelled by " + conn->peer_name());
    capnp::MallocMessageBuilder b;
    b.initRoot<proto::Envelope>().initAck().setMessage("job '" + job->info.name + "' (" + job->info.job_id +
                                                       ") cancelled");
    conn->Reply(*msg, b);
    TryPlaceAll();  // its workers are free now
  });
}

void JobManager::HandleListJobs(protocol::ConnectionPtr conn, protocol::MessagePtr msg) {
  Post("JobManager.HandleListJobs", [this, conn, msg] {
    std::vector<const Job*> sorted;
    for (const auto& [_, j] : jobs_) sorted.push_back(&j);
    std::sort(sorted.begin(), sorted.end(), [](const Job* a, const Job* b) {
      return a->info.submitted_at_ms != b->info.submitted_at_ms ? a->info.submitted_at_ms < b->info.submitted_at_ms
                                                                : a->info.job_id < b->info.job_id;
    });
    capnp::MallocMessageBuilder b;
    auto list = b.initRoot<proto::Envelope>().initListJobsReply().initJobs(static_cast<unsigned>(sorted.size()));
    for (size_t i = 0; i < sorted.size(); ++i) {
      JobInfo brief = sorted[i]->info;
      brief.spec_yaml.clear();  // listings stay small; `status` has the spec
      ToProto(brief, list[static_cast<unsigned>(i)]);
    }
    conn->Reply(*msg, b);
  });
}

void JobManager::HandleJobStatus(protocol::ConnectionPtr conn, protocol::MessagePtr msg) {
  Post("JobManager.HandleJobStatus", [this, conn, msg] {
    std::string target = Str(msg->envelope().getJobStatus().getJob());
    Job* job = Find(target);
    if (!job) {
      conn->ReplyError(*msg, NotFoundError("no job '" + target + "'; see `shoal jobs`"));
      return;
    }
    auto events = events_table_.Scan(EventKeyPrefix(job->info.job_id));
    capnp::MallocMessageBuilder b;
    auto reply = b.initRoot<proto::Envelope>().initJobStatusReply();
    ToProto(job->info, reply.initJob());
    reply.setHasPlacement(job->placement.has_value());
    if (job->placement) ToProto(*job->placement, reply.initPlacement());
    auto steps = reply.initRecentSteps(static_cast<unsigned>(job->recent_steps.size()));
    for (size_t i = 0; i < job->recent_steps.size(); ++i) ToProto(job->recent_steps[i], steps[static_cast<unsigned>(i)]);
    std::vector<EventInfo> mine;
    if (events.ok()) {
      for (auto& [_, e] : *events) mine.push_back(std::move(e));
    }
    // The loss curve from rank (0, 0)'s reports (every rank reports the loss of the whole batch), at most 64
    // points per phase.
    std::vector<std::vector<std::pair<uint64_t, double>>> by_phase(job->info.phases.size());
    auto rows = metrics_table_.Scan(job->info.job_id + "/");
    if (rows.ok()) {
      for (const auto& [_, r] : *rows) {
        if (r.phase_index < by_phase.size() && r.pp_rank == 0 && r.dp_rank == 0) by_phase[r.phase_index].emplace_back(r.step, r.loss);
      }
    }
    std::vector<std::tuple<uint32_t, uint64_t, double>> curve;
    for (uint32_t p = 0; p < by_phase.size(); ++p) {
      const auto& pts = by_phase[p];
      size_t stride = std::max<size_t>(1, (pts.size() + 63) / 64);
      for (size_t i = 0; i < pts.size(); i += stride) {
        double sum = 0;
        size_t n = 0;
        for (size_t j = i; j < std::min(pts.size(), i + stride); ++j, ++n) sum += pts[j].second;
        curve.emplace_back(p, pts[i].first, sum / static_cast<double>(n));
      }
    }
    auto cl = reply.initCurve(static_cast<unsigned>(curve.size()));
    for (size_t i = 0; i < curve.size(); ++i) {
      cl[static_cast<unsigned>(i)].setPhaseIndex(std::get<0>(curve[i]));
      cl[static_cast<unsigned>(i)].setStep(std::get<1>(curve[i]));
      cl[static_cast<unsigned>(i)].setLoss(std::get<2>(curve[i]));
    }
    size_t keep = std::min<size_t>(mine.size(), 20);
    auto ev = reply.initEvents(static_cast<unsigned>(keep));
    for (size_t i = 0; i < keep; ++i) ToProto(mine[mine.size() - keep + i], ev[static_cast<unsigned>(i)]);
    conn->Reply(*msg, b);
  });
}

void JobManager::OnClusterChanged(std::vector<WorkerInfo> snapshot) {
  Post("JobManager.OnClusterChanged", [this, snapshot = std::move(snapshot)]() mutable {
    cluster_.clear();
    for (auto& w : snapshot) cluster_.emplace(w.worker_id, std::move(w));
    // Running jobs that lost a worker go to RECOVERING and are re-placed.
    for (auto& [_, job] : jobs_) {
      if (job.info.state != JobState::RUNNING || !job.placement) continue;
      std::string lost;
      for (const auto& r : job.placement->ranks) {
        auto it = cluster_.find(r.worker_id);
        if (it == cluster_.end() || Lost(it->second)) {
          lost = r.worker_name + " is " + (it == cluster_.end() ? "gone" : WorkerStateName(it->second.state));
          break;
        }
      }
      if (lost.empty()) continue;
      Recover(job, lost);
    }
    TryPlaceAll();
  });
}

void JobManager::OnWorkerRegistered(WorkerInfo worker, std::string job_id, uint64_t epoch) {
  Post("JobManager.OnWorkerRegistered", [this, worker = std::move(worker), job_id = std::move(job_id), epoch] {
    cluster_[worker.worker_id] = worker;
    for (auto& [id, job] : jobs_) {
      if (IsTerminal(job.info.state) || !job.placement) continue;
      for (auto& r : job.placement->ranks) {
        if (r.worker_id != worker.worker_id) continue;
        if (on_worker_job_) on_worker_job_(worker.worker_id, id);
        if (job_id == id && epoch == job.info.epoch && r.acked) continue;  // reconnected, same assignment
        // The worker lost (or never received) its assignment: send it again.
        r.acked = false;
        SendAssignment(job, r);
      }
    }
    // A worker that says it runs a job it no longer belongs to is told to stop.
    if (!job_id.empty()) {
      auto it = jobs_.find(job_id);
      bool belongs = false;
      if (it != jobs_.end() && !IsTerminal(it->second.info.state) && it->second.placement) {
        for (const auto& r : it->second.placement->ranks) belongs |= r.worker_id == worker.worker_id;
      }
      if (!belongs) {
        capnp::MallocMessageBuilder b;
        auto rel = b.initRoot<proto::Envelope>().initRelease();
        rel.setJobId(job_id);
        rel.setEpoch(epoch);
        rel.setReason("this worker is no longer part of the job");
        directory_->Send(worker.worker_id, b);
      }
    }
  });
}

void JobManager::PublishCounts() {
  if (!on_counts_) return;
  std::map<std::string, int> counts;
  for (const auto& [_, j] : jobs_) counts[JobStateName(j.info.state)]++;
  on_counts_(std::move(counts));
}

std::string JobManager::DebugString() const {
  std::ostringstream os;
  os << "JobManager{" << jobs_.size() << " jobs:";
  for (const auto& [id, j] : jobs_) os << " " << j.info.name << "=" << JobStateName(j.info.state) << "@" << j.info.epoch;
  os << "}";
  return os.str();
}

}  // namespace shoal::coordinator
