// Internal to worker/comm: what an operation is, between the caller (OpState, shared with its CommHandle) and
// the progress thread (OpPlan: phases of tagged transfers plus local work; the Engine runs them).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"

namespace shoal::comm {

class Engine;

// Shared by the caller's handle and the engine. Everything but `done` and `name` is guarded by mu.
struct OpState {
  explicit OpState(std::string op_name) : name(std::move(op_name)) {}
  const std::string name;
  std::mutex mu;
  std::condition_variable cv;
  std::atomic<bool> done{false};
  Status status;
  size_t received_bytes = 0;
  std::map<int, int> outstanding_by_peer;  // rank -> transfers posted and not finished (for messages)
  Engine* engine = nullptr;                // the engine running it; null once done
  int rank = -1;
  uint64_t epoch = 0;
};

struct XferSpec {
  int peer = -1;          // job rank
  bool send = false;
  std::byte* data = nullptr;
  size_t bytes = 0;
  uint64_t tag = 0;
  bool exact = true;      // receive: the message must be exactly `bytes` long
};

struct Phase {
  std::vector<XferSpec> xfers;
  // Runs on the progress thread right after this phase's transfers were posted (local copies overlap the wire).
  std::function<void()> local;
  // A receive of this phase (index into xfers) completed with the expected length.
  std::function<void(size_t)> on_recv;
  // Every transfer of this phase completed.
  std::function<Status()> on_end;
};

struct OpPlan {
  std::shared_ptr<OpState> state;
  uint64_t epoch = 0;
  std::vector<Phase> phases;
  // (tag, mask) of messages that belong to this call: drained if the call fails, so that the peers' sends of a
  // failed call complete instead of waiting for a receive that will never be posted.
  std::vector<std::pair<uint64_t, uint64_t>> tombstones;
  // Communicator-owned scratch (reduction inputs, accumulators); freed with the plan.
  std::vector<float> scratch;
  // Per-op state shared by the phase callbacks.
  std::shared_ptr<void> context;
};

}  // namespace shoal::comm
