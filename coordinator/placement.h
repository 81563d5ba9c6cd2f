// Placement: which worker runs which (pipeline rank, data-parallel rank) of a job, the stages and layers each
// one holds, the expert-parallel groups and every routed expert's owner. A pure policy (STYLE.md §4): a
// function of a cluster snapshot and a job spec, no I/O, deterministic.
//
// Layout (DESIGN.md §3): world = PP × DP workers. Pipeline rank r holds stage r (1f1b, zb1p), stages r and
// PP-1-r (dualpipe: two copies of the model running in opposite directions), or stages r and 2·PP-1-r
// (dualpipev: the model cut in 2·PP chunks, V-shaped). Stage layer ranges: spec/stage_layout.h. Within a
// pipeline rank the DP replicas form EP groups of EP consecutive data ranks (group g = data ranks
// [g·EP, (g+1)·EP)); EP rank k of a group owns routed experts [k·N_r/EP, (k+1)·N_r/EP) in every MoE layer of its
// stages, so contiguous routing groups land on one worker (and, with the host packing below, one host).
//
// Policy:
//  * Eligible workers are alive, schedulable and not busy with any job (the coordinator frees a job's own
//    workers before re-placing it).
//  * Workers of the job's device kind are used first. A cpu job may fall back to cuda workers (the CPU engine runs
//    anywhere); a cuda job never runs on cpu workers. A fallback is listed in Placement::notes.
//  * EP groups are packed whole onto hosts first (hosts that fit the most whole groups first, then by host name);
//    the groups left over take the remaining workers host by host (fullest host first), so a group that cannot
//    stay on one host spans as few as possible. Pipeline edges may cross hosts.
//  * Deterministic: the input order of the workers does not matter; ties break by host, name, then worker_id.
//  * Too few eligible workers: Unavailable, saying how many are needed and how many are usable (the coordinator
//    keeps the job in PLACING and retries when workers attach).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "spec/job_spec.h"
#include "spec/stage_layout.h"

namespace shoal {

struct WorkerInfo {
  std::string worker_id;  // stable registry id
  std::string name;       // human name, the placement tie-break
  std::string host;       // host / NVLink domain: EP groups are kept inside one where possible
  DeviceKind device = DeviceKind::kCpu;
  int64_t device_memory_bytes = 0;
  int cores = 0;
  bool alive = true;        // heartbeats current
  bool schedulable = true;  // false when draining, detaching or quarantined
  std::string busy_job;     // non-empty: assigned to this job
};

struct ClusterView {
  std::vector<WorkerInfo> workers;
};

// One worker's share of the job.
struct RankPlacement {
  int pipeline_rank = 0;
  int data_rank = 0;
  int ep_group = 0;  // data_rank / EP
  int ep_rank = 0;   // data_rank % EP
  std::vector<int> stages;    // stage indices it holds (see the header comment)
  int64_t expert_begin = 0;   // routed experts [expert_begin, expert_end) it owns in each MoE layer it holds
  int64_t expert_end = 0;
  std::string worker_id;
  std::string worker_name;
  std::string host;
  DeviceKind device = DeviceKind::kCpu;
  friend bool operator==(const RankPlacement&, const RankPlacement&) = default;
};

struct EpGroupPlacement {
  int pipeline_rank = 0;
  int group_idx = 0;
  std::vector<int> members;        // indices into Placement::ranks, by EP rank
  std::vector<int> expert_owner;   // size N_r: index into Placement::ranks of the owner of routed expert e
  std::vector<std::string> hosts;  // distinct hosts of the members, in EP-rank order
  bool single_host() const { return hosts.size() <= 1; }
  friend bool operator==(const EpGroupPlacement&, const EpGroupPlacement&) = default;
};

struct Placement {
  std::string job_name;
  int pipeline = 1;
  int data = 1;
  int expert = 1;
  PipelineSchedule schedule = PipelineSchedule::k1F1B;
  int64_t num_main_layers = 0;          // L: stage layer indices >= L are MTP layers
  int64_t n_routed_experts = 0;
  int64_t experts_per_rank = 0;         // N_r / EP
  std::vector<StageLayout> stages;      // num_stages entries
  std::vector<RankPlacement> ranks;     // index pipeline_rank · data + data_rank
  std::vector<EpGroupPlacement> ep_groups;  // index pipeline_rank · (data / expert) + group
  std::vector<std::string> notes;       // preferences that could not be met (split EP groups, device fallback)

  int world_size() const { return pipeline * data; }
  const RankPlacement& at(int pipeline_rank, int data_rank) const { return ranks[pipeline_rank * data + data_rank]; }
  const EpGroupPlacement& group_of(int pipeline_rank, int data_rank) const {
    return ep_groups[pipeline_rank * (data / expert) + data_rank / expert];
  }
  // The worker that computes routed expert `expert` for tokens of replica (pipeline_rank, data_rank).
  const RankPlacement& ExpertOwner(int pipeline_rank, int data_rank, int64_t expert) const {
    return ranks[group_of(pipeline_rank, data_rank).expert_owner[expert]];
  }
  // Pipeline ranks holding a stage: one, or two under dualpipe.
  std::vector<int> PipelineRanksOfStage(int stage) const;
  friend bool operator==(const Placement&, const Placement&) = default;
};

// InvalidArgument if the spec does not validate; Unavailable if there are too few eligible workers.
Result<Placement> Place(const ClusterView& cluster, const JobSpec& spec);

// A human table: the stages and their layers, then one row per worker.
std::string DescribePlacement(const Placement& placement);

}  // namespace shoal
