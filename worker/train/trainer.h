// Trainer: runs a job's phases on this worker — micro-batches with gradient accumulation, AdamW, the LR schedule,
// clipping, the aux-loss-free bias update, periodic checkpoints and held-out evaluation — and reports every
// step. One worker holds the whole model here (the single-worker layout of issue 4); the distributed layouts
// reuse the same step structure with a schedule executor in front of the model.
//
// Phases run in order from a restore point (the last committed checkpoint, if any): a phase resumes at the
// step after its checkpoint with the checkpoint's data cursor, so a resumed run is bitwise the run that did not
// stop. Each phase starts a fresh AdamW (moments and step count) on the previous phase's weights.
#pragma once

#include <atomic>
#include <cmath>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"
#include "spec/job_spec.h"
#include "worker/checkpoint/checkpoint.h"

namespace shoal::model {
class Model;
}

namespace shoal::train {

struct StepMetrics {
  std::string phase;
  uint32_t phase_index = 0;
  int64_t step = 0;          // 1-based within the phase
  int64_t total_steps = 0;
  double loss = 0;           // mean main cross-entropy (nats/token)
  double mtp_loss = 0;       // mean MTP cross-entropy
  double balance_loss = 0;   // Σ over MoE layers of the sequence-wise balance loss
  double grad_norm = 0;      // before clipping
  double lr = 0;
  double tokens_per_s = 0;
  double gflops = 0;         // achieved model FLOP/s of the step, in GFLOP/s
  double expert_imbalance = 0;  // mean over MoE layers of max(load)/mean(load); 1 = perfectly balanced
  double eval_loss = NAN;    // held-out main loss, on checkpoint steps (NaN otherwise)
  double seconds = 0;
  double reward = NAN;       // GRPO: mean reward of the step's rollouts
  double kl = NAN;           // GRPO: mean k3 KL to the reference over the sampled tokens
  // Multi-worker layouts (worker/dist): where this rank's step time went. compute: inside model and optimizer
  // compute; comm: blocked in data-parallel collectives and exchanges; idle: blocked in pipeline receives and on
  // the last sends of the step (the bubble). NaN on the single-worker path.
  double compute_s = NAN;
  double comm_s = NAN;
  double idle_s = NAN;
};

struct CheckpointWritten {
  std::string phase;
  uint32_t phase_index = 0;
  int64_t step = 0;
  std::string step_dir;
  checkpoint::ShardManifest manifest;
  std::string cursor_json;
  bool phase_done = false;
};

// Called from the trainer's threads (steps on the training thread, checkpoints on the writer thread).
class TrainerEvents {
 public:
  virtual ~TrainerEvents() = default;
  virtual void OnStep(const StepMetrics& metrics) = 0;
  virtual void OnCheckpoint(const CheckpointWritten& written) = 0;
  virtual void OnCheckpointFailed(const Status& status) = 0;
};

struct RestorePoint {
  uint32_t phase_index = 0;
  int64_t step = 0;
  std::string step_dir;
  std::string cursor_json;
  bool phase_done = false;
};

struct TrainerConfig {
  JobSpec spec;
  std::string job_id;
  uint64_t epoch = 0;
  uint32_t pp_rank = 0;
  uint32_t dp_rank = 0;
  std::string checkpoint_root;  // this job's directory; phase P writes <root>/<P>/step-<S>/. Empty: none.
  std::optional<RestorePoint> restore;
  int threads = 0;              // compute threads (0: all cores)
  int eval_batches = 2;         // held-out batches evaluated at each checkpoint (builtin data only)
};

class Trainer {
 public:
  static Result<std::unique_ptr<Trainer>> Create(TrainerConfig config, TrainerEvents* events);
  ~Trainer();

  // Runs from the restore point through the last phase. OK when every phase finished (its final checkpoint
  // durable); Cancelled when `stop` was raised (between steps).
  Status Run(const std::atomic<bool>& stop);

  model::Model& model();

 private:
  struct State;
  explicit Trainer(std::unique_ptr<State> state);
  std::unique_ptr<State> s_;
};

// The name of a rank's checkpoint shard: "pp<P>-dp<D>" (one per worker, single-worker layouts included).
std::string ShardName(uint32_t pp_rank, uint32_t dp_rank);
// Whether a phase writes a checkpoint after `step` (its `every` cadence, and always its last step).
bool IsCheckpointStep(const PhaseSpec& phase, int64_t step);
// Mean over MoE layers of max(load)/mean(load) (1 = perfectly balanced; 0 without MoE layers).
double ExpertImbalance(const std::vector<std::pair<int64_t, std::vector<int32_t>>>& loads);

// Model FLOPs of one training token (forward + backward): 6 × the parameters a token activates (main model
// without the embedding lookup, incl. the head; the MTP module) plus the attention score/value products.
double TrainingFlopsPerToken(const ModelConfig& config, int64_t seq_len);

}  // namespace shoal::train
