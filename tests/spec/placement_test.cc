// Placement with hand-built clusters: coverage, distinct workers, EP groups kept on a host, dualpipe stage pairs,
// expert ownership, too few workers, determinism, dead/busy/unschedulable workers, device kinds.
#include "coordinator/placement.h"

#include <algorithm>
#include <random>
#include <set>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace shoal {
namespace {

using ::testing::HasSubstr;

// The demo model on a pipeline × data × expert layout, with a batch every schedule accepts.
JobSpec MakeSpec(int pipeline, int data, int expert, PipelineSchedule schedule = PipelineSchedule::k1F1B,
                 std::string_view preset = "demo") {
  JobSpec s;
  s.name = "job-under-test";
  s.model.preset = std::string(preset);
  s.model.config = *ModelPreset(preset);
  s.parallel = ParallelSpec{.pipeline = pipeline, .data = data, .expert = expert, .schedule = schedule};
  s.train.micro_batch = 1;
  s.train.global_batch = static_cast<int64_t>(data) * 2 * pipeline;  // 2·PP micro-batches, even
  if (preset != "demo") s.resources.device = DeviceKind::kCuda;
  PhaseSpec ph;
  ph.name = "pretrain";
  ph.data.builtin = "arith";
  ph.steps = 10;
  s.phases.push_back(ph);
  Status st = ValidateJobSpec(s);
  EXPECT_TRUE(st.ok()) << st;
  return s;
}

// hosts: {host name, worker count}; workers are "<host>-w<i>" with id "id-<host>-<i>".
ClusterView MakeCluster(const std::vector<std::pair<std::string, int>>& hosts, DeviceKind device = DeviceKind::kCpu) {
  ClusterView c;
  for (const auto& [host, n] : hosts) {
    for (int i = 0; i < n; ++i) {
      WorkerInfo w;
      w.worker_id = "id-" + host + "-" + std::to_string(i);
      w.name = host + "-w" + std::to_string(i);
      w.host = host;
      w.device = device;
      w.cores = 2;
      c.workers.push_back(w);
    }
  }
  return c;
}

Placement MustPlace(const ClusterView& c, const JobSpec& s) {
  Result<Placement> p = Place(c, s);
  EXPECT_TRUE(p.ok()) << p.status();
  return p.ok() ? *p : Placement();
}

// The invariants every placement must satisfy.
void ExpectConsistent(const Placement& p, const JobSpec& s) {
  const ParallelSpec& par = s.parallel;
  ASSERT_EQ(static_cast<int>(p.ranks.size()), par.world_size());
  std::set<std::pair<int, int>> slots;
  std::set<std::string> workers;
  for (const RankPlacement& r : p.ranks) {
    EXPECT_TRUE(slots.emplace(r.pipeline_rank, r.data_rank).second) << "slot placed twice";
    EXPECT_TRUE(workers.insert(r.worker_id).second) << r.worker_id << " used twice";
    EXPECT_EQ(&p.at(r.pipeline_rank, r.data_rank), &r);
    EXPECT_EQ(r.ep_group, r.data_rank / par.expert);
    EXPECT_EQ(r.ep_rank, r.data_rank % par.expert);
    EXPECT_EQ(r.stages, StagesOfPipelineRank(par.schedule, par.pipeline, r.pipeline_rank));
  }
  EXPECT_EQ(static_cast<int>(slots.size()), par.world_size());  // every (stage rank, dp) exactly once
  EXPECT_EQ(static_cast<int>(p.stages.size()), par.num_stages());
  const int64_t n_r = s.model.config.n_routed_experts;
  ASSERT_EQ(static_cast<int>(p.ep_groups.size()), par.pipeline * (par.data / par.expert));
  for (const EpGroupPlacement& g : p.ep_groups) {
    ASSERT_EQ(static_cast<int>(g.members.size()), par.expert);
    ASSERT_EQ(static_cast<int64_t>(g.expert_owner.size()), n_r);
    std::vector<int> owned(n_r, 0);
    for (int k = 0; k < par.expert; ++k) {
      const RankPlacement& m = p.ranks[g.members[k]];
      EXPECT_EQ(m.pipeline_rank, g.pipeline_rank);
      EXPECT_EQ(m.ep_group, g.group_idx);
      EXPECT_EQ(m.ep_rank, k);
      for (int64_t x = m.expert_begin; x < m.expert_end; ++x) ++owned[x];
    }
    for (int64_t x = 0; x < n_r; ++x) {
      EXPECT_EQ(owned[x], 1) << "expert " << x << " owned " << owned[x] << " times";
      const RankPlacement& owner = p.ranks[g.expert_owner[x]];
      EXPECT_EQ(owner.ep_rank, x / (n_r / par.expert)) << "expert " << x;  // contiguous ranges
      EXPECT_GE(x, owner.expert_begin);
      EXPECT_LT(x, owner.expert_end);
    }
  }
}

TEST(PlacementTest, SingleWorkerDemo) {
  JobSpec s = MakeSpec(1, 1, 1);
  Placement p = MustPlace(MakeCluster({{"h", 1}}), s);
  ExpectConsistent(p, s);
  EXPECT_EQ(p.ranks[0].worker_name, "h-w0");
  EXPECT_EQ(p.ranks[0].expert_begin, 0);
  EXPECT_EQ(p.ranks[0].expert_end, 16);
  ASSERT_EQ(p.stages.size(), 1u);
  EXPECT_EQ(p.stages[0].layer_end, 5);
  EXPECT_TRUE(p.notes.empty());
}

TEST(PlacementTest, CoversEverySlotWithDistinctWorkers) {
  JobSpec s = MakeSpec(2, 4, 2);
  Placement p = MustPlace(MakeCluster({{"a", 4}, {"b", 4}, {"c", 3}}), s);
  ExpectConsistent(p, s);
  EXPECT_EQ(p.experts_per_rank, 8);
  EXPECT_EQ(p.ExpertOwner(1, 3, 9).data_rank, 3);  // data rank 3 is EP rank 1 of group 1: experts 8-15
  EXPECT_EQ(p.ExpertOwner(1, 3, 2).data_rank, 2);
}

TEST(PlacementTest, EpGroupsStayOnOneHostWhenAHostHasRoom) {
  JobSpec s = MakeSpec(2, 4, 4);  // 2 EP groups of 4
  // Four hosts of 4, listed interleaved so that input order would split the groups.
  ClusterView c = MakeCluster({{"a", 4}, {"b", 4}, {"c", 4}, {"d", 4}});
  std::mt19937 rng(7);
  std::shuffle(c.workers.begin(), c.workers.end(), rng);
  Placement p = MustPlace(c, s);
  ExpectConsistent(p, s);
  for (const EpGroupPlacement& g : p.ep_groups) EXPECT_TRUE(g.single_host()) << g.hosts.size();
  EXPECT_TRUE(p.notes.empty());

  // A big host fits the group and is preferred over a scatter of small ones.
  JobSpec one = MakeSpec(1, 4, 4);
  Placement q = MustPlace(MakeCluster({{"small-1", 2}, {"big", 8}, {"small-2", 2}}), one);
  ExpectConsistent(q, one);
  ASSERT_EQ(q.ep_groups.size(), 1u);
  EXPECT_EQ(q.ep_groups[0].hosts, std::vector<std::string>({"big"}));

  // Odd host sizes: filling workers in host order would split two of the three groups (a0 a1 | a2 b0 | b1 c0);
  // packing whole groups first keeps all three on one host.
  JobSpec three = MakeSpec(1, 6, 2);
  Placement r = MustPlace(MakeCluster({{"a", 3}, {"b", 2}, {"c", 2}}), three);
  ExpectConsistent(r, three);
  for (const EpGroupPlacement& g : r.ep_groups) EXPECT_TRUE(g.single_host()) << g.hosts.size();
  EXPECT_TRUE(r.notes.empty());
}

TEST(PlacementTest, GroupsThatCannotFitSpanFewHostsAndAreReported) {
  JobSpec s = MakeSpec(2, 4, 2);  // 4 EP groups of 2
  // Whole groups: a holds 1, b holds 1, c holds 1; the 4th takes the leftovers of a and b.
  Placement p = MustPlace(MakeCluster({{"a", 3}, {"b", 3}, {"c", 2}}), s);
  ExpectConsistent(p, s);
  int single = 0;
  for (const EpGroupPlacement& g : p.ep_groups) {
    single += g.single_host() ? 1 : 0;
    EXPECT_LE(g.hosts.size(), 2u);
  }
  EXPECT_EQ(single, 3);
  ASSERT_EQ(p.notes.size(), 1u);
  EXPECT_THAT(p.notes[0], HasSubstr("1 of 4 EP groups span several hosts"));
}

TEST(PlacementTest, DualPipeRanksHoldMirroredStages) {
  JobSpec s = MakeSpec(4, 1, 1, PipelineSchedule::kDualPipe);
  Placement p = MustPlace(MakeCluster({{"a", 4}}), s);
  ExpectConsistent(p, s);
  EXPECT_EQ(p.at(0, 0).stages, std::vector<int>({0, 3}));
  EXPECT_EQ(p.at(1, 0).stages, std::vector<int>({1, 2}));
  EXPECT_EQ(p.at(3, 0).stages, std::vector<int>({3, 0}));
  EXPECT_EQ(p.PipelineRanksOfStage(0), std::vector<int>({0, 3}));
  EXPECT_EQ(p.PipelineRanksOfStage(2), std::vector<int>({1, 2}));
  // Embedding (stage 0) and head + MTP (stage 3) meet on ranks 0 and 3.
  EXPECT_TRUE(p.stages[0].has_embedding);
  EXPECT_TRUE(p.stages[3].has_head);
  EXPECT_EQ(p.stages[3].layer_end, 5);
}

TEST(PlacementTest, DualPipeVPutsEmbeddingAndHeadOnRankZero) {
  JobSpec s = MakeSpec(2, 2, 2, PipelineSchedule::kDualPipeV);
  Placement p = MustPlace(MakeCluster({{"a", 2}, {"b", 2}}), s);
  ExpectConsistent(p, s);
  ASSERT_EQ(p.stages.size(), 4u);
  EXPECT_EQ(p.at(0, 1).stages, std::vector<int>({0, 3}));
  EXPECT_EQ(p.at(1, 0).stages, std::vector<int>({1, 2}));
  EXPECT_EQ(p.PipelineRanksOfStage(3), std::vector<int>({0}));
  for (const EpGroupPlacement& g : p.ep_groups) EXPECT_TRUE(g.single_host());
}

TEST(PlacementTest, TooFewWorkersSaysNeededVersusAvailable) {
  JobSpec s = MakeSpec(2, 2, 2);
  ClusterView c = MakeCluster({{"a", 5}});
  c.workers[0].alive = false;
  c.workers[1].busy_job = "other-job";
  c.workers[2].schedulable = false;
  Result<Placement> p = Place(c, s);
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(p.status().message(),
            "job job-under-test needs 4 workers (pipeline 2 x data 2) for device cpu; 2 usable of 5 known "
            "(1 not alive, 1 not schedulable, 1 busy (other-job)); the job waits in PLACING until 2 more attach");
  // One more worker attaches: 3 usable, still short.
  c.workers.push_back(MakeCluster({{"b", 1}}).workers[0]);
  EXPECT_EQ(Place(c, s).status().code(), StatusCode::kUnavailable);
  c.workers.push_back(MakeCluster({{"c", 1}}).workers[0]);
  ExpectConsistent(MustPlace(c, s), s);
}

TEST(PlacementTest, NeverUsesDeadBusyOrUnschedulableWorkers) {
  JobSpec s = MakeSpec(2, 2, 2);
  ClusterView c = MakeCluster({{"a", 4}, {"b", 4}});
  std::set<std::string> banned;
  for (int i : {0, 3, 5}) banned.insert(c.workers[i].worker_id);
  c.workers[0].alive = false;
  c.workers[3].busy_job = "someone-else";
  c.workers[5].schedulable = false;
  Placement p = MustPlace(c, s);
  ExpectConsistent(p, s);
  for (const RankPlacement& r : p.ranks) EXPECT_EQ(banned.count(r.worker_id), 0u) << r.worker_id;
}

TEST(PlacementTest, DeterministicWhateverTheInputOrder) {
  JobSpec s = MakeSpec(2, 4, 2, PipelineSchedule::kDualPipe);
  ClusterView c = MakeCluster({{"a", 3}, {"b", 5}, {"c", 2}, {"d", 3}});
  Placement first = MustPlace(c, s);
  ExpectConsistent(first, s);
  std::mt19937 rng(1);
  for (int i = 0; i < 10; ++i) {
    std::shuffle(c.workers.begin(), c.workers.end(), rng);
    EXPECT_EQ(MustPlace(c, s), first) << "shuffle " << i;
  }
  // Ties break by name: the first workers by name on the chosen host take the first ranks.
  JobSpec one = MakeSpec(1, 2, 2);
  Placement q = MustPlace(MakeCluster({{"a", 3}}), one);
  EXPECT_EQ(q.at(0, 0).worker_name, "a-w0");
  EXPECT_EQ(q.at(0, 1).worker_name, "a-w1");
}

TEST(PlacementTest, DeviceKinds) {
  JobSpec cpu_job = MakeSpec(1, 2, 1);
  ClusterView mixed = MakeCluster({{"gpu", 4}}, DeviceKind::kCuda);
  for (const WorkerInfo& w : MakeCluster({{"cpu", 2}}).workers) mixed.workers.push_back(w);
  // Enough cpu workers: the GPUs are left alone.
  Placement p = MustPlace(mixed, cpu_job);
  for (const RankPlacement& r : p.ranks) EXPECT_EQ(r.device, DeviceKind::kCpu);
  EXPECT_TRUE(p.notes.empty());
  // Not enough: a cpu job may fall back to cuda workers, and says so.
  JobSpec wider = MakeSpec(1, 4, 1);
  Placement q = MustPlace(mixed, wider);
  ExpectConsistent(q, wider);
  int on_cuda = 0;
  for (const RankPlacement& r : q.ranks) on_cuda += r.device == DeviceKind::kCuda ? 1 : 0;
  EXPECT_EQ(on_cuda, 2);
  ASSERT_EQ(q.notes.size(), 1u);
  EXPECT_THAT(q.notes[0], HasSubstr("2 ranks run on cuda workers"));
  // A cuda job never runs on cpu workers.
  JobSpec cuda_job = MakeSpec(1, 2, 1);
  cuda_job.resources.device = DeviceKind::kCuda;
  Result<Placement> none = Place(MakeCluster({{"cpu", 8}}), cuda_job);
  ASSERT_FALSE(none.ok());
  EXPECT_THAT(none.status().message(), HasSubstr("0 usable of 8 known (8 are cpu workers)"));
}

TEST(PlacementTest, InvalidSpecIsRejected) {
  JobSpec s = MakeSpec(1, 2, 1);
  s.parallel.expert = 3;
  Result<Placement> p = Place(MakeCluster({{"a", 4}}), s);
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), StatusCode::kInvalidArgument);
}

TEST(PlacementTest, DeepSeekV3LayoutKeepsRoutingGroupsOnNodes) {
  // The published layout: PP 16 x DP 128, EP 64, on 256 nodes of 8 GPUs.
  JobSpec s = MakeSpec(16, 128, 64, PipelineSchedule::kDualPipe, "deepseek-v3-671b");
  std::vector<std::pair<std::string, int>> hosts;
  for (int i = 0; i < 256; ++i) hosts.push_back({"node" + std::to_string(1000 + i), 8});
  Placement p = MustPlace(MakeCluster(hosts, DeviceKind::kCuda), s);
  ExpectConsistent(p, s);
  EXPECT_EQ(p.experts_per_rank, 4);
  const ModelConfig& m = s.model.config;
  const int64_t per_routing_group = m.n_routed_experts / m.n_group;  // 32 experts = 8 GPUs = one node
  for (const EpGroupPlacement& g : p.ep_groups) {
    EXPECT_EQ(g.hosts.size(), 8u);  // 64 GPUs on 8 nodes, as in §3.4
    for (int64_t rg = 0; rg < m.n_group; ++rg) {
      std::set<std::string> nodes;
      for (int64_t x = rg * per_routing_group; x < (rg + 1) * per_routing_group; ++x)
        nodes.insert(p.ranks[g.expert_owner[x]].host);
      EXPECT_EQ(nodes.size(), 1u) << "routing group " << rg << " spans nodes";
    }
  }
}

TEST(PlacementTest, DescribeShowsStagesAndEveryWorker) {
  JobSpec s = MakeSpec(2, 2, 2, PipelineSchedule::kDualPipe);
  Placement p = MustPlace(MakeCluster({{"a", 2}, {"b", 2}}), s);
  std::string text = DescribePlacement(p);
  EXPECT_THAT(text, HasSubstr("job job-under-test: 4 workers, pipeline 2 x data 2, expert 2, schedule dualpipe, "
                              "2 stages, 8 routed experts per worker"));
  EXPECT_THAT(text, HasSubstr("0-2"));
  EXPECT_THAT(text, HasSubstr("3 + mtp 4"));
  EXPECT_THAT(text, HasSubstr("embedding"));
  EXPECT_THAT(text, HasSubstr("norm, head"));
  for (const RankPlacement& r : p.ranks) EXPECT_THAT(text, HasSubstr(r.worker_name + " (" + r.worker_id + ")"));
}

}  // namespace
}  // namespace shoal
