#include "worker/comm/communicator.h"

#include <cstdlib>
#include <cstring>
#include <thread>

#include "common/check.h"
#include "worker/comm/engine.h"
#include "worker/comm/op.h"
#include "worker/comm/tag.h"

namespace shoal::comm {

// ---- options -----------------------------------------------------------------------------------------------

std::string_view TransportName(Transport transport) { return transport == Transport::kShm ? "shm" : "tcp"; }

Result<Transport> ParseTransport(std::string_view text) {
  if (text == "shm") return Transport::kShm;
  if (text == "tcp") return Transport::kTcp;
  return InvalidArgumentError("comm: unknown transport \"" + std::string(text) + "\"; expected shm or tcp");
}

Result<CommunicatorOptions> CommunicatorOptions::FromEnvironment() {
  CommunicatorOptions options;
  if (const char* mode = std::getenv("SHOAL_UCX_MODE"); mode != nullptr && *mode != '\0') {
    Result<Transport> t = ParseTransport(mode);
    if (!t.ok()) return t.status().WithContext("SHOAL_UCX_MODE");
    options.transport = *t;
  }
  return options;
}

// ---- CommHandle --------------------------------------------------------------------------------------------

CommHandle::~CommHandle() {
  if (state_ && !state_->done.load()) Cancel().IgnoreError();
}

CommHandle& CommHandle::operator=(CommHandle&& other) noexcept {
  if (this != &other) {
    if (state_ && !state_->done.load()) Cancel().IgnoreError();
    state_ = std::move(other.state_);
    wait_spin_ = other.wait_spin_;
  }
  return *this;
}

bool CommHandle::Done() const { return state_ == nullptr || state_->done.load(); }

Status CommHandle::Wait(std::chrono::steady_clock::duration timeout) {
  return WaitUntil(std::chrono::steady_clock::now() + timeout);
}

Status CommHandle::WaitUntil(std::chrono::steady_clock::time_point deadline) {
  if (!state_) return FailedPreconditionError("comm: Wait on an empty handle");
  if (wait_spin_.count() > 0 && !state_->done.load()) {
    auto spin_until = std::min(deadline, std::chrono::steady_clock::now() + wait_spin_);
    while (!state_->done.load(std::memory_order_acquire) && std::chrono::steady_clock::now() < spin_until) {
      std::this_thread::yield();
    }
  }
  std::unique_lock<std::mutex> lock(state_->mu);
  if (state_->cv.wait_until(lock, deadline, [&] { return state_->done.load(); })) return state_->status;
  std::string waiting;
  for (const auto& [rank, count] : state_->outstanding_by_peer) {
    waiting += (waiting.empty() ? "" : ", ") + std::string("rank ") + std::to_string(rank);
  }
  if (waiting.empty()) waiting = "no peer (the progress thread has not started it)";
  return DeadlineExceededError(state_->name + " on rank " + std::to_string(state_->rank) + " (epoch " +
                               std::to_string(state_->epoch) + "): not done by the deadline; still waiting on " +
                               waiting + ". The operation keeps running: Wait again or Cancel it");
}

Status CommHandle::Cancel() {
  if (!state_) return FailedPreconditionError("comm: Cancel on an empty handle");
  std::unique_lock<std::mutex> lock(state_->mu);
  if (!state_->done.load()) {
    CHECK(state_->engine != nullptr) << state_->name;
    state_->engine->RequestCancelLocked(state_);
    state_->cv.wait(lock, [&] { return state_->done.load(); });
  }
  return state_->status;
}

size_t CommHandle::received_bytes() const {
  if (!state_) return 0;
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->received_bytes;
}

const std::string& CommHandle::name() const {
  static const std::string kEmpty = "(empty handle)";
  return state_ ? state_->name : kEmpty;
}

// ---- Communicator ------------------------------------------------------------------------------------------

Communicator::Communicator(CommunicatorOptions options, std::unique_ptr<Engine> engine)
    : options_(std::move(options)), address_(engine->address_hex()), engine_(std::move(engine)) {}

Communicator::~Communicator() = default;

Result<std::unique_ptr<Communicator>> Communicator::Create(CommunicatorOptions options) {
  ASSIGN_OR_RETURN(std::unique_ptr<Engine> engine, Engine::Create(options));
  return std::unique_ptr<Communicator>(new Communicator(std::move(options), std::move(engine)));
}

Status Communicator::Connect(uint64_t epoch, int rank, const std::map<int, std::string>& peers) {
  if (rank < 0 || rank >= kMaxRanks) {
    return InvalidArgumentError("comm: Connect: rank " + std::to_string(rank) + " is outside [0, " +
                                std::to_string(kMaxRanks) + ")");
  }
  for (const auto& [peer, address] : peers) {
    if (peer < 0 || peer >= kMaxRanks) {
      return InvalidArgumentError("comm: Connect: peer rank " + std::to_string(peer) + " is outside [0, " +
                                  std::to_string(kMaxRanks) + ")");
    }
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    connected_ = false;  // operations issued from here on wait for the new epoch
  }
  Status s = engine_->Connect(epoch, rank, peers);
  std::lock_guard<std::mutex> lock(mu_);
  epoch_ = epoch;
  rank_ = rank;
  send_seq_.clear();
  recv_seq_.clear();
  group_seq_.clear();
  connected_ = s.ok();
  return s;
}

int Communicator::rank() const {
  std::lock_guard<std::mutex> lock(mu_);
  return rank_;
}

uint64_t Communicator::epoch() const {
  std::lock_guard<std::mutex> lock(mu_);
  return epoch_;
}

Communicator::Stats Communicator::stats() const { return engine_->stats(); }

CommHandle Communicator::Start(std::unique_ptr<OpPlan> plan) {
  std::shared_ptr<OpState> state = plan->state;
  {
    std::lock_guard<std::mutex> lock(state->mu);
    state->engine = engine_.get();
  }
  engine_->Submit(std::move(plan));
  return CommHandle(std::move(state), options_.wait_spin);
}

CommHandle Communicator::Failed(std::string name, Status status) {
  auto state = std::make_shared<OpState>(std::move(name));
  state->status = std::move(status);
  state->done.store(true);
  return CommHandle(std::move(state), options_.wait_spin);
}

uint32_t Communicator::NextP2pSeq(std::map<std::pair<int, uint32_t>, uint32_t>& counters, int peer, uint32_t tag) {
  return counters[{peer, tag}]++;
}

uint32_t Communicator::NextGroupSeq(const Group& group) { return group_seq_[{group.id(), group.ranks()}]++; }

Status Communicator::CheckGroup(const Group& group, int* my_index) const {
  if (!connected_) return FailedPreconditionError("comm: not connected; call Connect(epoch, rank, peers) first");
  *my_index = group.IndexOf(rank_);
  if (*my_index < 0) {
    return InvalidArgumentError("comm: rank " + std::to_string(rank_) + " is not a member of " + group.DebugString());
  }
  return Status::OK();
}

namespace {

std::unique_ptr<OpPlan> NewPlan(std::string name, uint64_t epoch, int rank) {
  auto plan = std::make_unique<OpPlan>();
  plan->state = std::make_shared<OpState>(std::move(name));
  plan->state->epoch = epoch;
  plan->state->rank = rank;
  plan->epoch = epoch;
  return plan;
}

std::byte* Mutable(const std::byte* p) { return const_cast<std::byte*>(p); }  // sends only read it

Status CheckRange(const char* what, size_t offset, size_t count, size_t size, int member) {
  if (offset > size || count > size - offset) {
    return InvalidArgumentError("comm: " + std::string(what) + " for member " + std::to_string(member) + ": [" +
                                std::to_string(offset) + ", +" + std::to_string(count) +
                                ") is outside the buffer of " + std::to_string(size) + " bytes");
  }
  return Status::OK();
}

// Reduce-scatter bookkeeping: contributions of the group members to this member's chunk, summed in group
// order as they become available.
struct ReduceContext {
  size_t count = 0;                  // floats in this member's chunk
  float* acc = nullptr;              // scratch accumulator
  std::vector<const float*> contrib;  // per member
  std::vector<char> ready;
  std::vector<int> member_of_xfer;   // xfer index -> member (receives only)
  int next = 0;

  void Accumulate() {
    const int n = static_cast<int>(contrib.size());
    while (next < n && ready[static_cast<size_t>(next)]) {
      const float* c = contrib[static_cast<size_t>(next)];
      if (next == 0) {
        if (count) std::memcpy(acc, c, count * sizeof(float));
      } else {
        for (size_t i = 0; i < count; ++i) acc[i] += c[i];
      }
      ++next;
    }
  }
};

// Adds the reduce-scatter phase for `me` to `plan`: send chunk j of `input` to member j, receive the others'
// contributions to chunk me into scratch, sum in group order, write the sum to `out` at the end.
void AddReducePhase(OpPlan& plan, const Group& group, int me, const float* input, const std::vector<size_t>& counts,
                    const std::vector<size_t>& offsets, float* out, uint64_t epoch, uint32_t seq, uint32_t step,
                    std::vector<float> scratch) {
  const int n = group.size();
  const size_t mine = counts[static_cast<size_t>(me)];
  auto ctx = std::make_shared<ReduceContext>();
  ctx->count = mine;
  plan.scratch = std::move(scratch);  // (n - 1) receive slots of `mine` floats, then the accumulator
  ctx->acc = plan.scratch.data() + static_cast<size_t>(n - 1) * mine;
  ctx->contrib.resize(static_cast<size_t>(n));
  ctx->ready.assign(static_cast<size_t>(n), 0);
  Phase phase;
  int slot = 0;
  for (int j = 0; j < n; ++j) {
    if (j == me) {
      ctx->contrib[static_cast<size_t>(j)] = input + offsets[static_cast<size_t>(me)];
      ctx->ready[static_cast<size_t>(j)] = 1;
      continue;
    }
    float* dst = plan.scratch.data() + static_cast<size_t>(slot++) * mine;
    ctx->contrib[static_cast<size_t>(j)] = dst;
    int peer = group.ranks()[static_cast<size_t>(j)];
    XferSpec recv;
    recv.peer = peer;
    recv.data = reinterpret_cast<std::byte*>(dst);
    recv.bytes = mine * sizeof(float);
    recv.tag = EncodeTag(CollectiveTag{epoch, peer, group.id(), seq, step});
    ctx->member_of_xfer.push_back(j);
    phase.xfers.push_back(recv);
  }
  const int my_rank = group.ranks()[static_cast<size_t>(me)];
  for (int j = 0; j < n; ++j) {
    if (j == me) continue;
    XferSpec send;
    send.peer = group.ranks()[static_cast<size_t>(j)];
    send.send = true;
    send.data = reinterpret_cast<std::byte*>(const_cast<float*>(input + offsets[static_cast<size_t>(j)]));
    send.bytes = counts[static_cast<size_t>(j)] * sizeof(float);
    send.tag = EncodeTag(CollectiveTag{epoch, my_rank, group.id(), seq, step});
    phase.xfers.push_back(send);
  }
  phase.local = [ctx] { ctx->Accumulate(); };
  phase.on_recv = [ctx](size_t idx) {
    ctx->ready[static_cast<size_t>(ctx->member_of_xfer[idx])] = 1;
    ctx->Accumulate();
  };
  phase.on_end = [ctx, out, name = plan.state->name]() -> Status {
    ctx->Accumulate();
    if (ctx->next != static_cast<int>(ctx->contrib.size())) {
      return InternalError(name + ": reduction incomplete at the end of its phase");
    }
    if (ctx->count) std::memmove(out, ctx->acc, ctx->count * sizeof(float));
    return Status::OK();
  };
  plan.context = ctx;
  plan.phases.push_back(std::move(phase));
}

// Adds an all-gather phase: send `mine` (bytes) to every member, receive member j's bytes at recv + offsets[j].
void AddGatherPhase(OpPlan& plan, const Group& group, int me, const std::byte* mine, std::byte* recv,
                    const std::vector<size_t>& counts, const std::vector<size_t>& offsets, uint64_t epoch,
                    uint32_t seq, uint32_t step) {
  const int n = group.size();
  const int my_rank = group.ranks()[static_cast<size_t>(me)];
  Phase phase;
  for (int j = 0; j < n; ++j) {
    if (j == me) continue;
    int peer = group.ranks()[static_cast<size_t>(j)];
    XferSpec r;
    r.peer = peer;
    r.data = recv + offsets[static_cast<size_t>(j)];
    r.bytes = counts[static_cast<size_t>(j)];
    r.tag = EncodeTag(CollectiveTag{epoch, peer, group.id(), seq, step});
    phase.xfers.push_back(r);
  }
  for (int j = 0; j < n; ++j) {
    if (j == me) continue;
    XferSpec s;
    s.peer = group.ranks()[static_cast<size_t>(j)];
    s.send = true;
    s.data = Mutable(mine);
    s.bytes = counts[static_cast<size_t>(me)];
    s.tag = EncodeTag(CollectiveTag{epoch, my_rank, group.id(), seq, step});
    phase.xfers.push_back(s);
  }
  plan.phases.push_back(std::move(phase));
}

void AddCallTombstone(OpPlan& plan, uint64_t epoch, const Group& group, uint32_t seq) {
  plan.tombstones.emplace_back(EncodeTag(CollectiveTag{epoch, 0, group.id(), seq, 0}), CollectiveCallMask());
}

std::string Describe(const char* op, const Group& group, uint32_t seq, const std::string& what) {
  return std::string(op) + "(" + group.DebugString() + " call #" + std::to_string(seq) + ", " + what + ")";
}

}  // namespace

CommHandle Communicator::Send(int peer, uint32_t tag, std::span<const std::byte> buffer) {
  std::string name = "Send(to rank " + std::to_string(peer) + ", tag " + std::to_string(tag) + ", " +
                     std::to_string(buffer.size()) + " bytes)";
  std::unique_ptr<OpPlan> plan;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!connected_) return Failed(name, FailedPreconditionError("comm: " + name + ": not connected; call Connect first"));
    if (tag > kMaxUserTag) return Failed(name, InvalidArgumentError("comm: " + name + ": tag exceeds 2^24 - 1"));
    if (peer == rank_ || peer < 0 || peer >= kMaxRanks) {
      return Failed(name, InvalidArgumentError("comm: " + name + ": not a peer rank (this is rank " +
                                               std::to_string(rank_) + ")"));
    }
    uint32_t seq = NextP2pSeq(send_seq_, peer, tag);
    plan = NewPlan(name, epoch_, rank_);
    XferSpec x;
    x.peer = peer;
    x.send = true;
    x.data = Mutable(buffer.data());
    x.bytes = buffer.size();
    x.tag = EncodeTag(P2pTag{epoch_, rank_, tag, seq});
    plan->phases.emplace_back().xfers.push_back(x);
  }
  return Start(std::move(plan));
}

CommHandle Communicator::Recv(int peer, uint32_t tag, std::span<std::byte> buffer) {
  std::string name = "Recv(from rank " + std::to_string(peer) + ", tag " + std::to_string(tag) + ", up to " +
                     std::to_string(buffer.size()) + " bytes)";
  std::unique_ptr<OpPlan> plan;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!connected_) return Failed(name, FailedPreconditionError("comm: " + name + ": not connected; call Connect first"));
    if (tag > kMaxUserTag) return Failed(name, InvalidArgumentError("comm: " + name + ": tag exceeds 2^24 - 1"));
    if (peer == rank_ || peer < 0 || peer >= kMaxRanks) {
      return Failed(name, InvalidArgumentError("comm: " + name + ": not a peer rank (this is rank " +
                                               std::to_string(rank_) + ")"));
    }
    uint32_t seq = NextP2pSeq(recv_seq_, peer, tag);
    plan = NewPlan(name, epoch_, rank_);
    XferSpec x;
    x.peer = peer;
    x.data = buffer.data();
    x.bytes = buffer.size();
    x.exact = false;
    x.tag = EncodeTag(P2pTag{epoch_, peer, tag, seq});
    plan->phases.emplace_back().xfers.push_back(x);
    plan->tombstones.emplace_back(x.tag, kFullMask);
  }
  return Start(std::move(plan));
}

CommHandle Communicator::AllToAllV(const Group& group, std::span<const std::byte> send,
                                   std::span<const size_t> send_counts, std::span<const size_t> send_offsets,
                                   std::span<std::byte> recv, std::span<const size_t> recv_counts,
                                   std::span<const size_t> recv_offsets) {
  std::unique_ptr<OpPlan> plan;
  std::string what = std::to_string(Sum(send_counts)) + " bytes out, " + std::to_string(Sum(recv_counts)) + " in";
  const std::byte* own_src = nullptr;
  std::byte* own_dst = nullptr;
  size_t own_bytes = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    int me = -1;
    std::string name = "AllToAllV(" + group.DebugString() + ", " + what + ")";
    if (Status s = CheckGroup(group, &me); !s.ok()) return Failed(name, s);
    const size_t n = static_cast<size_t>(group.size());
    if (send_counts.size() != n || send_offsets.size() != n || recv_counts.size() != n || recv_offsets.size() != n) {
      return Failed(name, InvalidArgumentError("comm: " + name + ": counts and offsets need one entry per member (" +
                                               std::to_string(n) + ")"));
    }
    for (size_t j = 0; j < n; ++j) {
      if (Status s = CheckRange("send range", send_offsets[j], send_counts[j], send.size(), static_cast<int>(j));
          !s.ok()) {
        return Failed(name, s);
      }
      if (Status s = CheckRange("receive range", recv_offsets[j], recv_counts[j], recv.size(), static_cast<int>(j));
          !s.ok()) {
        return Failed(name, s);
      }
    }
    const size_t m = static_cast<size_t>(me);
    if (send_counts[m] != recv_counts[m]) {
      return Failed(name, InvalidArgumentError("comm: " + name + ": this member sends itself " +
                                               std::to_string(send_counts[m]) + " bytes but expects " +
                                               std::to_string(recv_counts[m])));
    }
    uint32_t seq = NextGroupSeq(group);
    plan = NewPlan(Describe("AllToAllV", group, seq, what), epoch_, rank_);
    Phase phase;
    for (size_t j = 0; j < n; ++j) {  // receives first: they are then expected when the data comes
      if (j == m) continue;
      int peer = group.ranks()[j];
      XferSpec r;
      r.peer = peer;
      r.data = recv.data() + recv_offsets[j];
      r.bytes = recv_counts[j];
      r.tag = EncodeTag(CollectiveTag{epoch_, peer, group.id(), seq, 0});
      phase.xfers.push_back(r);
    }
    for (size_t k = 1; k < n; ++k) {  // staggered so that members do not all send to member 0 first
      size_t j = (m + k) % n;
      XferSpec s;
      s.peer = group.ranks()[j];
      s.send = true;
      s.data = Mutable(send.data() + send_offsets[j]);
      s.bytes = send_counts[j];
      s.tag = EncodeTag(CollectiveTag{epoch_, rank_, group.id(), seq, 0});
      phase.xfers.push_back(s);
    }
    own_src = send.data() + send_offsets[m];
    own_dst = recv.data() + recv_offsets[m];
    own_bytes = send_counts[m];
    plan->phases.push_back(std::move(phase));
    AddCallTombstone(*plan, epoch_, group, seq);
  }
  // The rows that stay on this member are copied on the caller's thread while the progress thread moves the
  // others (see AllGather).
  CommHandle handle = Start(std::move(plan));
  if (own_bytes && own_src != own_dst) std::memmove(own_dst, own_src, own_bytes);
  return handle;
}

CommHandle Communicator::AllReduce(const Group& group, std::span<float> data) {
  std::unique_ptr<OpPlan> plan;
  std::string what = std::to_string(data.size()) + " floats";
  {
    std::lock_guard<std::mutex> lock(mu_);
    int me = -1;
    std::string name = "AllReduce(" + group.DebugString() + ", " + what + ")";
    if (Status s = CheckGroup(group, &me); !s.ok()) return Failed(name, s);
    uint32_t seq = NextGroupSeq(group);
    plan = NewPlan(Describe("AllReduce", group, seq, what), epoch_, rank_);
    const int n = group.size();
    std::vector<size_t> counts = BalancedCounts(data.size(), n);
    std::vector<size_t> offsets = ExclusiveOffsets(counts);
    const size_t mine = counts[static_cast<size_t>(me)];
    // Phase 0: reduce-scatter in place (this member's chunk of `data` gets the sum); phase 1: all-gather it.
    AddReducePhase(*plan, group, me, data.data(), counts, offsets, data.data() + offsets[static_cast<size_t>(me)],
                   epoch_, seq, 0, engine_->TakeScratch(static_cast<size_t>(n) * mine));
    std::vector<size_t> byte_counts(counts), byte_offsets(offsets);
    for (auto& c : byte_counts) c *= sizeof(float);
    for (auto& o : byte_offsets) o *= sizeof(float);
    auto* bytes = reinterpret_cast<std::byte*>(data.data());
    AddGatherPhase(*plan, group, me, bytes + byte_offsets[static_cast<size_t>(me)], bytes, byte_counts, byte_offsets,
                   epoch_, seq, 1);
    AddCallTombstone(*plan, epoch_, group, seq);
  }
  return Start(std::move(plan));
}

CommHandle Communicator::ReduceScatter(const Group& group, std::span<const float> send, std::span<float> recv,
                                       std::span<const size_t> counts) {
  std::unique_ptr<OpPlan> plan;
  std::string what = std::to_string(send.size()) + " floats";
  {
    std::lock_guard<std::mutex> lock(mu_);
    int me = -1;
    std::string name = "ReduceScatter(" + group.DebugString() + ", " + what + ")";
    if (Status s = CheckGroup(group, &me); !s.ok()) return Failed(name, s);
    const int n = group.size();
    std::vector<size_t> chunk;
    if (counts.empty()) {
      if (send.size() % static_cast<size_t>(n) != 0) {
        return Failed(name, InvalidArgumentError("comm: " + name + ": " + std::to_string(send.size()) +
                                                 " floats do not split into " + std::to_string(n) +
                                                 " equal chunks; pass counts"));
      }
      chunk.assign(static_cast<size_t>(n), send.size() / static_cast<size_t>(n));
    } else {
      if (counts.size() != static_cast<size_t>(n) || Sum(counts) != send.size()) {
        return Failed(name, InvalidArgumentError("comm: " + name + ": counts need one entry per member (" +
                                                 std::to_string(n) + ") summing to the send size"));
      }
      chunk.assign(counts.begin(), counts.end());
    }
    const size_t mine = chunk[static_cast<size_t>(me)];
    if (recv.size() != mine) {
      return Failed(name, InvalidArgumentError("comm: " + name + ": the receive buffer holds " +
                                               std::to_string(recv.size()) + " floats, this member's chunk is " +
                                               std::to_string(mine)));
    }
    uint32_t seq = NextGroupSeq(group);
    plan = NewPlan(Describe("ReduceScatter", group, seq, what), epoch_, rank_);
    AddReducePhase(*plan, group, me, send.data(), chunk, ExclusiveOffsets(chunk), recv.data(), epoch_, seq, 0,
                   engine_->TakeScratch(static_cast<size_t>(n) * mine));
    AddCallTombstone(*plan, epoch_, group, seq);
  }
  return Start(std::move(plan));
}

CommHandle Communicator::AllGather(const Group& group, std::span<const std::byte> send, std::span<std::byte> recv,
                                   std::span<const size_t> counts) {
  std::unique_ptr<OpPlan> plan;
  std::string what = std::to_string(send.size()) + " bytes each";
  std::byte* own_dst = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    int me = -1;
    std::string name = "AllGather(" + group.DebugString() + ", " + what + ")";
    if (Status s = CheckGroup(group, &me); !s.ok()) return Failed(name, s);
    const size_t n = static_cast<size_t>(group.size());
    std::vector<size_t> sizes;
    if (counts.empty()) {
      sizes.assign(n, send.size());
    } else {
      if (counts.size() != n) {
        return Failed(name, InvalidArgumentError("comm: " + name + ": counts need one entry per member (" +
                                                 std::to_string(n) + ")"));
      }
      sizes.assign(counts.begin(), counts.end());
    }
    if (sizes[static_cast<size_t>(me)] != send.size() || Sum(sizes) != recv.size()) {
      return Failed(name, InvalidArgumentError("comm: " + name + ": this member sends " + std::to_string(send.size()) +
                                               " bytes (counts say " + std::to_string(sizes[static_cast<size_t>(me)]) +
                                               ") into a receive buffer of " + std::to_string(recv.size()) +
                                               " (counts sum to " + std::to_string(Sum(sizes)) + ")"));
    }
    uint32_t seq = NextGroupSeq(group);
    plan = NewPlan(Describe("AllGather", group, seq, what), epoch_, rank_);
    std::vector<size_t> offsets = ExclusiveOffsets(sizes);
    AddGatherPhase(*plan, group, me, send.data(), recv.data(), sizes, offsets, epoch_, seq, 0);
    AddCallTombstone(*plan, epoch_, group, seq);
    own_dst = recv.data() + offsets[static_cast<size_t>(me)];
  }
  // This member's own chunk is copied here, on the caller's thread, while the progress thread moves the rest;
  // the handle is returned only after, so it never reports done before the copy is.
  CommHandle handle = Start(std::move(plan));
  if (!send.empty() && own_dst != send.data()) std::memmove(own_dst, send.data(), send.size());
  return handle;
}

}  // namespace shoal::comm
