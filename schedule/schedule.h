// Pipeline schedules as data (DESIGN.md §3): a pure generator of per-rank op lists for 1F1B, ZB1P (ZB-H1),
// DualPipe and DualPipeV. The same lists feed the simulator (schedule/simulator.h) and the stage executor.
//
// Layout. `pp` pipeline ranks run `NumStages` stages; each rank holds one or two chunks (model stage copies):
//   1f1b, zb1p  rank r holds stage r.
//   dualpipe    rank r holds stage r (chunk 0, direction down: ranks 0 → pp-1) and stage pp-1-r (chunk 1,
//               direction up: ranks pp-1 → 0). Micro-batches [0, m/2) run down, [m/2, m) run up, so each stage's
//               two copies (on ranks s and pp-1-s) see disjoint halves; their weight gradients are summed after
//               the step.
//   dualpipev   2·pp stages; rank r holds stage r (chunk 0, down) and stage 2·pp-1-r (chunk 1, up): every
//               micro-batch goes down the ranks on chunk 0 and back up on chunk 1 (a V). The edge between stages
//               pp-1 and pp stays on rank pp-1: no send, the executor hands the tensor over locally.
// Chunk order on a rank is spec/job_spec.h StagesOfPipelineRank's.
//
// Op semantics (what the executor must do; CheckSchedule and the simulator assume exactly this):
//  * A rank runs its ops in list order, one at a time.
//  * kForward / kBackwardInput / kBackwardWeight / kBackward / kForwardBackward are compute. kBackward is B and W
//    fused (W runs right away); kBackwardInput leaves the weight gradient for a later kBackwardWeight of the same
//    (chunk, micro-batch). kForwardBackward runs the forward of (chunk, micro_batch) overlapped with a fused
//    backward of (bwd_chunk, bwd_micro_batch), two different chunks (DualPipe's F&B: one micro-batch's compute
//    hides the other's expert all-to-all).
//  * kSend* never blocks the op stream: post it and go on (keep the buffer alive until it completes).
//    kRecv* blocks until that tensor has arrived; the executor may post the receive earlier (e.g. at step start).
//    A send/recv names the tensor by (stage, micro_batch) of the local chunk: kSendActivation sends the output
//    of `stage`, kRecvActivation receives the input of `stage`, kSendGrad sends the gradient of the input of
//    `stage`, kRecvGrad receives the gradient of the output of `stage`. `peer` is the other pipeline rank.
//    Messages are matched by (kind, stage edge, micro-batch), not by order.
//  * The last stage's forward computes the loss, so its backward needs no received gradient; stage 0's forward
//    reads the micro-batch's tokens.
//  * At the end of the list every compute op of the step has run; the executor waits for its outstanding sends
//    before the optimizer step (gradient all-reduce across DP and across DualPipe's two copies is not part of
//    the pipeline schedule).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace shoal::schedule {

enum class ScheduleKind { k1F1B, kZB1P, kDualPipe, kDualPipeV };
// "1f1b", "zb1p", "dualpipe", "dualpipev" (the job spec's spellings).
std::string_view ToString(ScheduleKind kind);
Result<ScheduleKind> ParseScheduleKind(std::string_view name);

// The way a chunk's forward activations travel through the pipeline ranks; gradients travel the other way.
enum class Direction : uint8_t {
  kDown,  // rank r sends activations to r + 1
  kUp,    // rank r sends activations to r - 1
};

enum class OpType : uint8_t {
  kForward,          // F
  kBackwardInput,    // B: gradient of the input (and what W needs is kept)
  kBackwardWeight,   // W: weight gradient of an earlier B of the same (chunk, micro-batch)
  kBackward,         // B and W fused
  kForwardBackward,  // F of (chunk, micro_batch) overlapped with a fused backward of (bwd_chunk, bwd_micro_batch)
  kSendActivation,
  kRecvActivation,
  kSendGrad,
  kRecvGrad,
};
// "F", "B", "W", "BW", "F&B", "SEND_ACT", "RECV_ACT", "SEND_GRAD", "RECV_GRAD".
std::string_view ToString(OpType type);

struct Op {
  OpType type = OpType::kForward;
  int chunk = 0;        // index into RankSchedule::chunks (0 or 1)
  int stage = 0;        // that chunk's global stage (= chunks[chunk].stage; kept here for readers)
  int micro_batch = 0;  // global micro-batch index in [0, num_micro_batches)
  // kForwardBackward only: the backward half (a fused B+W). -1 otherwise.
  int bwd_chunk = -1;
  int bwd_stage = -1;
  int bwd_micro_batch = -1;
  // Send/recv only: the other pipeline rank. -1 otherwise.
  int peer = -1;
  // The chunk's direction (for send/recv: the stream the tensor belongs to).
  Direction direction = Direction::kDown;

  bool is_compute() const { return type <= OpType::kForwardBackward; }
  bool is_comm() const { return !is_compute(); }
  friend bool operator==(const Op&, const Op&) = default;
};
// "F(s2,mb5)", "F(s2,mb5)&BW(s1,mb0)", "SEND_ACT(s2,mb5)->r3", "RECV_GRAD(s2,mb5)<-r3".
std::string ToString(const Op& op);

struct ChunkInfo {
  int stage = 0;
  Direction direction = Direction::kDown;
  int micro_batch_begin = 0;  // the micro-batches that pass through this chunk: [begin, end)
  int micro_batch_end = 0;
  bool holds(int micro_batch) const { return micro_batch >= micro_batch_begin && micro_batch < micro_batch_end; }
  friend bool operator==(const ChunkInfo&, const ChunkInfo&) = default;
};

struct RankSchedule {
  std::vector<ChunkInfo> chunks;
  std::vector<Op> ops;
  friend bool operator==(const RankSchedule&, const RankSchedule&) = default;
};

struct Schedule {
  ScheduleKind kind = ScheduleKind::k1F1B;
  int pp = 1;                 // pipeline ranks
  int num_micro_batches = 1;  // per pipeline (per data-parallel replica) per optimizer step
  int num_stages = 1;
  std::vector<RankSchedule> ranks;  // index = pipeline rank
  friend bool operator==(const Schedule&, const Schedule&) = default;
};

// Stages of the model cut for this schedule: pp, or 2·pp for dualpipev.
int NumStages(ScheduleKind kind, int pp);
// The chunks rank `rank` holds, in chunk order (see the header comment).
std::vector<ChunkInfo> ChunksOfRank(ScheduleKind kind, int pp, int num_micro_batches, int rank);
// The pipeline rank that runs `stage` for `micro_batch`.
int RankOfStage(ScheduleKind kind, int pp, int num_micro_batches, int stage, int micro_batch);

// The settings rules: pp >= 1 and num_micro_batches >= 1; dualpipe needs an even pp, an even micro-batch count
// and at least 2·pp micro-batches; dualpipev at least 2·pp micro-batches. InvalidArgument naming the rule.
Status CheckScheduleSettings(ScheduleKind kind, int pp, int num_micro_batches);

// The op lists. 1f1b: pp-1-r warm-up forwards, then one forward and one fused backward each, then the remaining
// backwards. zb1p (ZB-H1, arXiv 2401.10241): the same with split backwards, rank r keeping r weight-gradient ops
// deferred (so every rank holds at most pp micro-batches, as 1F1B's first rank) and running them at the end.
// dualpipe / dualpipev: the compute order of deepseek-ai/DualPipe (dualpipe.py, dualpipev.py) in its eight steps.
// Sends come right after the op that produces the tensor, receives right before the op that needs it (DualPipe
// batches its sends with the next receives and holds back a few of the middle ranks' sends; sending at once never
// makes anyone wait longer).
Result<Schedule> GenerateSchedule(ScheduleKind kind, int pp, int num_micro_batches);

// Validates a schedule (hand-built ones too): the chunks are the layout's; every op names a chunk, stage and
// micro-batch that exist on that rank; every (chunk, micro-batch) has exactly one F, one B and one W (a fused
// backward counts as both, the F&B pair as an F and a fused backward) in the order F < B <= W on its rank, with
// its input received (or produced on the same rank) before F and its output gradient before B; sends carry
// tensors already computed, to the right peer; every send has exactly one matching receive and the other way
// round; replayed with non-blocking sends and blocking receives, every rank reaches the end (no deadlock).
// InvalidArgument saying the rank, the op index, the op and what is wrong.
Status CheckSchedule(const Schedule& schedule);

// One line per rank: "r0: F(s0,mb0) SEND_ACT(s0,mb0)->r1 ...".
std::string ScheduleToString(const Schedule& schedule);

}  // namespace shoal::schedule
