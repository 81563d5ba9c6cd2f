#include "worker/train/lr_schedule.h"

#include <gtest/gtest.h>

namespace shoal::train {
namespace {

TEST(LrScheduleTest, WarmupThenCosineToMin) {
  LrScheduleParams p{LrSchedule::kCosine, 1e-3, 1e-4, 10, 110};
  EXPECT_DOUBLE_EQ(LearningRate(p, 1), 1e-4);
  EXPECT_DOUBLE_EQ(LearningRate(p, 5), 5e-4);
  EXPECT_DOUBLE_EQ(LearningRate(p, 10), 1e-3);
  EXPECT_NEAR(LearningRate(p, 60), 5.5e-4, 1e-12);  // half way: the mean of peak and min
  EXPECT_NEAR(LearningRate(p, 110), 1e-4, 1e-12);
  for (int s = 11; s < 110; ++s) EXPECT_GT(LearningRate(p, s), LearningRate(p, s + 1));
}

TEST(LrScheduleTest, LinearAndConstant) {
  LrScheduleParams lin{LrSchedule::kLinear, 2.0, 0.0, 0, 4};
  EXPECT_DOUBLE_EQ(LearningRate(lin, 1), 1.5);
  EXPECT_DOUBLE_EQ(LearningRate(lin, 4), 0.0);
  LrScheduleParams c{LrSchedule::kConstant, 3.0, 0.0, 2, 10};
  EXPECT_DOUBLE_EQ(LearningRate(c, 1), 1.5);
  EXPECT_DOUBLE_EQ(LearningRate(c, 9), 3.0);
}

TEST(LrScheduleTest, PhaseOverridesApply) {
  auto spec = ParseJobSpec(
      "name: x\nmodel: {preset: demo}\ntrain: {lr: 1.0e-3, min_lr: 1.0e-4, warmup_steps: 7}\nphases:\n"
      "  - {name: a, kind: pretrain, data: {builtin: arith}, steps: 10}\n"
      "  - {name: b, kind: sft, data: {builtin: arith-sft}, steps: 20, lr: 5.0e-4, min_lr: 1.0e-5, warmup_steps: 2}\n",
      "x.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status();
  auto a = ScheduleOf(*spec, 0), b = ScheduleOf(*spec, 1);
  EXPECT_EQ(a.peak, 1e-3);
  EXPECT_EQ(a.warmup_steps, 7);
  EXPECT_EQ(a.total_steps, 10);
  EXPECT_EQ(b.peak, 5e-4);
  EXPECT_EQ(b.min, 1e-5);
  EXPECT_EQ(b.warmup_steps, 2);
  EXPECT_EQ(b.total_steps, 20);
}

}  // namespace
}  // namespace shoal::train
