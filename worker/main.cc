// shoal-worker: a daemon per GPU or CPU slot that attaches to a coordinator and runs its stages.
#include <signal.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <boost/asio/io_context.hpp>
#include <cstdlib>
#include <thread>

#include "common/logging.h"
#include "common/signals.h"
#include "kernels/device.h"
#include "protocol/auth.h"
#include "worker/control_session.h"
#include "worker/comm/communicator.h"
#include "worker/job_runner.h"
#include "worker/training_runner.h"

namespace {

std::string Hostname() {
  char buf[256] = {0};
  if (gethostname(buf, sizeof(buf) - 1) != 0) return "localhost";
  return buf;
}

uint64_t HostMemoryBytes() {
  long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  return pages > 0 && page > 0 ? static_cast<uint64_t>(pages) * static_cast<uint64_t>(page) : 0;
}

int Fail(const std::string& message) {
  fprintf(stderr, "shoal-worker: %s\n", message.c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"shoal-worker: attaches to a shoal coordinator and runs the stages it is assigned"};
  std::string coordinator, device = "cpu", name, token_file, log_format = "text", log_level = "info", log_file;
  int threads = 0;
  bool idle = false;
  app.add_option("--coordinator", coordinator, "Coordinator HOST:PORT (default: $SHOAL_COORDINATOR)");
  app.add_option("--device", device, "cpu, or cuda:N")->default_val("cpu");
  app.add_option("--name", name, "Worker name, unique in the cluster (default: HOST-PID)");
  app.add_option("--threads", threads, "Compute threads (default: all cores)")->default_val(0);
  app.add_flag("--idle", idle,
               "Acknowledge assignments without running them (for testing the control plane)");
  app.add_option("--token-file", token_file, "Cluster token file (default: $SHOAL_TOKEN_FILE)");
  app.add_option("--log-format", log_format, "text or json")->default_val("text");
  app.add_option("--log-level", log_level, "trace|debug|info|warn|error")->default_val("info");
  app.add_option("--log-file", log_file, "Log to this file instead of stderr");
  CLI11_PARSE(app, argc, argv);

  if (coordinator.empty() && getenv("SHOAL_COORDINATOR")) coordinator = getenv("SHOAL_COORDINATOR");
  if (token_file.empty() && getenv("SHOAL_TOKEN_FILE")) token_file = getenv("SHOAL_TOKEN_FILE");
  if (coordinator.empty()) return Fail("no coordinator: pass --coordinator HOST:PORT or set SHOAL_COORDINATOR");
  if (token_file.empty()) return Fail("no cluster token: pass --token-file FILE or set SHOAL_TOKEN_FILE");
  auto host_port = shoal::protocol::ParseHostPort(coordinator);
  if (!host_port.ok()) return Fail(host_port.status().message());
  auto token = shoal::protocol::LoadToken(token_file);
  if (!token.ok()) return Fail("cannot read the cluster token: " + token.status().message());
  auto format = shoal::ParseLogFormat(log_format);
  if (!format.ok()) return Fail(format.status().message());

  shoal::worker::WorkerIdentity identity;
  identity.host = Hostname();
  identity.name = name.empty() ? identity.host + "-" + std::to_string(getpid()) : name;
  unsigned cores = std::thread::hardware_concurrency();
  identity.cores = threads > 0 ? static_cast<uint32_t>(threads) : cores;
  if (device == "cpu") {
    identity.device = shoal::proto::DeviceKind::CPU;
    identity.device_memory_bytes = HostMemoryBytes();
  } else if (device.rfind("cuda:", 0) == 0) {
    identity.device = shoal::proto::DeviceKind::CUDA;
    char* end = nullptr;
    long idx = strtol(device.c_str() + 5, &end, 10);
    if (*end != '\0' || idx < 0) return Fail("--device must be cpu or cuda:N, got '" + device + "'");
    if (idx >= shoal::kernels::CudaDeviceCount()) {
      return Fail("--device " + device + ": no such CUDA device (" + shoal::kernels::CudaDeviceDescription(0) + ")");
    }
    identity.device_index = static_cast<int32_t>(idx);
  } else {
    return Fail("--device must be cpu or cuda:N, got '" + device + "'");
  }

  shoal::Status log_status = shoal::InitLogging({identity.name, *format, log_level, log_file});
  if (!log_status.ok()) return Fail(log_status.message());

  shoal::InstallShutdownSignals({SIGINT, SIGTERM});

  // The data plane: one UCX context and worker per process; its address travels in the registration so the
  // coordinator can hand it to this worker's peers.
  std::unique_ptr<shoal::comm::Communicator> comm;
  auto comm_options = shoal::comm::CommunicatorOptions::FromEnvironment();
  auto created = comm_options.ok() ? shoal::comm::Communicator::Create(*comm_options)
                                   : shoal::Result<std::unique_ptr<shoal::comm::Communicator>>(comm_options.status());
  if (created.ok()) {
    comm = std::move(*created);
    identity.data_address = comm->address();
    spdlog::info("data plane: UCX {} transport", shoal::comm::TransportName(comm->transport()));
  } else {
    spdlog::warn("data plane unavailable ({}); this worker can only run single-worker layouts",
                 created.status().ToString());
  }

  boost::asio::io_context io;
  shoal::worker::ControlSession* session_ptr = nullptr;
  shoal::worker::TrainingJobRunner trainer(
      [&session_ptr](capnp::MessageBuilder& b) { return session_ptr != nullptr && session_ptr->SendToCoordinator(b); },
      threads, comm.get());
  shoal::worker::IdleJobRunner idle_runner;
  shoal::worker::JobRunner* runner = idle ? static_cast<shoal::worker::JobRunner*>(&idle_runner) : &trainer;
  shoal::worker::ControlSession session(io, host_port->first, host_port->second, std::move(*token), identity,
                                        runner);
  session_ptr = &session;
  session.SetExitCallback([&io] { io.stop(); });
  std::thread signals([&] {
    int sig = shoal::WaitForShutdownSignal();
    spdlog::info("received {}, draining", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    session.Drain(sig == SIGTERM ? "SIGTERM" : "SIGINT");
  });
  signals.detach();
  session.Start();
  auto guard = boost::asio::make_work_guard(io);
  io.run();
  spdlog::info("worker {} exited", identity.name);
  return 0;
}
