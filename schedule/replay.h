// The replay behind CheckSchedule and Simulate (internal to schedule/): runs every rank's ops in order with
// non-blocking sends and blocking receives, validating each op as it goes, and times them with per-stage costs.
#pragma once

#include <vector>

#include "common/status.h"
#include "schedule/schedule.h"
#include "schedule/simulator.h"

namespace shoal::schedule::internal {

// stage_costs.size() must be schedule.num_stages (else InvalidArgument). The first problem found is returned
// as InvalidArgument naming the rank, op index and op.
Result<SimResult> Replay(const Schedule& schedule, const std::vector<OpCosts>& stage_costs);

}  // namespace shoal::schedule::internal
