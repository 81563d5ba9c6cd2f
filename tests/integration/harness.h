// Integration-test harness: real shoal processes on loopback, in a temporary directory, killed and removed
// when the test ends (even when it fails).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace shoal::testing {

struct CommandResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

class Cluster {
 public:
  struct Options {
    int heartbeat_ms = 100;
    int suspect_ms = 400;
    int dead_ms = 800;
    bool idle_workers = true;  // workers acknowledge without training (control-plane tests)
  };
  // Workers that train, with deadlines loose enough for training steps on a loaded machine.
  static Options Training() {
    Options o;
    o.idle_workers = false;
    o.dead_ms = 1500;
    o.suspect_ms = 500;
    return o;
  }
  Cluster();
  explicit Cluster(Options options);
  ~Cluster();  // SIGKILLs every process it started, removes the directory

  const std::string& dir() const { return dir_; }
  std::string state_dir() const { return dir_ + "/state"; }
  std::string token_file() const { return state_dir() + "/token"; }
  const std::string& address() const { return address_; }

  // Starts the coordinator (on `port`, 0 = any) and waits for its address file.
  void StartCoordinator(int port = 0);
  pid_t coordinator_pid() const { return coordinator_pid_; }
  void KillCoordinator(int sig);  // and wait for it to exit
  int coordinator_port() const;

  pid_t StartWorker(const std::string& name, std::vector<std::string> extra_args = {});
  void KillWorker(const std::string& name, int sig);
  // Waits for the worker process to exit; returns its exit status (or -1 on timeout).
  int WaitWorkerExit(const std::string& name, std::chrono::milliseconds timeout);
  pid_t worker_pid(const std::string& name) const { return workers_.at(name); }

  // Runs the shoal CLI against this cluster.
  CommandResult Cli(std::vector<std::string> args, std::vector<std::string> env = {}) const;
  // Runs the CLI with --json and parses stdout (fails the test on a non-zero exit or bad JSON).
  nlohmann::json CliJson(std::vector<std::string> args) const;

  // Polls `pred` every 20 ms until it holds or `timeout` passes.
  static bool Eventually(const std::function<bool()>& pred,
                         std::chrono::milliseconds timeout = std::chrono::milliseconds(15000));

  std::string WriteFile(const std::string& name, const std::string& contents) const;
  std::string ReadLog(const std::string& name) const;

 private:
  Options options_;
  std::string dir_;
  std::string address_;
  pid_t coordinator_pid_ = -1;
  std::map<std::string, pid_t> workers_;
};

std::string BinDir();
std::string SourceDir();
// Runs argv (fork+exec) with stdout/stderr captured, extra env entries "K=V".
CommandResult RunCommand(const std::vector<std::string>& argv, const std::vector<std::string>& env = {},
                  const std::string& cwd = "");

// State of a worker in `shoal workers --json`, or "" when absent.
std::string WorkerState(const nlohmann::json& workers, const std::string& name);

}  // namespace shoal::testing
