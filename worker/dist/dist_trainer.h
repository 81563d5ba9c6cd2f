// DistributedTrainer: one rank of a multi-worker job (pipeline × data parallel, experts sharded inside DP;
// DESIGN.md §3). The step is the single-worker trainer's (worker/train/trainer.h) with a schedule executor in
// front of the model and collectives around the optimizer:
//
//   read this DP replica's rows of the global step ─► global target counts (all-gather over the DP group)
//   ─► the rank's op list (PipelineExecutor: F/B/W, sends, receives) ─► MTP embedding-copy gradient exchange
//   ─► ZeRO-1 (ZeroOptimizer: reduce-scatter, global norm, clip, AdamW on owned tensors, all-gather)
//   ─► expert loads summed over every replica of the stage ─► bias update ─► step report (loss summed over the
//   world) ─► evaluation and checkpoint shard on checkpoint steps
//
// Every rank runs the same phases and steps in lockstep through its collectives; a dead peer ends the step with
// Unavailable (or DeadlineExceeded), Run returns it and the runner reports RankFailed (DESIGN.md §6).
//
// Checkpoints (DESIGN.md §5): each rank writes shard "pp<P>-dp<D>" with the tensors it owns under ZeRO (their
// parameters and bf16 moments, each tensor exactly once across the job) plus, on the first member of each
// replica group, the non-trainable tensors (e_score_correction_bias); restore merges every shard by name
// (checkpoint::LoadMerged), so a checkpoint written under one layout loads under another, the single-worker one
// included. The data cursor is global and identical on every rank.
#pragma once

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "worker/train/trainer.h"

namespace shoal::comm {
class Communicator;
}

namespace shoal::model {
class Model;
}

namespace shoal::dist {

struct DistLayout;
struct PipelineTiming;

struct DistConfig {
  // spec, job_id, epoch, pp_rank, dp_rank, checkpoint_root, restore, threads, eval_batches.
  train::TrainerConfig trainer;
  // Every rank of the job: job rank (pp_rank · data + dp_rank) -> its Communicator::address().
  std::map<int, std::string> peers;
  // Every rank's host (RankAssignment.host), for node-limited routing; empty: not checked.
  std::map<int, std::string> hosts;
  // What the placement says this rank holds (RankAssignment.stages / expertBegin / expertEnd). When given they
  // must match the layout the spec implies (InvalidArgument otherwise); empty / -1: not checked.
  std::vector<int> stages;
  int64_t expert_begin = -1, expert_end = -1;
  // Deadline of every wait on the data plane.
  std::chrono::milliseconds comm_timeout{120'000};
  // Connect the communicator to `peers` at `trainer.epoch` in Create (off when the caller already did).
  bool connect = true;
  // Expert parallelism: interleave the two halves of F&B pairs so that each one's all-to-all runs while the
  // other computes (overlap_lanes.h). Off: the halves run one after the other (benchmarks' baseline).
  bool overlap_pairs = true;
  // Every exchange completes before its layer goes on (EpExchangeOptions::serialize; benchmarks' baseline).
  bool serialize_exchanges = false;
};

class DistributedTrainer {
 public:
  // `comm` outlives the trainer (may be null only for a one-rank layout); `events` receives step reports and
  // checkpoint shards. InvalidArgument for a spec or placement this rank cannot run.
  static Result<std::unique_ptr<DistributedTrainer>> Create(DistConfig config, comm::Communicator* comm,
                                                            train::TrainerEvents* events);
  ~DistributedTrainer();

  // Runs from the restore point through the last phase. OK when every phase finished (its final checkpoint
  // durable); Cancelled when `stop` was raised; the data plane's error when a peer failed.
  Status Run(const std::atomic<bool>& stop);

  const DistLayout& layout() const;
  // The models of this rank's stage chunks, in chunk order.
  std::vector<model::Model*> chunks();
  // The pipeline's timing summed over every step run so far (per-op costs for schedule::Simulate).
  const PipelineTiming& pipeline_timing() const;
  int64_t steps_run() const;
  // Expert all-to-all statistics of both exchange lanes so far (zeros without expert parallelism), and how
  // often one half of an F&B pair computed while the other's all-to-all was in flight.
  struct ExchangeStats {
    int64_t exchanges = 0, bytes_sent = 0, overlap_yields = 0;
    double wait_seconds = 0;
  };
  ExchangeStats exchange_stats() const;

 private:
  struct State;
  explicit DistributedTrainer(std::unique_ptr<State> state);
  std::unique_ptr<State> s_;
};

}  // namespace shoal::dist
