#include "worker/dist/ep_exchange.h"

#include <algorithm>

#include "common/check.h"
#include "worker/comm/communicator.h"

namespace shoal::dist {

using model::ExchangeKind;
using model::ExchangeTicket;
using model::WireFormat;
using Clock = std::chrono::steady_clock;

// One exchange in flight: its handle, what Wait must decode, and the buffers the communicator reads and writes.
struct EpExchange::Pending {
  int64_t id = -1;
  std::string what;  // "layer 3 dispatch"
  comm::CommHandle handle;
  std::vector<size_t> send_counts, send_offsets, recv_counts, recv_offsets;  // bytes, per member
  // Encoded rows (formats other than fp32; fp32 moves the caller's buffers as they are).
  WireFormat format = WireFormat::kFp32;
  std::vector<std::byte> send_buf, recv_buf;
  float* recv = nullptr;
  int64_t recv_total_rows = 0, width = 0;
};

Result<std::unique_ptr<EpExchange>> EpExchange::Create(comm::Communicator* comm, comm::Group group,
                                                       EpExchangeOptions options) {
  if (comm == nullptr) return InvalidArgumentError("EpExchange: no communicator");
  const int me = group.IndexOf(comm->rank());
  if (me < 0) {
    return InvalidArgumentError("EpExchange: rank " + std::to_string(comm->rank()) + " is not a member of the EP " +
                                group.DebugString());
  }
  return std::unique_ptr<EpExchange>(new EpExchange(comm, std::move(group), me, options));
}

EpExchange::EpExchange(comm::Communicator* comm, comm::Group group, int my_index, EpExchangeOptions options)
    : comm_(comm), group_(std::move(group)), my_index_(my_index), options_(options) {}

// In-flight handles cancel themselves when destroyed (CommHandle is RAII).
EpExchange::~EpExchange() = default;

int EpExchange::size() const { return group_.size(); }
int EpExchange::rank() const { return my_index_; }

namespace {

std::vector<size_t> Offsets(const std::vector<size_t>& counts) {
  std::vector<size_t> out(counts.size());
  size_t at = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    out[i] = at;
    at += counts[i];
  }
  return out;
}

}  // namespace

ExchangeTicket EpExchange::StartCounts(int64_t layer, std::span<const int32_t> expert_counts,
                                       std::span<int32_t> recv_counts) {
  auto p = std::make_unique<Pending>();
  p->id = next_id_++;
  p->what = "layer " + std::to_string(layer) + " counts";
  const size_t n = static_cast<size_t>(group_.size());
  const size_t per = expert_counts.size() / n * sizeof(int32_t);  // one member's experts
  p->send_counts.assign(n, per);
  p->recv_counts.assign(n, per);
  p->send_offsets = Offsets(p->send_counts);
  p->recv_offsets = Offsets(p->recv_counts);
  p->handle = comm_->AllToAllV(group_, std::as_bytes(expert_counts), p->send_counts, p->send_offsets,
                               std::as_writable_bytes(recv_counts), p->recv_counts, p->recv_offsets);
  ++stats_.exchanges;
  pending_.push_back(std::move(p));
  if (options_.serialize) WaitInStart(*pending_.back());
  return ExchangeTicket{pending_.back()->id};
}

ExchangeTicket EpExchange::StartRows(const model::ExchangeRows& x) {
  auto p = std::make_unique<Pending>();
  p->id = next_id_++;
  p->what = "layer " + std::to_string(x.layer) + " " + model::ExchangeKindName(x.kind);
  p->format = options_.precision.FormatOf(x.kind);
  p->width = x.width;
  p->recv = x.recv;
  const size_t n = static_cast<size_t>(group_.size());
  const int64_t row_bytes = model::WireRowBytes(p->format, x.width);
  int64_t send_total = 0;
  for (size_t j = 0; j < n; ++j) {
    p->send_counts.push_back(static_cast<size_t>(x.send_rows[j] * row_bytes));
    p->recv_counts.push_back(static_cast<size_t>(x.recv_rows[j] * row_bytes));
    send_total += x.send_rows[j];
    p->recv_total_rows += x.recv_rows[j];
    if (j != static_cast<size_t>(my_index_)) stats_.bytes_sent += x.send_rows[j] * row_bytes;
  }
  p->send_offsets = Offsets(p->send_counts);
  p->recv_offsets = Offsets(p->recv_counts);
  std::span<const std::byte> send;
  std::span<std::byte> recv;
  if (p->format == WireFormat::kFp32) {
    send = std::as_bytes(std::span<const float>(x.send, static_cast<size_t>(send_total * x.width)));
    recv = std::as_writable_bytes(std::span<float>(x.recv, static_cast<size_t>(p->recv_total_rows * x.width)));
  } else {
    const auto t0 = Clock::now();
    p->send_buf.resize(static_cast<size_t>(send_total * row_bytes));
    p->recv_buf.resize(static_cast<size_t>(p->recv_total_rows * row_bytes));
    model::EncodeRows(p->format, p->send_buf.data(), x.send, send_total, x.width);
    stats_.encode_seconds += std::chrono::duration<double>(Clock::now() - t0).count();
    send = p->send_buf;
    recv = p->recv_buf;
  }
  p->handle = comm_->AllToAllV(group_, send, p->send_counts, p->send_offsets, recv, p->recv_counts, p->recv_offsets);
  ++stats_.exchanges;
  pending_.push_back(std::move(p));
  if (options_.serialize) WaitInStart(*pending_.back());
  return ExchangeTicket{pending_.back()->id};
}

bool EpExchange::Poll(ExchangeTicket ticket, std::chrono::microseconds max_wait) {
  Pending* p = Find(ticket.id);
  CHECK(p != nullptr) << "EpExchange: Poll on unknown ticket " << ticket.id;
  if (p->handle.Done()) return true;
  if (max_wait.count() <= 0) return false;
  const auto t0 = Clock::now();
  p->handle.Wait(max_wait).IgnoreError();
  stats_.wait_seconds += std::chrono::duration<double>(Clock::now() - t0).count();
  return p->handle.Done();
}

// serialize: the exchange completes before Start* returns; its status is kept by the handle for Wait.
void EpExchange::WaitInStart(Pending& p) {
  const auto t0 = Clock::now();
  p.handle.Wait(options_.deadline).IgnoreError();
  stats_.wait_seconds += std::chrono::duration<double>(Clock::now() - t0).count();
}

EpExchange::Pending* EpExchange::Find(int64_t id) {
  for (auto& p : pending_) {
    if (p->id == id) return p.get();
  }
  return nullptr;
}

Status EpExchange::Wait(ExchangeTicket ticket) { return WaitWithin(ticket, options_.deadline); }

Status EpExchange::WaitWithin(ExchangeTicket ticket, std::chrono::steady_clock::duration timeout) {
  Pending* p = Find(ticket.id);
  CHECK(p != nullptr) << "EpExchange: Wait on unknown ticket " << ticket.id;
  const auto t0 = Clock::now();
  const auto deadline = t0 + timeout;
  Status st;
  for (;;) {  // in slices, so that a raised stop flag is seen within 50 ms
    const auto until = stop_ != nullptr ? std::min(deadline, Clock::now() + std::chrono::milliseconds(50)) : deadline;
    st = p->handle.WaitUntil(until);
    if (st.code() != StatusCode::kDeadlineExceeded || Clock::now() >= deadline) break;
    if (stop_ != nullptr && stop_->load()) {
      st = CancelledError("stopped while waiting for " + p->handle.name());
      break;
    }
  }
  const auto t1 = Clock::now();
  stats_.wait_seconds += std::chrono::duration<double>(t1 - t0).count();
  if (!st.ok()) {
    // The handle keeps running after a missed deadline; cancel it so that nothing touches the buffers later.
    p->handle.Cancel().IgnoreError();
    st = Status(st.code(), p->what + " (EP rank " + std::to_string(my_index_) + " of " + group_.DebugString() +
                               "): " + st.message());
  } else if (p->format != WireFormat::kFp32) {
    model::DecodeRows(p->format, p->recv, p->recv_buf.data(), p->recv_total_rows, p->width);
    stats_.encode_seconds += std::chrono::duration<double>(Clock::now() - t1).count();
  }
  pending_.erase(std::find_if(pending_.begin(), pending_.end(), [&](const auto& q) { return q.get() == p; }));
  return st;
}

}  // namespace shoal::dist
