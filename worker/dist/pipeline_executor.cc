#include "worker/dist/pipeline_executor.h"

#include <chrono>
#include <cstring>
#include <deque>
#include <map>
#include <tuple>

#include "common/check.h"
#include "worker/comm/communicator.h"
#include "worker/dist/overlap_lanes.h"

namespace shoal::dist {
namespace {

using Clock = std::chrono::steady_clock;
using schedule::Op;
using schedule::OpType;

double Since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// A tensor of the step, as the schedule names it: (kind, stage edge, micro-batch).
struct Key {
  PipeTensor kind = PipeTensor::kActivation;
  int edge = 0;
  int mb = 0;
  auto operator<=>(const Key&) const = default;
};

using Buffer = std::unique_ptr<std::vector<float>>;

// Which tensor a communication op moves (header comment of schedule/schedule.h).
Key KeyOf(const Op& op) {
  switch (op.type) {
    case OpType::kSendActivation: return {PipeTensor::kActivation, op.stage, op.micro_batch};
    case OpType::kRecvActivation: return {PipeTensor::kActivation, op.stage - 1, op.micro_batch};
    case OpType::kSendGrad: return {PipeTensor::kGrad, op.stage - 1, op.micro_batch};
    case OpType::kRecvGrad: return {PipeTensor::kGrad, op.stage, op.micro_batch};
    default: return {};
  }
}

enum StatIdx { kStatF = 0, kStatB = 1, kStatW = 2, kStatBW = 3, kStatFB = 4 };

}  // namespace

void PipelineTiming::Add(const PipelineTiming& o) {
  span_s += o.span_s;
  compute_s += o.compute_s;
  recv_wait_s += o.recv_wait_s;
  send_wait_s += o.send_wait_s;
  if (ops.size() < o.ops.size()) ops.resize(o.ops.size());
  for (size_t c = 0; c < o.ops.size(); ++c) {
    for (size_t k = 0; k < o.ops[c].size(); ++k) {
      ops[c][k].seconds += o.ops[c][k].seconds;
      ops[c][k].count += o.ops[c][k].count;
    }
  }
}

bool SplitsBackward(const schedule::RankSchedule& ops, int chunk) {
  for (const Op& op : ops.ops) {
    if (op.type == OpType::kBackwardInput && op.chunk == chunk) return true;
  }
  return false;
}

struct PipelineExecutor::Impl {
  DistLayout layout;
  const schedule::RankSchedule* ops = nullptr;
  std::vector<model::Model*> chunks;
  std::vector<bool> deferred;  // per chunk: defer_weight_grads
  comm::Communicator* comm = nullptr;
  EpExchange* lane_ep[2] = {nullptr, nullptr};  // F&B overlap (SetOverlapExchanges)
  int64_t yields = 0;
  size_t elements = 0;  // one micro-batch's hidden states
  WaitPolicy wait;

  // Step state.
  std::vector<Buffer> pool;
  std::map<Key, Buffer> tensors;
  struct PendingSend {
    comm::CommHandle handle;
    Buffer buffer;
  };
  std::deque<PendingSend> sends;
  struct PostedRecv {
    comm::CommHandle handle;
    Buffer buffer;
  };
  std::map<size_t, PostedRecv> recvs;  // by op index
  std::vector<size_t> recv_ops;        // op indices of the receives, in list order
  size_t next_recv = 0;                // next receive to post
  size_t recv_window = 4;
  std::vector<std::vector<int>> free_slots;   // per chunk
  std::vector<std::map<int, int>> slot_of;    // per chunk: micro-batch -> activation slot
  std::span<const model::MicroBatch> batches;
  model::LossScales scales;
  PipelineResult result;

  Buffer Acquire() {
    if (pool.empty()) return std::make_unique<std::vector<float>>(elements);
    Buffer b = std::move(pool.back());
    pool.pop_back();
    return b;
  }
  void Release(Buffer b) {
    if (b) pool.push_back(std::move(b));
  }
  Result<Buffer> Take(const Key& key, const Op& op) {
    auto it = tensors.find(key);
    if (it == tensors.end()) {
      return InternalError("pipeline rank " + std::to_string(layout.pp_rank) + ": " + schedule::ToString(op) +
                           " needs a tensor that was neither received nor computed here");
    }
    Buffer b = std::move(it->second);
    tensors.erase(it);
    return b;
  }
  int PeerRank(int pipeline_rank) const { return JobRank(pipeline_rank, layout.dp_rank, layout.dp); }

  std::span<std::byte> Bytes(Buffer& b) { return std::as_writable_bytes(std::span<float>(*b)); }

  void PostRecvs(size_t up_to_op) {
    while (next_recv < recv_ops.size() && (recvs.size() < recv_window || recv_ops[next_recv] <= up_to_op)) {
      const size_t idx = recv_ops[next_recv++];
      const Op& op = ops->ops[idx];
      const Key key = KeyOf(op);
      PostedRecv r;
      r.buffer = Acquire();
      r.handle = comm->Recv(PeerRank(op.peer), PipeTag(key.kind, key.edge, key.mb), Bytes(r.buffer));
      recvs.emplace(idx, std::move(r));
    }
  }

  // Sends that completed give their buffers back; a failed one ends the step.
  Status ReapSends() {
    while (!sends.empty() && sends.front().handle.Done()) {
      RETURN_IF_ERROR(sends.front().handle.Wait(std::chrono::seconds(0)));
      Release(std::move(sends.front().buffer));
      sends.pop_front();
    }
    return Status::OK();
  }

  int AcquireSlot(int chunk, int mb) {
    auto& free = free_slots[static_cast<size_t>(chunk)];
    CHECK(!free.empty()) << "chunk " << chunk << " has no free activation slot for micro-batch " << mb;
    int slot = free.back();
    free.pop_back();
    slot_of[static_cast<size_t>(chunk)][mb] = slot;
    return slot;
  }
  void ReleaseSlot(int chunk, int mb) {
    auto& m = slot_of[static_cast<size_t>(chunk)];
    auto it = m.find(mb);
    if (it == m.end()) return;
    free_slots[static_cast<size_t>(chunk)].push_back(it->second);
    m.erase(it);
  }

  void Record(int chunk, StatIdx idx, double seconds) {
    auto& s = result.timing.ops[static_cast<size_t>(chunk)][idx];
    s.seconds += seconds;
    s.count += 1;
    result.timing.compute_s += seconds;
  }

  Status Forward(const Op& op, int chunk, int mb, bool timed = true) {
    const StageLayout& st = layout.chunks[static_cast<size_t>(chunk)];
    model::Model& m = *chunks[static_cast<size_t>(chunk)];
    Buffer in, out;
    if (!st.has_embedding) { ASSIGN_OR_RETURN(in, Take({PipeTensor::kActivation, st.stage_idx - 1, mb}, op)); }
    if (!st.has_head) out = Acquire();
    m.SetActivationSlot(AcquireSlot(chunk, mb));
    auto t0 = Clock::now();
    Status s = m.ForwardStage(batches[static_cast<size_t>(mb)], in ? in->data() : nullptr,
                              out ? out->data() : nullptr, /*training=*/true);
    if (timed) Record(chunk, kStatF, Since(t0));
    RETURN_IF_ERROR(s.WithContext("stage " + std::to_string(st.stage_idx) + " forward of micro-batch " +
                                  std::to_string(mb)));
    Release(std::move(in));
    if (out) tensors[{PipeTensor::kActivation, st.stage_idx, mb}] = std::move(out);
    return Status::OK();
  }

  Status Backward(const Op& op, int chunk, int mb, bool fused, bool timed = true) {
    const StageLayout& st = layout.chunks[static_cast<size_t>(chunk)];
    model::Model& m = *chunks[static_cast<size_t>(chunk)];
    Buffer dout, din;
    if (!st.has_head) { ASSIGN_OR_RETURN(dout, Take({PipeTensor::kGrad, st.stage_idx, mb}, op)); }
    if (!st.has_embedding) din = Acquire();
    auto it = slot_of[static_cast<size_t>(chunk)].find(mb);
    if (it == slot_of[static_cast<size_t>(chunk)].end()) {
      return InternalError(schedule::ToString(op) + ": backward of a micro-batch whose forward did not run here");
    }
    m.SetActivationSlot(it->second);
    auto t0 = Clock::now();
    auto losses = m.BackwardStage(batches[static_cast<size_t>(mb)], scales, dout ? dout->data() : nullptr,
                                  din ? din->data() : nullptr);
    if (losses.ok() && fused && deferred[static_cast<size_t>(chunk)]) m.BackwardWeightStage();
    if (timed) Record(chunk, fused ? kStatBW : kStatB, Since(t0));
    if (!losses.ok()) {
      return losses.status().WithContext("stage " + std::to_string(st.stage_idx) + " backward of micro-batch " +
                                         std::to_string(mb));
    }
    result.losses.main_sum += losses->main_sum;
    result.losses.main_count += losses->main_count;
    result.losses.mtp_sum += losses->mtp_sum;
    result.losses.mtp_count += losses->mtp_count;
    result.losses.balance += losses->balance;
    Release(std::move(dout));
    if (din) tensors[{PipeTensor::kGrad, st.stage_idx - 1, mb}] = std::move(din);
    if (fused) ReleaseSlot(chunk, mb);
    return Status::OK();
  }

  Status Weight(const Op& op, int chunk, int mb) {
    model::Model& m = *chunks[static_cast<size_t>(chunk)];
    auto it = slot_of[static_cast<size_t>(chunk)].find(mb);
    if (it == slot_of[static_cast<size_t>(chunk)].end()) {
      return InternalError(schedule::ToString(op) + ": weight gradient of a micro-batch not in flight here");
    }
    m.SetActivationSlot(it->second);
    auto t0 = Clock::now();
    m.BackwardWeightStage();
    Record(chunk, kStatW, Since(t0));
    ReleaseSlot(chunk, mb);
    return Status::OK();
  }

  Status RunOp(size_t idx) {
    const Op& op = ops->ops[idx];
    switch (op.type) {
      case OpType::kForward: return Forward(op, op.chunk, op.micro_batch);
      case OpType::kBackwardInput: return Backward(op, op.chunk, op.micro_batch, /*fused=*/false);
      case OpType::kBackward: return Backward(op, op.chunk, op.micro_batch, /*fused=*/true);
      case OpType::kBackwardWeight: return Weight(op, op.chunk, op.micro_batch);
      case OpType::kForwardBackward: {
        auto t0 = Clock::now();
        if (lane_ep[0] != nullptr && lane_ep[1] != nullptr && op.chunk != op.bwd_chunk) {
          RETURN_IF_ERROR(OverlappedPair(op));
          Record(op.chunk, kStatFB, Since(t0));
          return Status::OK();
        }
        // No expert parallelism (nothing to hide) or one chunk: the forward, then the fused backward.
        RETURN_IF_ERROR(Forward(op, op.chunk, op.micro_batch, /*timed=*/false));
        RETURN_IF_ERROR(Backward(op, op.bwd_chunk, op.bwd_micro_batch, /*fused=*/true, /*timed=*/false));
        Record(op.chunk, kStatFB, Since(t0));
        return Status::OK();
      }
      case OpType::kSendActivation:
      case OpType::kSendGrad: {
        ASSIGN_OR_RETURN(Buffer b, Take(KeyOf(op), op));
        const Key key = KeyOf(op);
        PendingSend s;
        s.handle = comm->Send(PeerRank(op.peer), PipeTag(key.kind, key.edge, key.mb),
                              std::as_bytes(std::span<const float>(*b)));
        s.buffer = std::move(b);
        sends.push_back(std::move(s));
        return ReapSends();
      }
      case OpType::kRecvActivation:
      case OpType::kRecvGrad: {
        PostRecvs(idx);
        auto it = recvs.find(idx);
        CHECK(it != recvs.end()) << "receive " << idx << " was not posted";
        Status s = WaitFor(it->second.handle, wait, &result.timing.recv_wait_s);
        if (!s.ok()) return s.WithContext("pipeline rank " + std::to_string(layout.pp_rank) + " " + schedule::ToString(op));
        tensors[KeyOf(op)] = std::move(it->second.buffer);
        recvs.erase(it);
        PostRecvs(idx);
        return ReapSends();
      }
    }
    return Status::OK();
  }

  // The forward half on this thread (lane 0) and the backward half on a helper (lane 1), interleaved at their
  // all-to-all waits (overlap_lanes.h). Only the baton holder touches the executor's state.
  Status OverlappedPair(const Op& op) {
    model::Model& fwd = *chunks[static_cast<size_t>(op.chunk)];
    model::Model& bwd = *chunks[static_cast<size_t>(op.bwd_chunk)];
    Baton baton;
    LaneExchange lane0(lane_ep[0], &baton, 0), lane1(lane_ep[1], &baton, 1);
    RETURN_IF_ERROR(fwd.SetExpertExchange(&lane0));
    RETURN_IF_ERROR(bwd.SetExpertExchange(&lane1));
    auto [s0, s1] = baton.RunPair(
        [&] { return Forward(op, op.chunk, op.micro_batch, /*timed=*/false); },
        [&] { return Backward(op, op.bwd_chunk, op.bwd_micro_batch, /*fused=*/true, /*timed=*/false); });
    yields += lane0.yields() + lane1.yields();
    Status r0 = fwd.SetExpertExchange(lane_ep[0]);
    Status r1 = bwd.SetExpertExchange(lane_ep[0]);
    RETURN_IF_ERROR(s0);
    RETURN_IF_ERROR(s1);
    RETURN_IF_ERROR(r0);
    return r1;
  }

  // Leaves nothing in flight: receives are withdrawn and sends cancelled when a step fails.
  void Abandon() {
    for (auto& [idx, r] : recvs) r.handle.Cancel().IgnoreError();
    recvs.clear();
    for (auto& s : sends) s.handle.Cancel().IgnoreError();
    sends.clear();
  }
};

void PipelineExecutor::SetOverlapExchanges(EpExchange* lane0, EpExchange* lane1) {
  impl_->lane_ep[0] = lane0;
  impl_->lane_ep[1] = lane1;
}

int64_t PipelineExecutor::overlap_yields() const { return impl_->yields; }

void PipelineExecutor::SetWaitPolicy(const WaitPolicy& wait) { impl_->wait = wait; }

PipelineExecutor::~PipelineExecutor() {
  if (impl_) impl_->Abandon();
}

Result<std::unique_ptr<PipelineExecutor>> PipelineExecutor::Create(const DistLayout& layout,
                                                                   schedule::RankSchedule ops,
                                                                   std::vector<model::Model*> chunks,
                                                                   comm::Communicator* comm, int64_t micro_batch,
                                                                   int64_t seq_len, int64_t hidden,
                                                                   WaitPolicy wait) {
  if (chunks.size() != layout.chunks.size() || ops.chunks.size() != chunks.size()) {
    return InvalidArgumentError("PipelineExecutor: " + std::to_string(chunks.size()) + " models for " +
                                std::to_string(layout.chunks.size()) + " chunks");
  }
  bool has_comm_ops = false;
  for (const Op& op : ops.ops) has_comm_ops = has_comm_ops || op.is_comm();
  if (has_comm_ops && comm == nullptr) {
    return FailedPreconditionError("PipelineExecutor: the schedule sends and receives but there is no communicator");
  }
  std::unique_ptr<PipelineExecutor> e(new PipelineExecutor());
  e->ops_ = std::move(ops);
  e->impl_ = std::make_unique<Impl>();
  Impl& im = *e->impl_;
  im.layout = layout;
  im.ops = &e->ops_;
  im.chunks = std::move(chunks);
  im.comm = comm;
  im.elements = static_cast<size_t>(micro_batch * seq_len * hidden);
  im.wait = wait;
  im.recv_window = 2 * im.chunks.size() + 2;
  const std::vector<int> peak = PeakInFlight(e->ops_);
  for (size_t c = 0; c < im.chunks.size(); ++c) {
    const auto& opt = im.chunks[c]->options();
    if (opt.activation_slots < peak[c]) {
      return InvalidArgumentError("PipelineExecutor: chunk " + std::to_string(c) + " keeps up to " +
                                  std::to_string(peak[c]) + " micro-batches in flight but its model has " +
                                  std::to_string(opt.activation_slots) + " activation slots");
    }
    const bool split = SplitsBackward(e->ops_, static_cast<int>(c));
    if (split && !opt.defer_weight_grads) {
      return InvalidArgumentError("PipelineExecutor: chunk " + std::to_string(c) +
                                  " splits backwards (B, W) but its model does not defer weight gradients");
    }
    im.deferred.push_back(opt.defer_weight_grads);
  }
  for (size_t i = 0; i < e->ops_.ops.size(); ++i) {
    const auto t = e->ops_.ops[i].type;
    if (t == OpType::kRecvActivation || t == OpType::kRecvGrad) im.recv_ops.push_back(i);
  }
  return e;
}

Result<PipelineResult> PipelineExecutor::RunStep(std::span<const model::MicroBatch> micro_batches,
                                                 const model::LossScales& scales) {
  Impl& im = *impl_;
  im.batches = micro_batches;
  im.scales = scales;
  im.result = PipelineResult{};
  im.result.timing.ops.assign(im.chunks.size(), {});
  im.tensors.clear();
  im.next_recv = 0;
  im.free_slots.assign(im.chunks.size(), {});
  im.slot_of.assign(im.chunks.size(), {});
  for (size_t c = 0; c < im.chunks.size(); ++c) {
    for (int s = static_cast<int>(im.chunks[c]->options().activation_slots); s-- > 0;) im.free_slots[c].push_back(s);
  }
  auto t0 = Clock::now();
  Status status;
  if (im.comm != nullptr) im.PostRecvs(0);
  for (size_t i = 0; i < ops_.ops.size() && status.ok(); ++i) status = im.RunOp(i);
  while (status.ok() && !im.sends.empty()) {
    status = WaitFor(im.sends.front().handle, im.wait, &im.result.timing.send_wait_s);
    if (status.ok()) {
      im.Release(std::move(im.sends.front().buffer));
      im.sends.pop_front();
    }
  }
  if (!status.ok()) {
    im.Abandon();
    return status;
  }
  if (!im.tensors.empty()) {
    return InternalError("pipeline rank " + std::to_string(im.layout.pp_rank) + ": " +
                         std::to_string(im.tensors.size()) + " tensors were computed or received but never used");
  }
  im.result.timing.span_s = Since(t0);
  return std::move(im.result);
}

Result<model::StepLosses> PipelineExecutor::Evaluate(std::span<const model::MicroBatch> batches) {
  Impl& im = *impl_;
  const DistLayout& l = im.layout;
  const int S = l.num_stages;
  auto rank_of = [&](int stage) { return schedule::RankOfStage(l.kind, l.pp, l.num_micro_batches, stage, 0); };
  model::StepLosses total;
  model::LossScales none{0.f, 0.f, 0.f};
  for (size_t e = 0; e < batches.size(); ++e) {
    const int eb = static_cast<int>(e);
    Buffer carry;  // the previous stage's output when it ran here
    for (int s = 0; s < S; ++s) {
      if (rank_of(s) != l.pp_rank) continue;
      const int c = l.ChunkOfStage(s);
      const StageLayout& st = l.chunks[static_cast<size_t>(c)];
      model::Model& m = *im.chunks[static_cast<size_t>(c)];
      Buffer in, out;
      if (s > 0) {
        if (rank_of(s - 1) == l.pp_rank) {
          in = std::move(carry);
        } else {
          in = im.Acquire();
          comm::CommHandle h = im.comm->Recv(im.PeerRank(rank_of(s - 1)), PipeTag(PipeTensor::kEvalActivation, s - 1, eb),
                                             im.Bytes(in));
          RETURN_IF_ERROR(WaitFor(h, im.wait).WithContext("evaluation, stage " + std::to_string(s)));
        }
      }
      if (!st.has_head) out = im.Acquire();
      m.SetActivationSlot(0);
      RETURN_IF_ERROR(m.ForwardStage(batches[e], in ? in->data() : nullptr, out ? out->data() : nullptr,
                                     /*training=*/false));
      im.Release(std::move(in));
      if (s == S - 1) {
        // The loss is computed with the backward of the last stage; zero scales leave no gradient.
        Buffer din = st.has_embedding ? nullptr : im.Acquire();
        ASSIGN_OR_RETURN(auto losses, m.BackwardStage(batches[e], none, nullptr, din ? din->data() : nullptr));
        im.Release(std::move(din));
        total.main_sum += losses.main_sum;
        total.main_count += losses.main_count;
        total.mtp_sum += losses.mtp_sum;
        total.mtp_count += losses.mtp_count;
        total.balance += losses.balance;
      } else if (rank_of(s + 1) == l.pp_rank) {
        carry = std::move(out);
      } else {
        comm::CommHandle h = im.comm->Send(im.PeerRank(rank_of(s + 1)), PipeTag(PipeTensor::kEvalActivation, s, eb),
                                           std::as_bytes(std::span<const float>(*out)));
        RETURN_IF_ERROR(WaitFor(h, im.wait).WithContext("evaluation, stage " + std::to_string(s)));
        im.Release(std::move(out));
      }
    }
  }
  return total;
}

}  // namespace shoal::dist
