// Waiting on the data plane from the trainer thread: every wait has a deadline (a dead or hung peer never hangs
// the survivors, DESIGN.md §6) and gives way to the job's stop flag (the runner joins the thread on Release).
#pragma once

#include <atomic>
#include <chrono>

#include "common/status.h"
#include "worker/comm/communicator.h"

namespace shoal::dist {

struct WaitPolicy {
  std::chrono::milliseconds timeout{120'000};  // per wait
  const std::atomic<bool>* stop = nullptr;     // raised: the wait ends Cancelled
};

// Waits for `handle` until it ends, `policy.timeout` passes (DeadlineExceeded naming the ranks still waited on)
// or the stop flag rises (the operation is cancelled). Adds the seconds spent blocked to *waited_s when given.
Status WaitFor(comm::CommHandle& handle, const WaitPolicy& policy, double* waited_s = nullptr);

}  // namespace shoal::dist
