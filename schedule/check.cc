// CheckSchedule: a replay with unit costs, kept for its verdict only.
#include "schedule/replay.h"
#include "schedule/schedule.h"

namespace shoal::schedule {

Status CheckSchedule(const Schedule& schedule) {
  const int num_stages = schedule.num_stages > 0 ? schedule.num_stages : 0;
  return internal::Replay(schedule, std::vector<OpCosts>(num_stages, OpCosts{})).status();
}

}  // namespace shoal::schedule
