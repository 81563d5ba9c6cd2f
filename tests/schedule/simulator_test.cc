// Simulate: the bubbles of the generated schedules against the DualPipe README / ANCHORS.md formulas, exactly and
// on every rank; peak in-flight activations; properties over many (pp, micro-batch) combinations.
#include "schedule/simulator.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <random>

#include "schedule/schedule.h"

namespace shoal::schedule {
namespace {

using ::testing::HasSubstr;

SimResult Sim(ScheduleKind kind, int pp, int m, const OpCosts& c) {
  Result<Schedule> s = GenerateSchedule(kind, pp, m);
  EXPECT_TRUE(s.ok()) << s.status();
  if (!s.ok()) return {};
  Result<SimResult> r = Simulate(*s, c);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? *r : SimResult{};
}

OpCosts Costs(double f, double b, double w, double f_and_b = -1) {
  OpCosts c;
  c.f = f;
  c.b = b;
  c.w = w;
  c.f_and_b = f_and_b;
  return c;
}

// Every rank's bubble equals `expected` (costs are small integers, so the sums are exact in double).
void ExpectBubbleOnEveryRank(const SimResult& r, double expected, const std::string& what) {
  ASSERT_FALSE(r.ranks.empty()) << what;
  for (size_t i = 0; i < r.ranks.size(); ++i) EXPECT_EQ(r.ranks[i].bubble, expected) << what << " rank " << i;
}

TEST(SimulatorTest, OneFOneBBubbleIsPpMinusOneTimesFPlusB) {
  for (OpCosts c : {Costs(1, 1, 1), Costs(2, 3, 1), Costs(5, 4, 4), Costs(1, 2, 0)}) {
    for (int pp : {1, 2, 3, 4, 8, 16}) {
      for (int m : {pp, pp + 1, 2 * pp, 8 * pp}) {
        SimResult r = Sim(ScheduleKind::k1F1B, pp, m, c);
        const double expected = (pp - 1) * (c.f + c.b + c.w);
        EXPECT_EQ(FormulaBubble(ScheduleKind::k1F1B, pp, c), expected);
        ExpectBubbleOnEveryRank(r, expected, "1f1b pp " + std::to_string(pp) + " m " + std::to_string(m));
        for (const RankSimResult& rr : r.ranks) EXPECT_EQ(rr.busy, m * (c.f + c.b + c.w));
        // Activations: PP on the first rank, one fewer on each later one.
        for (int i = 0; i < pp; ++i) EXPECT_EQ(r.ranks[i].peak_in_flight, std::min(pp - i, m));
      }
    }
  }
}

TEST(SimulatorTest, ZeroBubbleOnePBubbleIsPpMinusOneTimesFPlusBMinusTwoW) {
  // README's B is the full backward (b + w): (PP-1)(F+B-2W) = (PP-1)(F+b-w). Exact for b >= w.
  for (OpCosts c : {Costs(1, 1, 1), Costs(2, 3, 1), Costs(3, 2, 2), Costs(4, 3, 1)}) {
    for (int pp : {2, 3, 4, 8, 16}) {
      for (int m : {pp, 2 * pp + 1, 6 * pp}) {
        SimResult r = Sim(ScheduleKind::kZB1P, pp, m, c);
        const double expected = (pp - 1) * (c.f + c.b - c.w);
        EXPECT_EQ(FormulaBubble(ScheduleKind::kZB1P, pp, c), expected);
        ExpectBubbleOnEveryRank(r, expected, "zb1p pp " + std::to_string(pp) + " m " + std::to_string(m));
        // Same memory as 1F1B's first rank, on every rank.
        for (const RankSimResult& rr : r.ranks) EXPECT_EQ(rr.peak_in_flight, pp);
      }
    }
  }
  // F = B = W: a third of 1F1B's bubble (the ZB paper's claim).
  EXPECT_EQ(Sim(ScheduleKind::kZB1P, 8, 32, Costs(1, 1, 1)).max_bubble() * 3,
            Sim(ScheduleKind::k1F1B, 8, 32, Costs(1, 1, 1)).max_bubble());
}

TEST(SimulatorTest, DualPipeMatchesTheReadmeFormulaExactly) {
  // F&B = F + B (no overlap gain) and F = b (the README's usual forward = input-backward), b >= W.
  for (OpCosts c : {Costs(1, 1, 1), Costs(2, 2, 1), Costs(3, 3, 1), Costs(4, 4, 3), Costs(5, 5, 0)}) {
    for (int pp : {4, 8, 16}) {
      for (int m : {2 * pp, 2 * pp + 2, 4 * pp, 10 * pp}) {
        SimResult r = Sim(ScheduleKind::kDualPipe, pp, m, c);
        const double readme = (pp / 2 - 1) * ((c.f + c.b + c.w) + (c.b + c.w) - 3 * c.w);
        EXPECT_EQ(FormulaBubble(ScheduleKind::kDualPipe, pp, c), readme);
        ExpectBubbleOnEveryRank(r, readme, "dualpipe pp " + std::to_string(pp) + " m " + std::to_string(m));
        // Activations PP+1 (the middle ranks), and every rank's work is the same.
        EXPECT_EQ(r.max_peak_in_flight(), pp + 1);
        for (const RankSimResult& rr : r.ranks) EXPECT_EQ(rr.busy, m * (c.f + c.b + c.w));
      }
    }
  }
}

TEST(SimulatorTest, DualPipeHoldsTwoStagesPerRank) {
  // Parameters 2x: every rank holds two chunks, each a whole stage of a PP-stage model.
  for (int pp : {4, 8, 16}) {
    EXPECT_EQ(NumStages(ScheduleKind::kDualPipe, pp), pp);
    for (int r = 0; r < pp; ++r) EXPECT_EQ(ChunksOfRank(ScheduleKind::kDualPipe, pp, 2 * pp, r).size(), 2u);
    EXPECT_EQ(ChunksOfRank(ScheduleKind::k1F1B, pp, 2 * pp, 0).size(), 1u);
  }
}

TEST(SimulatorTest, DualPipeWithSlowerForwardPaysFMinusBMore) {
  // With F > b >= W the schedule is still exact on every rank, at (PP/2-1)(2F+b-W): the README formula plus
  // (PP/2-1)(F-b). Pinned so a change of the op order shows up here.
  for (OpCosts c : {Costs(3, 2, 1), Costs(5, 3, 1), Costs(4, 2, 2), Costs(2, 1, 0)}) {
    for (int pp : {4, 8, 16}) {
      SimResult r = Sim(ScheduleKind::kDualPipe, pp, 4 * pp, c);
      const double exact = (pp / 2 - 1) * (2 * c.f + c.b - c.w);
      ExpectBubbleOnEveryRank(r, exact, "dualpipe pp " + std::to_string(pp));
      EXPECT_EQ(exact - FormulaBubble(ScheduleKind::kDualPipe, pp, c), (pp / 2 - 1) * (c.f - c.b));
    }
  }
}

TEST(SimulatorTest, DualPipeVIsDualPipeOnHalfTheDevices) {
  for (OpCosts c : {Costs(1, 1, 1), Costs(2, 2, 1), Costs(3, 3, 2)}) {
    for (int pp : {2, 4, 8}) {  // devices; 2·pp stages, so the README's PP is 2·pp
      for (int m : {2 * pp, 2 * pp + 1, 5 * pp}) {
        SimResult r = Sim(ScheduleKind::kDualPipeV, pp, m, c);
        const double readme = (2 * pp / 2 - 1) * ((c.f + c.b + c.w) + (c.b + c.w) - 3 * c.w);
        EXPECT_EQ(FormulaBubble(ScheduleKind::kDualPipeV, pp, c), readme);
        ExpectBubbleOnEveryRank(r, readme, "dualpipev pp " + std::to_string(pp) + " m " + std::to_string(m));
        EXPECT_EQ(r.max_peak_in_flight(), 2 * pp + 1);  // README's PP+1 with PP = 2·pp half-size chunks
        // The same bubble as DualPipe on twice the devices.
        if (m % 2 == 0 && m >= 4 * pp) {
          EXPECT_EQ(Sim(ScheduleKind::kDualPipe, 2 * pp, m, c).max_bubble(), r.max_bubble());
        }
      }
    }
  }
}

TEST(SimulatorTest, DualPipeBubbleDoesNotGrowWithMicroBatches) {
  const OpCosts c = Costs(3, 2, 1);
  for (ScheduleKind kind : {ScheduleKind::kDualPipe, ScheduleKind::kDualPipeV}) {
    for (int pp : {4, 8, 16}) {
      const double first = Sim(kind, pp, 2 * pp, c).max_bubble();
      double last_fraction = 1;
      for (int m = 2 * pp + 2; m <= 12 * pp; m += 2 * pp) {
        SimResult r = Sim(kind, pp, m, c);
        EXPECT_EQ(r.max_bubble(), first) << ToString(kind) << " pp " << pp << " m " << m;
        EXPECT_EQ(r.min_bubble(), first);
        EXPECT_LT(r.bubble_fraction(), last_fraction);
        last_fraction = r.bubble_fraction();
      }
    }
  }
}

TEST(SimulatorTest, OverlapGainShortensTheStep) {
  // F&B below F+B: every pair is cheaper, so every rank computes less and the step is strictly shorter.
  for (int pp : {4, 8}) {
    const SimResult plain = Sim(ScheduleKind::kDualPipe, pp, 6 * pp, Costs(2, 2, 1));
    const SimResult overlapped = Sim(ScheduleKind::kDualPipe, pp, 6 * pp, Costs(2, 2, 1, 4));
    EXPECT_LT(overlapped.makespan, plain.makespan);
    for (size_t i = 0; i < plain.ranks.size(); ++i) EXPECT_LT(overlapped.ranks[i].busy, plain.ranks[i].busy);
  }
}

TEST(SimulatorTest, PropertiesOverManySettings) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> cost(1, 6);
  int runs = 0;
  for (ScheduleKind kind : {ScheduleKind::k1F1B, ScheduleKind::kZB1P, ScheduleKind::kDualPipe, ScheduleKind::kDualPipeV}) {
    for (int pp = 1; pp <= 12; ++pp) {
      for (int m = 1; m <= 5 * pp; m += 1 + pp / 3) {
        if (!CheckScheduleSettings(kind, pp, m).ok()) continue;
        OpCosts c = Costs(cost(rng), cost(rng), cost(rng) - 1);
        c.comm_latency = cost(rng) - 1;
        SimResult r = Sim(kind, pp, m, c);
        ASSERT_EQ(static_cast<int>(r.ranks.size()), pp);
        const int chunks = kind == ScheduleKind::kDualPipeV ? 2 : 1;  // DualPipe splits m over its two chunks
        double max_finish = 0;
        for (const RankSimResult& rr : r.ranks) {
          EXPECT_EQ(rr.busy, chunks * m * (c.f + c.b + c.w));  // every rank does the same work
          EXPECT_GE(rr.bubble, 0);
          EXPECT_EQ(rr.bubble, r.makespan - rr.busy);
          EXPECT_GE(rr.peak_in_flight, 1);
          EXPECT_LE(rr.peak_in_flight, chunks * m);
          max_finish = std::max(max_finish, rr.finish);
        }
        EXPECT_EQ(max_finish, r.makespan);
        // 1F1B/ZB1P: the last rank cannot start before the first micro-batch went through every earlier stage.
        const bool one_direction = kind == ScheduleKind::k1F1B || kind == ScheduleKind::kZB1P;
        EXPECT_GE(r.makespan, m * (c.f + c.b + c.w) + (one_direction ? (pp - 1) * (c.f + c.comm_latency) : 0));
        // Latency only adds waiting.
        OpCosts no_latency = c;
        no_latency.comm_latency = 0;
        EXPECT_LE(Sim(kind, pp, m, no_latency).makespan, r.makespan);
        ++runs;
      }
    }
  }
  EXPECT_GT(runs, 150);
}

TEST(SimulatorTest, CommLatencyDelaysThePipelineFill) {
  // 1F1B with a latency L per message: the first micro-batch reaches the last rank (PP-1)·L later and its
  // gradient comes back (PP-1)·L later, so the bubble grows by at least 2(PP-1)·L.
  OpCosts c = Costs(2, 2, 1);
  c.comm_latency = 1;
  for (int pp : {2, 4, 8}) {
    const SimResult r = Sim(ScheduleKind::k1F1B, pp, 4 * pp, c);
    EXPECT_GE(r.min_bubble(), (pp - 1) * (c.f + c.b + c.w + 2 * c.comm_latency));
  }
  // One rank: nothing to send, nothing to wait for.
  const SimResult one = Sim(ScheduleKind::k1F1B, 1, 5, c);
  EXPECT_EQ(one.max_bubble(), 0);
}

TEST(SimulatorTest, PerStageCostsMakeTheSlowestStageTheBottleneck) {
  Result<Schedule> s = GenerateSchedule(ScheduleKind::k1F1B, 4, 32);
  ASSERT_TRUE(s.ok());
  std::vector<OpCosts> stages(4, Costs(1, 1, 1));
  stages[3] = Costs(2, 2, 2);  // a heavy head stage
  Result<SimResult> r = Simulate(*s, stages);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->ranks[3].busy, 32 * 6);
  EXPECT_EQ(r->ranks[0].busy, 32 * 3);
  EXPECT_GE(r->makespan, 32 * 6 + 3);        // the heavy rank's work plus the fill in front of it
  EXPECT_LT(r->ranks[3].bubble, r->ranks[0].bubble);
  EXPECT_GT(r->bubble_fraction(), Sim(ScheduleKind::k1F1B, 4, 32, Costs(1, 1, 1)).bubble_fraction());

  Result<SimResult> wrong = Simulate(*s, std::vector<OpCosts>(3));
  ASSERT_FALSE(wrong.ok());
  EXPECT_THAT(wrong.status().message(), HasSubstr("3 stage costs for 4 stages"));
}

TEST(SimulatorTest, RefusesAnInvalidSchedule) {
  Result<Schedule> s = GenerateSchedule(ScheduleKind::kZB1P, 3, 6);
  ASSERT_TRUE(s.ok());
  s->ranks[2].ops.pop_back();
  Result<SimResult> r = Simulate(*s, OpCosts{});
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("has no W"));
}

}  // namespace
}  // namespace shoal::schedule
