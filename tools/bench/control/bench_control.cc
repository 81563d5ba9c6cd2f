// Control-plane load test: one real shoal-coordinator process, N simulated workers (real authenticated
// connections) registering and heartbeating at 1 Hz, plus concurrent CLI queries. Prints p50/p99/max latency
// per request kind and the coordinator's CPU use (from /proc) over the measured window.
//
//   bench_control [--workers 1000] [--seconds 20] [--cli-clients 4] [--cli-qps 25]
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <random>
#include <thread>

#include "protocol/blocking_client.h"
#include "protocol/connection.h"

namespace {
using namespace shoal;
using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

struct Latencies {
  std::mutex mu;
  std::vector<double> us;
  uint64_t errors = 0;
  void Add(double v) {
    std::lock_guard<std::mutex> lock(mu);
    us.push_back(v);
  }
  void Error() {
    std::lock_guard<std::mutex> lock(mu);
    errors++;
  }
  void Print(const char* name, double seconds) {
    std::lock_guard<std::mutex> lock(mu);
    if (us.empty()) {
      std::printf("%-16s no samples (%llu errors)\n", name, static_cast<unsigned long long>(errors));
      return;
    }
    std::sort(us.begin(), us.end());
    auto pct = [&](double p) { return us[std::min(us.size() - 1, static_cast<size_t>(p * us.size()))] / 1000.0; };
    std::printf("%-16s %9zu  %8.1f/s  p50 %7.3f ms  p99 %7.3f ms  max %8.3f ms  errors %llu\n", name, us.size(),
                us.size() / seconds, pct(0.50), pct(0.99), us.back() / 1000.0, static_cast<unsigned long long>(errors));
  }
};

double ProcessCpuSeconds(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  auto close = s.rfind(')');
  std::istringstream rest(s.substr(close + 2));
  std::string field;
  std::vector<std::string> fields;
  while (rest >> field) fields.push_back(field);
  // fields[0] is state (field 3); utime is field 14, stime 15 -> indices 11, 12.
  double ticks = std::stod(fields[11]) + std::stod(fields[12]);
  return ticks / sysconf(_SC_CLK_TCK);
}

long ProcessRssKb(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  }
  return 0;
}

// One simulated worker: a real connection; registers, then heartbeats every second (random phase).
class SimWorker : public std::enable_shared_from_this<SimWorker> {
 public:
  SimWorker(boost::asio::io_context& io, int idx, Latencies* reg, Latencies* hb, std::atomic<bool>* measuring)
      : io_(io), timer_(io), idx_(idx), reg_(reg), hb_(hb), measuring_(measuring) {}

  void Start(const std::string& host, uint16_t port, const protocol::Token& token) {
    auto self = shared_from_this();
    protocol::Dial(io_, host, port, token, proto::Role::WORKER, Name(), protocol::TransportOptions{}, {},
                   [self](Result<protocol::ConnectionPtr> r) {
                     if (!r.ok()) {
                       self->reg_->Error();
                       return;
                     }
                     self->conn_ = *r;
                     self->Register();
                   });
  }
  bool registered() const { return registered_; }

 private:
  std::string Name() const { return "sim-" + std::to_string(idx_); }

  void Register() {
    capnp::MallocMessageBuilder b;
    auto reg = b.initRoot<proto::Envelope>().initRegisterWorker();
    reg.setName(Name());
    reg.setHost("simhost-" + std::to_string(idx_ / 8));
    reg.setCores(1);
    auto start = Clock::now();
    auto self = shared_from_this();
    conn_->Call(b, std::chrono::seconds(30), [self, start](Result<protocol::MessagePtr> r) {
      if (!r.ok()) return self->reg_->Error();
      self->reg_->Add(std::chrono::duration<double, std::micro>(Clock::now() - start).count());
      auto reply = (*r)->envelope().getRegisterReply();
      self->id_ = reply.getWorkerId().cStr();
      self->incarnation_ = reply.getIncarnation();
      self->registered_ = true;
      std::mt19937 rng(self->idx_);
      self->timer_.expires_after(std::chrono::milliseconds(rng() % 1000));
      self->timer_.async_wait([self](const boost::system::error_code& ec) {
        if (!ec) self->Beat();
      });
    });
  }

  void Beat() {
    capnp::MallocMessageBuilder b;
    auto hb = b.initRoot<proto::Envelope>().initHeartbeat();
    hb.setWorkerId(id_);
    hb.setIncarnation(incarnation_);
    hb.setSeq(++seq_);
    auto start = Clock::now();
    auto self = shared_from_this();
    conn_->Call(b, std::chrono::seconds(10), [self, start](Result<protocol::MessagePtr> r) {
      if (!self->measuring_->load()) return;
      if (!r.ok()) return self->hb_->Error();
      self->hb_->Add(std::chrono::duration<double, std::micro>(Clock::now() - start).count());
    });
    timer_.expires_after(std::chrono::seconds(1));
    timer_.async_wait([self](const boost::system::error_code& ec) {
      if (!ec) self->Beat();
    });
  }

  boost::asio::io_context& io_;
  boost::asio::steady_timer timer_;
  int idx_;
  Latencies* reg_;
  Latencies* hb_;
  std::atomic<bool>* measuring_;
  protocol::ConnectionPtr conn_;
  std::string id_;
  uint64_t incarnation_ = 0;
  uint64_t seq_ = 0;
  bool registered_ = false;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"bench_control: coordinator under 1 Hz heartbeats from many workers plus CLI queries"};
  int workers = 1000, seconds = 20, cli_clients = 4, cli_qps = 25;
  app.add_option("--workers", workers)->default_val(1000);
  app.add_option("--seconds", seconds)->default_val(20);
  app.add_option("--cli-clients", cli_clients)->default_val(4);
  app.add_option("--cli-qps", cli_qps, "Queries per second per CLI client")->default_val(25);
  CLI11_PARSE(app, argc, argv);
  signal(SIGPIPE, SIG_IGN);

  std::string bin = fs::read_symlink("/proc/self/exe").parent_path().string();
  char tmpl[] = "/tmp/shoal-bench-control-XXXXXX";
  std::string dir = mkdtemp(tmpl);
  pid_t coord = fork();
  if (coord == 0) {
    std::string coordinator = bin + "/shoal-coordinator";
    std::string state = dir + "/state";
    std::string log = dir + "/coordinator.log";
    execl(coordinator.c_str(), coordinator.c_str(), "--state-dir", state.c_str(), "--listen", "127.0.0.1:0",
          "--log-file", log.c_str(), "--log-level", "warn", "--suspect-after-ms", "5000", "--dead-after-ms", "10000",
          static_cast<char*>(nullptr));
    _exit(127);
  }
  std::string address;
  for (int i = 0; i < 500 && address.empty(); ++i) {
    std::ifstream f(dir + "/state/address");
    std::getline(f, address);
    if (address.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (address.empty()) {
    std::fprintf(stderr, "coordinator did not start\n");
    return 1;
  }
  auto token = protocol::LoadToken(dir + "/state/token");
  auto hp = protocol::ParseHostPort(address);

  Latencies reg, hb, list_workers, list_jobs, status;
  std::atomic<bool> measuring{false};
  boost::asio::io_context io;
  std::vector<std::shared_ptr<SimWorker>> sims;
  for (int i = 0; i < workers; ++i) {
    sims.push_back(std::make_shared<SimWorker>(io, i, &reg, &hb, &measuring));
    sims.back()->Start(hp->first, hp->second, *token);
  }
  std::thread io_thread([&] {
    auto guard = boost::asio::make_work_guard(io);
    io.run();
  });
  auto t0 = Clock::now();
  while (Clock::now() - t0 < std::chrono::seconds(60)) {
    size_t n = std::count_if(sims.begin(), sims.end(), [](auto& s) { return s->registered(); });
    if (n == sims.size()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  std::printf("registered %d simulated workers in %.2f s\n", workers,
              std::chrono::duration<double>(Clock::now() - t0).count());

  // Some jobs so that listings and status have content (they stay PLACING: sim workers never ack).
  {
    auto c = protocol::BlockingClient::Connect(address, *token, proto::Role::CLI, "bench", std::chrono::seconds(5));
    for (int j = 0; j < 10; ++j) {
      capnp::MallocMessageBuilder b;
      auto s = b.initRoot<proto::Envelope>().initSubmit();
      s.setSpecYaml("name: job-" + std::to_string(j) +
                    "\nmodel: {preset: demo}\nphases:\n  - {name: p, kind: pretrain, data: {builtin: arith}, steps: 10}\n");
      s.setSpecFile("bench.yaml");
      (void)(*c)->Call(b, std::chrono::seconds(5));
    }
  }

  measuring = true;
  double cpu0 = ProcessCpuSeconds(coord);
  auto start = Clock::now();
  std::atomic<bool> stop{false};
  std::vector<std::thread> clis;
  for (int k = 0; k < cli_clients; ++k) {
    clis.emplace_back([&, k] {
      auto c = protocol::BlockingClient::Connect(address, *token, proto::Role::CLI, "cli-" + std::to_string(k),
                                                 std::chrono::seconds(5));
      if (!c.ok()) return;
      auto period = std::chrono::microseconds(1000000 / std::max(1, cli_qps));
      auto next = Clock::now();
      for (int q = 0; !stop; ++q) {
        capnp::MallocMessageBuilder b;
        auto env = b.initRoot<proto::Envelope>();
        Latencies* sink;
        switch (q % 3) {
          case 0: env.setListWorkers(); sink = &list_workers; break;
          case 1: env.setListJobs(); sink = &list_jobs; break;
          default: env.initJobStatus().setJob("job-" + std::to_string(q % 10)); sink = &status; break;
        }
        auto t = Clock::now();
        auto r = (*c)->Call(b, std::chrono::seconds(10));
        if (r.ok()) sink->Add(std::chrono::duration<double, std::micro>(Clock::now() - t).count());
        else sink->Error();
        next += period;
        std::this_thread::sleep_until(next);
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::seconds(seconds));
  stop = true;
  for (auto& t : clis) t.join();
  measuring = false;
  double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  double cpu = ProcessCpuSeconds(coord) - cpu0;

  std::printf("\n%d workers at 1 Hz + %d CLI clients at %d q/s each, %.1f s measured\n", workers, cli_clients, cli_qps,
              elapsed);
  std::printf("%-16s %9s  %10s\n", "request", "count", "rate");
  reg.Print("register", elapsed);
  hb.Print("heartbeat", elapsed);
  list_workers.Print("cli workers", elapsed);
  list_jobs.Print("cli jobs", elapsed);
  status.Print("cli status", elapsed);
  std::printf("coordinator CPU: %.3f cores (%.2f s of CPU in %.1f s; goal < 0.5)   RSS %ld MiB\n", cpu / elapsed, cpu,
              elapsed, ProcessRssKb(coord) / 1024);

  kill(coord, SIGTERM);
  waitpid(coord, nullptr, 0);
  io.stop();
  io_thread.join();
  fs::remove_all(dir);
  return 0;
}
