// Replay: the one interpreter of op lists (schedule/replay.h). Ranks advance in rounds; a rank runs until it
// reaches a receive whose tensor has not been sent yet. Sends never block, so every rank's timeline depends only
// on when the tensors it receives were sent, not on the order in which ranks are advanced.
#include "schedule/replay.h"

#include <algorithm>
#include <map>
#include <string>
#include <tuple>

namespace shoal::schedule::internal {
namespace {

struct MessageKey {
  bool grad = false;  // activation (false) or gradient (true)
  int src = 0, dst = 0;
  int stage = 0;      // the sender's stage
  int micro_batch = 0;
  friend auto operator<=>(const MessageKey&, const MessageKey&) = default;
};

struct Message {
  double arrival = 0;
  bool consumed = false;
  int src_op = 0;
};

// Per (chunk, micro-batch) progress on one rank.
struct ChunkState {
  std::vector<char> input, fwd, bwd, split, wgt, grad;  // input received, F done, B done, B was split, W done,
                                                        // output gradient received
  explicit ChunkState(int m) : input(m), fwd(m), bwd(m), split(m), wgt(m), grad(m) {}
};

struct RankState {
  size_t pc = 0;
  double t = 0;
  double busy = 0;
  int in_flight = 0;
  std::vector<int> in_flight_per_chunk;
  int peak = 0;
  std::vector<int> at_peak;
  std::vector<ChunkState> chunks;
};

class Replayer {
 public:
  Replayer(const Schedule& s, const std::vector<OpCosts>& costs) : s_(s), costs_(costs) {}

  Result<SimResult> Run() {
    RETURN_IF_ERROR(CheckShape());
    ranks_.resize(s_.pp);
    for (int r = 0; r < s_.pp; ++r) {
      const size_t nc = s_.ranks[r].chunks.size();
      ranks_[r].chunks.assign(nc, ChunkState(s_.num_micro_batches));
      ranks_[r].in_flight_per_chunk.assign(nc, 0);
      ranks_[r].at_peak.assign(nc, 0);
    }
    for (bool progress = true; progress;) {
      progress = false;
      for (int r = 0; r < s_.pp; ++r) {
        RankState& st = ranks_[r];
        const std::vector<Op>& ops = s_.ranks[r].ops;
        while (st.pc < ops.size()) {
          ASSIGN_OR_RETURN(bool ran, Step(r, static_cast<int>(st.pc), ops[st.pc]));
          if (!ran) break;
          ++st.pc;
          progress = true;
        }
      }
    }
    RETURN_IF_ERROR(CheckFinished());
    SimResult out;
    for (const RankState& st : ranks_) out.makespan = std::max(out.makespan, st.t);
    for (const RankState& st : ranks_) {
      RankSimResult rr;
      rr.busy = st.busy;
      rr.finish = st.t;
      rr.bubble = out.makespan - st.busy;
      rr.peak_in_flight = st.peak;
      rr.in_flight_at_peak = st.at_peak;
      out.ranks.push_back(std::move(rr));
    }
    return out;
  }

 private:
  Status Bad(int rank, int idx, const Op& op, const std::string& what) const {
    return InvalidArgumentError(std::string(ToString(s_.kind)) + " schedule: rank " + std::to_string(rank) +
                                ", op " + std::to_string(idx) + " " + ToString(op) + ": " + what);
  }

  Status CheckShape() const {
    const std::string name(ToString(s_.kind));
    if (s_.pp < 1 || s_.num_micro_batches < 1) {
      return InvalidArgumentError(name + " schedule: pp and num_micro_batches must be positive");
    }
    if (s_.num_stages != NumStages(s_.kind, s_.pp)) {
      return InvalidArgumentError(name + " schedule: " + std::to_string(s_.num_stages) + " stages, expected " +
                                  std::to_string(NumStages(s_.kind, s_.pp)) + " for pp " + std::to_string(s_.pp));
    }
    if (static_cast<int>(s_.ranks.size()) != s_.pp) {
      return InvalidArgumentError(name + " schedule: " + std::to_string(s_.ranks.size()) + " rank lists for pp " +
                                  std::to_string(s_.pp));
    }
    if (static_cast<int>(costs_.size()) != s_.num_stages) {
      return InvalidArgumentError(name + " schedule: " + std::to_string(costs_.size()) + " stage costs for " +
                                  std::to_string(s_.num_stages) + " stages");
    }
    for (int r = 0; r < s_.pp; ++r) {
      if (s_.ranks[r].chunks != ChunksOfRank(s_.kind, s_.pp, s_.num_micro_batches, r)) {
        return InvalidArgumentError(name + " schedule: rank " + std::to_string(r) +
                                    " does not hold the chunks of the layout (stages, directions, micro-batches)");
      }
    }
    return Status::OK();
  }

  // The chunk of rank `r` that runs `stage` for `mb`, or -1 when another rank (or nobody) does.
  int LocalChunk(int r, int stage, int mb) const {
    if (stage < 0 || stage >= s_.num_stages) return -1;
    if (RankOfStage(s_.kind, s_.pp, s_.num_micro_batches, stage, mb) != r) return -1;
    const std::vector<ChunkInfo>& chunks = s_.ranks[r].chunks;
    for (size_t c = 0; c < chunks.size(); ++c) {
      if (chunks[c].stage == stage && chunks[c].holds(mb)) return static_cast<int>(c);
    }
    return -1;
  }
  int RankOf(int stage, int mb) const {
    if (stage < 0 || stage >= s_.num_stages) return -1;
    return RankOfStage(s_.kind, s_.pp, s_.num_micro_batches, stage, mb);
  }

  // Does (chunk, stage, micro_batch) name something rank r runs?
  Status CheckRef(int r, int idx, const Op& op, int chunk, int stage, int mb) const {
    const std::vector<ChunkInfo>& chunks = s_.ranks[r].chunks;
    if (chunk < 0 || chunk >= static_cast<int>(chunks.size())) {
      return Bad(r, idx, op, "chunk " + std::to_string(chunk) + " does not exist on this rank");
    }
    if (chunks[chunk].stage != stage) {
      return Bad(r, idx, op, "chunk " + std::to_string(chunk) + " holds stage " + std::to_string(chunks[chunk].stage) +
                                 ", not " + std::to_string(stage));
    }
    if (mb < 0 || mb >= s_.num_micro_batches) {
      return Bad(r, idx, op, "micro-batch out of range [0, " + std::to_string(s_.num_micro_batches) + ")");
    }
    if (!chunks[chunk].holds(mb)) {
      return Bad(r, idx, op, "micro-batch " + std::to_string(mb) + " does not pass through chunk " +
                                 std::to_string(chunk) + " on this rank");
    }
    return Status::OK();
  }

  Status StartForward(int r, int idx, const Op& op, int c, int mb) {
    ChunkState& cs = ranks_[r].chunks[c];
    const int stage = s_.ranks[r].chunks[c].stage;
    if (cs.fwd[mb]) return Bad(r, idx, op, "a second forward of this micro-batch on this chunk");
    if (stage > 0 && !cs.input[mb]) {
      const int lc = LocalChunk(r, stage - 1, mb);
      if (lc < 0) return Bad(r, idx, op, "its input activation has not been received (no RECV_ACT before it)");
      if (!ranks_[r].chunks[lc].fwd[mb]) {
        return Bad(r, idx, op, "its input comes from stage " + std::to_string(stage - 1) +
                                   " on this rank, whose forward has not run yet");
      }
    }
    cs.fwd[mb] = 1;
    RankState& st = ranks_[r];
    ++st.in_flight;
    ++st.in_flight_per_chunk[c];
    if (st.in_flight > st.peak) {
      st.peak = st.in_flight;
      st.at_peak = st.in_flight_per_chunk;
    }
    return Status::OK();
  }

  Status StartBackward(int r, int idx, const Op& op, int c, int mb, bool split) {
    ChunkState& cs = ranks_[r].chunks[c];
    const int stage = s_.ranks[r].chunks[c].stage;
    if (!cs.fwd[mb]) return Bad(r, idx, op, "backward before the forward of this micro-batch");
    if (cs.bwd[mb]) return Bad(r, idx, op, "a second backward of this micro-batch on this chunk");
    if (stage < s_.num_stages - 1 && !cs.grad[mb]) {
      const int lc = LocalChunk(r, stage + 1, mb);
      if (lc < 0) return Bad(r, idx, op, "its output gradient has not been received (no RECV_GRAD before it)");
      if (!ranks_[r].chunks[lc].bwd[mb]) {
        return Bad(r, idx, op, "its output gradient comes from stage " + std::to_string(stage + 1) +
                                   " on this rank, whose backward has not run yet");
      }
    }
    cs.bwd[mb] = 1;
    cs.split[mb] = split;
    if (!split) FinishWeight(r, c, mb);
    return Status::OK();
  }

  void FinishWeight(int r, int c, int mb) {
    ranks_[r].chunks[c].wgt[mb] = 1;
    --ranks_[r].in_flight;
    --ranks_[r].in_flight_per_chunk[c];
  }

  Status CheckPeer(int r, int idx, const Op& op, int expected) const {
    if (expected < 0) return Bad(r, idx, op, "there is no stage on the other side of this edge");
    if (expected == r) return Bad(r, idx, op, "both stages of this edge are on this rank: no message is needed");
    if (op.peer != expected) return Bad(r, idx, op, "the other stage of this edge runs on rank " + std::to_string(expected));
    return Status::OK();
  }

  // Runs one op; false when it is a receive that has to wait.
  Result<bool> Step(int r, int idx, const Op& op) {
    RankState& st = ranks_[r];
    RETURN_IF_ERROR(CheckRef(r, idx, op, op.chunk, op.stage, op.micro_batch));
    if (op.direction != s_.ranks[r].chunks[op.chunk].direction) {
      return Bad(r, idx, op, "direction does not match the chunk's");
    }
    const OpCosts& cost = costs_[op.stage];
    const int c = op.chunk, mb = op.micro_batch;
    ChunkState& cs = st.chunks[c];
    switch (op.type) {
      case OpType::kForward:
        RETURN_IF_ERROR(StartForward(r, idx, op, c, mb));
        Compute(st, cost.f);
        return true;
      case OpType::kBackwardInput:
      case OpType::kBackward: {
        const bool split = op.type == OpType::kBackwardInput;
        RETURN_IF_ERROR(StartBackward(r, idx, op, c, mb, split));
        Compute(st, split ? cost.b : cost.b + cost.w);
        return true;
      }
      case OpType::kBackwardWeight:
        if (!cs.bwd[mb]) return Bad(r, idx, op, "weight gradient before the backward of this micro-batch");
        if (cs.wgt[mb]) return Bad(r, idx, op, "a second weight gradient of this micro-batch on this chunk");
        FinishWeight(r, c, mb);
        Compute(st, cost.w);
        return true;
      case OpType::kForwardBackward: {
        RETURN_IF_ERROR(CheckRef(r, idx, op, op.bwd_chunk, op.bwd_stage, op.bwd_micro_batch));
        if (op.bwd_chunk == op.chunk) return Bad(r, idx, op, "an F&B pair needs two different chunks");
        RETURN_IF_ERROR(StartForward(r, idx, op, c, mb));
        RETURN_IF_ERROR(StartBackward(r, idx, op, op.bwd_chunk, op.bwd_micro_batch, /*split=*/false));
        const OpCosts& bc = costs_[op.bwd_stage];
        const double plain = cost.f + bc.b + bc.w;
        auto ratio = [](const OpCosts& k) { return k.pair() / (k.f + k.b + k.w); };
        Compute(st, cost.f + cost.b + cost.w > 0 && bc.f + bc.b + bc.w > 0 ? plain * 0.5 * (ratio(cost) + ratio(bc))
                                                                            : plain);
        return true;
      }
      case OpType::kSendActivation: {
        RETURN_IF_ERROR(CheckPeer(r, idx, op, RankOf(op.stage + 1, mb)));
        if (!cs.fwd[mb]) return Bad(r, idx, op, "sends an activation whose forward has not run");
        return Post(r, idx, op, MessageKey{false, r, op.peer, op.stage, mb}, cost.comm_latency);
      }
      case OpType::kSendGrad: {
        RETURN_IF_ERROR(CheckPeer(r, idx, op, RankOf(op.stage - 1, mb)));
        if (!cs.bwd[mb]) return Bad(r, idx, op, "sends a gradient whose backward has not run");
        return Post(r, idx, op, MessageKey{true, r, op.peer, op.stage, mb}, cost.comm_latency);
      }
      case OpType::kRecvActivation: {
        RETURN_IF_ERROR(CheckPeer(r, idx, op, RankOf(op.stage - 1, mb)));
        if (cs.input[mb]) return Bad(r, idx, op, "this activation was already received");
        return Take(st, MessageKey{false, op.peer, r, op.stage - 1, mb}, &cs.input[mb]);
      }
      case OpType::kRecvGrad: {
        RETURN_IF_ERROR(CheckPeer(r, idx, op, RankOf(op.stage + 1, mb)));
        if (cs.grad[mb]) return Bad(r, idx, op, "this gradient was already received");
        return Take(st, MessageKey{true, op.peer, r, op.stage + 1, mb}, &cs.grad[mb]);
      }
    }
    return Bad(r, idx, op, "unknown op type");
  }

  static void Compute(RankState& st, double cost) {
    st.t += cost;
    st.busy += cost;
  }

  Result<bool> Post(int r, int idx, const Op& op, const MessageKey& key, double latency) {
    auto [it, inserted] = messages_.emplace(key, Message{ranks_[r].t + latency, false, idx});
    if (!inserted) return Bad(r, idx, op, "this tensor was already sent (op " + std::to_string(it->second.src_op) + ")");
    return true;
  }

  bool Take(RankState& st, const MessageKey& key, char* flag) {
    auto it = messages_.find(key);
    if (it == messages_.end()) return false;  // not sent yet: wait
    it->second.consumed = true;
    st.t = std::max(st.t, it->second.arrival);
    *flag = 1;
    return true;
  }

  Status CheckFinished() const {
    std::string waits;
    for (int r = 0; r < s_.pp; ++r) {
      const std::vector<Op>& ops = s_.ranks[r].ops;
      if (ranks_[r].pc < ops.size()) {
        const Op& op = ops[ranks_[r].pc];
        const int sender_pc = static_cast<int>(ranks_[op.peer].pc);
        const bool sender_done = ranks_[op.peer].pc >= s_.ranks[op.peer].ops.size();
        waits += (waits.empty() ? "" : "; ") + std::string("rank ") + std::to_string(r) + " waits at op " +
                 std::to_string(ranks_[r].pc) + " " + ToString(op) + " (rank " + std::to_string(op.peer) +
                 (sender_done ? " finished without sending it)"
                              : " is itself waiting at op " + std::to_string(sender_pc) + ")");
      }
    }
    if (!waits.empty()) {
      return InvalidArgumentError(std::string(ToString(s_.kind)) + " schedule: deadlock: " + waits);
    }
    for (int r = 0; r < s_.pp; ++r) {
      const std::vector<ChunkInfo>& chunks = s_.ranks[r].chunks;
      for (size_t c = 0; c < chunks.size(); ++c) {
        const ChunkState& cs = ranks_[r].chunks[c];
        for (int mb = chunks[c].micro_batch_begin; mb < chunks[c].micro_batch_end; ++mb) {
          const char* missing = !cs.fwd[mb] ? "F" : !cs.bwd[mb] ? "B" : !cs.wgt[mb] ? "W" : nullptr;
          if (missing) {
            return InvalidArgumentError(std::string(ToString(s_.kind)) + " schedule: rank " + std::to_string(r) +
                                        " chunk " + std::to_string(c) + " (stage " + std::to_string(chunks[c].stage) +
                                        "): micro-batch " + std::to_string(mb) + " has no " + missing);
          }
        }
      }
    }
    for (const auto& [key, msg] : messages_) {
      if (!msg.consumed) {
        return InvalidArgumentError(std::string(ToString(s_.kind)) + " schedule: rank " + std::to_string(key.src) +
                                    ", op " + std::to_string(msg.src_op) + " " + ToString(s_.ranks[key.src].ops[msg.src_op]) +
                                    ": rank " + std::to_string(key.dst) + " never receives it");
      }
    }
    return Status::OK();
  }

  const Schedule& s_;
  const std::vector<OpCosts>& costs_;
  std::vector<RankState> ranks_;
  std::map<MessageKey, Message> messages_;
};

}  // namespace

Result<SimResult> Replay(const Schedule& schedule, const std::vector<OpCosts>& stage_costs) {
  return Replayer(schedule, stage_costs).Run();
}

}  // namespace shoal::schedule::internal
