// The schedule simulator: replays a schedule's op lists with per-op costs and reports, per pipeline rank, busy
// time, bubble, finish time and peak in-flight activations; plus the bubble formulas of ANCHORS.md.
//
// How the replay runs (the executor's semantics, schedule/schedule.h): every rank starts at t = 0 and runs its
// ops in order. A compute op takes its cost; a send takes no time and its tensor arrives comm_latency later; a
// receive waits until its tensor has arrived.
//
// What "bubble" means here (and in the DualPipe README's table): makespan = the time the last op of any rank
// ends; a rank's bubble = makespan - its busy time (the sum of its compute-op costs). It counts every instant
// the rank is not computing: waiting for its first input, waiting inside the step, and waiting at the end for
// the slowest rank. With uniform costs and zero latency this reproduces, exactly and on every rank,
//   1f1b       (PP-1)(F+B)
//   zb1p       (PP-1)(F+B-2W)
//   dualpipe   (PP/2-1)(F&B+B-3W)      when F&B = F+B, F = b (the README's usual F = B_input) and b >= W
//   dualpipev  the same on PP/2 devices, i.e. (pp-1)(F&B+B-3W) for pp devices holding 2·pp stages
// where B is the README's "full backward chunk" = b + w here. For dualpipe with F > b >= w the exact value is
// (PP/2-1)(2F+b-w) = the formula + (PP/2-1)(F-b): the rank between the two halves starts its first F&B pair
// only after one more forward. FormulaBubble gives the README's value; the simulator gives the truth.
//
// In-flight activations: a (chunk, micro-batch) is in flight from the start of its F until its weight gradient
// is done (W, a fused backward, or the backward half of an F&B pair). The peak counts chunk activations: PP on
// 1F1B's first rank and on every ZB1P rank, PP+1 on DualPipe's middle ranks (the README's "PP+1"), 2·pp+1 on
// DualPipeV's last rank (chunks of half a stage, so again the README's PP+1 with PP = 2·pp).
#pragma once

#include <vector>

#include "common/status.h"
#include "schedule/schedule.h"

namespace shoal::schedule {

// Costs of one op on one stage chunk for one micro-batch, in any time unit.
struct OpCosts {
  double f = 1;              // forward (F)
  double b = 1;              // input-gradient backward (B); the README's "B" (full backward) is b + w
  double w = 1;              // weight-gradient backward (W); a fused backward costs b + w
  double f_and_b = -1;       // an overlapped F + fused backward pair; < 0: f + b + w (no overlap gain)
  double comm_latency = 0;   // from a send to the moment its receive can complete

  double full_backward() const { return b + w; }
  double pair() const { return f_and_b < 0 ? f + b + w : f_and_b; }
};

struct RankSimResult {
  double busy = 0;     // Σ compute-op costs
  double bubble = 0;   // makespan - busy
  double finish = 0;   // when this rank's last op ended
  int peak_in_flight = 0;              // max chunk activations in flight at once
  std::vector<int> in_flight_at_peak;  // per chunk, at the first moment the peak was reached
};

struct SimResult {
  double makespan = 0;
  std::vector<RankSimResult> ranks;  // index = pipeline rank

  double max_bubble() const;
  double min_bubble() const;
  // Idle share of all ranks' time: Σ bubble / (pp · makespan).
  double bubble_fraction() const;
  int max_peak_in_flight() const;
};

// Replays `schedule` with the same costs on every stage. InvalidArgument if CheckSchedule would refuse it.
Result<SimResult> Simulate(const Schedule& schedule, const OpCosts& costs);
// Per-stage costs (stage_costs.size() == num_stages); a send takes its sending stage's comm_latency. An F&B pair
// of forward stage a and backward stage c costs (f_a + b_c + w_c) times the mean of the two stages' overlap
// ratios pair()/(f+b+w), which is f_and_b when both stages cost the same.
Result<SimResult> Simulate(const Schedule& schedule, const std::vector<OpCosts>& stage_costs);

// The README / ANCHORS.md formula for `kind` on `pp` pipeline ranks (for dualpipev: pp devices, 2·pp stages, so
// the README's PP/2 is pp), with the README's B = costs.full_backward().
double FormulaBubble(ScheduleKind kind, int pp, const OpCosts& costs);

}  // namespace shoal::schedule
