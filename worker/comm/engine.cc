// Engine, part 1: setup, the progress loop, and running operations (phases of tagged transfers). Part 2
// (engine_links.cc) keeps the links to peers, epochs and shutdown.
#include "worker/comm/engine.h"

#include <poll.h>

#include <algorithm>
#include <cstring>

#include "common/check.h"
#include "worker/comm/tag.h"

namespace shoal::comm {
namespace {

using SteadyClock = std::chrono::steady_clock;
constexpr auto kHousekeepingPeriod = std::chrono::milliseconds(1);
constexpr auto kCloseWait = std::chrono::seconds(2);
constexpr size_t kMaxPooledScratch = 8;
std::byte kEmpty[8];  // UCX wants a non-null pointer even for empty messages

}  // namespace

// ---- setup -------------------------------------------------------------------------------------------------

Engine::Engine(const CommunicatorOptions& options) : options_(options) {}

Result<std::unique_ptr<Engine>> Engine::Create(const CommunicatorOptions& options) {
  std::unique_ptr<Engine> engine(new Engine(options));
  RETURN_IF_ERROR(engine->Init());
  Engine* raw = engine.get();
  engine->thread_ = std::thread([raw] { raw->Run(); });
  return engine;
}

Status Engine::Init() {
  ucp_config_t* raw_config = nullptr;
  RETURN_IF_ERROR(UcsToStatus(ucp_config_read(nullptr, nullptr, &raw_config), "comm: ucp_config_read"));
  UcpConfigPtr config(raw_config);
  if (options_.transport == Transport::kTcp) {
    RETURN_IF_ERROR(UcsToStatus(ucp_config_modify(config.get(), "TLS", "tcp"), "comm: UCX_TLS=tcp"));
  }
  for (const auto& [name, value] : options_.ucx_config) {
    ucs_status_t s = ucp_config_modify(config.get(), name.c_str(), value.c_str());
    if (s != UCS_OK) {
      return InvalidArgumentError("comm: UCX setting " + name + "=" + value + " was refused: " +
                                  ucs_status_string(s) + " (names go without the UCX_ prefix)");
    }
  }
  ucp_params_t params{};
  params.field_mask = UCP_PARAM_FIELD_FEATURES;
  params.features = UCP_FEATURE_TAG | UCP_FEATURE_WAKEUP;
  ucp_context_h context = nullptr;
  RETURN_IF_ERROR(UcsToStatus(ucp_init(&params, config.get(), &context), "comm: ucp_init"));
  context_.reset(context);

  ucp_worker_params_t wparams{};
  wparams.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
  wparams.thread_mode = UCS_THREAD_MODE_SINGLE;  // only the progress thread touches it
  ucp_worker_h worker = nullptr;
  RETURN_IF_ERROR(UcsToStatus(ucp_worker_create(context_.get(), &wparams, &worker), "comm: ucp_worker_create"));
  worker_.reset(worker);

  ucp_address_t* address = nullptr;
  size_t length = 0;
  RETURN_IF_ERROR(UcsToStatus(ucp_worker_get_address(worker, &address, &length), "comm: ucp_worker_get_address"));
  WorkerAddress owned(worker, address, length);
  address_hex_ = HexEncode(owned.bytes());
  RETURN_IF_ERROR(UcsToStatus(ucp_worker_get_efd(worker, &efd_), "comm: ucp_worker_get_efd"));
  return Status::OK();
}

Engine::~Engine() {
  if (thread_.joinable()) {
    Command stop;
    stop.kind = Command::kStop;
    Push(std::move(stop));
    thread_.join();
  }
}

// ---- caller side -------------------------------------------------------------------------------------------

void Engine::Push(Command command) {
  std::lock_guard<std::mutex> lock(inbox_mu_);
  inbox_.push_back(std::move(command));
  inbox_pending_.store(true, std::memory_order_release);
  // Signalled under the lock: Shutdown marks the worker gone under it before destroying the worker.
  if (!worker_gone_) ucp_worker_signal(worker_.get());  // documented safe from any thread
}

Status Engine::Connect(uint64_t epoch, int rank, const std::map<int, std::string>& peers) {
  ConnectRequest request;
  request.epoch = epoch;
  request.rank = rank;
  request.peers = peers;
  {
    std::lock_guard<std::mutex> lock(inbox_mu_);
    if (stopping_) return AbortedError("comm: Connect: the communicator is shutting down");
  }
  Command command;
  command.kind = Command::kConnect;
  command.connect = &request;
  Push(std::move(command));
  std::unique_lock<std::mutex> lock(request.mu);
  request.cv.wait(lock, [&] { return request.done; });
  return request.result;
}

void Engine::Submit(std::unique_ptr<OpPlan> plan) {
  std::shared_ptr<OpState> state = plan->state;
  {
    std::lock_guard<std::mutex> lock(inbox_mu_);
    if (!stopping_) {
      Command command;
      command.kind = Command::kSubmit;
      command.plan = std::move(plan);
      inbox_.push_back(std::move(command));
      inbox_pending_.store(true, std::memory_order_release);
      ucp_worker_signal(worker_.get());
      return;
    }
  }
  {  // not queued: the engine is stopping
    std::lock_guard<std::mutex> lock(state->mu);
    state->status = AbortedError(state->name + ": the communicator is shutting down");
    state->engine = nullptr;
    state->done.store(true);
    state->cv.notify_all();
  }
}

void Engine::RequestCancelLocked(const std::shared_ptr<OpState>& state) {
  Command command;
  command.kind = Command::kCancel;
  command.state = state;
  Push(std::move(command));
}

std::vector<float> Engine::TakeScratch(size_t floats) {
  std::vector<float> out;
  {
    std::lock_guard<std::mutex> lock(scratch_mu_);
    // The smallest pooled buffer that fits, else the largest (it grows once).
    size_t best = scratch_pool_.size();
    for (size_t i = 0; i < scratch_pool_.size(); ++i) {
      bool fits = scratch_pool_[i].size() >= floats;
      if (best == scratch_pool_.size()) {
        best = i;
      } else if (fits && (scratch_pool_[best].size() < floats || scratch_pool_[i].size() < scratch_pool_[best].size())) {
        best = i;
      } else if (!fits && scratch_pool_[best].size() < floats && scratch_pool_[i].size() > scratch_pool_[best].size()) {
        best = i;
      }
    }
    if (best < scratch_pool_.size()) {
      out = std::move(scratch_pool_[best]);
      scratch_pool_.erase(scratch_pool_.begin() + static_cast<ptrdiff_t>(best));
    }
  }
  if (out.size() < floats) out.resize(floats);
  return out;
}

Communicator::Stats Engine::stats() const {
  std::lock_guard<std::mutex> lock(stats_mu_);
  return stats_;
}

// ---- the progress thread -----------------------------------------------------------------------------------

void Engine::Run() {
  ucp_worker_h worker = worker_.get();
  auto last_event = SteadyClock::now();
  while (true) {
    bool busy = DrainInbox();
    if (stop_requested_) break;
    while (ucp_worker_progress(worker) != 0) busy = true;
    busy |= ProcessCompleted();
    if (!newly_broken_.empty()) {
      ProcessBrokenLinks();
      busy = true;
    }
    auto now = SteadyClock::now();
    if (now - last_housekeeping_ >= kHousekeepingPeriod) Housekeeping(now);
    finished_.clear();
    if (busy) {
      last_event = now;
      continue;
    }
    if (now - last_event < options_.progress_spin) {
      std::this_thread::yield();  // spin politely: callers and peers may share this core
      continue;
    }
    // Idle: sleep on the worker's event fd (UCX traffic and ucp_worker_signal wake it).
    ucs_status_t armed = ucp_worker_arm(worker);
    if (armed == UCS_ERR_BUSY) continue;
    if (inbox_pending_.load(std::memory_order_acquire)) continue;
    pollfd pfd{efd_, POLLIN, 0};
    int timeout_ms = NeedsTimer() ? 1 : 50;
    if (armed != UCS_OK) timeout_ms = 0;  // no wakeup support: keep polling, but yield
    if (timeout_ms == 0) {
      std::this_thread::yield();
    } else {
      ::poll(&pfd, 1, timeout_ms);
    }
  }
  Shutdown();
}

bool Engine::NeedsTimer() const {
  if (!closing_.empty()) return true;
  for (const auto& link : links_) {
    if (link->close_pending) return true;
  }
  for (const auto& [state, op] : running_) {
    if (op->failing) return true;
  }
  return false;
}

bool Engine::DrainInbox() {
  if (!inbox_pending_.load(std::memory_order_acquire)) return false;
  std::vector<Command> commands;
  {
    std::lock_guard<std::mutex> lock(inbox_mu_);
    commands.swap(inbox_);
    inbox_pending_.store(false, std::memory_order_release);
  }
  for (Command& c : commands) {
    switch (c.kind) {
      case Command::kSubmit:
        StartOp(std::move(c.plan));
        break;
      case Command::kCancel: {
        auto it = running_.find(c.state.get());
        if (it != running_.end()) FailOp(it->second.get(), CancelledError(c.state->name + ": cancelled by the caller"));
        break;
      }
      case Command::kConnect: {
        Status s = shutting_down_ ? AbortedError("comm: Connect: the communicator is shutting down")
                                  : DoConnect(c.connect->epoch, c.connect->rank, c.connect->peers);
        std::lock_guard<std::mutex> lock(c.connect->mu);
        c.connect->result = s;
        c.connect->done = true;
        c.connect->cv.notify_all();
        break;
      }
      case Command::kStop:
        stop_requested_ = true;
        break;
    }
  }
  return true;
}

void Engine::StartOp(std::unique_ptr<OpPlan> plan) {
  auto op = std::make_unique<RunningOp>();
  OpState* key = plan->state.get();
  op->plan = std::move(plan);
  RunningOp* raw = op.get();
  running_[key] = std::move(op);
  {
    std::lock_guard<std::mutex> lock(stats_mu_);
    stats_.operations++;
  }
  if (shutting_down_) {
    FailOp(raw, AbortedError(key->name + ": the communicator is shutting down"));
    return;
  }
  if (!connected_ || raw->plan->epoch != epoch_) {
    FailOp(raw, AbortedError(key->name + ": issued in epoch " + std::to_string(raw->plan->epoch) +
                             ", but the communicator is in epoch " + std::to_string(epoch_)));
    return;
  }
  RunPhases(raw);
}

void Engine::RunPhases(RunningOp* op) {
  std::vector<Phase>& phases = op->plan->phases;
  while (true) {
    if (op->phase_posted) {  // the current phase is complete
      Phase& done = phases[op->phase];
      if (done.on_end) {
        Status s = done.on_end();
        if (!s.ok()) {
          FailOp(op, std::move(s));
          return;
        }
      }
      op->phase++;
      op->phase_posted = false;
    }
    if (op->phase == phases.size()) {
      FinishOp(op, Status::OK());
      return;
    }
    Phase& phase = phases[op->phase];
    op->xfers.clear();
    op->xfers.resize(phase.xfers.size());
    op->phase_posted = true;
    for (size_t i = 0; i < phase.xfers.size() && !op->failing; ++i) PostXfer(op, i);
    if (op->failing) {
      MaybeFinish(op);
      return;
    }
    if (phase.local) phase.local();
    if (op->outstanding > 0) return;
  }
}

void Engine::PostXfer(RunningOp* op, size_t idx) {
  const XferSpec& spec = op->plan->phases[op->phase].xfers[idx];
  OpState& state = *op->plan->state;
  auto it = by_rank_.find(spec.peer);
  if (it == by_rank_.end()) {
    FailOp(op, FailedPreconditionError(state.name + ": rank " + std::to_string(spec.peer) +
                                       " is not a peer of epoch " + std::to_string(epoch_) +
                                       " (pass its address to Connect)"));
    return;
  }
  Link* link = it->second;
  auto owned = std::make_unique<Xfer>();
  Xfer* x = owned.get();
  x->engine = this;
  x->op = op;
  x->idx = idx;
  x->spec = spec;
  x->link = link;
  op->xfers[idx] = std::move(owned);

  ucp_worker_h worker = worker_.get();
  if (link->broken) {
    // A peer that sent and then died (or left) may have delivered this message already: take it if it is here.
    ucp_tag_recv_info_t info;
    bool arrived = !spec.send && ucp_tag_probe_nb(worker, spec.tag, kFullMask, 0, &info) != nullptr;
    if (!arrived) {
      FailOp(op, UnavailableError(state.name + ": " + PeerName(spec.peer) + " is unreachable: " + link->why));
      return;
    }
  }
  ucp_request_param_t param{};
  param.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
  param.user_data = x;
  void* buffer = spec.bytes == 0 || spec.data == nullptr ? static_cast<void*>(kEmpty) : spec.data;
  x->posted = true;
  op->outstanding++;
  {
    std::lock_guard<std::mutex> lock(state.mu);
    state.outstanding_by_peer[spec.peer]++;
  }
  ucs_status_ptr_t r;
  if (spec.send) {
    param.cb.send = &Engine::OnSendDone;
    r = ucp_tag_send_nbx(link->data_ep, buffer, spec.bytes, spec.tag, &param);
  } else {
    // UCX 1.13 does not report the length of an immediately completed receive, so completion always goes
    // through the callback (which may run before ucp_tag_recv_nbx returns).
    param.op_attr_mask |= UCP_OP_ATTR_FLAG_NO_IMM_CMPL;
    param.cb.recv = &Engine::OnRecvDone;
    r = ucp_tag_recv_nbx(worker, buffer, spec.bytes, spec.tag, kFullMask, &param);
  }
  if (r == nullptr) {
    x->done = true;
    x->status = UCS_OK;
    completed_.push_back(x);
  } else if (UCS_PTR_IS_ERR(r)) {
    x->done = true;
    x->status = UCS_PTR_STATUS(r);
    completed_.push_back(x);
  } else if (!x->done) {
    x->request = r;  // else the callback already ran and released it
  }
}

void Engine::OnSendDone(void* request, ucs_status_t status, void* user_data) {
  auto* x = static_cast<Xfer*>(user_data);
  x->status = status;
  x->done = true;
  x->request = nullptr;
  ucp_request_free(request);
  x->engine->completed_.push_back(x);
}

void Engine::OnRecvDone(void* request, ucs_status_t status, const ucp_tag_recv_info_t* info, void* user_data) {
  auto* x = static_cast<Xfer*>(user_data);
  x->status = status;
  x->done = true;
  x->request = nullptr;
  if (status == UCS_OK && info != nullptr) {
    x->length = info->length;
    x->sender_tag = info->sender_tag;
  }
  ucp_request_free(request);
  x->engine->completed_.push_back(x);
}

void Engine::OnEndpointError(void* arg, ucp_ep_h ep, ucs_status_t status) {
  auto* link = static_cast<Link*>(arg);
  Engine* self = link->engine;
  // UCX wants a failed endpoint closed with FORCE; not from inside its own callback, so it is deferred. An
  // endpoint this rank already closed is not ours to close again.
  if (ep != link->data_ep && ep != link->live_ep) return;
  if (ep == link->data_ep) link->data_ep = nullptr;
  if (ep == link->live_ep) link->live_ep = nullptr;
  self->failed_eps_.push_back(ep);
  if (!link->broken) {
    link->broken = true;
    link->why = std::string("UCX reported ") + ucs_status_string(status) +
                " on its endpoint (the peer process died, closed its communicator or cut this rank off)";
    std::lock_guard<std::mutex> lock(self->stats_mu_);
    self->stats_.broken_links++;
  }
  self->newly_broken_.push_back(link);
}

bool Engine::ProcessCompleted() {
  if (completed_.empty()) return false;
  while (!completed_.empty()) {
    std::vector<Xfer*> batch;
    batch.swap(completed_);
    for (Xfer* x : batch) OnXferDone(x);
  }
  return true;
}

void Engine::OnXferDone(Xfer* x) {
  if (x->control) {
    OnControl(x);
    return;
  }
  if (x->op == nullptr) {  // an orphan, a drain or a notice finally completed
    if (x->link && x->link->notice == x) x->link->notice = nullptr;
    orphans_.erase(x);
    return;
  }
  RunningOp* op = x->op;
  OpState& state = *op->plan->state;
  op->outstanding--;
  {
    std::lock_guard<std::mutex> lock(state.mu);
    auto it = state.outstanding_by_peer.find(x->spec.peer);
    if (it != state.outstanding_by_peer.end() && --it->second <= 0) state.outstanding_by_peer.erase(it);
  }
  if (op->failing) {
    MaybeFinish(op);
    return;
  }
  const XferSpec& spec = x->spec;
  if (x->status != UCS_OK) {
    std::string what = state.name + ": " + (spec.send ? "send to " : "receive from ") + PeerName(spec.peer) + " (" +
                       DescribeTag(spec.tag) + ")";
    if (x->link->broken) {
      FailOp(op, UnavailableError(what + ": peer unreachable: " + x->link->why));
    } else {
      FailOp(op, UcsToStatus(x->status, what));
    }
    return;
  }
  if (!spec.send) {
    if (spec.exact && x->length != spec.bytes) {
      FailOp(op, DataLossError(state.name + ": " + PeerName(spec.peer) + " sent " + std::to_string(x->length) +
                               " bytes, expected " + std::to_string(spec.bytes) +
                               " (do the counts agree on both sides?)"));
      return;
    }
    op->received_bytes += x->length;
    Phase& phase = op->plan->phases[op->phase];
    if (phase.on_recv) phase.on_recv(x->idx);
  }
  if (op->outstanding == 0) RunPhases(op);
}

void Engine::FailOp(RunningOp* op, Status status) {
  if (op->failing || op->finished) return;
  op->failing = true;
  op->failure = std::move(status);
  op->fail_time = SteadyClock::now();
  if (connected_ && op->plan->epoch == epoch_) {
    for (const auto& t : op->plan->tombstones) drain_filters_.push_back(t);
  }
  for (auto& owned : op->xfers) {
    Xfer* x = owned.get();
    if (x == nullptr || !x->posted || x->done) continue;
    if (!x->spec.send) {
      ucp_request_cancel(worker_.get(), x->request);  // completes with UCS_ERR_CANCELED
    } else if (x->link->broken) {
      Orphan(op, x);  // the peer is gone: nobody will read the buffer
    }
  }
  MaybeFinish(op);
}

void Engine::MaybeFinish(RunningOp* op) {
  if (op->failing && !op->finished && op->outstanding == 0) FinishOp(op, op->failure);
}

void Engine::FinishOp(RunningOp* op, Status status) {
  if (op->finished) return;
  op->finished = true;
  std::shared_ptr<OpState> state = op->plan->state;
  {
    std::lock_guard<std::mutex> lock(state->mu);
    state->status = std::move(status);
    state->received_bytes = op->received_bytes;
    state->outstanding_by_peer.clear();
    state->engine = nullptr;
    state->done.store(true);
  }
  state->cv.notify_all();
  if (!op->plan->scratch.empty()) {
    std::lock_guard<std::mutex> lock(scratch_mu_);
    if (scratch_pool_.size() < kMaxPooledScratch) scratch_pool_.push_back(std::move(op->plan->scratch));
  }
  auto it = running_.find(state.get());
  CHECK(it != running_.end()) << state->name;
  finished_.push_back(std::move(it->second));
  running_.erase(it);
}

void Engine::Orphan(RunningOp* op, Xfer* x) {
  OpState& state = *op->plan->state;
  x->op = nullptr;
  op->outstanding--;
  {
    std::lock_guard<std::mutex> lock(state.mu);
    auto it = state.outstanding_by_peer.find(x->spec.peer);
    if (it != state.outstanding_by_peer.end() && --it->second <= 0) state.outstanding_by_peer.erase(it);
  }
  orphans_[x] = std::move(op->xfers[x->idx]);
  std::lock_guard<std::mutex> lock(stats_mu_);
  stats_.orphaned_sends++;
}

void Engine::Housekeeping(SteadyClock::time_point now) {
  last_housekeeping_ = now;
  // Sends of failed operations that nobody consumed within the grace: cut the link to their peers.
  std::vector<RunningOp*> ops;
  for (auto& [key, op] : running_) {
    if (op->failing && op->outstanding > 0 && now - op->fail_time >= options_.send_withdraw_grace) {
      ops.push_back(op.get());
    }
  }
  for (RunningOp* op : ops) {
    for (auto& owned : op->xfers) {
      Xfer* x = owned.get();
      if (!x || !x->posted || x->done || !x->spec.send) continue;
      if (!x->link->broken) {
        BreakLink(x->link, "a send of " + op->plan->state->name + " to " + PeerName(x->spec.peer) +
                               " was not consumed within " + std::to_string(options_.send_withdraw_grace.count()) +
                               " ms after the operation failed, so this rank cut the link",
                  /*notify=*/true);  // ProcessBrokenLinks orphans the send
      } else {
        Orphan(op, x);  // a link cut or retired before
      }
    }
    MaybeFinish(op);
  }
  // tcp: force-close the data endpoints of cut links once their notice left.
  for (auto& link : links_) {
    if (link->close_pending && (link->notice == nullptr || now >= link->close_by)) {
      link->close_pending = false;
      CloseEndpoint(link->data_ep, /*force=*/true);
      link->data_ep = nullptr;
    }
  }
  // Endpoint closes in flight; one that a stuck send holds up is left to UCX after a while.
  for (auto it = closing_.begin(); it != closing_.end();) {
    if (ucp_request_check_status(it->first) != UCS_INPROGRESS || now - it->second > kCloseWait) {
      ucp_request_free(it->first);  // released by UCX when it completes, if it has not
      it = closing_.erase(it);
    } else {
      ++it;
    }
  }
  DrainFilters();
}

void Engine::DrainFilters() {
  ucp_worker_h worker = worker_.get();
  for (const auto& [tag, mask] : drain_filters_) {
    while (true) {
      ucp_tag_recv_info_t info{};
      ucp_tag_message_h message = ucp_tag_probe_nb(worker, tag, mask, /*remove=*/1, &info);
      if (message == nullptr) break;
      auto owned = std::make_unique<Xfer>();
      Xfer* x = owned.get();
      x->engine = this;
      x->owned.resize(std::max<size_t>(info.length, 1));
      ucp_request_param_t param{};
      param.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
      param.cb.recv = &Engine::OnRecvDone;
      param.user_data = x;
      ucs_status_ptr_t r = ucp_tag_msg_recv_nbx(worker, x->owned.data(), info.length, message, &param);
      if (r != nullptr && !UCS_PTR_IS_ERR(r)) orphans_[x] = std::move(owned);
      std::lock_guard<std::mutex> lock(stats_mu_);
      stats_.drained_messages++;
    }
  }
}

void Engine::CloseEndpoint(ucp_ep_h ep, bool force) {
  if (ep == nullptr) return;
  ucp_request_param_t param{};
  param.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
  param.flags = force ? UCP_EP_CLOSE_FLAG_FORCE : 0;
  ucs_status_ptr_t r = ucp_ep_close_nbx(ep, &param);
  if (r != nullptr && !UCS_PTR_IS_ERR(r)) closing_.emplace_back(r, SteadyClock::now());
}

}  // namespace shoal::comm
