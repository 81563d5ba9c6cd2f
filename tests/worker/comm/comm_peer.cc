// One rank of a multi-process comm test: creates a Communicator, publishes its address in the test directory,
// connects to the others, runs a scenario and writes what it received to files the test compares against
// serial references. Errors go to stderr and a non-zero exit; outcomes the test asserts on go to files.
//
//   comm_peer SCENARIO RANK WORLD DIR MODE [ARG...]
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "tests/worker/comm/comm_test_util.h"
#include "worker/comm/communicator.h"

namespace {

using namespace shoal;
using namespace shoal::comm;
using namespace shoal::comm::testing;
using namespace std::chrono_literals;

constexpr auto kWait = 60s;         // generous: a healthy run never comes close
constexpr auto kFileWait = 60000ms;

struct Env {
  std::string scenario;
  int rank = 0;
  int world = 0;
  std::string dir;
  std::vector<std::string> args;
  std::unique_ptr<Communicator> comm;
  std::map<int, std::string> peers;

  std::string Path(const std::string& name) const { return dir + "/" + name; }
  void Write(const std::string& name, const std::string& data) const {
    if (!WriteFileAtomically(Path(name), data)) {
      std::fprintf(stderr, "rank %d: cannot write %s\n", rank, name.c_str());
      std::exit(3);
    }
  }
  void Mark(const std::string& name) const { Write(name, "1"); }
  void AwaitMark(const std::string& name) const {
    if (!WaitForFile(Path(name), kFileWait)) {
      std::fprintf(stderr, "rank %d: marker %s never appeared\n", rank, name.c_str());
      std::exit(3);
    }
  }
};

[[noreturn]] void Die(const Env& env, const std::string& what, const Status& s) {
  std::fprintf(stderr, "rank %d: %s: %s\n", env.rank, what.c_str(), s.ToString().c_str());
  std::exit(2);
}

void Check(const Env& env, const std::string& what, const Status& s) {
  if (!s.ok()) Die(env, what, s);
}

void WaitOk(const Env& env, CommHandle& h) { Check(env, h.name(), h.Wait(kWait)); }

std::vector<int> ParseInts(const std::string& text, char sep) {
  std::vector<int> out;
  size_t at = 0;
  while (at < text.size()) {
    size_t end = text.find(sep, at);
    if (end == std::string::npos) end = text.size();
    out.push_back(std::stoi(text.substr(at, end - at)));
    at = end + 1;
  }
  return out;
}

// "0,2/1,3": the group that contains this rank.
Group MyGroup(const Env& env, const std::string& spec) {
  size_t at = 0;
  while (at <= spec.size()) {
    size_t end = spec.find('/', at);
    if (end == std::string::npos) end = spec.size();
    std::vector<int> ranks = ParseInts(spec.substr(at, end - at), ',');
    for (int r : ranks) {
      if (r == env.rank) {
        Result<Group> g = Group::Create(ranks);
        Check(env, "group " + spec, g.status());
        return *g;
      }
    }
    at = end + 1;
  }
  std::fprintf(stderr, "rank %d is in no group of %s\n", env.rank, spec.c_str());
  std::exit(3);
}

void Connect(Env& env, uint64_t epoch) { Check(env, "Connect", env.comm->Connect(epoch, env.rank, env.peers)); }

void Barrier(Env& env, const Group& group) {
  std::vector<std::byte> one(1), all(static_cast<size_t>(group.size()));
  CommHandle h = env.comm->AllGather(group, one, all);
  WaitOk(env, h);
}

Group World(const Env& env) {
  std::vector<int> ranks;
  for (int r = 0; r < env.world; ++r) ranks.push_back(r);
  return *Group::Create(ranks);
}

// ---- scenarios ---------------------------------------------------------------------------------------------

const std::vector<size_t> kP2pSizes = {0, 1, 8, 100, 4096, 8255, 8257, 65536, (1u << 20) + 3, 3u << 20};

// Rank 0 sends every size at once, rank 1 receives them all (into larger buffers) and sends each back.
void P2p(Env& env) {
  const int other = 1 - env.rank;
  std::vector<std::vector<std::byte>> got(kP2pSizes.size());
  std::vector<CommHandle> handles;
  std::vector<std::vector<std::byte>> sent;
  if (env.rank == 0) {
    for (size_t k = 0; k < kP2pSizes.size(); ++k) sent.push_back(Pattern(kP2pSizes[k], 0, 1, kP2pSizes[k]));
    for (size_t k = 0; k < kP2pSizes.size(); ++k) handles.push_back(env.comm->Send(other, 100 + k, sent[k]));
    for (auto& h : handles) WaitOk(env, h);
    handles.clear();
  }
  for (size_t k = 0; k < kP2pSizes.size(); ++k) {
    got[k].assign(kP2pSizes[k] + 16, kUntouched);
    handles.push_back(env.comm->Recv(other, 100 + k, got[k]));
  }
  if (env.rank == 1) {
    for (size_t k = 0; k < kP2pSizes.size(); ++k) {
      WaitOk(env, handles[k]);
      got[k].resize(handles[k].received_bytes());
    }
    std::vector<CommHandle> sends;
    for (size_t k = 0; k < kP2pSizes.size(); ++k) sends.push_back(env.comm->Send(other, 100 + k, got[k]));
    for (auto& h : sends) WaitOk(env, h);
  } else {
    for (size_t k = 0; k < kP2pSizes.size(); ++k) {
      WaitOk(env, handles[k]);
      got[k].resize(handles[k].received_bytes());
    }
  }
  for (size_t k = 0; k < kP2pSizes.size(); ++k) {
    env.Write("p2p." + std::to_string(env.rank) + "." + std::to_string(kP2pSizes[k]), AsBytes(got[k]));
  }
  Barrier(env, World(env));
}

// args[0]: group spec; args[1]: comma-separated element counts; args[2]: seed.
void Collectives(Env& env) {
  Group group = MyGroup(env, env.args.at(0));
  std::vector<int> sizes = ParseInts(env.args.at(1), ',');
  uint64_t seed = std::stoull(env.args.at(2));
  const int n = group.size();
  const int me = group.IndexOf(env.rank);
  std::string prefix = "coll." + std::to_string(env.rank) + ".";
  for (int s : sizes) {
    const size_t count = static_cast<size_t>(s);
    std::string suffix = "." + std::to_string(s);
    // AllReduce, twice (repeatability).
    for (int rep = 0; rep < 2; ++rep) {
      std::vector<float> data = Inputs(seed + count, env.rank, count);
      CommHandle h = env.comm->AllReduce(group, data);
      WaitOk(env, h);
      env.Write(prefix + "allreduce" + std::to_string(rep) + suffix, AsBytes(data));
    }
    // ReduceScatter, equal chunks of `count` floats.
    {
      std::vector<float> in = Inputs(seed + 1 + count, env.rank, count * static_cast<size_t>(n));
      std::vector<float> out(count, -1.0f);
      CommHandle h = env.comm->ReduceScatter(group, in, out);
      WaitOk(env, h);
      env.Write(prefix + "reducescatter" + suffix, AsBytes(out));
    }
    // ReduceScatter with uneven counts: member j gets count + j floats.
    {
      std::vector<size_t> counts(static_cast<size_t>(n));
      for (int j = 0; j < n; ++j) counts[static_cast<size_t>(j)] = count + static_cast<size_t>(j);
      std::vector<float> in = Inputs(seed + 2 + count, env.rank, Sum(counts));
      std::vector<float> out(counts[static_cast<size_t>(me)], -1.0f);
      CommHandle h = env.comm->ReduceScatter(group, in, out, counts);
      WaitOk(env, h);
      env.Write(prefix + "reducescatterv" + suffix, AsBytes(out));
    }
    // AllGather, equal and uneven (member j contributes count + 3j bytes).
    {
      std::vector<std::byte> mine = Pattern(seed + count, env.rank, 0, count);
      std::vector<std::byte> all(count * static_cast<size_t>(n), kUntouched);
      CommHandle h = env.comm->AllGather(group, mine, all);
      WaitOk(env, h);
      env.Write(prefix + "allgather" + suffix, AsBytes(all));
    }
    {
      std::vector<size_t> counts(static_cast<size_t>(n));
      for (int j = 0; j < n; ++j) counts[static_cast<size_t>(j)] = count + 3 * static_cast<size_t>(j);
      std::vector<std::byte> mine = Pattern(seed + count, env.rank, 1, counts[static_cast<size_t>(me)]);
      std::vector<std::byte> all(Sum(counts), kUntouched);
      CommHandle h = env.comm->AllGather(group, mine, all, counts);
      WaitOk(env, h);
      env.Write(prefix + "allgatherv" + suffix, AsBytes(all));
    }
  }
  Barrier(env, World(env));
}

// Two all-reduces on groups with the same members in different orders, in flight at once.
void Concurrent(Env& env) {
  std::vector<int> forward, backward;
  for (int r = 0; r < env.world; ++r) forward.push_back(r);
  for (int r = env.world - 1; r >= 0; --r) backward.push_back(r);
  Group a = *Group::Create(forward, 1);
  Group b = *Group::Create(backward, 2);
  const size_t count = 100000;
  std::vector<float> x = Inputs(11, env.rank, count), y = Inputs(12, env.rank, count);
  CommHandle ha = env.comm->AllReduce(a, x);
  CommHandle hb = env.comm->AllReduce(b, y);
  WaitOk(env, hb);
  WaitOk(env, ha);
  env.Write("conc." + std::to_string(env.rank) + ".a", AsBytes(x));
  env.Write("conc." + std::to_string(env.rank) + ".b", AsBytes(y));
  Barrier(env, a);
}

// args[0]: scale (bytes per unit of AllToAllCount).
void AllToAll(Env& env) {
  size_t scale = std::stoull(env.args.at(0));
  const int n = env.world;
  Group group = World(env);
  std::vector<size_t> sc(n), so(n), rc(n), ro(n);
  size_t s_at = kAllToAllGap, r_at = kAllToAllGap;
  for (int j = 0; j < n; ++j) {
    sc[j] = AllToAllCount(env.rank, j, scale);
    so[j] = s_at;
    s_at += sc[j] + kAllToAllGap;
    rc[j] = AllToAllCount(j, env.rank, scale);
    ro[j] = r_at;
    r_at += rc[j] + kAllToAllGap;
  }
  std::vector<std::byte> send(s_at, std::byte{0}), recv(r_at, kUntouched);
  for (int j = 0; j < n; ++j) {
    std::vector<std::byte> p = Pattern(scale, env.rank, j, sc[j]);
    std::copy(p.begin(), p.end(), send.begin() + static_cast<ptrdiff_t>(so[j]));
  }
  CommHandle h = env.comm->AllToAllV(group, send, sc, so, recv, rc, ro);
  WaitOk(env, h);
  env.Write("a2a." + std::to_string(env.rank), AsBytes(recv));
  Barrier(env, group);
}

// args[0]: victim rank. Everyone loops all-reduces; the test kills (or stops) the victim; survivors record how
// their collective ended. args[1]: Wait deadline in ms; args[2]: "cancel" to Cancel after a failed Wait.
void Fault(Env& env) {
  const int victim = std::stoi(env.args.at(0));
  const auto deadline = std::chrono::milliseconds(std::stoi(env.args.at(1)));
  const bool cancel = env.args.size() > 2 && env.args[2] == "cancel";
  Group group = World(env);
  std::vector<float> data(1 << 20);
  for (int iter = 0;; ++iter) {
    for (size_t i = 0; i < data.size(); ++i) data[i] = InputValue(iter, env.rank, i);
    CommHandle h = env.comm->AllReduce(group, data);
    Status s = h.Wait(deadline);
    if (!s.ok() && cancel) {
      Status c = h.Cancel();
      env.Write("cancel." + std::to_string(env.rank), std::string(StatusCodeName(c.code())));
    }
    if (!s.ok()) {
      env.Write("fault." + std::to_string(env.rank), std::string(StatusCodeName(s.code())) + "\n" + s.message());
      // Survivors stay up until every survivor has its verdict, as real workers wait for the coordinator: one
      // leaving early would be a second failure that the others might report first.
      for (int r = 0; r < env.world; ++r) {
        if (r != victim) env.AwaitMark("fault." + std::to_string(r));
      }
      return;
    }
    if (iter == 0) env.Mark("started." + std::to_string(env.rank));
    if (env.rank == victim && iter > 100000) return;
  }
}

// A message sent in an older epoch never matches a receive of the current one, and is drained.
void Epoch(Env& env) {
  const char kOld[] = "old-epoch-message";
  const char kNew[] = "new-epoch-message";
  if (env.rank == 1) {
    Connect(env, 1);
    CommHandle h = env.comm->Send(0, 5, std::as_bytes(std::span(kOld)));
    WaitOk(env, h);
    env.Mark("old-sent");
    env.AwaitMark("zero-ready");
    Connect(env, 2);
    CommHandle h2 = env.comm->Send(0, 5, std::as_bytes(std::span(kNew)));
    WaitOk(env, h2);
    env.AwaitMark("zero-done");
    return;
  }
  Connect(env, 2);
  env.AwaitMark("old-sent");
  std::vector<std::byte> buf(64, kUntouched);
  CommHandle h = env.comm->Recv(1, 5, buf);
  Status early = h.Wait(500ms);  // only the old message exists: it must not match
  env.Write("epoch.early", std::string(StatusCodeName(early.code())));
  env.Mark("zero-ready");
  WaitOk(env, h);  // the same receive now gets rank 1's epoch-2 message
  buf.resize(h.received_bytes());
  env.Write("epoch.got", AsBytes(buf));
  // The stale message is drained within a few housekeeping periods.
  for (int i = 0; i < 2000 && env.comm->stats().drained_messages == 0; ++i) std::this_thread::sleep_for(1ms);
  env.Write("epoch.drained", std::to_string(env.comm->stats().drained_messages));
  env.Mark("zero-done");
}

// Cancel: a receive, a rendezvous send nobody receives (the link is cut, then rebuilt by Connect), RAII.
void Cancel(Env& env) {
  std::string out;
  auto note = [&](const std::string& key, const std::string& value) {
    out += key + " " + value + "\n";
    std::fprintf(stderr, "rank %d: %s %s\n", env.rank, key.c_str(), value.c_str());
  };
  if (env.rank == 0) {
    // (a) A receive nobody sends to: Cancel returns Cancelled; the next receive of the same tag pairs with the
    // peer's next send, not with the one sent after the cancel for the withdrawn receive.
    std::vector<std::byte> buf(32, kUntouched);
    CommHandle r = env.comm->Recv(1, 9, buf);
    note("recv_wait", std::string(StatusCodeName(r.Wait(200ms).code())));
    note("recv_cancel", std::string(StatusCodeName(r.Cancel().code())));
    env.Mark("a-cancelled");
    CommHandle r2 = env.comm->Recv(1, 9, buf);
    WaitOk(env, r2);
    note("recv_next", std::string(reinterpret_cast<const char*>(buf.data()), r2.received_bytes()));
    // (b) RAII: a pending receive dropped without Wait is cancelled; the communicator carries on.
    { CommHandle dropped = env.comm->Recv(1, 10, buf); }
    // (c) A large send rank 1 never receives: Cancel returns once the link is cut.
    std::vector<std::byte> big(8 << 20, std::byte{1});
    CommHandle s = env.comm->Send(1, 11, big);
    note("send_wait", std::string(StatusCodeName(s.Wait(300ms).code())));
    note("send_cancel", std::string(StatusCodeName(s.Cancel().code())));
    note("broken_links", std::to_string(env.comm->stats().broken_links));
    env.Mark("c-cancelled");
    env.AwaitMark("c-seen");
    // (d) The next epoch rebuilds the link.
    Connect(env, 8);
    env.Mark("zero-epoch2");
    const char kAfter[] = "after-reconnect";
    CommHandle s2 = env.comm->Send(1, 12, std::as_bytes(std::span(kAfter)));
    WaitOk(env, s2);
    env.AwaitMark("one-done");
    env.Write("cancel.0", out);
    return;
  }
  env.AwaitMark("a-cancelled");
  const char kFirst[] = "first";
  const char kSecond[] = "second";
  CommHandle s1 = env.comm->Send(0, 9, std::as_bytes(std::span(kFirst)));
  CommHandle s2 = env.comm->Send(0, 9, std::as_bytes(std::span(kSecond)));
  WaitOk(env, s1);
  WaitOk(env, s2);
  env.AwaitMark("c-cancelled");
  // Rank 0 cut the link: a receive from it now fails instead of waiting.
  std::vector<std::byte> buf(32);
  CommHandle r = env.comm->Recv(0, 13, buf);
  Status st = r.Wait(20s);
  note("recv_after_cut", std::string(StatusCodeName(st.code())));
  env.Mark("c-seen");
  env.AwaitMark("zero-epoch2");
  Connect(env, 8);
  CommHandle r2 = env.comm->Recv(0, 12, buf);
  WaitOk(env, r2);
  note("recv_after_reconnect", std::string(reinterpret_cast<const char*>(buf.data()), r2.received_bytes()));
  env.Write("cancel.1", out);
  env.Mark("one-done");
}

// The caller computes without touching the communicator; the exchange must finish meanwhile.
void Overlap(Env& env) {
  Group group = World(env);
  const size_t per_peer = 4 << 20;
  const int n = env.world;
  std::vector<size_t> counts(n, per_peer), offsets = ExclusiveOffsets(counts);
  std::vector<std::byte> send(per_peer * n, std::byte{7}), recv(per_peer * n);
  CommHandle h = env.comm->AllToAllV(group, send, counts, offsets, recv, counts, offsets);
  bool done_during_compute = false;
  volatile float sink = 0;
  auto give_up = std::chrono::steady_clock::now() + 30s;
  while (std::chrono::steady_clock::now() < give_up) {
    float acc = 0;
    for (int i = 0; i < 200000; ++i) acc += static_cast<float>(i) * 1e-7f;
    sink = sink + acc;
    if (h.Done()) {
      done_during_compute = true;
      break;
    }
  }
  WaitOk(env, h);
  env.Write("overlap." + std::to_string(env.rank), done_during_compute ? "1" : "0");
  Barrier(env, group);
}

// Rank 0 sends eager-size messages, closes its communicator and exits; rank 1 receives them afterwards.
void SendExit(Env& env) {
  const std::vector<size_t> sizes = {1, 1000, 4000};
  if (env.rank == 0) {
    std::vector<std::vector<std::byte>> msgs;
    std::vector<CommHandle> hs;
    for (size_t k = 0; k < sizes.size(); ++k) msgs.push_back(Pattern(77, 0, 1, sizes[k]));
    for (size_t k = 0; k < sizes.size(); ++k) hs.push_back(env.comm->Send(1, 20 + k, msgs[k]));
    for (auto& h : hs) WaitOk(env, h);
    env.comm.reset();
    env.Mark("zero-gone");
    return;
  }
  env.AwaitMark("zero-gone");
  std::string out;
  for (size_t k = 0; k < sizes.size(); ++k) {
    std::vector<std::byte> buf(sizes[k]);
    CommHandle h = env.comm->Recv(0, 20 + k, buf);
    Status s = h.Wait(20s);
    out += std::string(StatusCodeName(s.code())) + " " + (buf == Pattern(77, 0, 1, sizes[k]) ? "same" : "differs") + "\n";
  }
  // A message that was never sent: the peer is gone, so this fails instead of waiting.
  std::vector<std::byte> buf(8);
  CommHandle h = env.comm->Recv(0, 99, buf);
  Status s = h.Wait(20s);
  out += std::string(StatusCodeName(s.code())) + " " + s.message() + "\n";
  env.Write("sendexit.1", out);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 6) {
    std::fprintf(stderr, "usage: comm_peer SCENARIO RANK WORLD DIR MODE [ARG...]\n");
    return 64;
  }
  Env env;
  env.scenario = argv[1];
  env.rank = std::atoi(argv[2]);
  env.world = std::atoi(argv[3]);
  env.dir = argv[4];
  for (int i = 6; i < argc; ++i) env.args.push_back(argv[i]);
  CommunicatorOptions options;
  Result<Transport> transport = ParseTransport(argv[5]);
  Check(env, "mode", transport.status());
  options.transport = *transport;
  options.send_withdraw_grace = std::chrono::milliseconds(300);
  Result<std::unique_ptr<Communicator>> comm = Communicator::Create(options);
  Check(env, "Communicator::Create", comm.status());
  env.comm = std::move(*comm);
  env.Write("addr." + std::to_string(env.rank), env.comm->address());
  for (int r = 0; r < env.world; ++r) {
    std::string address;
    if (!WaitForFile(env.Path("addr." + std::to_string(r)), kFileWait, &address)) {
      std::fprintf(stderr, "rank %d: no address from rank %d\n", env.rank, r);
      return 3;
    }
    env.peers[r] = address;
  }
  if (env.scenario != "epoch") {
    Connect(env, 7);
    Barrier(env, World(env));  // every rank is connected before anyone may finish and leave
  }
  if (env.scenario == "p2p") {
    P2p(env);
  } else if (env.scenario == "collectives") {
    Collectives(env);
  } else if (env.scenario == "concurrent") {
    Concurrent(env);
  } else if (env.scenario == "alltoall") {
    AllToAll(env);
  } else if (env.scenario == "fault") {
    Fault(env);
  } else if (env.scenario == "epoch") {
    Epoch(env);
  } else if (env.scenario == "cancel") {
    Cancel(env);
  } else if (env.scenario == "overlap") {
    Overlap(env);
  } else if (env.scenario == "sendexit") {
    SendExit(env);
  } else {
    std::fprintf(stderr, "unknown scenario %s\n", env.scenario.c_str());
    return 64;
  }
  env.comm.reset();
  return 0;
}
