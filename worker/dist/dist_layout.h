// What one rank of a multi-worker job holds and whom it talks to (DESIGN.md §3): a pure function of the job spec
// and the rank's (pipeline, data) coordinates, shared by the distributed trainer and its tests.
//
//   job rank            pipeline_rank · DP + data_rank (coordinator/placement.h)
//   chunks              the stages of StagesOfPipelineRank, in the schedule's chunk order, with their layers
//   dp group            the DP replicas of this pipeline rank: (pipeline_rank, 0..DP-1); global target counts
//   replica group       every rank that holds a copy of this rank's stages: DP replicas, and under DualPipe the
//                       replicas of the other pipeline rank holding the same two stages; replicated (non-expert)
//                       gradients are summed over it, expert loads too
//   expert group        the replica-group members with this rank's EP rank (they hold the same routed experts);
//                       expert gradients are summed over it
//   EP group            EP consecutive data ranks of this pipeline rank; the MoE layers exchange tokens over it
//   MTP embedding pair  the rank whose model.embed_tokens / model.layers.{L}.embed_tokens.weight gradient this
//                       rank's copy is summed with (same rank under DualPipe/DualPipeV: both stages are local)
//
// Group orders are ascending job ranks, so every member sums in the same order (bitwise reproducible), and groups
// get explicit comm ids so that two groups that share members never collide (worker/comm/group.h).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "common/status.h"
#include "schedule/schedule.h"
#include "spec/job_spec.h"
#include "spec/stage_layout.h"

namespace shoal::dist {

schedule::ScheduleKind ToScheduleKind(PipelineSchedule schedule);

struct DistLayout {
  int pp = 1, dp = 1, ep = 1;
  schedule::ScheduleKind kind = schedule::ScheduleKind::k1F1B;
  int num_micro_batches = 1;  // per pipeline (per DP replica) per step
  int num_stages = 1;
  int pp_rank = 0, dp_rank = 0, rank = 0;
  int ep_group = 0, ep_rank = 0;
  int64_t expert_begin = 0, expert_end = 0;  // routed experts held in every MoE layer
  std::vector<StageLayout> chunks;           // chunk order (schedule::ChunksOfRank)

  std::vector<int> world;          // 0..PP·DP-1
  std::vector<int> dp_group;       // (pp_rank, d) for every d
  std::vector<int> replica_group;  // every holder of this rank's stages, ascending
  std::vector<int> expert_group;   // members of replica_group with this EP rank, ascending
  std::vector<int> ep_members;     // this rank's EP group: (pp_rank, ep_group·EP + k) for k = 0..EP-1
  // comm group ids (world: kWorldGroupId); groups with equal members share one id
  uint32_t dp_group_id = 0, replica_group_id = 0, expert_group_id = 0, ep_group_id = 0;
  // The EP group's second id: the exchanges of the backward half of an overlapped F&B pair run on it, so that
  // the two halves' all-to-alls never depend on how the halves interleave (pipeline_executor.h).
  uint32_t ep_overlap_group_id = 0;

  // MTP embedding copy (the last stage holds model.layers.{L}.embed_tokens.weight when it lacks the embedding):
  // kNone, kLocal (this rank holds both tensors: sum them in place), kPeer (exchange with mtp_pair_rank).
  enum class MtpPairing { kNone, kLocal, kPeer };
  MtpPairing mtp_pairing = MtpPairing::kNone;
  int mtp_pair_rank = -1;

  bool holds_stage(int stage) const;
  int ChunkOfStage(int stage) const;  // -1 when not held
  std::string DebugString() const;
};

inline constexpr uint32_t kWorldGroupId = 1;

inline int JobRank(int pp_rank, int dp_rank, int dp) { return pp_rank * dp + dp_rank; }

// InvalidArgument when the spec does not validate or the coordinates are outside the layout.
Result<DistLayout> MakeDistLayout(const JobSpec& spec, int pp_rank, int dp_rank);

// Node-limited routing (ParallelSpec::max_nodes_per_token): OK when the spec asks for none, or when every one of
// the router's n_group expert groups lies on one host of this rank's EP group (hosts: job rank -> host), so that
// the group-limited router (topk_group <= the limit, checked with the spec) keeps every token within the limit.
// InvalidArgument naming the group and its hosts otherwise. `max_hosts` (optional) receives the most hosts one
// token's experts can span.
Status CheckNodeLimit(const JobSpec& spec, const DistLayout& layout, const std::map<int, std::string>& hosts,
                      int* max_hosts = nullptr);

// The expert all-to-all payload types the spec asks for (ParallelSpec::dispatch / combine and their defaults).
bool DispatchInFp8(const JobSpec& spec);
bool CombineInBf16(const JobSpec& spec);

// ZeRO-1 ownership by whole tensors: tensor i (numel[i] elements) goes to one of `parts` owners, largest tensors
// first to the least-loaded owner (ties: lower index, lower owner), so the owners' element counts are balanced and
// every member computes the same assignment.
std::vector<int> AssignOwners(const std::vector<int64_t>& numel, int parts);

// Routed-expert tensors (model.layers.{i}.mlp.experts.{e}.*) are sharded by EP; everything else is replicated.
bool IsExpertTensor(const std::string& name);

// Point-to-point tags of the pipeline (< 2^24): kind (2 bits) | stage edge (8 bits) | micro-batch (14 bits). The
// edge between stages s and s+1 is `s`.
enum class PipeTensor : uint32_t { kActivation = 0, kGrad = 1, kEvalActivation = 2, kMtpEmbedGrad = 3 };
inline constexpr int kMaxPipelineEdges = 256;
inline constexpr int kMaxMicroBatches = 1 << 14;
uint32_t PipeTag(PipeTensor kind, int edge, int micro_batch);

// Peak number of micro-batches whose activations a chunk holds at once when the ops run in list order: from the
// start of a forward until its weight gradient is done (W, a fused backward, or the backward of an F&B pair).
// One entry per chunk of `rank`.
std::vector<int> PeakInFlight(const schedule::RankSchedule& rank);

}  // namespace shoal::dist
