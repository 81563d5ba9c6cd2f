#include "worker/dist/wait.h"

#include <algorithm>

namespace shoal::dist {

Status WaitFor(comm::CommHandle& handle, const WaitPolicy& policy, double* waited_s) {
  using Clock = std::chrono::steady_clock;
  constexpr auto kSlice = std::chrono::milliseconds(50);  // how often the stop flag is looked at
  const auto start = Clock::now();
  const auto deadline = start + policy.timeout;
  Status status;
  while (true) {
    const auto now = Clock::now();
    const auto until = policy.stop != nullptr ? std::min(deadline, now + kSlice) : deadline;
    status = handle.WaitUntil(until);
    if (status.code() != StatusCode::kDeadlineExceeded || Clock::now() >= deadline) break;
    if (policy.stop != nullptr && policy.stop->load()) {
      handle.Cancel().IgnoreError();
      status = CancelledError("stopped while waiting for " + handle.name());
      break;
    }
  }
  if (waited_s != nullptr) *waited_s += std::chrono::duration<double>(Clock::now() - start).count();
  return status;
}

}  // namespace shoal::dist
