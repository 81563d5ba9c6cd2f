#include "worker/train/lr_schedule.h"

#include <algorithm>
#include <cmath>

namespace shoal::train {

double LearningRate(const LrScheduleParams& p, int64_t step) {
  if (p.warmup_steps > 0 && step <= p.warmup_steps) {
    return p.peak * static_cast<double>(step) / static_cast<double>(p.warmup_steps);
  }
  int64_t decay_steps = std::max<int64_t>(1, p.total_steps - p.warmup_steps);
  double t = std::clamp(static_cast<double>(step - p.warmup_steps) / static_cast<double>(decay_steps), 0.0, 1.0);
  switch (p.kind) {
    case LrSchedule::kConstant:
      return p.peak;
    case LrSchedule::kLinear:
      return p.peak + (p.min - p.peak) * t;
    case LrSchedule::kCosine:
    default:
      return p.min + (p.peak - p.min) * 0.5 * (1.0 + std::cos(M_PI * t));
  }
}

LrScheduleParams ScheduleOf(const JobSpec& spec, size_t phase_index) {
  const PhaseSpec& phase = spec.phases.at(phase_index);
  LrScheduleParams p;
  p.kind = spec.train.lr_schedule;
  p.peak = phase.effective_lr(spec.train);
  p.min = phase.effective_min_lr(spec.train);
  p.warmup_steps = phase.effective_warmup_steps(spec.train);
  p.total_steps = phase.steps;
  return p;
}

}  // namespace shoal::train
