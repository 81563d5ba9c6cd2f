// Two micro-batches' compute interleaved on one rank so that each one's expert all-to-all runs while the other
// computes (DualPipe's overlapped F&B pairs; DESIGN.md §3 "Overlap", reference/deepseek-v3.md §5.4).
//
// Each half of a pair runs on its own thread, a "lane", but only the lane holding the baton computes, so the
// two never compete for the cores or touch the executor's state at once. Lanes hand the baton over only inside
// an exchange's Wait (LaneExchange): a lane that would block on its all-to-all lets the other lane compute
// until that one blocks on its own all-to-all or finishes, then takes the baton back. The MoE layer itself
// is unchanged: it starts its dispatch, computes what it can (the shared expert), and waits, as in a
// single-lane run; the wait is where the other micro-batch's attention, experts or backward fill the gap.
//
//   lane 0 (forward of mb i, chunk a)          lane 1 (backward of mb j, chunk b)
//   attention, router, Start(dispatch) ──Wait──► backward of the head and layers, Start(grad dispatch)
//              ◄────────────────────────────────── Wait
//   experts, Start(combine) ────────────Wait──► experts' backward, Start(grad combine) ...
//
// Deadlock freedom: every lane that holds the baton either computes (and so reaches its next exchange start or
// its end) or waits on an exchange; a waiting lane hands the baton to the other lane whenever that one is not
// finished, so every lane on every rank keeps reaching its next exchange start, and each exchange completes
// once all its members started it. The two lanes use EpExchanges on different comm group ids, so the order in
// which the lanes' exchanges are started may differ from rank to rank.
//
// Numerics are those of the sequential pair: the same kernels on the same data; only the order of independent
// work changes.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>

#include "common/status.h"
#include "worker/dist/ep_exchange.h"
#include "worker/model/expert_parallel.h"

namespace shoal::dist {

class Baton {
 public:
  // Runs lane0() on the calling thread and lane1() on a helper thread, interleaved as described above; returns
  // the first error (lane 0's first), after both lanes ended.
  std::pair<Status, Status> RunPair(const std::function<Status()>& lane0, const std::function<Status()>& lane1);

  // Inside a lane: hands the baton to the other lane if it has not finished and waits until it comes back.
  // False (at once) when the other lane has finished.
  bool Yield(int lane);

 private:
  void Acquire(int lane);
  void Finish(int lane);

  std::mutex mu_;
  std::condition_variable cv_;
  int holder_ = 0;
  bool finished_[2] = {false, false};
};

// The ExpertExchange a lane's model uses: the lane's EpExchange, whose Wait yields the baton while the
// exchange is in flight. Waits are bounded by the EpExchange's deadline.
class LaneExchange final : public model::ExpertExchange {
 public:
  LaneExchange(EpExchange* base, Baton* baton, int lane) : base_(base), baton_(baton), lane_(lane) {}

  int size() const override { return base_->size(); }
  int rank() const override { return base_->rank(); }
  model::ExchangeTicket StartCounts(int64_t layer, std::span<const int32_t> expert_counts,
                                    std::span<int32_t> recv_counts) override {
    return base_->StartCounts(layer, expert_counts, recv_counts);
  }
  model::ExchangeTicket StartRows(const model::ExchangeRows& rows) override { return base_->StartRows(rows); }
  Status Wait(model::ExchangeTicket ticket) override;

  // Wait calls that found the exchange still in flight and let the other lane compute.
  int64_t yields() const { return yields_; }

 private:
  EpExchange* base_;
  Baton* baton_;
  int lane_;
  int64_t yields_ = 0;
};

}  // namespace shoal::dist
