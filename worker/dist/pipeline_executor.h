// The stage executor: runs one pipeline rank's op list (schedule/schedule.h) for a step, on the Models of its
// chunks, moving activations and gradients to the neighbouring ranks over the communicator.
//
//   F     ForwardStage(micro-batch, hidden_in, hidden_out): hidden_in from a RECV (or, DualPipeV's turn, from the
//         local chunk that produced it), hidden_out kept for the SEND (or the local consumer)
//   B     BackwardStage: dhidden_out from a RECV (none on the last stage: the loss is computed there), dhidden_in
//         kept for the SEND; the weight gradients wait for W (defer_weight_grads)
//   W     BackwardWeightStage of that micro-batch's activation slot
//   BW    B with the weight gradients at once
//   F&B   the forward of one chunk and the fused backward of the other; with expert parallelism and
//         SetOverlapExchanges, the two run as interleaved lanes (overlap_lanes.h) so that each one's all-to-all
//         runs while the other computes; otherwise one after the other
//   SEND  posted and left running (the buffer stays alive until it completed); checked as the list goes on and
//         waited for at the end of the list
//   RECV  blocks (with the deadline) until the tensor is there; receives are posted a few ops ahead
//
// Messages are tagged by (tensor, stage edge, micro-batch) (dist_layout.h PipeTag); a dead peer ends the step
// with the communicator's Unavailable, a hung one with DeadlineExceeded, a raised stop flag with Cancelled.
//
// Each chunk's Model has one activation slot per micro-batch the chunk can hold at once (PeakInFlight); the
// executor hands them out at F and takes them back when the micro-batch's weight gradient is done.
#pragma once

#include <array>
#include <atomic>
#include <memory>
#include <span>
#include <vector>

#include "common/status.h"
#include "schedule/schedule.h"
#include "worker/dist/dist_layout.h"
#include "worker/dist/wait.h"
#include "worker/model/model.h"

namespace shoal::comm {
class Communicator;
}

namespace shoal::dist {

class EpExchange;

// Where one step's time went on this rank.
struct PipelineTiming {
  double span_s = 0;       // the whole op list, first op to the last send completed
  double compute_s = 0;    // inside the model's compute calls
  double recv_wait_s = 0;  // blocked in RECV (pipeline bubble)
  double send_wait_s = 0;  // blocked on outstanding sends at the end of the list
  // Per chunk and op type (F, B, W, BW, F&B): Σ seconds and count, for the simulator's per-stage costs.
  struct OpStat {
    double seconds = 0;
    int count = 0;
  };
  std::vector<std::array<OpStat, 5>> ops;
  void Add(const PipelineTiming& other);
};

struct PipelineResult {
  model::StepLosses losses;  // Σ over this rank's micro-batches (main/MTP only where the head is held)
  PipelineTiming timing;
};

class PipelineExecutor {
 public:
  // `chunks` (not owned) are the rank's Models in chunk order, created with activation_slots >= PeakInFlight and
  // defer_weight_grads where the schedule splits backwards; `comm` may be null when the pipeline has one rank.
  // Micro-batches are [micro_batch, seq_len] tokens of hidden size `hidden`.
  static Result<std::unique_ptr<PipelineExecutor>> Create(const DistLayout& layout, schedule::RankSchedule ops,
                                                          std::vector<model::Model*> chunks,
                                                          comm::Communicator* comm, int64_t micro_batch,
                                                          int64_t seq_len, int64_t hidden, WaitPolicy wait);
  ~PipelineExecutor();

  // One step: micro_batches[mb] is micro-batch mb of this DP replica (all num_micro_batches of them; each chunk
  // uses those it runs). Gradients and expert loads accumulate into the models.
  Result<PipelineResult> RunStep(std::span<const model::MicroBatch> micro_batches, const model::LossScales& scales);

  // Held-out evaluation: each batch goes forward through the stages in order (the chain of micro-batch 0's
  // direction); the rank holding the last stage returns the summed losses, the others zeros. No gradients
  // or loads are kept.
  Result<model::StepLosses> Evaluate(std::span<const model::MicroBatch> batches);

  const schedule::RankSchedule& ops() const { return ops_; }

  // Expert parallelism: the models use `lane0` (set by the caller) for every exchange; F&B pairs of two chunks
  // then run their backward half on `lane1` (an EpExchange of the same members under another group id) and
  // interleave with the forward half. Both outlive the executor; nulls turn the overlap off.
  void SetOverlapExchanges(EpExchange* lane0, EpExchange* lane1);
  // Replaces the wait policy given to Create (the trainer hands over its stop flag when Run starts).
  void SetWaitPolicy(const WaitPolicy& wait);
  // Baton hand-overs inside F&B pairs so far (the times one half's all-to-all let the other half compute).
  int64_t overlap_yields() const;

 private:
  PipelineExecutor() = default;
  struct Impl;
  std::unique_ptr<Impl> impl_;
  schedule::RankSchedule ops_;
};

// True when the schedule splits backwards of chunk `chunk` into B and W (its Model needs defer_weight_grads).
bool SplitsBackward(const schedule::RankSchedule& ops, int chunk);

}  // namespace shoal::dist
