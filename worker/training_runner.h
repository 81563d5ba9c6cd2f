// TrainingJobRunner: the JobRunner that trains. An accepted assignment starts a Trainer on its own thread;
// steps, checkpoint shards and failures are reported to the coordinator through the control session.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include <functional>

#include <capnp/message.h>

#include "worker/job_runner.h"

namespace shoal::comm {
class Communicator;
}

namespace shoal::worker {

class TrainingJobRunner final : public JobRunner {
 public:
  // `send` delivers a message to the coordinator (thread-safe; false when not connected). `comm` is the process's
  // data plane (null when UCX could not start: then only single-worker layouts can run).
  using SendFn = std::function<bool(capnp::MessageBuilder&)>;
  TrainingJobRunner(SendFn send, int threads, comm::Communicator* comm = nullptr);
  ~TrainingJobRunner() override;

  void Start(protocol::MessagePtr assignment) override;
  void Stop(const std::string& job_id, const std::string& reason) override;

 private:
  struct Run;
  void StopCurrent();

  SendFn send_;
  int threads_;
  comm::Communicator* comm_;
  std::unique_ptr<Run> run_;
};

}  // namespace shoal::worker
