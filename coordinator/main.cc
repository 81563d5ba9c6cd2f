// shoal-coordinator: accepts job specs, places stages on attached workers, keeps state in RocksDB.
#include <signal.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <thread>

#include "common/logging.h"
#include "common/signals.h"
#include "coordinator/coordinator.h"

int main(int argc, char** argv) {
  CLI::App app{"shoal-coordinator: the shoal control plane (jobs, workers, placement, state in RocksDB)"};
  shoal::coordinator::CoordinatorOptions options;
  std::string log_format = "text", log_level = "info", log_file;
  int heartbeat_ms = 1000, suspect_ms = 3000, dead_ms = 6000;
  app.add_option("--state-dir", options.state_dir, "Directory for RocksDB state, the cluster token and the address")
      ->required();
  app.add_option("--listen", options.listen, "HOST:PORT for workers and the CLI (port 0: any free port)")
      ->default_val("127.0.0.1:7070");
  app.add_option("--http", options.http, "HOST:PORT for /metrics (Prometheus) and /healthz; off by default");
  app.add_option("--heartbeat-interval-ms", heartbeat_ms, "Heartbeat period asked of workers")->default_val(1000);
  app.add_option("--suspect-after-ms", suspect_ms, "Silence after which a worker is SUSPECT")->default_val(3000);
  app.add_option("--dead-after-ms", dead_ms, "Silence after which a worker is DEAD")->default_val(6000);
  app.add_option("--io-threads", options.io_threads, "Threads running the actors and the network")->default_val(1);
  app.add_option("--log-format", log_format, "text or json")->default_val("text");
  app.add_option("--log-level", log_level, "trace|debug|info|warn|error")->default_val("info");
  app.add_option("--log-file", log_file, "Log to this file instead of stderr");
  CLI11_PARSE(app, argc, argv);

  auto format = shoal::ParseLogFormat(log_format);
  if (!format.ok()) {
    fprintf(stderr, "shoal-coordinator: %s\n", format.status().message().c_str());
    return 2;
  }
  shoal::Status log_status = shoal::InitLogging({"coordinator", *format, log_level, log_file});
  if (!log_status.ok()) {
    fprintf(stderr, "shoal-coordinator: %s\n", log_status.message().c_str());
    return 2;
  }
  if (!(heartbeat_ms > 0 && suspect_ms > heartbeat_ms && dead_ms > suspect_ms)) {
    fprintf(stderr, "shoal-coordinator: need 0 < --heartbeat-interval-ms < --suspect-after-ms < --dead-after-ms\n");
    return 2;
  }
  options.health.heartbeat_interval = std::chrono::milliseconds(heartbeat_ms);
  options.health.suspect_after = std::chrono::milliseconds(suspect_ms);
  options.health.dead_after = std::chrono::milliseconds(dead_ms);

  shoal::InstallShutdownSignals({SIGINT, SIGTERM});

  auto coordinator = shoal::coordinator::Coordinator::Start(options);
  if (!coordinator.ok()) {
    spdlog::error("cannot start: {}", coordinator.status().ToString());
    fprintf(stderr, "shoal-coordinator: %s\n", coordinator.status().ToString().c_str());
    return 1;
  }
  std::thread signals([&] {
    int sig = shoal::WaitForShutdownSignal();
    spdlog::info("received {}, shutting down", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    (*coordinator)->Shutdown();
  });
  signals.detach();
  (*coordinator)->Wait();
  coordinator->reset();
  spdlog::info("coordinator stopped");
  return 0;
}
