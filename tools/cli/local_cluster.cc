#include "tools/cli/local_cluster.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <thread>

#include "common/file_util.h"

namespace shoal::cli {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

bool ProcessAlive(pid_t pid) {
  if (pid <= 0) return false;
  if (::kill(pid, 0) != 0) return false;
  // A zombie child of ours would still answer kill(0); reap it if so.
  int status = 0;
  pid_t r = ::waitpid(pid, &status, WNOHANG);
  if (r == 0) return true;       // our child, running
  if (r == pid) return false;    // our child, just reaped
  return errno == ECHILD;        // not our child: kill(0) said it exists
}

std::string FindBinary(const std::string& name) {
  std::string beside = SelfDir() + "/" + name;
  if (access(beside.c_str(), X_OK) == 0) return beside;
  return name;  // from PATH
}

// Starts `argv` detached from this terminal (own session), stdout/stderr to `log`. Returns its pid.
Result<pid_t> Spawn(const std::vector<std::string>& argv, const std::string& log) {
  pid_t pid = ::fork();
  if (pid < 0) return ErrnoToStatus(errno, "fork");
  if (pid == 0) {
    ::setsid();
    int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, 0);
    if (fd >= 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
    }
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execvp(args[0], args.data());
    std::fprintf(stderr, "shoal up: cannot execute %s: %s\n", args[0], std::strerror(errno));
    ::_exit(127);
  }
  return pid;
}

bool WaitForExit(pid_t pid, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (!ProcessAlive(pid)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return !ProcessAlive(pid);
}

void Stop(pid_t pid) {
  if (!ProcessAlive(pid)) return;
  ::kill(pid, SIGTERM);
  if (!WaitForExit(pid, std::chrono::seconds(10))) {
    ::kill(pid, SIGKILL);
    WaitForExit(pid, std::chrono::seconds(2));
  }
}

Result<json> ReadClusterFile(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded()) return DataLossError(path + " is not valid JSON; remove it after checking no shoal "
                                             "processes are left (`pgrep -a shoal`)");
  return j;
}

Status WaitForWorkers(const GlobalOptions& global, int expected, int wait_ms) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(wait_ms);
  std::string last_problem = "no answer";
  while (std::chrono::steady_clock::now() < deadline) {
    auto client = ConnectToCoordinator(global);
    if (client.ok()) {
      capnp::MallocMessageBuilder b;
      b.initRoot<proto::Envelope>().setListWorkers();
      auto reply = Call(**client, b, global);
      if (reply.ok() && (*reply)->envelope().isListWorkersReply()) {
        int alive = 0;
        for (auto w : (*reply)->envelope().getListWorkersReply().getWorkers()) {
          alive += w.getState() == proto::WorkerState::ALIVE;
        }
        if (alive >= expected) return Status::OK();
        last_problem = std::to_string(alive) + " of " + std::to_string(expected) + " workers ALIVE";
      } else {
        last_problem = reply.status().ToString();
      }
    } else {
      last_problem = client.status().ToString();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return DeadlineExceededError("local cluster did not come up within " + std::to_string(wait_ms) + " ms (" +
                               last_problem + "); see " + global.dir + "/logs/");
}

}  // namespace

std::string SelfDir() {
  std::error_code ec;
  auto self = fs::read_symlink("/proc/self/exe", ec);
  return ec ? "." : self.parent_path().string();
}

Status Up(const GlobalOptions& global, const UpOptions& options) {
  if (options.workers < 0) return InvalidArgumentError("--workers must be >= 0");
  std::string dir = global.dir;
  std::string cluster_file = dir + "/cluster.json";
  if (FileExists(cluster_file)) {
    auto existing = ReadClusterFile(cluster_file);
    if (existing.ok() && ProcessAlive((*existing)["coordinator"].value("pid", 0))) {
      return AlreadyExistsError("a local cluster is already running from " + dir + " (coordinator pid " +
                                std::to_string((*existing)["coordinator"].value("pid", 0)) +
                                "); run `shoal down` first");
    }
  }
  RETURN_IF_ERROR(MakeDirs(dir + "/state", 0700));
  RETURN_IF_ERROR(MakeDirs(dir + "/logs"));
  std::string state = dir + "/state";
  ::unlink((state + "/address").c_str());  // a stale address must not be mistaken for the new one

  std::vector<std::string> cargv = {FindBinary("shoal-coordinator"), "--state-dir", state, "--listen", options.listen,
                                    "--log-file", dir + "/logs/coordinator.log"};
  if (!options.http.empty()) {
    cargv.push_back("--http");
    cargv.push_back(options.http);
  }
  ASSIGN_OR_RETURN(pid_t coordinator_pid, Spawn(cargv, dir + "/logs/coordinator.out"));
  json cluster{{"coordinator", {{"pid", coordinator_pid}, {"address", ""}}}, {"workers", json::array()}};
  RETURN_IF_ERROR(WriteFileAtomic(cluster_file, cluster.dump(2) + "\n"));

  // Wait for the coordinator to publish its address (it picks a free port).
  std::string address;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (std::chrono::steady_clock::now() < deadline) {
    auto text = ReadFile(state + "/address");
    if (text.ok() && !text->empty()) {
      address = *text;
      while (!address.empty() && isspace(static_cast<unsigned char>(address.back()))) address.pop_back();
      break;
    }
    if (!ProcessAlive(coordinator_pid)) {
      auto log = ReadFile(dir + "/logs/coordinator.out");
      return UnavailableError("shoal-coordinator exited at start: " + (log.ok() ? *log : std::string("(no output)")));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (address.empty()) return DeadlineExceededError("shoal-coordinator did not start; see " + dir + "/logs/");
  cluster["coordinator"]["address"] = address;

  int cores = static_cast<int>(std::thread::hardware_concurrency());
  int threads = options.threads_per_worker > 0 ? options.threads_per_worker
                                               : std::max(1, cores / std::max(1, options.workers));
  for (int i = 0; i < options.workers; ++i) {
    std::string name = "worker-" + std::to_string(i);
    std::vector<std::string> wargv = {FindBinary("shoal-worker"), "--coordinator", address, "--token-file",
                                      state + "/token", "--name", name, "--device", options.worker_device,
                                      "--threads", std::to_string(threads), "--log-file",
                                      dir + "/logs/" + name + ".log"};
    ASSIGN_OR_RETURN(pid_t pid, Spawn(wargv, dir + "/logs/" + name + ".out"));
    cluster["workers"].push_back({{"name", name}, {"pid", pid}});
  }
  RETURN_IF_ERROR(WriteFileAtomic(cluster_file, cluster.dump(2) + "\n"));

  GlobalOptions probe = global;
  probe.coordinator = address;
  probe.token_file = state + "/token";
  RETURN_IF_ERROR(WaitForWorkers(probe, options.workers, options.wait_ms));
  std::printf("Local cluster is up: coordinator at %s (pid %d), %d CPU worker%s with %d thread%s each.\n",
              address.c_str(), coordinator_pid, options.workers, options.workers == 1 ? "" : "s", threads,
              threads == 1 ? "" : "s");
  std::printf("State and logs are in %s/. Try `shoal workers`, `shoal submit configs/demo.yaml`, `shoal down`.\n",
              dir.c_str());
  return Status::OK();
}

Status Down(const GlobalOptions& global, bool purge) {
  std::string dir = global.dir;
  std::string cluster_file = dir + "/cluster.json";
  if (!FileExists(cluster_file)) {
    return NotFoundError("no local cluster in " + dir + " (nothing to stop; `shoal up` starts one)");
  }
  ASSIGN_OR_RETURN(json cluster, ReadClusterFile(cluster_file));
  int stopped = 0;
  for (const auto& w : cluster.value("workers", json::array())) {
    pid_t pid = w.value("pid", 0);
    if (ProcessAlive(pid)) {
      Stop(pid);
      ++stopped;
    }
  }
  pid_t cpid = cluster["coordinator"].value("pid", 0);
  if (ProcessAlive(cpid)) {
    Stop(cpid);
    ++stopped;
  }
  ::unlink(cluster_file.c_str());
  ::unlink((dir + "/state/address").c_str());
  if (purge) {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  std::printf("Stopped %d process%s%s.\n", stopped, stopped == 1 ? "" : "es", purge ? " and deleted the state" : "");
  return Status::OK();
}

}  // namespace shoal::cli
