// The coordinator service assembled: state store, actors, RPC routing, optional HTTP metrics endpoint.
// Used by main.cc and by in-process tests.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/clock.h"
#include "common/status.h"
#include "coordinator/worker_registry.h"

namespace boost::asio {
class io_context;
}

namespace shoal::coordinator {

struct CoordinatorOptions {
  std::string state_dir;
  std::string listen = "127.0.0.1:0";   // HOST:PORT; port 0 picks a free one (written to STATE_DIR/address)
  std::string http;                     // HOST:PORT of the metrics/health endpoint; empty = off
  HealthOptions health;
  int io_threads = 1;
};

class Coordinator {
 public:
  static Result<std::unique_ptr<Coordinator>> Start(CoordinatorOptions options);
  ~Coordinator();  // stops and joins

  // Blocks until Shutdown() (from a signal handler thread, the CLI's `down`, or a test).
  void Wait();
  void Shutdown();

  uint16_t port() const;
  uint16_t http_port() const;
  const std::string& cluster_id() const;

 private:
  struct Impl;
  explicit Coordinator(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace shoal::coordinator
