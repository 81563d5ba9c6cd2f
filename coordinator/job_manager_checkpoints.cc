// JobManager, the checkpoint and progress half: shard reports, manifest commits, phase transitions, rank
// failures, and the listing of committed checkpoints.
#include <capnp/message.h>
#include <spdlog/spdlog.h>

#include "coordinator/job_manager.h"
#include "coordinator/worker_registry.h"

namespace shoal::coordinator {

std::string JobManager::CheckpointDir(const Job& job) const {
  return options_.checkpoint_root.empty() ? "" : options_.checkpoint_root + "/" + job.info.job_id;
}

void JobManager::AdvancePhase(Job& job, uint32_t phase_index) {
  if (phase_index <= job.info.phase_index || phase_index >= job.info.phases.size()) return;
  for (uint32_t i = job.info.phase_index; i < phase_index; ++i) {
    job.info.phases[i].state = "done";
    job.info.phases[i].step = job.info.phases[i].total_steps;
  }
  job.info.phase_index = phase_index;
  job.info.phases[phase_index].state = "running";
  job.info.reason = "phase '" + job.info.phases[phase_index].name + "'";
  job.info.updated_at_ms = WallMillis();
  Persist(job, "job.phase", "now in phase '" + job.info.phases[phase_index].name + "'", false).IgnoreError();
}

void JobManager::HandleCheckpointShard(protocol::ConnectionPtr conn, protocol::MessagePtr msg) {
  Post("JobManager.HandleCheckpointShard", [this, conn, msg] {
    CheckpointShardInfo shard = FromProto(msg->envelope().getCheckpointShard());
    auto it = jobs_.find(shard.job_id);
    if (it == jobs_.end()) return;
    Job& job = it->second;
    if (shard.epoch != job.info.epoch || IsTerminal(job.info.state) || !job.placement) {
      spdlog::info("job {}: ignoring checkpoint shard of epoch {} (current {})", shard.job_id, shard.epoch,
                   job.info.epoch);
      return;
    }
    std::string id = CheckpointId(shard.phase, shard.step);
    auto& shards = job.pending[id];
    for (const auto& s : shards) {
      if (s.pp_rank == shard.pp_rank && s.dp_rank == shard.dp_rank) return;  // duplicate
    }
    shards.push_back(std::move(shard));
    if (shards.size() == job.placement->ranks.size()) CommitCheckpoint(job, id);
  });
}

void JobManager::CommitCheckpoint(Job& job, const std::string& checkpoint_id) {
  auto shards = std::move(job.pending[checkpoint_id]);
  job.pending.erase(checkpoint_id);
  const auto& first = shards.front();
  CheckpointInfo c;
  c.job_id = job.info.job_id;
  c.checkpoint_id = checkpoint_id;
  c.phase = first.phase;
  c.phase_index = first.phase_index;
  c.step = first.step;
  c.dir = first.dir;
  c.epoch = job.info.epoch;
  c.phase_done = first.phase_done;
  c.committed_at_ms = WallMillis();
  std::sort(shards.begin(), shards.end(), [](const auto& a, const auto& b) {
    return std::tie(a.pp_rank, a.dp_rank) < std::tie(b.pp_rank, b.dp_rank);
  });
  c.shards = std::move(shards);

  JobInfo next = job.info;
  if (c.phase_index < next.phases.size()) {
    auto& p = next.phases[c.phase_index];
    p.step = std::max(p.step, c.step);
    if (c.phase_done) p.state = "done";
  }
  bool job_done = c.phase_done && c.phase_index + 1 >= next.phases.size();
  if (c.phase_done && !job_done && next.phase_index <= c.phase_index) {
    next.phase_index = c.phase_index + 1;
    next.phases[next.phase_index].state = "running";
    next.reason = "phase '" + next.phases[next.phase_index].name + "' (after checkpoint " + checkpoint_id + ")";
  }
  if (job_done) {
    next.state = JobState::SUCCEEDED;
    next.reason = "every phase finished; final checkpoint " + checkpoint_id;
  }
  next.updated_at_ms = WallMillis();

  // One synced batch: the manifest, the data cursor and the job's progress move together.
  WriteBatch batch;
  char key[160];
  std::snprintf(key, sizeof(key), "%s/%015lld", job.info.job_id.c_str(), static_cast<long long>(c.committed_at_ms));
  checkpoints_table_.Put(batch, std::string(key) + "-" + checkpoint_id, c);
  batch.Put(Table::kCursors, job.info.job_id, c.shards.front().cursor);
  jobs_table_.Put(batch, job.info.job_id, next);
  AppendEvent(events_table_, batch,
              EventInfo{0, job.info.job_id, "", "checkpoint.committed",
                        checkpoint_id + " (" + std::to_string(c.shards.size()) + " shards) in " + c.dir});
  if (job_done) {
    AppendEvent(events_table_, batch, EventInfo{0, job.info.job_id, "", "job.succeeded", next.reason});
  }
  Status s = store_->Write(batch);
  if (!s.ok()) {
    spdlog::error("job {}: committing checkpoint {} failed: {}", job.info.job_id, checkpoint_id, s.ToString());
    return;  // not committed: the previous checkpoint stays the restore point
  }
  spdlog::info("job {} ({}): committed checkpoint {}", job.info.name, job.info.job_id, checkpoint_id);
  job.info = std::move(next);
  job.latest_checkpoint = std::move(c);
  if (job_done) {
    spdlog::info("job {} ({}) SUCCEEDED", job.info.name, job.info.job_id);
    Release(job, "job succeeded");
    AnnounceWorkers(job, false);
    PublishCounts();
    TryPlaceAll();
  }
}

void JobManager::Recover(Job& job, const std::string& why) {
  if (job.info.restarts >= options_.max_restarts) {
    Release(job, "job failed");
    AnnounceWorkers(job, false);
    SetState(job, JobState::FAILED, why + "; restart budget of " + std::to_string(options_.max_restarts) + " exhausted");
    TryPlaceAll();
    return;
  }
  job.info.restarts += 1;
  job.pending.clear();
  Release(job, "recovering: " + why);
  SetState(job, JobState::RECOVERING, why);
  // Force a fresh placement (new epoch) even if the same workers are still fine.
  AnnounceWorkers(job, false);
  job.placement.reset();
  TryPlace(job);
}

void JobManager::HandleRankFailed(protocol::ConnectionPtr conn, protocol::MessagePtr msg) {
  Post("JobManager.HandleRankFailed", [this, conn, msg] {
    auto f = msg->envelope().getRankFailed();
    auto it = jobs_.find(f.getJobId().cStr());
    if (it == jobs_.end()) return;
    Job& job = it->second;
    if (f.getEpoch() != job.info.epoch || IsTerminal(job.info.state)) return;
    std::string why = "worker " + conn->peer_name() + " failed: " + f.getMessage().cStr();
    spdlog::warn("job {}: {}", job.info.job_id, why);
    // A job that cannot run as specified (bad data path, unsupported layout) fails now: restarting cannot help.
    auto code = static_cast<StatusCode>(f.getCode());
    if (code == StatusCode::kInvalidArgument || code == StatusCode::kUnimplemented ||
        code == StatusCode::kFailedPrecondition || code == StatusCode::kNotFound) {
      Release(job, "job failed");
      AnnounceWorkers(job, false);
      SetState(job, JobState::FAILED, why);
      TryPlaceAll();
      return;
    }
    Recover(job, why);
  });
}

void JobManager::HandleListCheckpoints(protocol::ConnectionPtr conn, protocol::MessagePtr msg) {
  Post("JobManager.HandleListCheckpoints", [this, conn, msg] {
    std::string target = msg->envelope().getListCheckpoints().getJob().cStr();
    Job* job = Find(target);
    if (!job) {
      conn->ReplyError(*msg, NotFoundError("no job '" + target + "'; see `shoal jobs`"));
      return;
    }
    auto rows = checkpoints_table_.Scan(job->info.job_id + "/");
    if (!rows.ok()) {
      conn->ReplyError(*msg, rows.status());
      return;
    }
    capnp::MallocMessageBuilder b;
    auto list = b.initRoot<proto::Envelope>().initListCheckpointsReply().initCheckpoints(
        static_cast<unsigned>(rows->size()));
    for (size_t i = 0; i < rows->size(); ++i) ToProto((*rows)[i].second, list[static_cast<unsigned>(i)]);
    conn->Reply(*msg, b);
  });
}

}  // namespace shoal::coordinator
