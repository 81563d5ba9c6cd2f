// What a worker does with an accepted assignment. The control session owns the lifecycle; a JobRunner owns
// the work (training, from worker/train). Calls come from the control session's strand.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "protocol/message.h"

namespace shoal::worker {

struct StepReportOut;  // defined by the training loop

class JobRunner {
 public:
  virtual ~JobRunner() = default;
  // Starts (or restarts at a newer epoch) the work described by the assignment. Returns quickly.
  virtual void Start(protocol::MessagePtr assignment) = 0;
  // Stops the work of `job_id` (release, cancel, drain, shutdown). Returns once it has stopped.
  virtual void Stop(const std::string& job_id, const std::string& reason) = 0;
};

// Holds the assignment and does nothing else (until training plugs in, and for control-plane tests).
class IdleJobRunner final : public JobRunner {
 public:
  void Start(protocol::MessagePtr assignment) override { current_ = std::move(assignment); }
  void Stop(const std::string&, const std::string&) override { current_.reset(); }

 private:
  protocol::MessagePtr current_;
};

}  // namespace shoal::worker
