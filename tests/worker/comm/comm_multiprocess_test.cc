// The UCX data plane between real processes on loopback, in both transport modes: each test starts comm_peer
// processes (one per rank; addresses exchanged through files in a temporary directory), lets them run a
// scenario, and compares what they received with serial references computed here.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "tests/worker/comm/comm_test_util.h"
#include "worker/comm/group.h"

namespace shoal::comm::testing {
namespace {

using namespace std::chrono_literals;

std::string PeerBinary() {
  std::error_code ec;
  auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  return (self.parent_path() / "comm_peer").string();
}

// The processes of one scenario, killed and their directory removed when the test ends, even on failure.
class Peers {
 public:
  Peers(std::string scenario, int world, std::string mode, std::vector<std::string> args = {})
      : scenario_(std::move(scenario)), world_(world), mode_(std::move(mode)), args_(std::move(args)) {
    char tmpl[] = "/tmp/shoal-comm-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    pids_.assign(static_cast<size_t>(world), -1);
    status_.assign(static_cast<size_t>(world), -1);
    for (int r = 0; r < world_; ++r) Spawn(r);
  }
  ~Peers() {
    for (pid_t pid : pids_) {
      if (pid > 0) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, nullptr, 0);
      }
    }
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  const std::string& dir() const { return dir_; }

  // Exit code of `rank` (waiting up to `timeout`), -1 if it did not exit, 128+N if signal N ended it.
  int WaitExit(int rank, std::chrono::milliseconds timeout) {
    auto& pid = pids_[static_cast<size_t>(rank)];
    if (pid <= 0) return status_[static_cast<size_t>(rank)];
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (true) {
      int st = 0;
      pid_t r = ::waitpid(pid, &st, WNOHANG);
      if (r == pid) {
        pid = -1;
        status_[static_cast<size_t>(rank)] = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        return status_[static_cast<size_t>(rank)];
      }
      if (std::chrono::steady_clock::now() >= deadline) return -1;
      std::this_thread::sleep_for(5ms);
    }
  }

  // Every rank exits 0 within `timeout`; otherwise fails the test with the logs.
  void ExpectAllSucceed(std::chrono::milliseconds timeout = 120000ms) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (int r = 0; r < world_; ++r) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      int code = WaitExit(r, std::max(left, 1ms));
      EXPECT_EQ(code, 0) << "rank " << r << " of " << scenario_ << " (" << mode_ << ")"
                         << (code == -1 ? " did not exit in time" : " failed") << "; log:\n"
                         << Log(r);
    }
  }

  void Signal(int rank, int sig) {
    pid_t pid = pids_[static_cast<size_t>(rank)];
    if (pid > 0) ::kill(pid, sig);
  }

  bool AwaitFile(const std::string& name, std::chrono::milliseconds timeout) {
    return WaitForFile(dir_ + "/" + name, timeout);
  }

  std::string Read(const std::string& name) const {
    std::string data;
    EXPECT_TRUE(ReadWholeFile(dir_ + "/" + name, &data)) << "missing output " << name;
    return data;
  }

  std::string Log(int rank) const {
    std::string data;
    ReadWholeFile(dir_ + "/log." + std::to_string(rank), &data);
    return data;
  }

 private:
  void Spawn(int rank) {
    std::vector<std::string> argv = {PeerBinary(), scenario_, std::to_string(rank), std::to_string(world_), dir_, mode_};
    argv.insert(argv.end(), args_.begin(), args_.end());
    std::string log = dir_ + "/log." + std::to_string(rank);
    pid_t pid = ::fork();
    if (pid == 0) {
      FILE* f = std::freopen(log.c_str(), "w", stderr);
      if (f) ::dup2(::fileno(stderr), 1);
      std::vector<char*> cargv;
      for (auto& a : argv) cargv.push_back(a.data());
      cargv.push_back(nullptr);
      ::execv(cargv[0], cargv.data());
      std::_Exit(127);
    }
    pids_[static_cast<size_t>(rank)] = pid;
  }

  std::string scenario_;
  int world_;
  std::string mode_;
  std::vector<std::string> args_;
  std::string dir_;
  std::vector<pid_t> pids_;
  std::vector<int> status_;
};

class CommProcessTest : public ::testing::TestWithParam<std::string> {
 protected:
  const std::string& mode() const { return GetParam(); }
};

// ---- point to point ----------------------------------------------------------------------------------------

TEST_P(CommProcessTest, P2pRoundTripOfEverySizeIncludingEmptyAndMultiMiB) {
  Peers peers("p2p", 2, mode());
  peers.ExpectAllSucceed();
  for (size_t size : {0ul, 1ul, 8ul, 100ul, 4096ul, 8255ul, 8257ul, 65536ul, (1ul << 20) + 3, 3ul << 20}) {
    std::string expected = AsBytes(Pattern(size, 0, 1, size));
    std::string there = peers.Read("p2p.1." + std::to_string(size));
    std::string back = peers.Read("p2p.0." + std::to_string(size));
    EXPECT_EQ(there.size(), size) << "rank 1 received a wrong length";
    EXPECT_TRUE(there == expected) << size << " bytes: rank 1 received different bytes";
    EXPECT_TRUE(back == expected) << size << " bytes: the round trip changed the bytes";
  }
}

TEST_P(CommProcessTest, SendThenExitStillDeliversAndLaterReceivesFail) {
  Peers peers("sendexit", 2, mode());
  peers.ExpectAllSucceed();
  std::string out = peers.Read("sendexit.1");
  EXPECT_EQ(out.substr(0, out.find("\nUnavailable")), "OK same\nOK same\nOK same") << out;
  EXPECT_NE(out.find("\nUnavailable"), std::string::npos) << out;
  EXPECT_NE(out.find("rank 0"), std::string::npos) << "the error should name the peer: " << out;
}

// ---- all-to-all --------------------------------------------------------------------------------------------

void CheckAllToAll(Peers& peers, int world, size_t scale) {
  for (int me = 0; me < world; ++me) {
    std::string got = peers.Read("a2a." + std::to_string(me));
    std::vector<std::byte> expected(kAllToAllGap, kUntouched);
    for (int j = 0; j < world; ++j) {
      std::vector<std::byte> p = Pattern(scale, j, me, AllToAllCount(j, me, scale));
      expected.insert(expected.end(), p.begin(), p.end());
      expected.insert(expected.end(), kAllToAllGap, kUntouched);
    }
    EXPECT_EQ(got.size(), expected.size());
    EXPECT_TRUE(got == AsBytes(expected)) << "rank " << me << " received the wrong bytes (scale " << scale << ")";
  }
}

TEST_P(CommProcessTest, AllToAllVWithUnevenAndEmptyCounts) {
  // Some pairs exchange nothing, one exchanges over 2 MiB; every gap between segments stays untouched.
  for (auto [world, scale] : {std::pair{3, size_t{1000}}, std::pair{2, size_t{700001}}}) {
    Peers peers("alltoall", world, mode(), {std::to_string(scale)});
    peers.ExpectAllSucceed();
    CheckAllToAll(peers, world, scale);
  }
}

// ---- reductions and gathers --------------------------------------------------------------------------------

std::vector<std::vector<int>> ParseGroups(const std::string& spec) {
  std::vector<std::vector<int>> groups(1);
  std::string num;
  for (char c : spec + "/") {
    if (c == ',' || c == '/') {
      groups.back().push_back(std::stoi(num));
      num.clear();
      if (c == '/') groups.emplace_back();
    } else {
      num += c;
    }
  }
  groups.pop_back();
  return groups;
}

// Element-wise sum in group order, the order the communicator promises.
std::vector<float> SerialSum(const std::vector<int>& order, uint64_t seed, size_t n) {
  std::vector<float> sum = Inputs(seed, order[0], n);
  for (size_t k = 1; k < order.size(); ++k) {
    std::vector<float> x = Inputs(seed, order[k], n);
    for (size_t i = 0; i < n; ++i) sum[i] += x[i];
  }
  return sum;
}

std::vector<float> Slice(const std::vector<float>& v, size_t at, size_t n) {
  return std::vector<float>(v.begin() + static_cast<ptrdiff_t>(at), v.begin() + static_cast<ptrdiff_t>(at + n));
}

void CheckCollectives(Peers& peers, const std::string& spec, const std::vector<size_t>& sizes, uint64_t seed) {
  for (const std::vector<int>& group : ParseGroups(spec)) {
    const size_t n = group.size();
    for (size_t s : sizes) {
      std::string suffix = "." + std::to_string(s);
      std::vector<float> ar = SerialSum(group, seed + s, s);
      std::vector<float> rs = SerialSum(group, seed + 1 + s, s * n);
      std::vector<size_t> counts(n), gcounts(n);
      for (size_t j = 0; j < n; ++j) counts[j] = s + j, gcounts[j] = s + 3 * j;
      std::vector<size_t> offsets = ExclusiveOffsets(counts);
      std::vector<float> rsv = SerialSum(group, seed + 2 + s, Sum(counts));
      std::vector<std::byte> ag, agv;
      for (size_t k = 0; k < n; ++k) {
        auto p = Pattern(seed + s, group[k], 0, s);
        ag.insert(ag.end(), p.begin(), p.end());
        auto q = Pattern(seed + s, group[k], 1, gcounts[k]);
        agv.insert(agv.end(), q.begin(), q.end());
      }
      for (size_t j = 0; j < n; ++j) {
        std::string p = "coll." + std::to_string(group[j]) + ".";
        std::string where = " on rank " + std::to_string(group[j]) + " of group " + spec + ", " +
                            std::to_string(s) + " elements";
        EXPECT_TRUE(peers.Read(p + "allreduce0" + suffix) == AsBytes(ar)) << "AllReduce" << where;
        EXPECT_TRUE(peers.Read(p + "allreduce1" + suffix) == AsBytes(ar)) << "AllReduce (repeat)" << where;
        EXPECT_TRUE(peers.Read(p + "reducescatter" + suffix) == AsBytes(Slice(rs, j * s, s))) << "ReduceScatter" << where;
        EXPECT_TRUE(peers.Read(p + "reducescatterv" + suffix) == AsBytes(Slice(rsv, offsets[j], counts[j])))
            << "ReduceScatter(counts)" << where;
        EXPECT_TRUE(peers.Read(p + "allgather" + suffix) == AsBytes(ag)) << "AllGather" << where;
        EXPECT_TRUE(peers.Read(p + "allgatherv" + suffix) == AsBytes(agv)) << "AllGather(counts)" << where;
      }
    }
  }
}

TEST(CommReferenceTest, SummationOrderChangesTheBitsSoBitwiseChecksHaveTeeth) {
  std::vector<float> forward = SerialSum({0, 1, 2}, 99, 1000), backward = SerialSum({2, 1, 0}, 99, 1000);
  EXPECT_NE(AsBytes(forward), AsBytes(backward));
}

TEST_P(CommProcessTest, CollectivesOverTwoRanksEqualTheSerialReferenceBitwise) {
  Peers peers("collectives", 2, mode(), {"0,1", "0,1,7,1000,262144", "5"});
  peers.ExpectAllSucceed();
  CheckCollectives(peers, "0,1", {0, 1, 7, 1000, 262144}, 5);
}

TEST_P(CommProcessTest, CollectivesOverThreeRanksEqualTheSerialReferenceBitwise) {
  Peers peers("collectives", 3, mode(), {"2,0,1", "1,7,1000,100003", "6"});
  peers.ExpectAllSucceed();
  CheckCollectives(peers, "2,0,1", {1, 7, 1000, 100003}, 6);
}

TEST_P(CommProcessTest, CollectivesOverFourRanksAndOverSubgroupsEqualTheSerialReferenceBitwise) {
  {
    Peers peers("collectives", 4, mode(), {"0,1,2,3", "1,13,30000", "7"});
    peers.ExpectAllSucceed();
    CheckCollectives(peers, "0,1,2,3", {1, 13, 30000}, 7);
  }
  {
    // Two disjoint subgroups at once, one listed out of rank order (its sums run 3 then 1).
    Peers peers("collectives", 4, mode(), {"0,2/3,1", "5,40000", "8"});
    peers.ExpectAllSucceed();
    CheckCollectives(peers, "0,2/3,1", {5, 40000}, 8);
  }
}

TEST_P(CommProcessTest, ConcurrentCollectivesOfGroupsWithTheSameMembersDoNotMix) {
  Peers peers("concurrent", 3, mode());
  peers.ExpectAllSucceed();
  std::vector<float> a = SerialSum({0, 1, 2}, 11, 100000), b = SerialSum({2, 1, 0}, 12, 100000);
  for (int r = 0; r < 3; ++r) {
    EXPECT_TRUE(peers.Read("conc." + std::to_string(r) + ".a") == AsBytes(a)) << "rank " << r;
    EXPECT_TRUE(peers.Read("conc." + std::to_string(r) + ".b") == AsBytes(b)) << "rank " << r;
  }
}

// ---- overlap -----------------------------------------------------------------------------------------------

TEST_P(CommProcessTest, AllToAllVCompletesWhileTheCallerComputesWithoutWaiting) {
  Peers peers("overlap", 2, mode());
  peers.ExpectAllSucceed();
  EXPECT_EQ(peers.Read("overlap.0"), "1");
  EXPECT_EQ(peers.Read("overlap.1"), "1");
}

// ---- failures ----------------------------------------------------------------------------------------------

TEST_P(CommProcessTest, KillingOneRankMidCollectiveEndsEverySurvivorsWaitWithAnErrorNamingIt) {
  const int world = 3, victim = 1;
  Peers peers("fault", world, mode(), {std::to_string(victim), "30000"});
  for (int r = 0; r < world; ++r) {
    ASSERT_TRUE(peers.AwaitFile("started." + std::to_string(r), 60s)) << "rank " << r << " never got going:\n"
                                                                      << peers.Log(r);
  }
  peers.Signal(victim, SIGKILL);
  for (int r = 0; r < world; ++r) {
    if (r == victim) continue;
    // Well inside the survivors' 30 s Wait deadline: UCX reports the dead peer (tcp mode: the data endpoint;
    // shm mode: the liveness endpoint).
    ASSERT_EQ(peers.WaitExit(r, 25s), 0) << "rank " << r << " hung or failed after the kill:\n" << peers.Log(r);
    std::string result = peers.Read("fault." + std::to_string(r));
    std::string code = result.substr(0, result.find('\n'));
    EXPECT_TRUE(code == "Unavailable" || code == "DeadlineExceeded") << result;
    EXPECT_NE(result.find("rank " + std::to_string(victim)), std::string::npos)
        << "the error should name the dead rank: " << result;
  }
}

TEST_P(CommProcessTest, AHungRankEndsWaitsWithDeadlineExceededNamingItAndCancelReleases) {
  const int world = 3, victim = 2;
  Peers peers("fault", world, mode(), {std::to_string(victim), "1500", "cancel"});
  for (int r = 0; r < world; ++r) {
    ASSERT_TRUE(peers.AwaitFile("started." + std::to_string(r), 60s)) << peers.Log(r);
  }
  peers.Signal(victim, SIGSTOP);
  for (int r = 0; r < world; ++r) {
    if (r == victim) continue;
    ASSERT_EQ(peers.WaitExit(r, 30s), 0) << "rank " << r << ":\n" << peers.Log(r);
    std::string result = peers.Read("fault." + std::to_string(r));
    EXPECT_EQ(result.substr(0, result.find('\n')), "DeadlineExceeded") << result;
    // The stopped rank is among those it still waits on (others may wait on it indirectly).
    size_t waiting = result.find("still waiting on ");
    ASSERT_NE(waiting, std::string::npos) << result;
    EXPECT_NE(result.find("rank " + std::to_string(victim), waiting), std::string::npos) << result;
    std::string cancel = peers.Read("cancel." + std::to_string(r));
    EXPECT_TRUE(cancel == "Cancelled" || cancel == "Unavailable") << cancel;
  }
  peers.Signal(victim, SIGKILL);
}

TEST_P(CommProcessTest, MessagesOfAnOlderEpochNeverMatchAndAreDrained) {
  Peers peers("epoch", 2, mode());
  peers.ExpectAllSucceed();
  EXPECT_EQ(peers.Read("epoch.early"), "DeadlineExceeded") << "the epoch-1 message matched an epoch-2 receive";
  std::string got = peers.Read("epoch.got");
  EXPECT_EQ(got, std::string("new-epoch-message", sizeof("new-epoch-message")));
  EXPECT_GE(std::stoi(peers.Read("epoch.drained")), 1);
}

TEST_P(CommProcessTest, CancelWithdrawsReceivesCutsUnconsumedSendsAndConnectRebuilds) {
  Peers peers("cancel", 2, mode());
  peers.ExpectAllSucceed();
  std::string zero = peers.Read("cancel.0"), one = peers.Read("cancel.1");
  EXPECT_NE(zero.find("recv_wait DeadlineExceeded\n"), std::string::npos) << zero;
  EXPECT_NE(zero.find("recv_cancel Cancelled\n"), std::string::npos) << zero;
  // Sends pair with receives in order per (peer, tag): "first" belonged to the withdrawn receive.
  EXPECT_NE(zero.find(std::string("recv_next second") + '\0' + "\n"), std::string::npos) << zero;
  EXPECT_NE(zero.find("send_wait DeadlineExceeded\n"), std::string::npos) << zero;
  EXPECT_NE(zero.find("send_cancel Cancelled\n"), std::string::npos) << zero;
  EXPECT_EQ(zero.find("broken_links 0\n"), std::string::npos) << zero;
  EXPECT_NE(one.find("recv_after_cut Unavailable\n"), std::string::npos) << one;
  EXPECT_NE(one.find(std::string("recv_after_reconnect after-reconnect") + '\0'), std::string::npos) << one;
}

INSTANTIATE_TEST_SUITE_P(Transports, CommProcessTest, ::testing::Values("shm", "tcp"),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

}  // namespace
}  // namespace shoal::comm::testing
