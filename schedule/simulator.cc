// Simulate and the README bubble formulas (schedule/simulator.h).
#include "schedule/simulator.h"

#include <algorithm>

#include "schedule/replay.h"

namespace shoal::schedule {

double SimResult::max_bubble() const {
  double v = 0;
  for (const RankSimResult& r : ranks) v = std::max(v, r.bubble);
  return v;
}

double SimResult::min_bubble() const {
  if (ranks.empty()) return 0;
  double v = ranks[0].bubble;
  for (const RankSimResult& r : ranks) v = std::min(v, r.bubble);
  return v;
}

double SimResult::bubble_fraction() const {
  if (ranks.empty() || makespan <= 0) return 0;
  double idle = 0;
  for (const RankSimResult& r : ranks) idle += r.bubble;
  return idle / (makespan * static_cast<double>(ranks.size()));
}

int SimResult::max_peak_in_flight() const {
  int v = 0;
  for (const RankSimResult& r : ranks) v = std::max(v, r.peak_in_flight);
  return v;
}

Result<SimResult> Simulate(const Schedule& schedule, const OpCosts& costs) {
  return internal::Replay(schedule, std::vector<OpCosts>(std::max(schedule.num_stages, 0), costs));
}

Result<SimResult> Simulate(const Schedule& schedule, const std::vector<OpCosts>& stage_costs) {
  return internal::Replay(schedule, stage_costs);
}

double FormulaBubble(ScheduleKind kind, int pp, const OpCosts& c) {
  const double F = c.f, B = c.full_backward(), W = c.w, FB = c.pair();
  switch (kind) {
    case ScheduleKind::k1F1B: return (pp - 1) * (F + B);
    case ScheduleKind::kZB1P: return (pp - 1) * (F + B - 2 * W);
    case ScheduleKind::kDualPipe: return (pp / 2 - 1) * (FB + B - 3 * W);
    case ScheduleKind::kDualPipeV: return (pp - 1) * (FB + B - 3 * W);
  }
  return 0;
}

}  // namespace shoal::schedule
