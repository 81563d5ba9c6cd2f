#include "worker/dist/overlap_lanes.h"

#include <algorithm>
#include <thread>

namespace shoal::dist {

std::pair<Status, Status> Baton::RunPair(const std::function<Status()>& lane0, const std::function<Status()>& lane1) {
  Status s1;
  std::thread helper([&] {
    Acquire(1);
    s1 = lane1();
    Finish(1);
  });
  Acquire(0);
  Status s0 = lane0();
  Finish(0);
  helper.join();
  return {s0, s1};
}

void Baton::Acquire(int lane) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return holder_ == lane; });
}

void Baton::Finish(int lane) {
  std::lock_guard<std::mutex> lock(mu_);
  finished_[lane] = true;
  holder_ = 1 - lane;
  cv_.notify_all();
}

bool Baton::Yield(int lane) {
  std::unique_lock<std::mutex> lock(mu_);
  if (finished_[1 - lane]) return false;
  holder_ = 1 - lane;
  cv_.notify_all();
  cv_.wait(lock, [&] { return holder_ == lane; });
  return true;
}

Status LaneExchange::Wait(model::ExchangeTicket ticket) {
  const auto deadline = std::chrono::steady_clock::now() + base_->options().deadline;
  // Let the other lane compute while this exchange is in flight; when both lanes wait on their peers, each
  // turn first waits a little on its own exchange so that the baton does not spin between them.
  bool yielded_last = false;
  while (!base_->Poll(ticket, yielded_last ? std::chrono::microseconds(50) : std::chrono::microseconds(0))) {
    if (std::chrono::steady_clock::now() >= deadline || base_->stopped()) break;  // WaitWithin reports it
    yielded_last = baton_->Yield(lane_);
    if (!yielded_last) break;  // the other lane finished: block on the exchange
    ++yields_;
  }
  return base_->WaitWithin(ticket, std::max(std::chrono::steady_clock::duration::zero(),
                                            deadline - std::chrono::steady_clock::now()));
}

}  // namespace shoal::dist
