// GenerateSchedule and CheckSchedule: the op order of each schedule pinned on small pipelines, the layout
// agreeing with the job spec's, and the checker refusing broken hand-edited schedules with a useful message.
#include "schedule/schedule.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "spec/job_spec.h"

namespace shoal::schedule {
namespace {

using ::testing::HasSubstr;

Schedule Gen(ScheduleKind kind, int pp, int m) {
  Result<Schedule> s = GenerateSchedule(kind, pp, m);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? *s : Schedule{};
}

// The compute ops of one rank, space separated ("F(s0,mb0) BW(s0,mb0) ...").
std::string ComputeOps(const Schedule& s, int rank) {
  std::string out;
  for (const Op& op : s.ranks[rank].ops) {
    if (op.is_compute()) out += (out.empty() ? "" : " ") + ToString(op);
  }
  return out;
}

std::string AllOps(const Schedule& s, int rank) {
  std::string out;
  for (const Op& op : s.ranks[rank].ops) out += (out.empty() ? "" : " ") + ToString(op);
  return out;
}

TEST(ScheduleKindTest, NamesRoundTrip) {
  for (ScheduleKind k : {ScheduleKind::k1F1B, ScheduleKind::kZB1P, ScheduleKind::kDualPipe, ScheduleKind::kDualPipeV}) {
    Result<ScheduleKind> back = ParseScheduleKind(ToString(k));
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(*back, k);
  }
  Result<ScheduleKind> bad = ParseScheduleKind("gpipe");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("1f1b, zb1p, dualpipe or dualpipev"));
}

TEST(ScheduleSettingsTest, ImpossibleSettingsNameTheRule) {
  auto msg = [](ScheduleKind k, int pp, int m) {
    Result<Schedule> s = GenerateSchedule(k, pp, m);
    EXPECT_FALSE(s.ok()) << ToString(k) << " pp " << pp << " m " << m;
    return s.ok() ? std::string() : s.status().message();
  };
  EXPECT_THAT(msg(ScheduleKind::kDualPipe, 3, 12), HasSubstr("even number of pipeline ranks (got 3)"));
  EXPECT_THAT(msg(ScheduleKind::kDualPipe, 4, 9), HasSubstr("even number of micro-batches (got 9)"));
  EXPECT_THAT(msg(ScheduleKind::kDualPipe, 4, 6), HasSubstr("at least 2·PP = 8 micro-batches per step (got 6)"));
  EXPECT_THAT(msg(ScheduleKind::kDualPipeV, 4, 7), HasSubstr("dualpipev needs at least 2·PP = 8 micro-batches"));
  EXPECT_THAT(msg(ScheduleKind::k1F1B, 0, 4), HasSubstr("at least 1 rank"));
  EXPECT_THAT(msg(ScheduleKind::kZB1P, 4, 0), HasSubstr("at least 1 micro-batch"));
  // What is allowed: 1F1B/ZB1P with fewer micro-batches than ranks, DualPipeV with an odd count.
  EXPECT_TRUE(GenerateSchedule(ScheduleKind::k1F1B, 8, 3).ok());
  EXPECT_TRUE(GenerateSchedule(ScheduleKind::kZB1P, 8, 1).ok());
  EXPECT_TRUE(GenerateSchedule(ScheduleKind::kDualPipeV, 3, 7).ok());
  EXPECT_TRUE(GenerateSchedule(ScheduleKind::kDualPipe, 2, 4).ok());
}

TEST(ScheduleLayoutTest, ChunksMatchTheJobSpecStages) {
  const std::pair<ScheduleKind, PipelineSchedule> kinds[] = {
      {ScheduleKind::k1F1B, PipelineSchedule::k1F1B},
      {ScheduleKind::kZB1P, PipelineSchedule::kZB1P},
      {ScheduleKind::kDualPipe, PipelineSchedule::kDualPipe},
      {ScheduleKind::kDualPipeV, PipelineSchedule::kDualPipeV}};
  for (auto [kind, spec_kind] : kinds) {
    for (int pp : {2, 4, 16}) {
      EXPECT_EQ(NumStages(kind, pp), NumPipelineStages(spec_kind, pp));
      for (int r = 0; r < pp; ++r) {
        std::vector<int> stages;
        for (const ChunkInfo& c : ChunksOfRank(kind, pp, 4 * pp, r)) stages.push_back(c.stage);
        EXPECT_EQ(stages, StagesOfPipelineRank(spec_kind, pp, r)) << ToString(kind) << " pp " << pp << " rank " << r;
      }
    }
  }
}

TEST(ScheduleLayoutTest, DualPipeSplitsMicroBatchesByDirection) {
  const int pp = 4, m = 8;
  EXPECT_EQ(RankOfStage(ScheduleKind::kDualPipe, pp, m, 0, 0), 0);
  EXPECT_EQ(RankOfStage(ScheduleKind::kDualPipe, pp, m, 0, 4), 3);  // the up direction starts at the last rank
  EXPECT_EQ(RankOfStage(ScheduleKind::kDualPipe, pp, m, 3, 7), 0);
  std::vector<ChunkInfo> r1 = ChunksOfRank(ScheduleKind::kDualPipe, pp, m, 1);
  ASSERT_EQ(r1.size(), 2u);
  EXPECT_EQ(r1[0], (ChunkInfo{1, Direction::kDown, 0, 4}));
  EXPECT_EQ(r1[1], (ChunkInfo{2, Direction::kUp, 4, 8}));
  // DualPipeV: down on chunk 0, back up on chunk 1; both see every micro-batch.
  EXPECT_EQ(RankOfStage(ScheduleKind::kDualPipeV, pp, m, 3, 5), 3);
  EXPECT_EQ(RankOfStage(ScheduleKind::kDualPipeV, pp, m, 4, 5), 3);
  EXPECT_EQ(RankOfStage(ScheduleKind::kDualPipeV, pp, m, 7, 5), 0);
}

TEST(GenerateScheduleTest, OneFOneBWithItsMessages) {
  Schedule s = Gen(ScheduleKind::k1F1B, 2, 3);
  EXPECT_EQ(s.num_stages, 2);
  EXPECT_EQ(AllOps(s, 0),
            "F(s0,mb0) SEND_ACT(s0,mb0)->r1 F(s0,mb1) SEND_ACT(s0,mb1)->r1 RECV_GRAD(s0,mb0)<-r1 BW(s0,mb0) "
            "F(s0,mb2) SEND_ACT(s0,mb2)->r1 RECV_GRAD(s0,mb1)<-r1 BW(s0,mb1) RECV_GRAD(s0,mb2)<-r1 BW(s0,mb2)");
  EXPECT_EQ(AllOps(s, 1),
            "RECV_ACT(s1,mb0)<-r0 F(s1,mb0) BW(s1,mb0) SEND_GRAD(s1,mb0)->r0 RECV_ACT(s1,mb1)<-r0 F(s1,mb1) "
            "BW(s1,mb1) SEND_GRAD(s1,mb1)->r0 RECV_ACT(s1,mb2)<-r0 F(s1,mb2) BW(s1,mb2) SEND_GRAD(s1,mb2)->r0");
  const Op& send = s.ranks[0].ops[1];
  EXPECT_EQ(send.type, OpType::kSendActivation);
  EXPECT_EQ(send.peer, 1);
  EXPECT_EQ(send.direction, Direction::kDown);
  EXPECT_TRUE(CheckSchedule(s).ok()) << CheckSchedule(s);
}

TEST(GenerateScheduleTest, OneFOneBWarmsUpPpMinusRankMinusOne) {
  Schedule s = Gen(ScheduleKind::k1F1B, 4, 6);
  EXPECT_EQ(ComputeOps(s, 0),
            "F(s0,mb0) F(s0,mb1) F(s0,mb2) F(s0,mb3) BW(s0,mb0) F(s0,mb4) BW(s0,mb1) F(s0,mb5) BW(s0,mb2) "
            "BW(s0,mb3) BW(s0,mb4) BW(s0,mb5)");
  EXPECT_EQ(ComputeOps(s, 3),
            "F(s3,mb0) BW(s3,mb0) F(s3,mb1) BW(s3,mb1) F(s3,mb2) BW(s3,mb2) F(s3,mb3) BW(s3,mb3) F(s3,mb4) "
            "BW(s3,mb4) F(s3,mb5) BW(s3,mb5)");
}

TEST(GenerateScheduleTest, ZeroBubbleDefersRankManyWeightGradients) {
  Schedule s = Gen(ScheduleKind::kZB1P, 4, 6);
  EXPECT_EQ(ComputeOps(s, 0),
            "F(s0,mb0) F(s0,mb1) F(s0,mb2) F(s0,mb3) B(s0,mb0) W(s0,mb0) F(s0,mb4) B(s0,mb1) W(s0,mb1) F(s0,mb5) "
            "B(s0,mb2) W(s0,mb2) B(s0,mb3) W(s0,mb3) B(s0,mb4) W(s0,mb4) B(s0,mb5) W(s0,mb5)");
  EXPECT_EQ(ComputeOps(s, 1),
            "F(s1,mb0) F(s1,mb1) F(s1,mb2) B(s1,mb0) F(s1,mb3) B(s1,mb1) W(s1,mb0) F(s1,mb4) B(s1,mb2) W(s1,mb1) "
            "F(s1,mb5) B(s1,mb3) W(s1,mb2) B(s1,mb4) W(s1,mb3) B(s1,mb5) W(s1,mb4) W(s1,mb5)");
  EXPECT_EQ(ComputeOps(s, 3),
            "F(s3,mb0) B(s3,mb0) F(s3,mb1) B(s3,mb1) F(s3,mb2) B(s3,mb2) F(s3,mb3) B(s3,mb3) W(s3,mb0) F(s3,mb4) "
            "B(s3,mb4) W(s3,mb1) F(s3,mb5) B(s3,mb5) W(s3,mb2) W(s3,mb3) W(s3,mb4) W(s3,mb5)");
  // The B's gradient leaves before the W runs.
  const std::vector<Op>& ops = s.ranks[1].ops;
  auto b0 = std::find_if(ops.begin(), ops.end(), [](const Op& op) { return op.type == OpType::kBackwardInput; });
  ASSERT_NE(b0, ops.end());
  EXPECT_EQ((b0 + 1)->type, OpType::kSendGrad);
}

// deepseek-ai/DualPipe's eight steps for 4 ranks and 8 micro-batches (4 per direction). Rank 0 holds stage 0
// (down, micro-batches 0-3) and stage 3 (up, micro-batches 4-7).
TEST(GenerateScheduleTest, DualPipeFollowsTheEightSteps) {
  Schedule s = Gen(ScheduleKind::kDualPipe, 4, 8);
  EXPECT_EQ(ComputeOps(s, 0),
            // 1: nF0          2: F0 F1             3: B1 W1 F1 (zero bubble)
            "F(s0,mb0) F(s0,mb1) F(s0,mb2) F(s3,mb4) B(s3,mb4) W(s3,mb4) F(s3,mb5) "
            // 4: F0&B1, F1&B0
            "F(s0,mb3)&BW(s3,mb5) F(s3,mb6)&BW(s0,mb0) "
            // 5: B1, F1&B0     6: B1 B0 (split from the middle)     7: W B0     8: W
            "BW(s3,mb6) F(s3,mb7)&BW(s0,mb1) BW(s3,mb7) B(s0,mb2) W(s0,mb2) B(s0,mb3) W(s0,mb3)");
  // The middle rank: no step 1/3/5/7, its first forward and backward of step 4 not overlapped.
  EXPECT_EQ(ComputeOps(s, 1),
            "F(s1,mb0) F(s2,mb4) F(s1,mb1) F(s2,mb5) F(s1,mb2) BW(s2,mb4) F(s2,mb6)&BW(s1,mb0) "
            "F(s1,mb3)&BW(s2,mb5) F(s2,mb7)&BW(s1,mb1) BW(s2,mb6) BW(s1,mb2) B(s2,mb7) B(s1,mb3) W(s2,mb7) "
            "W(s1,mb3)");
  // The second half mirrors the first with the directions swapped.
  EXPECT_EQ(ComputeOps(s, 3),
            "F(s0,mb4) F(s0,mb5) F(s0,mb6) F(s3,mb0) B(s3,mb0) W(s3,mb0) F(s3,mb1) F(s0,mb7)&BW(s3,mb1) "
            "F(s3,mb2)&BW(s0,mb4) BW(s3,mb2) F(s3,mb3)&BW(s0,mb5) BW(s3,mb3) B(s0,mb6) W(s0,mb6) B(s0,mb7) "
            "W(s0,mb7)");
  // An F&B pair carries both halves for the executor.
  const auto& ops = s.ranks[0].ops;
  auto fb = std::find_if(ops.begin(), ops.end(), [](const Op& op) { return op.type == OpType::kForwardBackward; });
  ASSERT_NE(fb, ops.end());
  EXPECT_EQ(fb->chunk, 0);
  EXPECT_EQ(fb->micro_batch, 3);
  EXPECT_EQ(fb->bwd_chunk, 1);
  EXPECT_EQ(fb->bwd_stage, 3);
  EXPECT_EQ(fb->bwd_micro_batch, 5);
  EXPECT_TRUE(CheckSchedule(s).ok()) << CheckSchedule(s);
}

TEST(GenerateScheduleTest, DualPipeVTurnsOnTheLastRankWithoutMessages) {
  Schedule s = Gen(ScheduleKind::kDualPipeV, 2, 4);
  EXPECT_EQ(s.num_stages, 4);
  // Rank 1 holds stages 1 and 2: the edge between them stays local.
  EXPECT_EQ(AllOps(s, 1),
            "RECV_ACT(s1,mb0)<-r0 F(s1,mb0) F(s2,mb0) SEND_ACT(s2,mb0)->r0 RECV_ACT(s1,mb1)<-r0 F(s1,mb1) "
            "F(s2,mb1) SEND_ACT(s2,mb1)->r0 RECV_ACT(s1,mb2)<-r0 F(s1,mb2) RECV_GRAD(s2,mb0)<-r0 BW(s2,mb0) "
            "F(s2,mb2)&BW(s1,mb0) SEND_ACT(s2,mb2)->r0 SEND_GRAD(s1,mb0)->r0 "
            "RECV_ACT(s1,mb3)<-r0 RECV_GRAD(s2,mb1)<-r0 F(s1,mb3)&BW(s2,mb1) F(s2,mb3)&BW(s1,mb1) "
            "SEND_ACT(s2,mb3)->r0 SEND_GRAD(s1,mb1)->r0 RECV_GRAD(s2,mb2)<-r0 BW(s2,mb2) BW(s1,mb2) "
            "SEND_GRAD(s1,mb2)->r0 RECV_GRAD(s2,mb3)<-r0 B(s2,mb3) B(s1,mb3) SEND_GRAD(s1,mb3)->r0 W(s2,mb3) "
            "W(s1,mb3)");
  EXPECT_TRUE(CheckSchedule(s).ok()) << CheckSchedule(s);
}

TEST(GenerateScheduleTest, EveryGeneratedScheduleChecks) {
  int checked = 0;
  for (ScheduleKind kind : {ScheduleKind::k1F1B, ScheduleKind::kZB1P, ScheduleKind::kDualPipe, ScheduleKind::kDualPipeV}) {
    for (int pp = 1; pp <= 16; ++pp) {
      for (int m = 1; m <= 4 * pp + 3; ++m) {
        if (!CheckScheduleSettings(kind, pp, m).ok()) continue;
        Result<Schedule> s = GenerateSchedule(kind, pp, m);
        ASSERT_TRUE(s.ok()) << s.status();
        Status st = CheckSchedule(*s);
        ASSERT_TRUE(st.ok()) << ToString(kind) << " pp " << pp << " m " << m << ": " << st;
        // Exactly one F, B and W per (chunk, micro-batch): 3 compute "halves" per pair, counted directly.
        int64_t halves = 0;
        for (const RankSchedule& r : s->ranks) {
          for (const Op& op : r.ops) {
            switch (op.type) {
              case OpType::kForward: case OpType::kBackwardInput: case OpType::kBackwardWeight: halves += 1; break;
              case OpType::kBackward: halves += 2; break;
              case OpType::kForwardBackward: halves += 3; break;
              default: break;
            }
          }
        }
        EXPECT_EQ(halves, 3LL * s->num_stages * m) << ToString(kind) << " pp " << pp << " m " << m;
        ++checked;
      }
    }
  }
  EXPECT_GT(checked, 700);
}

// ---- CheckSchedule on broken schedules.

std::vector<Op>::iterator Find(std::vector<Op>& ops, OpType type, int mb) {
  return std::find_if(ops.begin(), ops.end(), [&](const Op& op) { return op.type == type && op.micro_batch == mb; });
}

TEST(CheckScheduleTest, MissingReceiveIsReported) {
  Schedule s = Gen(ScheduleKind::k1F1B, 2, 3);
  auto& ops = s.ranks[1].ops;
  ops.erase(Find(ops, OpType::kRecvActivation, 1));
  Status st = CheckSchedule(s);
  ASSERT_FALSE(st.ok());
  EXPECT_THAT(st.message(), HasSubstr("rank 1, op 4 F(s1,mb1): its input activation has not been received"));
}

TEST(CheckScheduleTest, MissingGradientReceiveAndDuplicateSend) {
  Schedule s = Gen(ScheduleKind::k1F1B, 2, 3);
  auto& ops0 = s.ranks[0].ops;
  ops0.erase(Find(ops0, OpType::kRecvGrad, 2));
  Status st = CheckSchedule(s);
  ASSERT_FALSE(st.ok());
  EXPECT_THAT(st.message(), HasSubstr("BW(s0,mb2): its output gradient has not been received"));

  Schedule t = Gen(ScheduleKind::k1F1B, 2, 3);
  t.ranks[1].ops.push_back(*Find(t.ranks[1].ops, OpType::kSendGrad, 2));
  st = CheckSchedule(t);
  ASSERT_FALSE(st.ok());
  EXPECT_THAT(st.message(), HasSubstr("rank 1, op 12 SEND_GRAD(s1,mb2)->r0: this tensor was already sent (op 11)"));
}

TEST(CheckScheduleTest, MissingBackwardIsReported) {
  Schedule s = Gen(ScheduleKind::kZB1P, 3, 4);
  auto drop = [](std::vector<Op>& ops, int mb, std::initializer_list<OpType> types) {
    for (OpType t : types) ops.erase(Find(ops, t, mb));
  };
  drop(s.ranks[1].ops, 3, {OpType::kRecvGrad, OpType::kBackwardInput, OpType::kBackwardWeight, OpType::kSendGrad});
  drop(s.ranks[0].ops, 3, {OpType::kRecvGrad, OpType::kBackwardInput, OpType::kBackwardWeight});
  Status st = CheckSchedule(s);
  ASSERT_FALSE(st.ok());
  EXPECT_THAT(st.message(), HasSubstr("rank 0 chunk 0 (stage 0): micro-batch 3 has no B"));
}

TEST(CheckScheduleTest, OrderAndCountViolations) {
  {  // W before its B.
    Schedule s = Gen(ScheduleKind::kZB1P, 2, 2);
    auto& ops = s.ranks[1].ops;
    auto w = Find(ops, OpType::kBackwardWeight, 0);
    Op wop = *w;
    ops.erase(w);
    ops.insert(Find(ops, OpType::kBackwardInput, 0), wop);
    Status st = CheckSchedule(s);
    ASSERT_FALSE(st.ok());
    EXPECT_THAT(st.message(), HasSubstr("weight gradient before the backward"));
  }
  {  // A second W.
    Schedule s = Gen(ScheduleKind::kZB1P, 2, 2);
    s.ranks[0].ops.push_back(*Find(s.ranks[0].ops, OpType::kBackwardWeight, 1));
    Status st = CheckSchedule(s);
    ASSERT_FALSE(st.ok());
    EXPECT_THAT(st.message(), HasSubstr("a second weight gradient"));
  }
  {  // A missing W.
    Schedule s = Gen(ScheduleKind::kZB1P, 2, 2);
    s.ranks[0].ops.erase(Find(s.ranks[0].ops, OpType::kBackwardWeight, 1));
    Status st = CheckSchedule(s);
    ASSERT_FALSE(st.ok());
    EXPECT_THAT(st.message(), HasSubstr("rank 0 chunk 0 (stage 0): micro-batch 1 has no W"));
  }
  {  // A micro-batch that does not pass through this chunk (DualPipe: mb 5 runs up, stage 0 of rank 0 runs down).
    Schedule s = Gen(ScheduleKind::kDualPipe, 4, 8);
    s.ranks[0].ops[0].micro_batch = 5;
    Status st = CheckSchedule(s);
    ASSERT_FALSE(st.ok());
    EXPECT_THAT(st.message(), HasSubstr("micro-batch 5 does not pass through chunk 0"));
  }
  {  // Chunk and stage disagree.
    Schedule s = Gen(ScheduleKind::kDualPipe, 4, 8);
    s.ranks[0].ops[0].stage = 3;
    Status st = CheckSchedule(s);
    ASSERT_FALSE(st.ok());
    EXPECT_THAT(st.message(), HasSubstr("chunk 0 holds stage 0, not 3"));
  }
}

TEST(CheckScheduleTest, WrongPeerAndLocalEdge) {
  Schedule s = Gen(ScheduleKind::k1F1B, 3, 3);
  Find(s.ranks[0].ops, OpType::kSendActivation, 0)->peer = 2;
  Status st = CheckSchedule(s);
  ASSERT_FALSE(st.ok());
  EXPECT_THAT(st.message(), HasSubstr("the other stage of this edge runs on rank 1"));

  Schedule v = Gen(ScheduleKind::kDualPipeV, 2, 4);
  // A message across the V's turn, which stays on rank 1.
  auto& ops = v.ranks[1].ops;
  auto f2 = std::find_if(ops.begin(), ops.end(), [](const Op& op) { return op.type == OpType::kForward && op.stage == 2; });
  ASSERT_NE(f2, ops.end());
  Op recv = *f2;
  recv.type = OpType::kRecvActivation;
  recv.peer = 1;
  ops.insert(f2, recv);
  st = CheckSchedule(v);
  ASSERT_FALSE(st.ok());
  EXPECT_THAT(st.message(), HasSubstr("both stages of this edge are on this rank"));
}

TEST(CheckScheduleTest, DeadlockIsReportedWithWhoWaitsForWhom) {
  // Rank 1 waits for micro-batch 1's activation before running micro-batch 0's backward, which rank 0 needs
  // before it will send micro-batch 1 (its warm-up is cut to zero by hand): a cycle.
  Schedule s;
  s.kind = ScheduleKind::k1F1B;
  s.pp = 2;
  s.num_micro_batches = 2;
  s.num_stages = 2;
  s.ranks.resize(2);
  for (int r = 0; r < 2; ++r) s.ranks[r].chunks = ChunksOfRank(s.kind, 2, 2, r);
  auto op = [](OpType t, int stage, int mb, int peer = -1) {
    Op o;
    o.type = t;
    o.stage = stage;
    o.micro_batch = mb;
    o.peer = peer;
    return o;
  };
  s.ranks[0].ops = {op(OpType::kForward, 0, 0), op(OpType::kSendActivation, 0, 0, 1),
                    op(OpType::kRecvGrad, 0, 0, 1), op(OpType::kBackward, 0, 0),
                    op(OpType::kForward, 0, 1), op(OpType::kSendActivation, 0, 1, 1),
                    op(OpType::kRecvGrad, 0, 1, 1), op(OpType::kBackward, 0, 1)};
  s.ranks[1].ops = {op(OpType::kRecvActivation, 1, 0, 0), op(OpType::kForward, 1, 0),
                    op(OpType::kRecvActivation, 1, 1, 0), op(OpType::kForward, 1, 1),
                    op(OpType::kBackward, 1, 0), op(OpType::kSendGrad, 1, 0, 0),
                    op(OpType::kBackward, 1, 1), op(OpType::kSendGrad, 1, 1, 0)};
  Status st = CheckSchedule(s);
  ASSERT_FALSE(st.ok());
  EXPECT_THAT(st.message(), HasSubstr("deadlock"));
  EXPECT_THAT(st.message(), HasSubstr("rank 0 waits at op 2 RECV_GRAD(s0,mb0)<-r1 (rank 1 is itself waiting at op 2)"));
  EXPECT_THAT(st.message(), HasSubstr("rank 1 waits at op 2 RECV_ACT(s1,mb1)<-r0 (rank 0 is itself waiting at op 2)"));

  // The same lists with rank 0 warming up by one forward run to the end.
  std::swap(s.ranks[0].ops[2], s.ranks[0].ops[4]);
  std::swap(s.ranks[0].ops[3], s.ranks[0].ops[5]);
  EXPECT_TRUE(CheckSchedule(s).ok()) << CheckSchedule(s);
}

TEST(CheckScheduleTest, WrongLayoutIsRefused) {
  Schedule s = Gen(ScheduleKind::kDualPipe, 4, 8);
  std::swap(s.ranks[0].chunks[0], s.ranks[0].chunks[1]);
  Status st = CheckSchedule(s);
  ASSERT_FALSE(st.ok());
  EXPECT_THAT(st.message(), HasSubstr("rank 0 does not hold the chunks of the layout"));
  Schedule t = Gen(ScheduleKind::k1F1B, 4, 8);
  t.ranks.pop_back();
  EXPECT_FALSE(CheckSchedule(t).ok());
}

}  // namespace
}  // namespace shoal::schedule
