// Engine, part 2: links to peers (endpoints, health, "cut" notices), epochs, and shutdown. Part 1 (engine.cc)
// runs operations.
#include <algorithm>
#include <cstring>

#include "common/check.h"
#include "worker/comm/engine.h"
#include "worker/comm/tag.h"

namespace shoal::comm {
namespace {

using SteadyClock = std::chrono::steady_clock;
constexpr auto kShutdownWait = std::chrono::milliseconds(500);
constexpr int kEpochDrainWindow = 8;  // messages of the 8 epochs before the current one are drained
constexpr size_t kNoticeBytes = 160;   // a control notice: the reason, as text
constexpr auto kNoticeGrace = std::chrono::milliseconds(100);  // tcp: time for a notice to leave before FORCE close
std::byte kEmpty[8];

}  // namespace

// ---- links -------------------------------------------------------------------------------------------------

void Engine::BreakLink(Link* link, const std::string& why, bool notify) {
  if (link->broken) return;
  link->broken = true;
  link->why = why;
  if (notify && link->data_ep) SendNotice(link, why);
  if (options_.transport == Transport::kTcp) {
    // FORCE completes every request on the endpoint with UCS_ERR_CANCELED. After a notice, give it a moment
    // to leave first (Housekeeping closes the endpoint).
    if (notify && link->notice) {
      link->close_pending = true;
      link->close_by = SteadyClock::now() + kNoticeGrace;
    } else {
      CloseEndpoint(link->data_ep, /*force=*/true);
      link->data_ep = nullptr;
    }
  } else if (link->live_ep) {
    // The NONE-mode data endpoint cannot be force-closed; it stays open, unused, until the communicator is
    // destroyed. Closing the liveness endpoint too makes the cut visible even if the notice got lost.
    CloseEndpoint(link->live_ep, /*force=*/true);
    link->live_ep = nullptr;
  }
  {
    std::lock_guard<std::mutex> lock(stats_mu_);
    stats_.broken_links++;
  }
  newly_broken_.push_back(link);
}

void Engine::SendNotice(Link* link, const std::string& why) {
  auto owned = std::make_unique<Xfer>();
  Xfer* x = owned.get();
  x->engine = this;
  x->link = link;
  std::string text = why.substr(0, kNoticeBytes);
  x->owned.resize(text.size());
  std::memcpy(x->owned.data(), text.data(), text.size());
  x->posted = true;
  ucp_request_param_t param{};
  param.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
  param.cb.send = &Engine::OnSendDone;
  param.user_data = x;
  ucs_status_ptr_t r = ucp_tag_send_nbx(link->data_ep, x->owned.empty() ? static_cast<void*>(kEmpty) : x->owned.data(),
                                        x->owned.size(), ControlTag(epoch_, rank_), &param);
  if (r != nullptr && !UCS_PTR_IS_ERR(r)) {
    if (!x->done) x->request = r;
    link->notice = x;
    orphans_[x] = std::move(owned);
  }
}

void Engine::PostControlRecv() {
  auto owned = std::make_unique<Xfer>();
  Xfer* x = owned.get();
  x->engine = this;
  x->control = true;
  x->owned.resize(kNoticeBytes);
  x->posted = true;
  ucp_request_param_t param{};
  param.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FLAG_NO_IMM_CMPL;
  param.cb.recv = &Engine::OnRecvDone;
  param.user_data = x;
  ucs_status_ptr_t r =
      ucp_tag_recv_nbx(worker_.get(), x->owned.data(), x->owned.size(), ControlTag(epoch_, 0), ControlMask(), &param);
  if (UCS_PTR_IS_ERR(r)) return;  // no notices this epoch: links still break on errors and deadlines
  if (!x->done) x->request = r;
  control_recv_ = x;
  orphans_[x] = std::move(owned);
}

void Engine::OnControl(Xfer* x) {
  bool current = x == control_recv_;
  if (x->status == UCS_OK && current) {
    int src = TagSrc(x->sender_tag);
    auto it = by_rank_.find(src);
    if (it != by_rank_.end()) {
      std::string why(reinterpret_cast<const char*>(x->owned.data()), std::min(x->length, x->owned.size()));
      BreakLink(it->second, PeerName(src) + " cut the link: " + why, /*notify=*/false);
    }
  }
  orphans_.erase(x);
  if (current) {
    control_recv_ = nullptr;
    PostControlRecv();
  }
}

void Engine::ProcessBrokenLinks() {
  // Called after the progress loop ran dry, so messages that the peer delivered before it died have matched.
  for (ucp_ep_h ep : failed_eps_) CloseEndpoint(ep, /*force=*/true);
  failed_eps_.clear();
  std::vector<Link*> broken;
  broken.swap(newly_broken_);
  for (Link* link : broken) {
    std::vector<RunningOp*> ops;
    for (auto& [key, op] : running_) ops.push_back(op.get());
    for (RunningOp* op : ops) {
      bool involved = false;
      for (auto& owned : op->xfers) {
        if (owned && owned->posted && !owned->done && owned->link == link) involved = true;
      }
      if (!involved) continue;
      if (!op->failing) {
        FailOp(op, UnavailableError(op->plan->state->name + ": " + PeerName(link->rank) + " is unreachable: " +
                                    link->why));
        if (op->finished) continue;
      }
      for (auto& owned : op->xfers) {
        Xfer* x = owned.get();
        if (x && x->posted && !x->done && x->spec.send && x->link == link) Orphan(op, x);
      }
      MaybeFinish(op);
    }
  }
}

// ---- epochs and links --------------------------------------------------------------------------------------

Status Engine::DoConnect(uint64_t epoch, int rank, const std::map<int, std::string>& peers) {
  std::vector<RunningOp*> ops;
  for (auto& [key, op] : running_) ops.push_back(op.get());
  for (RunningOp* op : ops) {
    FailOp(op, AbortedError(op->plan->state->name + ": epoch " + std::to_string(epoch_) +
                            " ended (Connect to epoch " + std::to_string(epoch) + ")"));
  }
  if (control_recv_ != nullptr) {
    Xfer* old = control_recv_;
    control_recv_ = nullptr;  // its cancellation completes it as a stale notice
    if (!old->done && old->request) ucp_request_cancel(worker_.get(), old->request);
  }
  epoch_ = epoch;
  rank_ = rank;
  connected_ = false;
  drain_filters_.clear();
  for (int k = 1; k <= kEpochDrainWindow; ++k) {
    uint64_t old = epoch - static_cast<uint64_t>(k);
    if (EpochBits(old) == EpochBits(epoch)) continue;
    drain_filters_.emplace_back(EpochBits(old), EpochMask());
  }
  by_rank_.clear();
  for (const auto& [peer, address_hex] : peers) {
    if (peer == rank) continue;
    Result<std::string> address = HexDecode(address_hex);
    if (!address.ok()) return address.status().WithContext("comm: Connect: rank " + std::to_string(peer));
    Result<Link*> link = LinkFor(*address, peer);
    if (!link.ok()) return link.status();
    by_rank_[peer] = *link;
  }
  // Links to peers of older epochs that this one no longer has are retired: closed, never reused.
  for (auto& link : links_) {
    bool used = false;
    for (const auto& [peer, l] : by_rank_) used |= l == link.get();
    if (used || link->broken) continue;
    link->broken = true;
    link->why = "the peer left the job in epoch " + std::to_string(epoch);
    CloseEndpoint(link->live_ep, /*force=*/true);
    CloseEndpoint(link->data_ep, /*force=*/options_.transport == Transport::kTcp);
    link->live_ep = link->data_ep = nullptr;
  }
  connected_ = true;
  PostControlRecv();
  return Status::OK();
}

Result<Engine::Link*> Engine::LinkFor(const std::string& address, int rank) {
  for (auto& link : links_) {
    if (!link->broken && link->address == address) {
      link->rank = rank;
      return link.get();
    }
  }
  auto link = std::make_unique<Link>();
  link->engine = this;
  link->address = address;
  link->rank = rank;
  RETURN_IF_ERROR(CreateEndpoints(link.get()));
  links_.push_back(std::move(link));
  return links_.back().get();
}

Status Engine::CreateEndpoints(Link* link) {
  auto create = [&](ucp_err_handling_mode_t mode, ucp_ep_h* ep) -> Status {
    ucp_ep_params_t params{};
    params.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE;
    params.address = reinterpret_cast<const ucp_address_t*>(link->address.data());
    params.err_mode = mode;
    if (mode == UCP_ERR_HANDLING_MODE_PEER) {
      params.field_mask |= UCP_EP_PARAM_FIELD_ERR_HANDLER;
      params.err_handler.cb = &Engine::OnEndpointError;
      params.err_handler.arg = link;
    }
    ucs_status_t s = ucp_ep_create(worker_.get(), &params, ep);
    if (s != UCS_OK) {
      return UcsToStatus(s, "comm: connect to " + PeerName(link->rank) + " (" +
                                std::string(mode == UCP_ERR_HANDLING_MODE_PEER ? "peer-failure" : "shared-memory") +
                                " endpoint; do both ranks use the same SHOAL_UCX_MODE?)");
    }
    return Status::OK();
  };
  if (options_.transport == Transport::kTcp) return create(UCP_ERR_HANDLING_MODE_PEER, &link->data_ep);
  // Data endpoint first, then the liveness endpoint: UCX pairs endpoints to one peer in creation order.
  RETURN_IF_ERROR(create(UCP_ERR_HANDLING_MODE_NONE, &link->data_ep));
  if (options_.liveness_endpoints) RETURN_IF_ERROR(create(UCP_ERR_HANDLING_MODE_PEER, &link->live_ep));
  return Status::OK();
}

std::string Engine::PeerName(int rank) const { return "rank " + std::to_string(rank); }

// ---- shutdown ----------------------------------------------------------------------------------------------

void Engine::Shutdown() {
  {
    std::lock_guard<std::mutex> lock(inbox_mu_);
    stopping_ = true;
  }
  shutting_down_ = true;
  DrainInbox();  // operations submitted meanwhile start and fail below; a late Connect is answered
  ucp_worker_h worker = worker_.get();
  std::vector<RunningOp*> ops;
  for (auto& [key, op] : running_) ops.push_back(op.get());
  for (RunningOp* op : ops) {
    FailOp(op, AbortedError(op->plan->state->name + ": the communicator is shutting down"));
  }
  // Let delivered sends reach their peers before the endpoints go (bounded: a stuck send never completes).
  ucp_request_param_t flush_param{};
  ucs_status_ptr_t flush = ucp_worker_flush_nbx(worker, &flush_param);
  auto deadline = SteadyClock::now() + kShutdownWait;
  while (SteadyClock::now() < deadline) {
    ucp_worker_progress(worker);
    ProcessCompleted();
    if (!newly_broken_.empty()) ProcessBrokenLinks();
    bool flushed = flush == nullptr || UCS_PTR_IS_ERR(flush) || ucp_request_check_status(flush) != UCS_INPROGRESS;
    if (flushed && running_.empty()) break;
  }
  if (flush != nullptr && !UCS_PTR_IS_ERR(flush)) ucp_request_free(flush);  // released by UCX once complete
  for (ucp_ep_h ep : failed_eps_) CloseEndpoint(ep, /*force=*/true);
  failed_eps_.clear();
  // Anything still running has only sends left that nobody will consume: orphan them.
  ops.clear();
  for (auto& [key, op] : running_) ops.push_back(op.get());
  for (RunningOp* op : ops) {
    for (auto& owned : op->xfers) {
      Xfer* x = owned.get();
      if (x && x->posted && !x->done) Orphan(op, x);
    }
    FinishOp(op, op->failure.ok() ? AbortedError("comm: shutting down") : op->failure);
  }
  for (auto& link : links_) {
    if (link->live_ep) CloseEndpoint(link->live_ep, /*force=*/true);
    if (link->data_ep) CloseEndpoint(link->data_ep, /*force=*/options_.transport == Transport::kTcp);
    link->live_ep = link->data_ep = nullptr;
  }
  deadline = SteadyClock::now() + kShutdownWait;
  while (!closing_.empty() && SteadyClock::now() < deadline) {
    ucp_worker_progress(worker);
    for (auto it = closing_.begin(); it != closing_.end();) {
      if (ucp_request_check_status(it->first) != UCS_INPROGRESS) {
        ucp_request_free(it->first);
        it = closing_.erase(it);
      } else {
        ++it;
      }
    }
  }
  // Withdraw the standing control receive and drop undelivered eager messages, so that UCX has nothing to
  // complain about when the worker goes.
  if (control_recv_ != nullptr && !control_recv_->done && control_recv_->request) {
    ucp_request_cancel(worker, control_recv_->request);
  }
  control_recv_ = nullptr;
  drain_filters_.assign(1, {0, 0});
  DrainFilters();
  deadline = SteadyClock::now() + kShutdownWait / 5;
  while (SteadyClock::now() < deadline && ucp_worker_progress(worker) != 0) {
  }
  completed_.clear();
  finished_.clear();
  {
    std::lock_guard<std::mutex> lock(inbox_mu_);
    worker_gone_ = true;
  }
  worker_.reset();  // releases whatever UCX still holds; no callback runs after this
  orphans_.clear();
  completed_.clear();
}

}  // namespace shoal::comm
