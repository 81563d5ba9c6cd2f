// The comm-backed ExpertExchange (worker/model/expert_parallel.h): the MoE layer's counts, dispatch and combine
// as AllToAllV over the EP group's comm::Group (worker/comm/communicator.h), every Wait bounded by a deadline.
//
// Payload (reference/deepseek-v3.md §5.5): rows are encoded into buffers this exchange owns (STYLE.md §7) in
// the format ExchangePrecision picks per kind: fp32 (default, bit-exact against the single-process model), FP8
// E4M3 with power-of-two 1×128 scales for the dispatches, BF16 for the combines. The encoding runs on the
// calling thread inside Start*, the decoding inside Wait.
//
// Usage (one per EP group and process, next to the Communicator it borrows):
//   ASSIGN_OR_RETURN(auto ep, dist::EpExchange::Create(comm, ep_group, {.precision = {.dispatch_fp8 = true}}));
//   RETURN_IF_ERROR(model->SetExpertExchange(ep.get()));
// Group order is EP-rank order: member i holds experts [i·E/EP, (i+1)·E/EP).
//
// Failures: Wait returns the communicator's Status (Unavailable naming a dead peer, DeadlineExceeded naming the
// ranks still waited on, DataLoss for mismatched counts) prefixed with the exchange ("layer 3 dispatch: ...").
// After a failure the job's epoch is over (DESIGN.md §6): the trainer reports it and the coordinator restarts the
// group; the exchange itself keeps no state that needs repair.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "worker/comm/group.h"
#include "worker/model/expert_parallel.h"

namespace shoal::comm {
class Communicator;
class CommHandle;
}  // namespace shoal::comm

namespace shoal::dist {

struct EpExchangeOptions {
  model::ExchangePrecision precision;             // fp32 both ways by default
  std::chrono::milliseconds deadline{120'000};    // per Wait
  // Start* wait for their exchange to complete before they return, so nothing overlaps it: the no-overlap
  // baseline of tools/bench/overlap (its wait time is the whole exchange time). Off in training.
  bool serialize = false;
};

class EpExchange : public model::ExpertExchange {
 public:
  // What Wait spent, for benchmarks: time blocked in Wait (the exposed communication) and bytes moved.
  struct Stats {
    int64_t exchanges = 0;      // Start* calls
    double wait_seconds = 0;    // Σ time inside Wait
    double encode_seconds = 0;  // Σ encoding + decoding
    int64_t bytes_sent = 0;     // payload bytes to other ranks
  };

  // `comm` is connected and outlives the exchange; this rank must be a member of `group`.
  static Result<std::unique_ptr<EpExchange>> Create(comm::Communicator* comm, comm::Group group,
                                                    EpExchangeOptions options = {});
  ~EpExchange() override;

  int size() const override;
  int rank() const override;
  model::ExchangeTicket StartCounts(int64_t layer, std::span<const int32_t> expert_counts,
                                    std::span<int32_t> recv_counts) override;
  model::ExchangeTicket StartRows(const model::ExchangeRows& rows) override;
  Status Wait(model::ExchangeTicket ticket) override;
  // Waits up to `max_wait` (0: not at all) for the exchange to end; true when it has (OK or not: Wait says
  // which). Time spent here counts as wait time.
  bool Poll(model::ExchangeTicket ticket, std::chrono::microseconds max_wait);
  // A raised flag ends waits with Cancelled (the job is being stopped); null: only the deadline ends them.
  void SetStop(const std::atomic<bool>* stop) { stop_ = stop; }
  bool stopped() const { return stop_ != nullptr && stop_->load(); }
  // Wait with an explicit timeout instead of options().deadline.
  Status WaitWithin(model::ExchangeTicket ticket, std::chrono::steady_clock::duration timeout);

  const Stats& stats() const { return stats_; }
  void ResetStats() { stats_ = {}; }
  const EpExchangeOptions& options() const { return options_; }

 private:
  struct Pending;
  EpExchange(comm::Communicator* comm, comm::Group group, int my_index, EpExchangeOptions options);
  Pending* Find(int64_t id);
  void WaitInStart(Pending& p);

  comm::Communicator* comm_;
  comm::Group group_;
  int my_index_;
  EpExchangeOptions options_;
  Stats stats_;
  int64_t next_id_ = 0;
  const std::atomic<bool>* stop_ = nullptr;
  std::vector<std::unique_ptr<Pending>> pending_;  // in flight, by ticket
};

}  // namespace shoal::dist
