// JobManager: every job's lifecycle, its placement and the assignments sent to workers.
//
// Job states (DESIGN.md §4; persisted on every transition, with the placement in the same WriteBatch):
//   PENDING     --spec validated and stored-----------------------------> PLACING
//   PLACING     --not enough free workers (reason says how many)---------> PLACING   (retried when workers change)
//   PLACING     --placement found: epoch+1, assignments sent-------------> PLACING   (waiting for acks)
//   PLACING     --every rank acknowledged this epoch--------------------> RUNNING(phase)
//   RUNNING     --a placed worker is DEAD, DRAINING or DETACHED----------> RECOVERING
//   RECOVERING  --re-placed at epoch+1 and every rank acknowledged------> RUNNING(phase)
//   RUNNING     --a rank reports a failure (RankFailed)------------------> RECOVERING (same budget)
//   RUNNING     --the last phase's final checkpoint is committed--------> SUCCEEDED (workers released)
//   any live    --cancel (CLI)-------------------------------------------> CANCELLED (workers released)
//   any live    --restart budget exhausted / unrecoverable----------------> FAILED
// Epochs fence zombies: acks, reports and checkpoint shards from an older epoch are ignored.
// Checkpoints: each rank reports its shard of (phase, step) once it is durable; when every rank of the
// placement has, the manifest is committed in one synced batch (checkpoints + cursors + job progress), and only
// committed checkpoints are handed to workers to restore from (job_manager_checkpoints.cc).
#pragma once

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "common/actor.h"
#include "coordinator/records.h"
#include "coordinator/worker_directory.h"
#include "protocol/connection.h"
#include "spec/job_spec.h"
#include "storage/state_store.h"
#include "storage/typed_table.h"

namespace shoal::coordinator {

// The placement policy as the job manager sees it: free, schedulable workers + spec -> ranks and stages
// (coordinator/placement_adapter.cc binds it to the pure Place() of placement.h).
using PlacementPolicy = std::function<Result<PlacementInfo>(const std::vector<WorkerInfo>& free_workers,
                                                            const JobSpec& spec)>;

class JobManager : public Actor {
 public:
  struct Options {
    uint32_t max_restarts = 10;
    size_t recent_steps_kept = 64;
    std::string checkpoint_root;  // jobs checkpoint under <root>/<job id>/; empty: workers keep none
  };
  using WorkerJobListener = std::function<void(const std::string& worker_id, const std::string& job_id)>;

  JobManager(boost::asio::io_context& io, StateStore* store, WorkerDirectory* directory, PlacementPolicy policy,
             Options options, std::shared_ptr<HandlerRegistry> handlers);

  void SetWorkerJobListener(WorkerJobListener listener) { on_worker_job_ = std::move(listener); }

  // Loads jobs and placements. Call once, before serving.
  Status Initialize();

  void HandleSubmit(protocol::ConnectionPtr conn, protocol::MessagePtr msg);
  void HandleCancel(protocol::ConnectionPtr conn, protocol::MessagePtr msg);
  void HandleListJobs(protocol::ConnectionPtr conn, protocol::MessagePtr msg);
  void HandleJobStatus(protocol::ConnectionPtr conn, protocol::MessagePtr msg);
  void HandleAssignmentAck(protocol::ConnectionPtr conn, protocol::MessagePtr msg);
  void HandleStepReport(protocol::ConnectionPtr conn, protocol::MessagePtr msg);
  void HandleCheckpointShard(protocol::ConnectionPtr conn, protocol::MessagePtr msg);
  void HandleListCheckpoints(protocol::ConnectionPtr conn, protocol::MessagePtr msg);
  void HandleRankFailed(protocol::ConnectionPtr conn, protocol::MessagePtr msg);

  // From the registry.
  void OnClusterChanged(std::vector<WorkerInfo> snapshot);
  void OnWorkerRegistered(WorkerInfo worker, std::string job_id, uint64_t epoch);

  // Called on the manager's strand with the number of jobs per state after every transition.
  void SetCountsListener(std::function<void(std::map<std::string, int>)> listener) {
    on_counts_ = std::move(listener);
  }

  std::string DebugString() const;

 private:
  struct Job {
    JobInfo info;
    JobSpec spec;
    std::optional<PlacementInfo> placement;
    std::deque<StepReportInfo> recent_steps;
    std::optional<CheckpointInfo> latest_checkpoint;                  // last committed
    std::map<std::string, std::vector<CheckpointShardInfo>> pending;  // checkpoint id -> shards so far
  };

  Job* Find(const std::string& id_or_name);
  void TryPlaceAll();
  void TryPlace(Job& job);
  void SendAssignment(const Job& job, const RankInfo& rank);
  void Release(const Job& job, const std::string& reason);
  // Persists the job (and its placement when set) plus an event, in one synced batch.
  Status Persist(const Job& job, const std::string& event_kind, const std::string& event_message,
                 bool with_placement);
  void SetState(Job& job, JobState to, std::string reason);
  std::set<std::string> BusyWorkers(const std::string& except_job_id) const;
  void CommitCheckpoint(Job& job, const std::string& checkpoint_id);
  // Marks phases before `phase_index` done and moves the job's current phase forward.
  void AdvancePhase(Job& job, uint32_t phase_index);
  void Recover(Job& job, const std::string& why);
  std::string CheckpointDir(const Job& job) const;
  void AnnounceWorkers(const Job& job, bool assigned);

  StateStore* store_;
  WorkerDirectory* directory_;
  PlacementPolicy policy_;
  Options options_;
  TypedTable<JobInfo> jobs_table_;
  TypedTable<PlacementInfo> placements_table_;
  TypedTable<EventInfo> events_table_;
  TypedTable<CheckpointInfo> checkpoints_table_;
  TypedTable<StepReportInfo> metrics_table_;
  std::map<std::string, Job> jobs_;              // by job id
  std::map<std::string, WorkerInfo> cluster_;   // latest registry snapshot, by worker id
  WorkerJobListener on_worker_job_;
  std::function<void(std::map<std::string, int>)> on_counts_;
  void PublishCounts();
};

}  // namespace shoal::coordinator
