// Data-plane benchmark (STYLE.md §16): two processes on this host, per transport mode (shm, tcp), print
//   * point-to-point bandwidth of Communicator Send/Recv, 1 KiB .. 16 MiB, and 8-byte latency,
//   * next to ceilings measured in the same run for the same UCX transport: a raw single-threaded UCP loop
//     written here (busy-polling, no progress thread, no handles) and ucx_perftest tag_bw / tag_lat when it
//     is on PATH,
//   * the MoE dispatch + combine bandwidth of AllToAllV between the 2 ranks (demo: 2048 tokens x top-2 x 128
//     floats; small: 256 channels), and an all-reduce, as fractions of a raw UCP exchange of the same
//     messages (both ranks send and receive at once, as the collective does).
// Ratios are what count; absolute numbers move with the machine's load. Every figure is the best of --reps.
//
//   bench_comm [--modes shm,tcp] [--reps 3] [--max-size 16777216] [--no-perftest]
//   (internally: bench_comm --peer RANK DIR MODE, one per rank)
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <ucp/api/ucp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "worker/comm/communicator.h"
#include "worker/comm/ucx_util.h"

namespace {

using namespace shoal;
using namespace shoal::comm;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr size_t kLatencyBytes = 8;
constexpr auto kWait = 60s;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

[[noreturn]] void Fail(const std::string& what) {
  std::fprintf(stderr, "bench_comm: %s\n", what.c_str());
  std::exit(1);
}
void Check(const Status& s, const std::string& what) {
  if (!s.ok()) Fail(what + ": " + s.ToString());
}

bool WriteAtomically(const std::string& path, const std::string& data) {
  {
    std::ofstream f(path + ".tmp", std::ios::binary);
    f << data;
    if (!f) return false;
  }
  return std::rename((path + ".tmp").c_str(), path.c_str()) == 0;
}

std::string AwaitFile(const std::string& path) {
  auto deadline = Clock::now() + 60s;
  while (Clock::now() < deadline) {
    std::ifstream f(path, std::ios::binary);
    if (f) {
      std::stringstream ss;
      ss << f.rdbuf();
      return ss.str();
    }
    std::this_thread::sleep_for(2ms);
  }
  Fail("timed out waiting for " + path);
}

std::vector<size_t> Sizes(size_t max_size) {
  std::vector<size_t> sizes;
  for (size_t s = 1024; s <= max_size; s *= 4) sizes.push_back(s);
  return sizes;
}

// Iterations that move about 256 MiB (at least 20, at most 5000).
int ItersFor(size_t bytes) {
  return static_cast<int>(std::clamp<size_t>((256u << 20) / std::max<size_t>(bytes, 1), 20, 5000));
}

// ---- the raw UCP ceiling: one thread, busy-polling, same transport settings as the Communicator ------------

class RawUcp {
 public:
  RawUcp(Transport mode, int rank) : mode_(mode), rank_(rank) {
    ucp_config_t* config;
    ucp_config_read(nullptr, nullptr, &config);
    if (mode == Transport::kTcp) ucp_config_modify(config, "TLS", "tcp");
    ucp_params_t params{};
    params.field_mask = UCP_PARAM_FIELD_FEATURES;
    params.features = UCP_FEATURE_TAG;
    Check(UcsToStatus(ucp_init(&params, config, &context_), "raw ucp_init"), "raw");
    ucp_config_release(config);
    ucp_worker_params_t wp{};
    wp.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
    wp.thread_mode = UCS_THREAD_MODE_SINGLE;
    Check(UcsToStatus(ucp_worker_create(context_, &wp, &worker_), "raw ucp_worker_create"), "raw");
    ucp_address_t* address;
    size_t length;
    ucp_worker_get_address(worker_, &address, &length);
    address_.assign(reinterpret_cast<char*>(address), length);
    ucp_worker_release_address(worker_, address);
  }
  ~RawUcp() {
    if (ep_) {
      ucp_request_param_t p{};
      p.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
      p.flags = mode_ == Transport::kTcp ? UCP_EP_CLOSE_FLAG_FORCE : 0;
      void* r = ucp_ep_close_nbx(ep_, &p);
      auto deadline = Clock::now() + 200ms;
      while (r && !UCS_PTR_IS_ERR(r) && ucp_request_check_status(r) == UCS_INPROGRESS && Clock::now() < deadline) {
        ucp_worker_progress(worker_);
      }
      if (r && !UCS_PTR_IS_ERR(r)) ucp_request_free(r);
    }
    ucp_worker_destroy(worker_);
    ucp_cleanup(context_);
  }
  const std::string& address() const { return address_; }
  void Connect(const std::string& peer) {
    ucp_ep_params_t p{};
    p.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE;
    p.address = reinterpret_cast<const ucp_address_t*>(peer.data());
    p.err_mode = mode_ == Transport::kTcp ? UCP_ERR_HANDLING_MODE_PEER : UCP_ERR_HANDLING_MODE_NONE;
    Check(UcsToStatus(ucp_ep_create(worker_, &p, &ep_), "raw ucp_ep_create"), "raw");
  }

  void* Send(const void* buf, size_t n, uint64_t tag) {
    ucp_request_param_t p{};
    void* r = ucp_tag_send_nbx(ep_, buf, n, tag, &p);
    if (UCS_PTR_IS_ERR(r)) Fail("raw send failed");
    return r;
  }
  void* Recv(void* buf, size_t n, uint64_t tag) {
    ucp_request_param_t p{};
    void* r = ucp_tag_recv_nbx(worker_, buf, n, tag, ~uint64_t{0}, &p);
    if (UCS_PTR_IS_ERR(r)) Fail("raw recv failed");
    return r;
  }
  void WaitAll(std::vector<void*>& reqs) {
    for (void* r : reqs) {
      if (r == nullptr) continue;
      while (ucp_request_check_status(r) == UCS_INPROGRESS) {
        // Yield when idle: on an idle machine this costs nothing, on a loaded one the two busy-polling ranks
        // would otherwise starve each other (ucx_perftest does not yield).
        if (ucp_worker_progress(worker_) == 0) sched_yield();
      }
      ucp_request_free(r);
    }
    reqs.clear();
  }
  void Barrier() {
    char a = 0, b = 0;
    std::vector<void*> reqs = {Recv(&b, 1, 999), Send(&a, 1, 999)};
    WaitAll(reqs);
  }

  // Unidirectional: rank 0 streams `iters` messages in windows of `window`, rank 1 acknowledges the end.
  double Bandwidth(std::vector<char>& buf, size_t size, int iters, int window) {
    Barrier();
    auto start = Clock::now();
    std::vector<void*> reqs;
    for (int i = 0; i < iters; i += window) {
      int k = std::min(window, iters - i);
      for (int j = 0; j < k; ++j) {
        reqs.push_back(rank_ == 0 ? Send(buf.data() + (j % 2) * size, size, 1) : Recv(buf.data() + (j % 2) * size, size, 1));
      }
      WaitAll(reqs);
    }
    char ack = 0;
    reqs.push_back(rank_ == 0 ? Recv(&ack, 1, 2) : Send(&ack, 1, 2));
    WaitAll(reqs);
    return static_cast<double>(size) * iters / Seconds(Clock::now() - start);
  }
  // Median half round trip of `size`-byte ping-pongs, in seconds.
  double Latency(size_t size, int iters) {
    std::vector<char> buf(std::max<size_t>(size, 1));
    std::vector<double> samples;
    Barrier();
    std::vector<void*> reqs;
    for (int i = 0; i < iters; ++i) {
      auto t0 = Clock::now();
      if (rank_ == 0) {
        reqs.push_back(Send(buf.data(), size, 3));
        WaitAll(reqs);
        reqs.push_back(Recv(buf.data(), size, 4));
        WaitAll(reqs);
      } else {
        reqs.push_back(Recv(buf.data(), size, 3));
        WaitAll(reqs);
        reqs.push_back(Send(buf.data(), size, 4));
        WaitAll(reqs);
      }
      samples.push_back(Seconds(Clock::now() - t0) / 2);
    }
    std::nth_element(samples.begin(), samples.begin() + samples.size() / 2, samples.end());
    return samples[samples.size() / 2];
  }
  // The same MoE dispatch + combine as CommBench::DispatchCombine, written directly on UCP in one thread:
  // exchange the remote rows, copy the local ones, wait; then back. Bytes sent to the peer per second.
  double DispatchCombine(size_t local_bytes, size_t remote_bytes, int iters) {
    std::vector<char> a(local_bytes + remote_bytes, 1), b(local_bytes + remote_bytes);
    Barrier();
    auto start = Clock::now();
    std::vector<void*> reqs;
    for (int i = 0; i < 2 * iters; ++i) {
      std::vector<char>& from = i % 2 == 0 ? a : b;
      std::vector<char>& to = i % 2 == 0 ? b : a;
      reqs.push_back(Recv(to.data() + local_bytes, remote_bytes, 6));
      reqs.push_back(Send(from.data() + local_bytes, remote_bytes, 6));
      std::memcpy(to.data(), from.data(), local_bytes);
      WaitAll(reqs);
    }
    return 2.0 * static_cast<double>(remote_bytes) * iters / Seconds(Clock::now() - start);
  }
  // Both ranks send `size` bytes to each other at once, `iters` times: bytes sent per rank per second.
  double Exchange(std::vector<char>& out, std::vector<char>& in, size_t size, int iters) {
    Barrier();
    auto start = Clock::now();
    std::vector<void*> reqs;
    for (int i = 0; i < iters; ++i) {
      reqs.push_back(Recv(in.data(), size, 5));
      reqs.push_back(Send(out.data(), size, 5));
      WaitAll(reqs);
    }
    return static_cast<double>(size) * iters / Seconds(Clock::now() - start);
  }

 private:
  Transport mode_;
  int rank_;
  ucp_context_h context_ = nullptr;
  ucp_worker_h worker_ = nullptr;
  ucp_ep_h ep_ = nullptr;
  std::string address_;
};

// ---- the Communicator --------------------------------------------------------------------------------------

void WaitAll(std::vector<CommHandle>& hs) {
  for (auto& h : hs) Check(h.Wait(kWait), h.name());
  hs.clear();
}

struct CommBench {
  Communicator& comm;
  int rank;
  int other() const { return 1 - rank; }
  Group pair = *Group::Create({0, 1});

  void Barrier() {
    std::vector<std::byte> one(1), two(2);
    CommHandle h = comm.AllGather(pair, one, two);
    Check(h.Wait(kWait), "barrier");
  }
  double Bandwidth(std::vector<std::byte>& buf, size_t size, int iters, int window) {
    Barrier();
    auto start = Clock::now();
    std::vector<CommHandle> hs;
    for (int i = 0; i < iters; i += window) {
      int k = std::min(window, iters - i);
      for (int j = 0; j < k; ++j) {
        std::span<std::byte> s(buf.data() + (j % 2) * size, size);
        hs.push_back(rank == 0 ? comm.Send(other(), 1, s) : comm.Recv(other(), 1, s));
      }
      WaitAll(hs);
    }
    std::byte ack{};
    hs.push_back(rank == 0 ? comm.Recv(other(), 2, std::span(&ack, 1)) : comm.Send(other(), 2, std::span(&ack, 1)));
    WaitAll(hs);
    return static_cast<double>(size) * iters / Seconds(Clock::now() - start);
  }
  double Latency(size_t size, int iters) {
    std::vector<std::byte> buf(std::max<size_t>(size, 1));
    std::span<std::byte> s(buf.data(), size);
    std::vector<double> samples;
    Barrier();
    for (int i = 0; i < iters; ++i) {
      auto t0 = Clock::now();
      if (rank == 0) {
        CommHandle a = comm.Send(other(), 3, s);
        Check(a.Wait(kWait), "ping");
        CommHandle b = comm.Recv(other(), 4, s);
        Check(b.Wait(kWait), "pong");
      } else {
        CommHandle a = comm.Recv(other(), 3, s);
        Check(a.Wait(kWait), "ping");
        CommHandle b = comm.Send(other(), 4, s);
        Check(b.Wait(kWait), "pong");
      }
      samples.push_back(Seconds(Clock::now() - t0) / 2);
    }
    std::nth_element(samples.begin(), samples.begin() + samples.size() / 2, samples.end());
    return samples[samples.size() / 2];
  }
  // MoE dispatch then combine of `tokens` x `topk` rows of `hidden` floats between the 2 ranks, half of the
  // routed rows going to the other rank: bytes this rank sends to the other rank per second.
  double DispatchCombine(size_t tokens, size_t topk, size_t hidden, int iters, size_t* remote_bytes) {
    const size_t row = hidden * sizeof(float);
    const size_t rows = tokens * topk;
    const size_t remote_rows = rows / 2, local_rows = rows - remote_rows;
    std::vector<std::byte> send(rows * row, std::byte{1}), recv(rows * row);
    std::vector<size_t> counts(2), offsets(2);
    counts[static_cast<size_t>(rank)] = local_rows * row;
    counts[static_cast<size_t>(other())] = remote_rows * row;
    offsets[0] = 0;
    offsets[1] = counts[0];
    *remote_bytes = remote_rows * row;
    Barrier();
    auto start = Clock::now();
    for (int i = 0; i < iters; ++i) {
      CommHandle dispatch = comm.AllToAllV(pair, send, counts, offsets, recv, counts, offsets);
      Check(dispatch.Wait(kWait), "dispatch");
      CommHandle combine = comm.AllToAllV(pair, recv, counts, offsets, send, counts, offsets);
      Check(combine.Wait(kWait), "combine");
    }
    return 2.0 * static_cast<double>(*remote_bytes) * iters / Seconds(Clock::now() - start);
  }
  // All-reduce of `floats`: the bytes each rank sends per second ((n-1)/n of the buffer, twice).
  double AllReduce(size_t floats, int iters) {
    std::vector<float> data(floats, 1.0f);
    Barrier();
    auto start = Clock::now();
    for (int i = 0; i < iters; ++i) {
      CommHandle h = comm.AllReduce(pair, data);
      Check(h.Wait(kWait), "allreduce");
    }
    return static_cast<double>(floats * sizeof(float)) * iters / Seconds(Clock::now() - start);
  }
};

// ---- one rank ----------------------------------------------------------------------------------------------

int PeerMain(int rank, const std::string& dir, Transport mode, int reps, size_t max_size) {
  CommunicatorOptions options;
  options.transport = mode;
  auto created = Communicator::Create(options);
  Check(created.status(), "Communicator::Create");
  Communicator& comm = **created;
  RawUcp raw(mode, rank);
  WriteAtomically(dir + "/addr." + std::to_string(rank), comm.address() + "\n" + HexEncode(raw.address()));
  std::string theirs = AwaitFile(dir + "/addr." + std::to_string(1 - rank));
  std::string comm_peer = theirs.substr(0, theirs.find('\n'));
  std::string raw_peer = *HexDecode(theirs.substr(theirs.find('\n') + 1));
  Check(comm.Connect(1, rank, {{0, rank == 0 ? comm.address() : comm_peer}, {1, rank == 1 ? comm.address() : comm_peer}}),
        "Connect");
  raw.Connect(raw_peer);
  CommBench bench{comm, rank};
  bench.Barrier();
  raw.Barrier();

  std::ostringstream out;
  auto best = [&](auto&& f) {
    double b = 0;
    for (int r = 0; r < reps; ++r) b = std::max(b, f());
    return b;
  };
  auto best_lat = [&](auto&& f) {
    double b = 1e9;
    for (int r = 0; r < reps; ++r) b = std::min(b, f());
    return b;
  };
  const int kWindow = 16;
  for (size_t size : Sizes(max_size)) {
    int iters = ItersFor(size);
    std::vector<char> rbuf(2 * size);
    std::vector<std::byte> cbuf(2 * size);
    double raw_bw = best([&] { return raw.Bandwidth(rbuf, size, iters, kWindow); });
    double comm_bw = best([&] { return bench.Bandwidth(cbuf, size, iters, kWindow); });
    out << "bw " << size << " " << comm_bw << " " << raw_bw << "\n";
  }
  double raw_lat = best_lat([&] { return raw.Latency(kLatencyBytes, 5000); });
  double comm_lat = best_lat([&] { return bench.Latency(kLatencyBytes, 5000); });
  out << "lat " << kLatencyBytes << " " << comm_lat << " " << raw_lat << "\n";

  struct Moe {
    const char* name;
    size_t tokens, topk, hidden;
  };
  for (Moe m : {Moe{"demo", 2048, 2, 128}, Moe{"small", 2048, 2, 256}}) {
    size_t remote = 0;
    double comm_bw = best([&] { return bench.DispatchCombine(m.tokens, m.topk, m.hidden, 50, &remote); });
    size_t local = m.tokens * m.topk * m.hidden * sizeof(float) - remote;
    double raw_op = best([&] { return raw.DispatchCombine(local, remote, 50); });
    std::vector<char> a(remote), b(remote);
    double raw_bw = best([&] { return raw.Exchange(a, b, remote, 100); });
    out << "moe " << m.name << " " << remote << " " << comm_bw << " " << raw_op << " " << raw_bw << "\n";
  }
  {
    const size_t floats = 4u << 20;  // 16 MiB
    double comm_bw = best([&] { return bench.AllReduce(floats, 10); });
    size_t half = floats * sizeof(float) / 2;
    std::vector<char> a(half), b(half);
    double raw_bw = best([&] { return raw.Exchange(a, b, half, 20); });  // the same bytes each way, once
    // The all-reduce moves 2 x half per rank (reduce-scatter, then all-gather).
    out << "allreduce " << floats * sizeof(float) << " " << comm_bw << " " << raw_bw / 2 << "\n";
  }
  bench.Barrier();
  if (rank == 0) WriteAtomically(dir + "/result", out.str());
  return 0;
}

// ---- the parent --------------------------------------------------------------------------------------------

std::string SelfPath() { return std::filesystem::read_symlink("/proc/self/exe").string(); }

pid_t Spawn(const std::vector<std::string>& argv, const std::vector<std::string>& env, const std::string& log) {
  pid_t pid = fork();
  if (pid == 0) {
    for (const auto& kv : env) putenv(const_cast<char*>(kv.c_str()));
    if (!log.empty()) {
      FILE* f = std::freopen(log.c_str(), "w", stdout);
      if (f) dup2(fileno(stdout), 2);
    }
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execvp(args[0], args.data());
    _exit(127);
  }
  return pid;
}

int WaitPid(pid_t pid, std::chrono::seconds timeout) {
  auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    int st = 0;
    if (waitpid(pid, &st, WNOHANG) == pid) return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    std::this_thread::sleep_for(5ms);
  }
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
  return -1;
}

bool OnPath(const std::string& program) {
  const char* path = std::getenv("PATH");
  std::stringstream ss(path ? path : "");
  std::string dir;
  while (std::getline(ss, dir, ':')) {
    if (access((dir + "/" + program).c_str(), X_OK) == 0) return true;
  }
  return false;
}

// ucx_perftest as a server/client pair for the same transport; returns {bandwidth B/s, median latency s}.
std::pair<double, double> Perftest(Transport mode, const std::string& test, size_t size, int iters, int port,
                                   const std::string& dir) {
  std::vector<std::string> env;
  std::vector<std::string> extra;
  if (mode == Transport::kTcp) {
    env.push_back("UCX_TLS=tcp");
    extra.push_back("-e");  // PEER error handling, as the Communicator's tcp mode
  }
  std::string log = dir + "/perftest." + std::to_string(port);
  std::vector<std::string> server = {"ucx_perftest", "-p", std::to_string(port)};
  server.insert(server.end(), extra.begin(), extra.end());
  pid_t s = Spawn(server, env, dir + "/perftest-server.log");
  std::this_thread::sleep_for(300ms);
  std::vector<std::string> client = {"ucx_perftest", "127.0.0.1", "-p", std::to_string(port), "-t", test,
                                     "-s", std::to_string(size), "-n", std::to_string(iters),
                                     "-w", std::to_string(std::max(iters / 10, 1)), "-f", "-v"};
  client.insert(client.end(), extra.begin(), extra.end());
  pid_t c = Spawn(client, env, log);
  int rc = WaitPid(c, 120s);
  WaitPid(s, 10s);
  std::ifstream f(log);
  std::string line, last;
  while (std::getline(f, line)) {
    if (!line.empty() && std::isdigit(static_cast<unsigned char>(line[0])) != 0) last = line;
    if (!line.empty() && line[0] == ' ') last = line;
  }
  if (rc != 0 || last.empty()) return {0, 0};
  // iterations,50.0_percentile_lat,avg_lat,overall_lat,avg_bw,overall_bw,avg_mr,overall_mr
  std::vector<double> cols;
  std::stringstream ss(last);
  std::string cell;
  while (std::getline(ss, cell, ',')) cols.push_back(std::atof(cell.c_str()));
  if (cols.size() < 6) return {0, 0};
  return {cols[5] * 1024 * 1024, cols[1] * 1e-6};  // perftest's MB is 2^20 bytes
}

std::string Size(size_t bytes) {
  char buf[32];
  if (bytes >= (1u << 20)) {
    std::snprintf(buf, sizeof(buf), "%zu MiB", bytes >> 20);
  } else {
    std::snprintf(buf, sizeof(buf), "%zu KiB", bytes >> 10);
  }
  return buf;
}

int RunMode(Transport mode, int reps, size_t max_size, bool perftest, int* port) {
  char tmpl[] = "/tmp/bench-comm-XXXXXX";
  std::string dir = mkdtemp(tmpl);
  std::string name(TransportName(mode));
  std::vector<pid_t> peers;
  for (int r = 0; r < 2; ++r) {
    peers.push_back(Spawn({SelfPath(), "--peer", std::to_string(r), dir, name, std::to_string(reps),
                           std::to_string(max_size)},
                          {}, dir + "/peer." + std::to_string(r) + ".log"));
  }
  int failed = 0;
  for (int r = 0; r < 2; ++r) {
    if (WaitPid(peers[static_cast<size_t>(r)], std::chrono::seconds(900)) != 0) {
      std::ifstream f(dir + "/peer." + std::to_string(r) + ".log");
      std::stringstream ss;
      ss << f.rdbuf();
      std::fprintf(stderr, "bench_comm: %s rank %d failed:\n%s\n", name.c_str(), r, ss.str().c_str());
      failed = 1;
    }
  }
  if (failed) return 1;
  std::ifstream f(dir + "/result");
  std::map<size_t, std::pair<double, double>> bw;
  double comm_lat = 0, raw_lat = 0;
  struct MoeRow {
    std::string name;
    size_t bytes;
    double comm, raw, raw_exchange = 0;
  };
  std::vector<MoeRow> moe;
  MoeRow allreduce;
  std::string kind;
  while (f >> kind) {
    if (kind == "bw") {
      size_t s;
      double c, r;
      f >> s >> c >> r;
      bw[s] = {c, r};
    } else if (kind == "lat") {
      size_t s;
      f >> s >> comm_lat >> raw_lat;
    } else if (kind == "moe") {
      MoeRow m;
      f >> m.name >> m.bytes >> m.comm >> m.raw >> m.raw_exchange;
      moe.push_back(m);
    } else if (kind == "allreduce") {
      allreduce.name = "allreduce";
      f >> allreduce.bytes >> allreduce.comm >> allreduce.raw;
    }
  }
  bool have_perftest = perftest && OnPath("ucx_perftest");
  std::printf("\n== transport %s (%s), 2 processes on this host; best of %d ==\n", name.c_str(),
              mode == Transport::kShm ? "UCP_ERR_HANDLING_MODE_NONE, UCX picks shared memory + cma; liveness over tcp"
                                      : "UCP_ERR_HANDLING_MODE_PEER, UCX_TLS=tcp",
              reps);
  std::printf("%-8s %12s %12s %14s %9s %11s\n", "size", "comm GB/s", "raw UCP GB/s", "perftest GB/s", "comm/raw",
              "comm/perft");
  double worst_large = 1e9;
  for (const auto& [size, v] : bw) {
    double pt = 0;
    if (have_perftest) pt = Perftest(mode, "tag_bw", size, ItersFor(size), (*port)++, dir).first;
    std::printf("%-8s %12.2f %12.2f %14.2f %8.0f%% %10.0f%%\n", Size(size).c_str(), v.first / 1e9, v.second / 1e9,
                pt / 1e9, 100 * v.first / v.second, pt > 0 ? 100 * v.first / pt : 0.0);
    if (size >= (1u << 20)) worst_large = std::min(worst_large, v.first / v.second);
  }
  double pt_lat = have_perftest ? Perftest(mode, "tag_lat", kLatencyBytes, 20000, (*port)++, dir).second : 0;
  std::printf("latency %zu B (median half round trip): comm %.2f us, raw UCP %.2f us, perftest %.2f us; "
              "raw/comm %.0f%%\n",
              kLatencyBytes, comm_lat * 1e6, raw_lat * 1e6, pt_lat * 1e6, 100 * raw_lat / comm_lat);
  for (const MoeRow& m : moe) {
    std::printf("AllToAllV %-5s dispatch+combine (2048 tok x top-2 x %s ch fp32, %s to the peer each way, as many "
                "rows kept): %.2f GB/s to the peer; raw UCP dispatch+combine %.2f GB/s = %.0f%%; raw UCP exchange of "
                "the remote rows alone %.2f GB/s = %.0f%%\n",
                m.name.c_str(), m.name == "demo" ? "128" : "256", Size(m.bytes).c_str(), m.comm / 1e9, m.raw / 1e9,
                100 * m.comm / m.raw, m.raw_exchange / 1e9, 100 * m.comm / m.raw_exchange);
  }
  std::printf("AllReduce %s fp32 (2 ranks, each sends 2 x half): %.2f GB/s vs raw UCP exchange %.2f GB/s = %.0f%%\n",
              Size(allreduce.bytes).c_str(), allreduce.comm / 1e9, allreduce.raw / 1e9,
              100 * allreduce.comm / allreduce.raw);
  std::printf("p2p >= 1 MiB, worst comm/raw: %.0f%%\n", 100 * worst_large);
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // Line-buffered even into a pipe: the peer processes are forked from here and would otherwise flush a copy of
  // whatever this process had buffered when they exit, printing tables twice.
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.size() >= 6 && args[0] == "--peer") {
    Result<Transport> mode = ParseTransport(args[3]);
    Check(mode.status(), "mode");
    return PeerMain(std::stoi(args[1]), args[2], *mode, std::stoi(args[4]), std::stoull(args[5]));
  }
  std::vector<Transport> modes = {Transport::kShm, Transport::kTcp};
  int reps = 3;
  size_t max_size = 16u << 20;
  bool perftest = true;
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--modes" && i + 1 < args.size()) {
      modes.clear();
      std::stringstream ss(args[++i]);
      std::string m;
      while (std::getline(ss, m, ',')) {
        Result<Transport> t = ParseTransport(m);
        Check(t.status(), "--modes");
        modes.push_back(*t);
      }
    } else if (args[i] == "--reps" && i + 1 < args.size()) {
      reps = std::max(1, std::stoi(args[++i]));
    } else if (args[i] == "--max-size" && i + 1 < args.size()) {
      max_size = std::stoull(args[++i]);
    } else if (args[i] == "--no-perftest") {
      perftest = false;
    } else {
      std::fprintf(stderr, "usage: bench_comm [--modes shm,tcp] [--reps 3] [--max-size BYTES] [--no-perftest]\n");
      return 64;
    }
  }
  std::printf("bench_comm: UCX %s, %u CPUs; ratios compare figures measured in this run\n", ucp_get_version_string(),
              std::thread::hardware_concurrency());
  int port = 13500 + static_cast<int>(getpid() % 2000);
  int rc = 0;
  for (Transport m : modes) rc |= RunMode(m, reps, max_size, perftest, &port);
  return rc;
}
