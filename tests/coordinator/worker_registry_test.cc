// The worker state machine driven by hand: a FakeClock, an in-memory store and fake connections.
#include "coordinator/worker_registry.h"

#include <gtest/gtest.h>

#include "storage/memory_state_store.h"
#include "tests/coordinator/fake_connection.h"

namespace shoal::coordinator {
namespace {
using namespace std::chrono_literals;
using testing::FakeConnection;
using testing::MakeMessage;

class RegistryTest : public ::testing::Test {
 protected:
  RegistryTest() : store_("cluster-test") { MakeRegistry(); }

  void MakeRegistry() {
    registry_ = std::make_unique<WorkerRegistry>(io_, &store_, &clock_, options_, &directory_,
                                                 std::make_shared<HandlerRegistry>());
    registry_->SetListeners([this](std::vector<WorkerInfo> s) { last_snapshot_ = std::move(s); }, nullptr);
    ASSERT_TRUE(registry_->Initialize().ok());
  }
  void Run() {
    io_.restart();
    io_.poll();
  }
  std::shared_ptr<FakeConnection> Register(const std::string& name, uint64_t conn_id) {
    auto conn = std::make_shared<FakeConnection>(proto::Role::WORKER, name, conn_id);
    registry_->HandleRegister(conn, MakeMessage(1, [&](proto::Envelope::Builder e) {
      auto r = e.initRegisterWorker();
      r.setName(name);
      r.setHost("host-a");
      r.setCores(2);
    }));
    Run();
    return conn;
  }
  std::string IdOf(FakeConnection& conn) {
    for (auto& m : conn.TakeSent()) {
      if (m->envelope().isRegisterReply()) return m->envelope().getRegisterReply().getWorkerId().cStr();
    }
    return "";
  }
  void Heartbeat(const std::shared_ptr<FakeConnection>& conn, const std::string& id, uint64_t incarnation) {
    registry_->HandleHeartbeat(conn, MakeMessage(2, [&](proto::Envelope::Builder e) {
      auto h = e.initHeartbeat();
      h.setWorkerId(id);
      h.setIncarnation(incarnation);
    }));
    Run();
  }
  WorkerState StateOf(const std::string& name) {
    for (const auto& w : last_snapshot_) {
      if (w.name == name) return w.state;
    }
    ADD_FAILURE() << "no worker " << name;
    return WorkerState::DEAD;
  }
  WorkerInfo Stored(const std::string& id) {
    auto raw = store_.Get(Table::kWorkers, id);
    EXPECT_TRUE(raw.ok() && raw->has_value());
    return *DecodeWorker(**raw);
  }

  boost::asio::io_context io_;
  MemoryStateStore store_;
  FakeClock clock_;
  HealthOptions options_{1000ms, 3000ms, 6000ms};
  WorkerDirectory directory_;
  std::unique_ptr<WorkerRegistry> registry_;
  std::vector<WorkerInfo> last_snapshot_;
};

TEST_F(RegistryTest, HeartbeatDeadlinesMoveAliveToSuspectToDeadAndBack) {
  auto conn = Register("w0", 10);
  std::string id = IdOf(*conn);
  ASSERT_FALSE(id.empty());
  EXPECT_EQ(StateOf("w0"), WorkerState::ALIVE);
  EXPECT_EQ(Stored(id).state, WorkerState::ALIVE);

  clock_.Advance(2500ms);
  registry_->CheckHealthNow();
  Run();
  EXPECT_EQ(StateOf("w0"), WorkerState::ALIVE);  // within the deadline

  clock_.Advance(1000ms);  // 3.5 s silent
  registry_->CheckHealthNow();
  Run();
  EXPECT_EQ(StateOf("w0"), WorkerState::SUSPECT);
  EXPECT_EQ(Stored(id).state, WorkerState::SUSPECT);

  Heartbeat(conn, id, 1);
  EXPECT_EQ(StateOf("w0"), WorkerState::ALIVE);

  clock_.Advance(6500ms);
  registry_->CheckHealthNow();
  Run();
  registry_->CheckHealthNow();  // ALIVE -> SUSPECT -> DEAD may take two passes
  Run();
  EXPECT_EQ(StateOf("w0"), WorkerState::DEAD);
  WorkerInfo dead = Stored(id);
  EXPECT_EQ(dead.state, WorkerState::DEAD);
  EXPECT_NE(dead.reason.find("no heartbeat for"), std::string::npos) << dead.reason;

  // A dead worker that comes back re-registers under the same id with a new incarnation.
  auto conn2 = Register("w0", 11);
  EXPECT_EQ(IdOf(*conn2), id);
  EXPECT_EQ(StateOf("w0"), WorkerState::ALIVE);
  EXPECT_EQ(Stored(id).incarnation, 2u);
}

TEST_F(RegistryTest, HeartbeatFromAnOldIncarnationOrConnectionIsUnknown) {
  auto conn = Register("w0", 10);
  std::string id = IdOf(*conn);
  auto conn2 = Register("w0", 11);  // the same worker again (e.g. after a reconnect)
  (void)IdOf(*conn2);
  EXPECT_FALSE(conn->is_open());  // the old connection is closed
  Heartbeat(conn, id, 1);
  auto sent = conn->TakeSent();
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_FALSE(sent[0]->envelope().getHeartbeatReply().getKnown());
  Heartbeat(conn2, id, 2);
  sent = conn2->TakeSent();
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_TRUE(sent[0]->envelope().getHeartbeatReply().getKnown());
}

TEST_F(RegistryTest, LostConnectionMakesSuspectAndDetachDrains) {
  auto c0 = Register("w0", 10);
  auto c1 = Register("w1", 11);
  directory_.Set(IdOf(*c0), c0);
  std::string id1 = IdOf(*c1);
  registry_->OnConnectionClosed(c0);
  Run();
  EXPECT_EQ(StateOf("w0"), WorkerState::SUSPECT);

  auto cli = std::make_shared<FakeConnection>(proto::Role::CLI, "cli", 99);
  registry_->HandleDetach(cli, MakeMessage(5, [](proto::Envelope::Builder e) { e.initDetach().setWorker("w1"); }));
  Run();
  EXPECT_EQ(StateOf("w1"), WorkerState::DRAINING);
  bool drain_sent = false;
  for (auto& m : c1->TakeSent()) drain_sent |= m->envelope().isDrain();
  EXPECT_TRUE(drain_sent);
  auto replies = cli->TakeSent();
  ASSERT_EQ(replies.size(), 1u);
  EXPECT_TRUE(replies[0]->envelope().isAck());

  registry_->HandleDrained(c1, MakeMessage(6, [&](proto::Envelope::Builder e) { e.initDrained().setWorkerId(id1); }));
  Run();
  EXPECT_EQ(StateOf("w1"), WorkerState::DETACHED);
  EXPECT_EQ(Stored(id1).state, WorkerState::DETACHED);

  registry_->HandleDetach(cli, MakeMessage(7, [](proto::Envelope::Builder e) { e.initDetach().setWorker("ghost"); }));
  Run();
  replies = cli->TakeSent();
  ASSERT_EQ(replies.size(), 1u);
  EXPECT_EQ(replies[0]->envelope().getError().getCode(), static_cast<int>(StatusCode::kNotFound));
}

TEST_F(RegistryTest, RegistrationIsNotAcknowledgedWhenItCannotBePersisted) {
  store_.FailNextWrites(1);
  auto conn = std::make_shared<FakeConnection>(proto::Role::WORKER, "w0", 10);
  registry_->HandleRegister(conn, MakeMessage(1, [](proto::Envelope::Builder e) {
    e.initRegisterWorker().setName("w0");
  }));
  Run();
  auto sent = conn->TakeSent();
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_TRUE(sent[0]->envelope().isError());
  EXPECT_EQ(sent[0]->envelope().getError().getCode(), static_cast<int>(StatusCode::kUnavailable));
}

TEST_F(RegistryTest, RestartRecoversWorkersAndGivesThemTimeToReconnect) {
  auto conn = Register("w0", 10);
  std::string id = IdOf(*conn);
  registry_.reset();
  MakeRegistry();  // a new coordinator process on the same store
  registry_->Start();
  Run();
  EXPECT_EQ(StateOf("w0"), WorkerState::SUSPECT);
  registry_->CheckHealthNow();
  Run();
  EXPECT_EQ(StateOf("w0"), WorkerState::SUSPECT);  // not declared dead straight away
  auto back = Register("w0", 12);
  EXPECT_EQ(IdOf(*back), id);
  EXPECT_EQ(StateOf("w0"), WorkerState::ALIVE);
}

}  // namespace
}  // namespace shoal::coordinator
