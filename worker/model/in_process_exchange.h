// An in-process ExpertExchange for tests: the EP ranks are Model instances of one process, each driven by its own
// thread, exchanging rows through memory with the same encodings as the comm-backed exchange
// (worker/dist/ep_exchange.h).
//
// Only one rank computes at a time: RunRanks gives each thread a baton (one mutex) that it holds while it
// computes and releases while it waits for its peers inside Wait. The CPU kernels share a process-wide thread pool
// and OpenBLAS's global thread count (kernels/cpu/blas.h), so concurrent compute threads would step on each
// other; with the baton the run is deterministic and the kernels see one caller, as in production.
//
//   InProcessExchangeGroup group(/*size=*/2, {});
//   Status st = group.RunRanks([&](int rank) -> Status {
//     RETURN_IF_ERROR(models[rank]->SetExpertExchange(group.exchange(rank)));
//     return models[rank]->ForwardStage(...);
//   });
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "worker/model/expert_parallel.h"

namespace shoal::model {

class InProcessExchangeGroup {
 public:
  explicit InProcessExchangeGroup(int size, ExchangePrecision precision = {});
  ~InProcessExchangeGroup();

  int size() const { return size_; }
  ExpertExchange* exchange(int rank);

  // Runs fn(rank) for every rank on its own thread (holding the baton) and returns the first error by rank. A rank
  // that fails while its peers wait for it fails them too (Aborted naming it), so RunRanks never hangs.
  Status RunRanks(const std::function<Status(int rank)>& fn);

  // Exchanges started by each rank (counts + rows), for tests that check which exchanges ran.
  int64_t exchanges_started(int rank) const;

 private:
  class Rank;
  struct Slot;
  // Called by Rank with the baton held.
  int64_t Post(int rank, const std::function<void(Slot&)>& post);
  Status Await(int rank, int64_t seq);  // releases the baton while it waits
  void Finish(int64_t seq);

  int size_;
  ExchangePrecision precision_;
  std::vector<std::unique_ptr<Rank>> ranks_;
  std::mutex baton_;
  std::mutex mu_;  // guards slots_ and failed_; taken with or without the baton
  std::condition_variable cv_;
  std::map<int64_t, std::unique_ptr<Slot>> slots_;  // by collective sequence number
  std::vector<bool> exited_;                         // [rank] its fn returned
};

}  // namespace shoal::model
