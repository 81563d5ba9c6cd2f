#include "worker/model/in_process_exchange.h"

#include <thread>

#include "common/check.h"

namespace shoal::model {

// One collective: what every rank posted (its encoded rows, or its expert counts).
struct InProcessExchangeGroup::Slot {
  bool is_counts = false;
  ExchangeKind kind = ExchangeKind::kDispatch;
  int64_t layer = 0, width = 0;
  std::vector<bool> posted;
  std::vector<std::vector<int64_t>> send_rows;     // [rank][EP]
  std::vector<std::vector<std::byte>> payload;     // [rank] encoded rows, blocks by destination
  std::vector<std::vector<int32_t>> counts;        // [rank][E]
  int finished = 0;
};

class InProcessExchangeGroup::Rank : public ExpertExchange {
 public:
  Rank(InProcessExchangeGroup* group, int rank) : group_(group), rank_(rank) {}

  int size() const override { return group_->size_; }
  int rank() const override { return rank_; }

  ExchangeTicket StartCounts(int64_t layer, std::span<const int32_t> expert_counts,
                             std::span<int32_t> recv_counts) override {
    std::vector<int32_t> mine(expert_counts.begin(), expert_counts.end());
    const int64_t seq = group_->Post(rank_, [&](Slot& s) {
      s.is_counts = true;
      s.layer = layer;
      s.counts[rank_] = std::move(mine);
    });
    Pending p;
    p.is_counts = true;
    p.layer = layer;
    p.recv_counts = recv_counts;
    pending_[seq] = std::move(p);
    ++started_;
    return ExchangeTicket{seq};
  }

  ExchangeTicket StartRows(const ExchangeRows& x) override {
    const WireFormat f = group_->precision_.FormatOf(x.kind);
    const int64_t row_bytes = WireRowBytes(f, x.width);
    int64_t total = 0;
    for (int64_t r : x.send_rows) total += r;
    std::vector<std::byte> payload(static_cast<size_t>(total * row_bytes));
    EncodeRows(f, payload.data(), x.send, total, x.width);
    std::vector<int64_t> send_rows(x.send_rows.begin(), x.send_rows.end());
    const int64_t seq = group_->Post(rank_, [&](Slot& s) {
      s.kind = x.kind;
      s.layer = x.layer;
      s.width = x.width;
      s.send_rows[rank_] = std::move(send_rows);
      s.payload[rank_] = std::move(payload);
    });
    Pending p;
    p.kind = x.kind;
    p.layer = x.layer;
    p.width = x.width;
    p.recv = x.recv;
    p.recv_rows.assign(x.recv_rows.begin(), x.recv_rows.end());
    pending_[seq] = std::move(p);
    ++started_;
    return ExchangeTicket{seq};
  }

  Status Wait(ExchangeTicket ticket) override {
    auto it = pending_.find(ticket.id);
    CHECK(it != pending_.end()) << "InProcessExchange: Wait on unknown ticket " << ticket.id;
    Pending p = std::move(it->second);
    pending_.erase(it);
    RETURN_IF_ERROR(group_->Await(rank_, ticket.id));
    Status st = Receive(p, ticket.id);
    group_->Finish(ticket.id);
    return st;
  }

  int64_t started() const { return started_; }
  std::unique_lock<std::mutex>& baton() { return baton_; }

 private:
  struct Pending {
    bool is_counts = false;
    ExchangeKind kind = ExchangeKind::kDispatch;
    int64_t layer = 0, width = 0;
    std::span<int32_t> recv_counts;
    float* recv = nullptr;
    std::vector<int64_t> recv_rows;
  };

  std::string What(const Pending& p) const {
    return "layer " + std::to_string(p.layer) + " " + (p.is_counts ? "counts" : ExchangeKindName(p.kind)) +
           " on EP rank " + std::to_string(rank_);
  }

  Status Receive(const Pending& p, int64_t seq) {
    std::lock_guard<std::mutex> lock(group_->mu_);
    const Slot& s = *group_->slots_.at(seq);
    const int n = group_->size_;
    for (int src = 0; src < n; ++src) {
      // Every rank must have started the same exchange.
      if (s.is_counts != p.is_counts || s.layer != p.layer || (!p.is_counts && s.kind != p.kind)) {
        return DataLossError(What(p) + ": EP rank " + std::to_string(src) + " started a different exchange");
      }
    }
    if (p.is_counts) {
      const int64_t E = static_cast<int64_t>(s.counts[0].size()), El = E / n;
      if (static_cast<int64_t>(p.recv_counts.size()) != n * El) {
        return InvalidArgumentError(What(p) + ": recv_counts holds " + std::to_string(p.recv_counts.size()) +
                                    " counts, expected " + std::to_string(n * El));
      }
      for (int src = 0; src < n; ++src) {
        if (static_cast<int64_t>(s.counts[src].size()) != E) {
          return DataLossError(What(p) + ": EP rank " + std::to_string(src) + " counts " +
                               std::to_string(s.counts[src].size()) + " experts, this rank " + std::to_string(E));
        }
        for (int64_t j = 0; j < El; ++j) p.recv_counts[src * El + j] = s.counts[src][rank_ * El + j];
      }
      return Status::OK();
    }
    const WireFormat f = group_->precision_.FormatOf(p.kind);
    const int64_t row_bytes = WireRowBytes(f, p.width);
    int64_t at = 0;
    for (int src = 0; src < n; ++src) {
      const std::vector<int64_t>& rows = s.send_rows[src];
      if (static_cast<int>(rows.size()) != n || rows[rank_] != p.recv_rows[src] || s.width != p.width) {
        return DataLossError(What(p) + ": EP rank " + std::to_string(src) + " sends " +
                             std::to_string(rows.size() == static_cast<size_t>(n) ? rows[rank_] : -1) +
                             " rows, this rank expects " + std::to_string(p.recv_rows[src]));
      }
      int64_t off = 0;
      for (int d = 0; d < rank_; ++d) off += rows[d];
      DecodeRows(f, p.recv + at * p.width, s.payload[src].data() + off * row_bytes, rows[rank_], p.width);
      at += rows[rank_];
    }
    return Status::OK();
  }

  InProcessExchangeGroup* group_;
  int rank_;
  int64_t next_seq_ = 0;
  int64_t started_ = 0;
  std::map<int64_t, Pending> pending_;
  std::unique_lock<std::mutex> baton_;

  friend class InProcessExchangeGroup;
};

InProcessExchangeGroup::InProcessExchangeGroup(int size, ExchangePrecision precision)
    : size_(size), precision_(precision) {
  CHECK(size >= 1) << "InProcessExchangeGroup: size " << size;
  for (int r = 0; r < size; ++r) ranks_.push_back(std::make_unique<Rank>(this, r));
  exited_.assign(static_cast<size_t>(size), false);
}

InProcessExchangeGroup::~InProcessExchangeGroup() = default;

ExpertExchange* InProcessExchangeGroup::exchange(int rank) { return ranks_.at(static_cast<size_t>(rank)).get(); }

int64_t InProcessExchangeGroup::exchanges_started(int rank) const {
  return ranks_.at(static_cast<size_t>(rank))->started();
}

int64_t InProcessExchangeGroup::Post(int rank, const std::function<void(Slot&)>& post) {
  Rank& me = *ranks_[static_cast<size_t>(rank)];
  const int64_t seq = me.next_seq_++;
  {
    std::lock_guard<std::mutex> lock(mu_);
    std::unique_ptr<Slot>& slot = slots_[seq];
    if (!slot) {
      slot = std::make_unique<Slot>();
      slot->posted.assign(static_cast<size_t>(size_), false);
      slot->send_rows.resize(static_cast<size_t>(size_));
      slot->payload.resize(static_cast<size_t>(size_));
      slot->counts.resize(static_cast<size_t>(size_));
    }
    post(*slot);
    slot->posted[rank] = true;
  }
  cv_.notify_all();
  return seq;
}

Status InProcessExchangeGroup::Await(int rank, int64_t seq) {
  Rank& me = *ranks_[static_cast<size_t>(rank)];
  int missing = -1;
  me.baton_.unlock();  // peers compute while this rank waits
  {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] {
      const Slot& s = *slots_.at(seq);
      missing = -1;
      for (int r = 0; r < size_; ++r) {
        if (!s.posted[r]) {
          missing = r;
          if (exited_[r]) return true;  // it will never post
        }
      }
      return missing < 0;
    });
  }
  me.baton_.lock();
  if (missing >= 0) {
    return AbortedError("in-process exchange #" + std::to_string(seq) + " on EP rank " + std::to_string(rank) +
                        ": EP rank " + std::to_string(missing) + " ended without starting it");
  }
  return Status::OK();
}

void InProcessExchangeGroup::Finish(int64_t seq) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = slots_.find(seq);
  if (it != slots_.end() && ++it->second->finished == size_) slots_.erase(it);
}

Status InProcessExchangeGroup::RunRanks(const std::function<Status(int rank)>& fn) {
  std::vector<Status> results(static_cast<size_t>(size_));
  std::vector<std::thread> threads;
  {
    std::lock_guard<std::mutex> lock(mu_);
    exited_.assign(static_cast<size_t>(size_), false);
  }
  for (int r = 0; r < size_; ++r) {
    threads.emplace_back([this, r, &fn, &results] {
      Rank& me = *ranks_[static_cast<size_t>(r)];
      me.baton_ = std::unique_lock<std::mutex>(baton_);
      results[r] = fn(r);
      // Drop what this rank left unwaited, then let its peers see it gone.
      me.pending_.clear();
      me.baton_.unlock();
      me.baton_ = std::unique_lock<std::mutex>();
      {
        std::lock_guard<std::mutex> lock(mu_);
        exited_[r] = true;
      }
      cv_.notify_all();
    });
  }
  for (std::thread& t : threads) t.join();
  {
    std::lock_guard<std::mutex> lock(mu_);
    slots_.clear();
  }
  for (auto& rank : ranks_) rank->next_seq_ = 0;
  for (int r = 0; r < size_; ++r) {
    if (!results[r].ok()) {
      return Status(results[r].code(), "EP rank " + std::to_string(r) + ": " + results[r].message());
    }
  }
  return Status::OK();
}

}  // namespace shoal::model
