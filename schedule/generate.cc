// GenerateSchedule: the per-rank op lists of 1F1B, ZB1P (ZB-H1), DualPipe and DualPipeV.
//
// Each generator decides the order of compute ops only; RankEmitter adds the communication around them: a
// receive right before the op that needs a tensor from another rank, a send right after the op that produced
// one. The DualPipe order follows deepseek-ai/DualPipe's eight steps; DualPipeV is the same machine with the
// V layout (its "half" is the whole pipeline and both chunks see every micro-batch).
#include <algorithm>
#include <deque>
#include <utility>

#include "common/check.h"
#include "schedule/schedule.h"

namespace shoal::schedule {
namespace {

class RankEmitter {
 public:
  RankEmitter(ScheduleKind kind, int pp, int num_micro_batches, int rank)
      : kind_(kind),
        pp_(pp),
        m_(num_micro_batches),
        rank_(rank),
        num_stages_(NumStages(kind, pp)),
        chunks_(ChunksOfRank(kind, pp, num_micro_batches, rank)) {}

  const std::vector<ChunkInfo>& chunks() const { return chunks_; }

  void Forward(int chunk, int mb) {
    RecvActivation(chunk, mb);
    ops_.push_back(Compute(OpType::kForward, chunk, mb));
    SendActivation(chunk, mb);
  }
  // split: B now, its W later (Weight); otherwise B and W fused.
  void Backward(int chunk, int mb, bool split) {
    RecvGrad(chunk, mb);
    ops_.push_back(Compute(split ? OpType::kBackwardInput : OpType::kBackward, chunk, mb));
    SendGrad(chunk, mb);
  }
  void Weight(int chunk, int mb) { ops_.push_back(Compute(OpType::kBackwardWeight, chunk, mb)); }
  void ForwardBackward(int f_chunk, int f_mb, int b_chunk, int b_mb) {
    CHECK_NE(f_chunk, b_chunk) << "an F&B pair overlaps two different chunks";
    RecvActivation(f_chunk, f_mb);
    RecvGrad(b_chunk, b_mb);
    Op op = Compute(OpType::kForwardBackward, f_chunk, f_mb);
    op.bwd_chunk = b_chunk;
    op.bwd_stage = chunks_[b_chunk].stage;
    op.bwd_micro_batch = b_mb;
    ops_.push_back(op);
    SendActivation(f_chunk, f_mb);
    SendGrad(b_chunk, b_mb);
  }

  RankSchedule Finish() && { return RankSchedule{std::move(chunks_), std::move(ops_)}; }

 private:
  Op Compute(OpType type, int chunk, int mb) const {
    Op op;
    op.type = type;
    op.chunk = chunk;
    op.stage = chunks_[chunk].stage;
    op.micro_batch = mb;
    op.direction = chunks_[chunk].direction;
    return op;
  }
  Op Comm(OpType type, int chunk, int mb, int peer) const {
    Op op = Compute(type, chunk, mb);
    op.peer = peer;
    return op;
  }
  // The rank running `stage` for `mb`, or -1 outside the pipeline.
  int RankOf(int stage, int mb) const {
    return stage < 0 || stage >= num_stages_ ? -1 : RankOfStage(kind_, pp_, m_, stage, mb);
  }
  void RecvActivation(int chunk, int mb) {
    const int peer = RankOf(chunks_[chunk].stage - 1, mb);
    if (peer >= 0 && peer != rank_) ops_.push_back(Comm(OpType::kRecvActivation, chunk, mb, peer));
  }
  void SendActivation(int chunk, int mb) {
    const int peer = RankOf(chunks_[chunk].stage + 1, mb);
    if (peer >= 0 && peer != rank_) ops_.push_back(Comm(OpType::kSendActivation, chunk, mb, peer));
  }
  void RecvGrad(int chunk, int mb) {
    const int peer = RankOf(chunks_[chunk].stage + 1, mb);
    if (peer >= 0 && peer != rank_) ops_.push_back(Comm(OpType::kRecvGrad, chunk, mb, peer));
  }
  void SendGrad(int chunk, int mb) {
    const int peer = RankOf(chunks_[chunk].stage - 1, mb);
    if (peer >= 0 && peer != rank_) ops_.push_back(Comm(OpType::kSendGrad, chunk, mb, peer));
  }

  ScheduleKind kind_;
  int pp_, m_, rank_, num_stages_;
  std::vector<ChunkInfo> chunks_;
  std::vector<Op> ops_;
};

// 1F1B (fused backwards) and ZB-H1 (split backwards; rank r keeps r weight gradients deferred).
RankSchedule OneForwardOneBackward(ScheduleKind kind, int pp, int m, int rank) {
  RankEmitter e(kind, pp, m, rank);
  const bool split = kind == ScheduleKind::kZB1P;
  int f = 0, b = 0, w = 0;
  for (int i = std::min(pp - 1 - rank, m); i > 0; --i) e.Forward(0, f++);
  while (b < m) {
    if (f < m) e.Forward(0, f++);
    e.Backward(0, b++, split);
    // ZB-H1: the W of micro-batch k runs after the B of k + rank, so that the later ranks, which wait less for
    // their first gradient, fill the time the earlier ones spend waiting with deferred weight gradients.
    if (split && b - w > rank) e.Weight(0, w++);
  }
  while (split && w < m) e.Weight(0, w++);
  return std::move(e).Finish();
}

// DualPipe's eight steps on one rank. `halves` is the number of ranks on one side of the pipe (PP/2 for
// dualpipe, the whole pipeline for dualpipev), `pos` this rank's distance from its end of the pipe, `per_chunk`
// the micro-batches each chunk processes. Phase 0 is the chunk whose first stage is on this rank's side, phase 1
// the other one.
class DualPipeRank {
 public:
  DualPipeRank(RankEmitter& e, int halves, int pos, int per_chunk, int phase0_chunk)
      : e_(e), halves_(halves), pos_(pos), per_chunk_(per_chunk), chunk_of_phase_{phase0_chunk, 1 - phase0_chunk} {}

  void Run() {
    const int n = halves_, h = pos_;
    const bool middle = h == n - 1;  // next to the other side: its first F and B are not overlapped
    // 1: forwards of the near chunk fill the pipe up to this rank.
    for (int i = 0; i < 2 * (n - h - 1); ++i) F(0);
    // 2: both chunks' forwards, alternating.
    for (int i = 0; i < h + 1; ++i) {
      F(0);
      F(1);
    }
    // 3: the far chunk's first backwards arrive; their weight gradients run at once but after the B, so the B's
    //    gradient leaves for the previous rank earlier (zero-bubble split).
    for (int i = 0; i < n - h - 1; ++i) {
      B(1, /*split=*/true);
      W();
      F(1);
    }
    // 4: the steady state: F&B pairs, alternating which chunk runs forward.
    for (int i = 0; i < per_chunk_ - 2 * n + h + 1; ++i) {
      if (i == 0 && middle) {
        F(0);
        B(1, /*split=*/false);
      } else {
        FB(0, 1);
      }
      FB(1, 0);
    }
    // 5: the near chunk's forwards are done; far-chunk backwards and pairs.
    for (int i = 0; i < n - h - 1; ++i) {
      B(1, /*split=*/false);
      FB(1, 0);
    }
    // 6: only backwards are left; from the middle of this step on they are split, their W's fill step 8.
    bool split = false;
    const int step6 = h + 1;
    for (int i = 0; i < step6; ++i) {
      if (i == step6 / 2 && h % 2 == 1) split = true;
      B(1, split);
      if (i == step6 / 2 && h % 2 == 0) split = true;
      B(0, split);
    }
    // 7: deferred W's interleaved with the last near-chunk backwards.
    for (int i = 0; i < n - h - 1; ++i) {
      W();
      B(0, /*split=*/true);
    }
    // 8: the remaining W's.
    while (!deferred_.empty()) W();
    for (int c = 0; c < 2; ++c) {
      CHECK(next_f_[c] == per_chunk_ && next_b_[c] == per_chunk_)
          << "dualpipe rank pos " << pos_ << " chunk " << c << ": " << next_f_[c] << " F, " << next_b_[c] << " B";
    }
  }

 private:
  int Mb(int chunk, int idx) const { return e_.chunks()[chunk].micro_batch_begin + idx; }
  void F(int phase) {
    const int c = chunk_of_phase_[phase];
    e_.Forward(c, Mb(c, next_f_[c]++));
  }
  void B(int phase, bool split) {
    const int c = chunk_of_phase_[phase];
    const int mb = Mb(c, next_b_[c]++);
    e_.Backward(c, mb, split);
    if (split) deferred_.emplace_back(c, mb);
  }
  void W() {
    CHECK(!deferred_.empty()) << "dualpipe: W with no deferred weight gradient";
    auto [c, mb] = deferred_.front();
    deferred_.pop_front();
    e_.Weight(c, mb);
  }
  void FB(int f_phase, int b_phase) {
    const int fc = chunk_of_phase_[f_phase], bc = chunk_of_phase_[b_phase];
    const int f_mb = Mb(fc, next_f_[fc]++);
    e_.ForwardBackward(fc, f_mb, bc, Mb(bc, next_b_[bc]++));
  }

  RankEmitter& e_;
  int halves_, pos_, per_chunk_;
  int chunk_of_phase_[2];
  int next_f_[2] = {0, 0};
  int next_b_[2] = {0, 0};
  std::deque<std::pair<int, int>> deferred_;  // (chunk, micro-batch) of split B's whose W has not run, FIFO
};

RankSchedule DualPipe(int pp, int m, int rank) {
  RankEmitter e(ScheduleKind::kDualPipe, pp, m, rank);
  const bool second_half = rank >= pp / 2;
  // Chunk 0 runs down from rank 0, chunk 1 up from rank pp-1: the near chunk of a second-half rank is chunk 1.
  DualPipeRank(e, pp / 2, std::min(rank, pp - 1 - rank), m / 2, second_half ? 1 : 0).Run();
  return std::move(e).Finish();
}

RankSchedule DualPipeV(int pp, int m, int rank) {
  RankEmitter e(ScheduleKind::kDualPipeV, pp, m, rank);
  DualPipeRank(e, pp, rank, m, 0).Run();
  return std::move(e).Finish();
}

}  // namespace

Result<Schedule> GenerateSchedule(ScheduleKind kind, int pp, int num_micro_batches) {
  RETURN_IF_ERROR(CheckScheduleSettings(kind, pp, num_micro_batches));
  Schedule s;
  s.kind = kind;
  s.pp = pp;
  s.num_micro_batches = num_micro_batches;
  s.num_stages = NumStages(kind, pp);
  s.ranks.reserve(pp);
  for (int r = 0; r < pp; ++r) {
    switch (kind) {
      case ScheduleKind::k1F1B:
      case ScheduleKind::kZB1P:
        s.ranks.push_back(OneForwardOneBackward(kind, pp, num_micro_batches, r));
        break;
      case ScheduleKind::kDualPipe:
        s.ranks.push_back(DualPipe(pp, num_micro_batches, r));
        break;
      case ScheduleKind::kDualPipeV:
        s.ranks.push_back(DualPipeV(pp, num_micro_batches, r));
        break;
    }
  }
  return s;
}

}  // namespace shoal::schedule
