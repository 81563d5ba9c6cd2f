// Learning-rate schedules: a pure function of the step (spec §6.1 shape: linear warm-up from 0, then cosine,
// linear or constant down to min_lr over the remaining steps of the phase).
#pragma once

#include <cstdint>

#include "spec/job_spec.h"

namespace shoal::train {

struct LrScheduleParams {
  LrSchedule kind = LrSchedule::kCosine;
  double peak = 0;
  double min = 0;
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;
};

// The learning rate of optimizer step `step` (1-based) of a phase: step·peak/warmup during warm-up, then
// decaying from peak (at step warmup) to min (at step total_steps).
double LearningRate(const LrScheduleParams& p, int64_t step);

// The schedule of phase `phase_index` of a job (phase overrides applied).
LrScheduleParams ScheduleOf(const JobSpec& spec, size_t phase_index);

}  // namespace shoal::train
