// The job state machine driven by hand: a fake placement policy, an in-memory store, fake connections.
#include "coordinator/job_manager.h"

#include <gtest/gtest.h>

#include "coordinator/placement_adapter.h"
#include "storage/memory_state_store.h"
#include "tests/coordinator/fake_connection.h"

namespace shoal::coordinator {
namespace {
using testing::FakeConnection;
using testing::MakeMessage;

constexpr char kSpec[] =
    "name: two-ranks\n"
    "model: {preset: demo}\n"
    "parallel: {pipeline: 2, data: 1}\n"
    "phases:\n"
    "  - {name: pretrain, kind: pretrain, data: {builtin: arith}, steps: 10}\n";

class JobManagerTest : public ::testing::Test {
 protected:
  JobManagerTest() : store_("cluster-test") { Make(); }

  void Make() {
    jobs_ = std::make_unique<JobManager>(io_, &store_, &directory_, MakePlacementPolicy(), JobManager::Options{2, 16},
                                         std::make_shared<HandlerRegistry>());
    ASSERT_TRUE(jobs_->Initialize().ok());
  }
  void Run() {
    io_.restart();
    io_.poll();
  }
  std::shared_ptr<FakeConnection> AddWorker(const std::string& name, WorkerState state = WorkerState::ALIVE) {
    WorkerInfo w;
    w.worker_id = "id-" + name;
    w.name = name;
    w.host = "h";
    w.state = state;
    cluster_[w.worker_id] = w;
    auto conn = std::make_shared<FakeConnection>(proto::Role::WORKER, name, next_conn_++);
    directory_.Set(w.worker_id, conn);
    conns_[name] = conn;
    return conn;
  }
  void Publish() {
    std::vector<WorkerInfo> snapshot;
    for (auto& [_, w] : cluster_) snapshot.push_back(w);
    jobs_->OnClusterChanged(snapshot);
    Run();
  }
  protocol::MessagePtr Submit(const std::string& yaml) {
    auto cli = std::make_shared<FakeConnection>(proto::Role::CLI, "cli", 1000);
    jobs_->HandleSubmit(cli, MakeMessage(1, [&](proto::Envelope::Builder e) {
      e.initSubmit().setSpecYaml(yaml);
      e.getSubmit().setSpecFile("job.yaml");
    }));
    Run();
    auto sent = cli->TakeSent();
    EXPECT_EQ(sent.size(), 1u);
    return sent.empty() ? nullptr : sent[0];
  }
  proto::JobRecord::Reader Status(FakeConnection& cli, const std::string& job) {
    jobs_->HandleJobStatus(std::shared_ptr<FakeConnection>(&cli, [](auto*) {}),
                           MakeMessage(2, [&](proto::Envelope::Builder e) { e.initJobStatus().setJob(job); }));
    Run();
    last_status_ = cli.TakeSent().at(0);
    return last_status_->envelope().getJobStatusReply().getJob();
  }
  // Acks every assignment each worker received; returns how many were acked.
  int AckAll() {
    int n = 0;
    for (auto& [name, conn] : conns_) {
      for (auto& m : conn->TakeSent()) {
        if (!m->envelope().isAssignment()) continue;
        auto a = m->envelope().getAssignment();
        jobs_->HandleAssignmentAck(conn, MakeMessage(3, [&](proto::Envelope::Builder e) {
          auto ack = e.initAssignmentAck();
          ack.setJobId(a.getJobId());
          ack.setEpoch(a.getEpoch());
          ack.setAccepted(true);
        }));
        ++n;
      }
    }
    Run();
    return n;
  }

  boost::asio::io_context io_;
  MemoryStateStore store_;
  WorkerDirectory directory_;
  std::unique_ptr<JobManager> jobs_;
  std::map<std::string, WorkerInfo> cluster_;
  std::map<std::string, std::shared_ptr<FakeConnection>> conns_;
  uint64_t next_conn_ = 1;
  protocol::MessagePtr last_status_;
  FakeConnection cli_{proto::Role::CLI, "cli", 2000};
};

TEST_F(JobManagerTest, WaitsForWorkersThenRunsOnceEveryRankAcknowledges) {
  AddWorker("a");
  Publish();
  auto reply = Submit(kSpec);
  ASSERT_TRUE(reply->envelope().isSubmitReply());
  std::string id = reply->envelope().getSubmitReply().getJobId().cStr();
  auto job = Status(cli_, id);
  EXPECT_EQ(job.getState(), proto::JobState::PLACING);
  EXPECT_NE(std::string(job.getReason().cStr()).find("2"), std::string::npos) << job.getReason().cStr();
  EXPECT_EQ(job.getEpoch(), 0u);

  AddWorker("b");
  Publish();
  EXPECT_EQ(Status(cli_, id).getEpoch(), 1u);
  EXPECT_EQ(Status(cli_, id).getState(), proto::JobState::PLACING);  // assignments out, no acks yet
  EXPECT_EQ(AckAll(), 2);
  EXPECT_EQ(Status(cli_, id).getState(), proto::JobState::RUNNING);

  // Durable: a new manager on the same store sees the same job, state, epoch and placement.
  jobs_.reset();
  Make();
  auto again = Status(cli_, "two-ranks");
  EXPECT_EQ(again.getState(), proto::JobState::RUNNING);
  EXPECT_EQ(again.getEpoch(), 1u);
  EXPECT_TRUE(last_status_->envelope().getJobStatusReply().getHasPlacement());
}

TEST_F(JobManagerTest, LostWorkerTriggersRecoveryAtANewEpochAndStaleAcksAreIgnored) {
  AddWorker("a");
  AddWorker("b");
  AddWorker("c");
  Publish();
  std::string id = Submit(kSpec)->envelope().getSubmitReply().getJobId().cStr();
  ASSERT_EQ(AckAll(), 2);
  ASSERT_EQ(Status(cli_, id).getState(), proto::JobState::RUNNING);
  auto placement = last_status_->envelope().getJobStatusReply().getPlacement();
  std::string victim = placement.getRanks()[0].getWorkerName().cStr();

  cluster_["id-" + victim].state = WorkerState::DEAD;
  Publish();
  auto job = Status(cli_, id);
  EXPECT_EQ(job.getEpoch(), 2u);
  EXPECT_EQ(job.getRestarts(), 1u);
  EXPECT_EQ(job.getState(), proto::JobState::RECOVERING);
  // A zombie ack for epoch 1 changes nothing.
  jobs_->HandleAssignmentAck(conns_["c"], MakeMessage(9, [&](proto::Envelope::Builder e) {
    auto ack = e.initAssignmentAck();
    ack.setJobId(id);
    ack.setEpoch(1);
    ack.setAccepted(true);
  }));
  Run();
  EXPECT_EQ(Status(cli_, id).getState(), proto::JobState::RECOVERING);
  EXPECT_EQ(AckAll(), 2);
  job = Status(cli_, id);
  EXPECT_EQ(job.getState(), proto::JobState::RUNNING);
  for (auto r : last_status_->envelope().getJobStatusReply().getPlacement().getRanks()) {
    EXPECT_NE(std::string(r.getWorkerName().cStr()), victim);
  }
}

TEST_F(JobManagerTest, RestartBudgetExhaustedFailsTheJob) {
  for (auto n : {"a", "b", "c", "d", "e"}) AddWorker(n);
  Publish();
  std::string id = Submit(kSpec)->envelope().getSubmitReply().getJobId().cStr();
  AckAll();
  for (int round = 0; round < 3; ++round) {
    Status(cli_, id);
    std::string victim = last_status_->envelope().getJobStatusReply().getPlacement().getRanks()[0].getWorkerName().cStr();
    cluster_["id-" + victim].state = WorkerState::DEAD;
    Publish();
    AckAll();
  }
  auto job = Status(cli_, id);
  EXPECT_EQ(job.getState(), proto::JobState::FAILED);
  EXPECT_NE(std::string(job.getReason().cStr()).find("restart budget"), std::string::npos);
}

TEST_F(JobManagerTest, SubmitIsNotAcknowledgedWhenItCannotBePersisted) {
  store_.FailNextWrites(1);
  auto reply = Submit(kSpec);
  ASSERT_TRUE(reply->envelope().isError());
  EXPECT_EQ(reply->envelope().getError().getCode(), static_cast<int>(StatusCode::kUnavailable));
  auto rows = store_.Scan(Table::kJobs);
  ASSERT_TRUE(rows.ok());
  EXPECT_TRUE(rows->empty());
}

TEST_F(JobManagerTest, InvalidSpecIsRefusedWithItsLocation) {
  auto reply = Submit("name: x\nmodel: {preset: nope}\nphases: []\n");
  ASSERT_TRUE(reply->envelope().isError());
  std::string m = reply->envelope().getError().getMessage().cStr();
  EXPECT_NE(m.find("job.yaml:2:"), std::string::npos) << m;
  EXPECT_NE(m.find("model.preset"), std::string::npos) << m;
}

void ReportShard(JobManager& jobs, const std::shared_ptr<FakeConnection>& conn, const std::string& job, uint64_t epoch,
                 uint32_t pp, const std::string& phase, uint32_t phase_index, uint64_t step, bool done) {
  jobs.HandleCheckpointShard(conn, MakeMessage(20, [&](proto::Envelope::Builder e) {
    auto s = e.initCheckpointShard();
    s.setJobId(job);
    s.setEpoch(epoch);
    s.setPhase(phase);
    s.setPhaseIndex(phase_index);
    s.setStep(step);
    s.setPpRank(pp);
    s.setDir("/ckpt/" + phase);
    s.setCursor("{\"index\": " + std::to_string(step * 16) + "}");
    s.setPhaseDone(done);
    s.initFiles(1)[0].setName("model-" + std::to_string(pp) + ".safetensors");
  }));
}

TEST_F(JobManagerTest, CheckpointCommitsOnlyWhenEveryShardReportedAndTheLastPhaseEndsTheJob) {
  AddWorker("a");
  AddWorker("b");
  Publish();
  std::string id = Submit(kSpec)->envelope().getSubmitReply().getJobId().cStr();
  AckAll();
  ASSERT_EQ(Status(cli_, id).getState(), proto::JobState::RUNNING);
  auto list = [&] {
    jobs_->HandleListCheckpoints(std::shared_ptr<FakeConnection>(&cli_, [](auto*) {}),
                                 MakeMessage(30, [&](proto::Envelope::Builder e) { e.initListCheckpoints().setJob(id); }));
    Run();
    last_status_ = cli_.TakeSent().at(0);
    return last_status_->envelope().getListCheckpointsReply().getCheckpoints();
  };
  ReportShard(*jobs_, conns_["a"], id, 1, 0, "pretrain", 0, 5, false);
  Run();
  EXPECT_EQ(list().size(), 0u);  // one of two shards: not committed
  ReportShard(*jobs_, conns_["b"], id, 0, 1, "pretrain", 0, 5, false);  // zombie epoch 0: ignored
  Run();
  EXPECT_EQ(list().size(), 0u);
  ReportShard(*jobs_, conns_["b"], id, 1, 1, "pretrain", 0, 5, false);
  Run();
  auto committed = list();
  ASSERT_EQ(committed.size(), 1u);
  EXPECT_EQ(std::string(committed[0].getCheckpointId().cStr()), "pretrain-000005");
  EXPECT_EQ(committed[0].getShards().size(), 2u);
  auto cursor = store_.Get(Table::kCursors, id);
  ASSERT_TRUE(cursor.ok() && cursor->has_value());
  EXPECT_EQ(**cursor, "{\"index\": 80}");
  EXPECT_EQ(Status(cli_, id).getPhases()[0].getStep(), 5u);

  // A new placement hands the committed checkpoint to the workers to restore from.
  jobs_.reset();
  Make();
  for (auto& [_, c] : conns_) c->TakeSent();
  Publish();
  cluster_["id-a"].state = WorkerState::DEAD;
  AddWorker("c");
  Publish();
  bool restore_sent = false;
  for (auto& [_, c] : conns_) {
    for (auto& m : c->TakeSent()) {
      if (m->envelope().isAssignment() && m->envelope().getAssignment().getHasRestore()) {
        restore_sent = std::string(m->envelope().getAssignment().getRestore().getCheckpointId().cStr()) ==
                       "pretrain-000005";
      }
    }
  }
  EXPECT_TRUE(restore_sent);
  AckAll();
  uint64_t epoch = Status(cli_, id).getEpoch();
  std::string w0 = last_status_->envelope().getJobStatusReply().getPlacement().getRanks()[0].getWorkerName().cStr();
  std::string w1 = last_status_->envelope().getJobStatusReply().getPlacement().getRanks()[1].getWorkerName().cStr();
  ReportShard(*jobs_, conns_[w0], id, epoch, 0, "pretrain", 0, 10, true);
  ReportShard(*jobs_, conns_[w1], id, epoch, 1, "pretrain", 0, 10, true);
  Run();
  auto job = Status(cli_, id);
  EXPECT_EQ(job.getState(), proto::JobState::SUCCEEDED);
  EXPECT_EQ(std::string(job.getPhases()[0].getState().cStr()), "done");
  EXPECT_EQ(list().size(), 2u);
}

}  // namespace
}  // namespace shoal::coordinator
