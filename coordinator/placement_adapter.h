// Binds the pure placement policy (placement.h) to the job manager's view of workers and placements.
#pragma once

#include "coordinator/job_manager.h"

namespace shoal::coordinator {

PlacementPolicy MakePlacementPolicy();

}  // namespace shoal::coordinator
