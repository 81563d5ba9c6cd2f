// The control plane through the real binaries: workers attach, jobs are placed and acknowledged, failures
// are detected, the coordinator survives kill -9, detach drains, bad peers are refused, bad specs explained.
#include <gtest/gtest.h>
#include <signal.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <regex>
#include <set>

#include "tests/integration/harness.h"

namespace shoal::testing {
namespace {
using namespace std::chrono_literals;
using nlohmann::json;

std::string DemoDist() { return SourceDir() + "/configs/demo-dist.yaml"; }

bool AllAlive(const Cluster& c, const std::vector<std::string>& names) {
  auto workers = c.CliJson({"workers"});
  for (const auto& n : names) {
    if (WorkerState(workers, n) != "ALIVE") return false;
  }
  return true;
}

void StartFourWorkers(Cluster& c) {
  for (int i = 0; i < 4; ++i) c.StartWorker("w" + std::to_string(i));
  ASSERT_TRUE(Cluster::Eventually([&] { return AllAlive(c, {"w0", "w1", "w2", "w3"}); }))
      << c.Cli({"workers"}).out;
}

json Status(const Cluster& c, const std::string& job) { return c.CliJson({"status", job}); }

bool JobIs(const Cluster& c, const std::string& job, const std::string& state) {
  return Status(c, job).value("state", "") == state;
}

TEST(ClusterTest, FourWorkersAttachAndShowAlive) {
  Cluster c;
  c.StartCoordinator();
  StartFourWorkers(c);
  auto workers = c.CliJson({"workers"});
  ASSERT_EQ(workers.size(), 4u);
  for (const auto& w : workers) {
    EXPECT_EQ(w["state"], "ALIVE");
    EXPECT_EQ(w["device"], "cpu");
    EXPECT_FALSE(w["host"].get<std::string>().empty());
    EXPECT_TRUE(w.contains("reason"));
  }
  // The human table has the familiar shape.
  auto table = c.Cli({"workers"});
  EXPECT_EQ(table.exit_code, 0);
  EXPECT_NE(table.out.find("NAME"), std::string::npos);
  EXPECT_NE(table.out.find("REASON"), std::string::npos);
  EXPECT_NE(table.out.find("w3"), std::string::npos);
}

TEST(ClusterTest, SubmittedSpecIsPlacedAndEveryWorkerAcknowledges) {
  Cluster c;
  c.StartCoordinator();
  StartFourWorkers(c);
  auto submit = c.Cli({"submit", DemoDist()});
  ASSERT_EQ(submit.exit_code, 0) << submit.err;
  EXPECT_NE(submit.out.find("arith-demo-dist"), std::string::npos);
  ASSERT_TRUE(Cluster::Eventually([&] { return JobIs(c, "arith-demo-dist", "RUNNING"); }))
      << c.Cli({"status", "arith-demo-dist"}).out;
  auto st = Status(c, "arith-demo-dist");
  EXPECT_EQ(st["epoch"], 1);
  EXPECT_EQ(st["phase"], "pretrain");
  ASSERT_EQ(st["phases"].size(), 2u);
  const auto& ranks = st["placement"]["ranks"];
  ASSERT_EQ(ranks.size(), 4u);
  std::set<std::string> workers;
  std::set<std::pair<int, int>> coords;
  for (const auto& r : ranks) {
    EXPECT_TRUE(r["acked"].get<bool>());
    workers.insert(r["worker"].get<std::string>());
    coords.insert({r["pp_rank"].get<int>(), r["dp_rank"].get<int>()});
    EXPECT_EQ(r["stages"].size(), 2u);  // dualpipe: two stages per pipeline rank
  }
  EXPECT_EQ(workers, (std::set<std::string>{"w0", "w1", "w2", "w3"}));
  EXPECT_EQ(coords.size(), 4u);
  // Every worker really received its assignment.
  for (int i = 0; i < 4; ++i) {
    EXPECT_NE(c.ReadLog("w" + std::to_string(i)).find("assigned to job arith-demo-dist"), std::string::npos);
  }
  // Listings agree.
  auto jobs = c.CliJson({"jobs"});
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(jobs[0]["name"], "arith-demo-dist");
  EXPECT_EQ(jobs[0]["state"], "RUNNING");
  EXPECT_EQ(jobs[0]["phase"], "pretrain");
  auto human = c.Cli({"status", "arith-demo-dist"});
  EXPECT_NE(human.out.find("Status for job 'arith-demo-dist': RUNNING"), std::string::npos);
}

TEST(ClusterTest, JobWaitsInPlacingUntilEnoughWorkersAttach) {
  Cluster c;
  c.StartCoordinator();
  c.StartWorker("w0");
  c.StartWorker("w1");
  ASSERT_TRUE(Cluster::Eventually([&] { return AllAlive(c, {"w0", "w1"}); }));
  ASSERT_EQ(c.Cli({"submit", DemoDist()}).exit_code, 0);
  auto st = Status(c, "arith-demo-dist");
  EXPECT_EQ(st["state"], "PLACING");
  EXPECT_NE(st["reason"].get<std::string>().find("4"), std::string::npos) << st["reason"];
  c.StartWorker("w2");
  c.StartWorker("w3");
  EXPECT_TRUE(Cluster::Eventually([&] { return JobIs(c, "arith-demo-dist", "RUNNING"); }));
}

TEST(ClusterTest, KilledWorkerIsDeclaredDeadAndItsJobReplaced) {
  Cluster c;
  c.StartCoordinator();
  StartFourWorkers(c);
  c.StartWorker("spare");
  ASSERT_TRUE(Cluster::Eventually([&] { return AllAlive(c, {"spare"}); }));
  ASSERT_EQ(c.Cli({"submit", DemoDist()}).exit_code, 0);
  ASSERT_TRUE(Cluster::Eventually([&] { return JobIs(c, "arith-demo-dist", "RUNNING"); }));
  auto before = Status(c, "arith-demo-dist");
  std::string victim = before["placement"]["ranks"][1]["worker"];
  c.KillWorker(victim, SIGKILL);
  ASSERT_TRUE(Cluster::Eventually([&] { return WorkerState(c.CliJson({"workers"}), victim) == "DEAD"; }));
  auto workers = c.CliJson({"workers"});
  for (const auto& w : workers) {
    if (w["name"] == victim) EXPECT_NE(w["reason"].get<std::string>().find("no heartbeat"), std::string::npos);
  }
  // The job is re-placed on the spare at a new epoch.
  ASSERT_TRUE(Cluster::Eventually([&] {
    auto st = Status(c, "arith-demo-dist");
    return st["state"] == "RUNNING" && st["epoch"] == 2;
  })) << c.Cli({"status", "arith-demo-dist"}).out;
  auto after = Status(c, "arith-demo-dist");
  EXPECT_EQ(after["restarts"], 1);
  for (const auto& r : after["placement"]["ranks"]) EXPECT_NE(r["worker"], victim);
}

TEST(ClusterTest, CoordinatorSurvivesKill9WithJobsWorkersAndPlacementsIntact) {
  Cluster c;
  c.StartCoordinator();
  StartFourWorkers(c);
  ASSERT_EQ(c.Cli({"submit", DemoDist()}).exit_code, 0);
  ASSERT_TRUE(Cluster::Eventually([&] { return JobIs(c, "arith-demo-dist", "RUNNING"); }));
  auto jobs_before = c.CliJson({"jobs"});
  auto status_before = Status(c, "arith-demo-dist");
  int port = c.coordinator_port();

  c.KillCoordinator(SIGKILL);
  c.StartCoordinator(port);
  // Workers reconnect on their own.
  ASSERT_TRUE(Cluster::Eventually([&] { return AllAlive(c, {"w0", "w1", "w2", "w3"}); }))
      << c.Cli({"workers"}).out;
  auto jobs_after = c.CliJson({"jobs"});
  ASSERT_EQ(jobs_after.size(), jobs_before.size());
  EXPECT_EQ(jobs_after[0]["id"], jobs_before[0]["id"]);
  EXPECT_EQ(jobs_after[0]["state"], "RUNNING");
  auto status_after = Status(c, "arith-demo-dist");
  EXPECT_EQ(status_after["epoch"], status_before["epoch"]);
  EXPECT_EQ(status_after["placement"]["ranks"], status_before["placement"]["ranks"]);
  // The worker processes were never restarted: they re-registered with the same assignment.
  for (int i = 0; i < 4; ++i) EXPECT_EQ(kill(c.worker_pid("w" + std::to_string(i)), 0), 0);
}

TEST(ClusterTest, DetachDrainsTheWorkerAndItExitsCleanly) {
  Cluster c;
  c.StartCoordinator();
  c.StartWorker("w0");
  c.StartWorker("w1");
  ASSERT_TRUE(Cluster::Eventually([&] { return AllAlive(c, {"w0", "w1"}); }));
  auto r = c.Cli({"detach", "w1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("draining"), std::string::npos);
  EXPECT_EQ(c.WaitWorkerExit("w1", 10s), 0);
  EXPECT_TRUE(Cluster::Eventually([&] { return WorkerState(c.CliJson({"workers"}), "w1") == "DETACHED"; }));
  EXPECT_EQ(WorkerState(c.CliJson({"workers"}), "w0"), "ALIVE");
  // Detaching an unknown worker is an error with a reason.
  auto bad = c.Cli({"detach", "nobody"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("no worker named 'nobody'"), std::string::npos) << bad.err;
}

TEST(ClusterTest, SigtermMakesAWorkerLeaveCleanly) {
  Cluster c;
  c.StartCoordinator();
  c.StartWorker("w0");
  ASSERT_TRUE(Cluster::Eventually([&] { return AllAlive(c, {"w0"}); }));
  c.KillWorker("w0", SIGTERM);
  EXPECT_EQ(c.WaitWorkerExit("w0", 10s), 0);
  EXPECT_TRUE(Cluster::Eventually([&] { return WorkerState(c.CliJson({"workers"}), "w0") == "DETACHED"; }));
}

void SendRaw(int port, const std::vector<uint8_t>& bytes) {
  boost::asio::io_context io;
  boost::asio::ip::tcp::socket sock(io);
  sock.connect({boost::asio::ip::make_address("127.0.0.1"), static_cast<unsigned short>(port)});
  boost::system::error_code ec;
  boost::asio::write(sock, boost::asio::buffer(bytes), ec);
  std::vector<uint8_t> buf(4096);
  while (!ec) sock.read_some(boost::asio::buffer(buf), ec);  // until the coordinator hangs up
}

TEST(ClusterTest, WrongTokenGarbageAndOversizedFramesAreRefusedWhileTheClusterKeepsWorking) {
  Cluster c;
  c.StartCoordinator();
  c.StartWorker("w0");
  ASSERT_TRUE(Cluster::Eventually([&] { return AllAlive(c, {"w0"}); }));

  std::string wrong = c.WriteFile("wrong-token", std::string(64, 'a') + "\n");
  auto r = RunCommand({BinDir() + "/shoal", "--coordinator", c.address(), "--token-file", wrong, "workers"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("token"), std::string::npos) << r.err;
  // A worker with the wrong token never registers.
  c.StartWorker("intruder", {"--token-file", wrong});
  SendRaw(c.coordinator_port(), {0, 0, 0, 0, 2, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                 1, 2, 3, 4, 5, 6, 7, 8});
  SendRaw(c.coordinator_port(), {0, 0, 0, 0, 0, 0, 0, 0x40});  // declares a 4 GiB segment
  SendRaw(c.coordinator_port(), std::vector<uint8_t>(100, 0x41));
  auto workers = c.CliJson({"workers"});
  EXPECT_EQ(WorkerState(workers, "w0"), "ALIVE");
  EXPECT_EQ(WorkerState(workers, "intruder"), "");
  std::string log = c.ReadLog("coordinator");
  EXPECT_NE(log.find("wrong token"), std::string::npos);
  EXPECT_NE(log.find("exceeds the limit"), std::string::npos);
  EXPECT_NE(log.find("malformed"), std::string::npos);
  // Still fully functional.
  EXPECT_EQ(c.Cli({"jobs"}).exit_code, 0);
}

TEST(ClusterTest, MalformedSpecIsRejectedWithFileLineColumnAndKey) {
  Cluster c;
  c.StartCoordinator();
  std::string path = c.WriteFile("bad.yaml",
                                 "name: bad-job\n"
                                 "model: {preset: demo}\n"
                                 "phases:\n"
                                 "  - {name: pretrain, kind: pretrain, data: {builtin: arith}, steps: ten}\n");
  auto r = c.Cli({"submit", path});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(std::regex_search(r.err, std::regex("bad\\.yaml:4:[0-9]+: phases\\[0\\]\\.steps")))
      << r.err;
  std::string layout = c.WriteFile("layout.yaml",
                                   "name: too-deep\n"
                                   "model: {preset: demo}\n"
                                   "parallel: {pipeline: 9}\n"
                                   "phases:\n"
                                   "  - {name: pretrain, kind: pretrain, data: {builtin: arith}, steps: 5}\n");
  auto r2 = c.Cli({"submit", layout});
  EXPECT_EQ(r2.exit_code, 1);
  EXPECT_TRUE(std::regex_search(r2.err, std::regex("layout\\.yaml:3:[0-9]+: parallel\\.pipeline"))) << r2.err;
  EXPECT_EQ(c.CliJson({"jobs"}).size(), 0u);  // nothing was stored
}

TEST(ClusterTest, CancelReleasesWorkersForTheNextJob) {
  Cluster c;
  c.StartCoordinator();
  StartFourWorkers(c);
  ASSERT_EQ(c.Cli({"submit", DemoDist()}).exit_code, 0);
  ASSERT_TRUE(Cluster::Eventually([&] { return JobIs(c, "arith-demo-dist", "RUNNING"); }));
  // A second job of the same name is refused while the first is live.
  auto dup = c.Cli({"submit", DemoDist()});
  EXPECT_EQ(dup.exit_code, 1);
  EXPECT_NE(dup.err.find("already RUNNING"), std::string::npos) << dup.err;
  auto cancel = c.Cli({"cancel", "arith-demo-dist"});
  ASSERT_EQ(cancel.exit_code, 0) << cancel.err;
  EXPECT_EQ(Status(c, "arith-demo-dist")["state"], "CANCELLED");
  ASSERT_EQ(c.Cli({"submit", DemoDist()}).exit_code, 0);
  EXPECT_TRUE(Cluster::Eventually([&] { return JobIs(c, "arith-demo-dist", "RUNNING"); }));
  EXPECT_EQ(c.CliJson({"jobs"}).size(), 2u);
  auto missing = c.Cli({"status", "no-such-job"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.err.find("no job 'no-such-job'"), std::string::npos);
}

TEST(ClusterTest, UpAndDownRunALocalClusterInADirectory) {
  char tmpl[] = "/tmp/shoal-up-XXXXXX";
  std::string dir = mkdtemp(tmpl);
  auto up = RunCommand({BinDir() + "/shoal", "--dir", dir + "/.shoal", "up", "--workers", "2"}, {}, dir);
  ASSERT_EQ(up.exit_code, 0) << up.err << up.out;
  auto workers = RunCommand({BinDir() + "/shoal", "--dir", dir + "/.shoal", "workers", "--json"}, {}, dir);
  ASSERT_EQ(workers.exit_code, 0) << workers.err;
  auto j = json::parse(workers.out);
  EXPECT_EQ(WorkerState(j, "worker-0"), "ALIVE");
  EXPECT_EQ(WorkerState(j, "worker-1"), "ALIVE");
  auto again = RunCommand({BinDir() + "/shoal", "--dir", dir + "/.shoal", "up"}, {}, dir);
  EXPECT_EQ(again.exit_code, 1);
  EXPECT_NE(again.err.find("already running"), std::string::npos);
  auto down = RunCommand({BinDir() + "/shoal", "--dir", dir + "/.shoal", "down", "--purge"}, {}, dir);
  EXPECT_EQ(down.exit_code, 0) << down.err;
  auto after = RunCommand({BinDir() + "/shoal", "--dir", dir + "/.shoal", "workers"}, {}, dir);
  EXPECT_EQ(after.exit_code, 1);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace shoal::testing
