#include "tests/integration/harness.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

namespace shoal::testing {
namespace fs = std::filesystem;

std::string BinDir() { return SHOAL_BIN_DIR; }
std::string SourceDir() { return SHOAL_SOURCE_DIR; }

namespace {

std::string Slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

pid_t Spawn(const std::vector<std::string>& argv, const std::string& out, const std::string& err,
            const std::vector<std::string>& env, const std::string& cwd) {
  pid_t pid = fork();
  if (pid == 0) {
    if (!cwd.empty() && chdir(cwd.c_str()) != 0) _exit(126);
    int o = open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int e = open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(o, 1);
    dup2(e, 2);
    for (const auto& kv : env) putenv(const_cast<char*>(kv.c_str()));
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  return pid;
}

int WaitPid(pid_t pid, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    int status = 0;
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (r < 0) return -2;
    if (std::chrono::steady_clock::now() > deadline) return -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

}  // namespace

CommandResult RunCommand(const std::vector<std::string>& argv, const std::vector<std::string>& env, const std::string& cwd) {
  static int counter = 0;
  std::string base = fs::temp_directory_path().string() + "/shoal-run-" + std::to_string(getpid()) + "-" +
                     std::to_string(counter++);
  pid_t pid = Spawn(argv, base + ".out", base + ".err", env, cwd);
  CommandResult r;
  r.exit_code = WaitPid(pid, std::chrono::seconds(60));
  if (r.exit_code == -1) {
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
  }
  r.out = Slurp(base + ".out");
  r.err = Slurp(base + ".err");
  fs::remove(base + ".out");
  fs::remove(base + ".err");
  return r;
}

Cluster::Cluster() : Cluster(Options{}) {}

Cluster::Cluster(Options options) : options_(options) {
  char tmpl[] = "/tmp/shoal-it-XXXXXX";
  dir_ = mkdtemp(tmpl);
  fs::create_directories(dir_ + "/logs");
}

Cluster::~Cluster() {
  for (auto& [name, pid] : workers_) {
    if (pid > 0) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
  }
  if (coordinator_pid_ > 0) {
    kill(coordinator_pid_, SIGKILL);
    waitpid(coordinator_pid_, nullptr, 0);
  }
  if (::testing::Test::HasFailure()) {
    std::fprintf(stderr, "--- coordinator log ---\n%s\n", ReadLog("coordinator").c_str());
    // What the processes printed outside their logs (crashes, aborts).
    for (const auto& [name, pid] : workers_) {
      std::ifstream err(dir_ + "/logs/" + name + ".err");
      std::string text((std::istreambuf_iterator<char>(err)), std::istreambuf_iterator<char>());
      if (!text.empty()) std::fprintf(stderr, "--- %s stderr ---\n%s\n", name.c_str(), text.c_str());
    }
  }
  std::error_code ec;
  fs::remove_all(dir_, ec);
}

void Cluster::StartCoordinator(int port) {
  fs::remove(state_dir() + "/address");
  std::vector<std::string> argv = {BinDir() + "/shoal-coordinator",
                                   "--state-dir", state_dir(),
                                   "--listen", "127.0.0.1:" + std::to_string(port),
                                   "--heartbeat-interval-ms", std::to_string(options_.heartbeat_ms),
                                   "--suspect-after-ms", std::to_string(options_.suspect_ms),
                                   "--dead-after-ms", std::to_string(options_.dead_ms),
                                   "--log-file", dir_ + "/logs/coordinator.log"};
  coordinator_pid_ = Spawn(argv, dir_ + "/logs/coordinator.out", dir_ + "/logs/coordinator.err", {}, "");
  ASSERT_TRUE(Eventually([&] {
    std::string a = Slurp(state_dir() + "/address");
    while (!a.empty() && isspace(static_cast<unsigned char>(a.back()))) a.pop_back();
    if (a.empty()) return false;
    address_ = a;
    return true;
  })) << "coordinator did not start: " << Slurp(dir_ + "/logs/coordinator.err");
}

int Cluster::coordinator_port() const { return std::stoi(address_.substr(address_.rfind(':') + 1)); }

void Cluster::KillCoordinator(int sig) {
  kill(coordinator_pid_, sig);
  WaitPid(coordinator_pid_, std::chrono::seconds(20));
  coordinator_pid_ = -1;
}

pid_t Cluster::StartWorker(const std::string& name, std::vector<std::string> extra_args) {
  std::vector<std::string> argv = {BinDir() + "/shoal-worker", "--coordinator", address_, "--token-file",
                                   token_file(), "--name", name, "--threads", "1",
                                   "--log-file", dir_ + "/logs/" + name + ".log"};
  if (options_.idle_workers) argv.push_back("--idle");
  for (auto& a : extra_args) argv.push_back(std::move(a));
  pid_t pid = Spawn(argv, dir_ + "/logs/" + name + ".out", dir_ + "/logs/" + name + ".err", {}, "");
  workers_[name] = pid;
  return pid;
}

void Cluster::KillWorker(const std::string& name, int sig) { kill(workers_.at(name), sig); }

int Cluster::WaitWorkerExit(const std::string& name, std::chrono::milliseconds timeout) {
  int rc = WaitPid(workers_.at(name), timeout);
  if (rc >= 0) workers_[name] = -1;
  return rc;
}

CommandResult Cluster::Cli(std::vector<std::string> args, std::vector<std::string> env) const {
  std::vector<std::string> argv = {BinDir() + "/shoal", "--coordinator", address_, "--token-file", token_file()};
  for (auto& a : args) argv.push_back(std::move(a));
  return RunCommand(argv, env);
}

nlohmann::json Cluster::CliJson(std::vector<std::string> args) const {
  args.push_back("--json");
  auto r = Cli(args);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out, nullptr, false);
  EXPECT_FALSE(j.is_discarded()) << r.out;
  return j;
}

bool Cluster::Eventually(const std::function<bool()>& pred, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return pred();
}

std::string Cluster::WriteFile(const std::string& name, const std::string& contents) const {
  std::string path = dir_ + "/" + name;
  std::ofstream(path) << contents;
  return path;
}

std::string Cluster::ReadLog(const std::string& name) const { return Slurp(dir_ + "/logs/" + name + ".log"); }

std::string WorkerState(const nlohmann::json& workers, const std::string& name) {
  if (!workers.is_array()) return "";
  for (const auto& w : workers) {
    if (w.value("name", "") == name) return w.value("state", "");
  }
  return "";
}

}  // namespace shoal::testing
