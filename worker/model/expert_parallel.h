// Expert parallelism inside the MoE layer (DESIGN.md §3 "EP inside DP"): the routed experts of every MoE layer
// are sharded across an EP group of EP consecutive data-parallel ranks, EP rank r holding the contiguous range
// [r·E/EP, (r+1)·E/EP) (ModelOptions::expert_begin/expert_end). Every rank routes ITS OWN tokens; the MoE layer
// then moves rows through an ExpertExchange between its phases (moe.h):
//
//   forward   Route → permute (rows sorted by global expert, so each owner's rows are one block)
//             → counts  (rows per expert, so owners can split what they receive by local expert)
//             → DISPATCH the rows to their owners  ...  the shared expert computes meanwhile
//             → owners run their experts on what they received (grouped GEMM, rows regrouped by local expert)
//             → COMBINE the outputs back to the rows' origin  ...  the rest of the shared expert meanwhile
//             → unpermute with the gate weights
//   backward  the output gradients take the dispatch path (GRAD_DISPATCH), the owners run the experts' backward,
//             the input gradients come back (GRAD_COMBINE); weight gradients stay on the owner.
//
// The exchange is a pure interface: the comm-backed implementation is worker/dist/ep_exchange.h (AllToAllV
// over the EP group), an in-process one for tests is worker/model/in_process_exchange.h. The payload encoding
// of each exchange (reference/deepseek-v3.md §5.5: dispatch in FP8 E4M3 with power-of-two 1×128 scales,
// combine in BF16; fp32 for exact equivalence) belongs to the implementation; the helpers below define it once
// so that every implementation encodes alike.
//
// Node-limited routing (§3.4) needs no code of its own: the router keeps the topk_group best of n_group
// contiguous expert groups. Choose n_group so that every group is a union of whole EP ranks (n_group divides
// EP, or equals it) and a token's experts live on at most topk_group·EP/n_group EP ranks; with n_group == EP,
// on at most topk_group ranks. When the EP group spans hosts with the same number of ranks on each (placement
// keeps them contiguous), n_group = number of hosts makes a group a host, so topk_group is the node limit M
// (DeepSeek-V3: EP64 over 8 nodes, n_group 8, topk_group 4). MaxRanksPerToken says what a config guarantees.
//
// Loads for the bias update (§3.3) stay per layer and local (each rank counts its own tokens); the trainer
// all-reduces them across data-parallel ranks and sets them back with Model::SetLoads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <utility>

#include "common/status.h"

namespace shoal::model {

// The EP layout a model's expert range implies.
struct EpLayout {
  int64_t size = 1;              // EP ranks in the group
  int64_t rank = 0;              // this model's index in it
  int64_t experts_per_rank = 0;  // E / size
};

// The layout of the expert range [expert_begin, expert_end) of E routed experts: InvalidArgument unless the range
// is one of `E / (expert_end − expert_begin)` equal contiguous ranges (the whole range is EP 1).
Result<EpLayout> EpLayoutOf(int64_t num_experts, int64_t expert_begin, int64_t expert_end);
// Routed experts [first, second) of EP rank `rank` of `size`.
std::pair<int64_t, int64_t> EpExpertRange(int64_t num_experts, int64_t size, int64_t rank);
// The most EP ranks one token's experts can live on under group-limited routing (n_group, topk_group, top-K)
// with `ep_size` ranks: min(K, ep_size) in general; topk_group·ep_size/n_group when n_group divides ep_size
// (every group a union of whole ranks); topk_group when n_group == ep_size.
int64_t MaxRanksPerToken(int64_t n_group, int64_t topk_group, int64_t k, int64_t ep_size);

// The four exchanges of an MoE layer; they differ in payload encoding.
enum class ExchangeKind {
  kDispatch,      // forward: expert inputs, token rows → owners            (FP8 optional, §5.5)
  kCombine,       // forward: expert outputs, owners → token rows           (BF16 optional)
  kGradDispatch,  // backward: the outputs' gradients, token rows → owners  (FP8 optional)
  kGradCombine,   // backward: the inputs' gradients, owners → token rows   (BF16 optional)
};
const char* ExchangeKindName(ExchangeKind kind);

// Payload encodings of one row of `width` fp32 values.
enum class WireFormat {
  kFp32,  // exact
  kBf16,  // round to nearest even
  kFp8,   // E4M3 with one power-of-two scale per 128 channels (1×128 tiles): [scales fp32][codes u8]
};
const char* WireFormatName(WireFormat format);
int64_t WireRowBytes(WireFormat format, int64_t width);
// out[num_rows · WireRowBytes] = encode(rows[num_rows, width]); DecodeRows inverts it (exactly for kFp32).
void EncodeRows(WireFormat format, std::byte* out, const float* rows, int64_t num_rows, int64_t width);
void DecodeRows(WireFormat format, float* rows, const std::byte* in, int64_t num_rows, int64_t width);

// Which encoding each kind uses: fp32 unless the flags say otherwise.
struct ExchangePrecision {
  bool dispatch_fp8 = false;  // kDispatch and kGradDispatch in kFp8
  bool combine_bf16 = false;  // kCombine and kGradCombine in kBf16
  WireFormat FormatOf(ExchangeKind kind) const;
};

// A row exchange: this rank sends send_rows[r] rows to EP rank r (blocks in rank order, back to back, from
// `send`) and receives recv_rows[s] rows from EP rank s (blocks in rank order into `recv`). Both buffers must stay
// untouched until the ticket's Wait returns; the counts are copied at the start.
struct ExchangeRows {
  ExchangeKind kind = ExchangeKind::kDispatch;
  int64_t layer = 0;  // HF layer index (messages, tags)
  int64_t width = 0;  // fp32 values per row (the hidden size)
  const float* send = nullptr;
  std::span<const int64_t> send_rows;  // [EP]
  float* recv = nullptr;
  std::span<const int64_t> recv_rows;  // [EP]
};

// One exchange in flight (from Start*; pass it to Wait exactly once).
struct ExchangeTicket {
  int64_t id = -1;
  bool valid() const { return id >= 0; }
};

// Moves MoE rows between the ranks of one EP group. Collective: every rank of the group starts the same
// sequence of exchanges (same kinds, layers and order); a rank's Start* return at once and the bytes move while
// it computes; Wait blocks until this rank's receive buffer is complete. Errors (a dead or hung peer, mismatched
// counts) come out of Wait as a Status naming the peer and the exchange; after Wait returns, the exchange
// touches neither buffer again. Several exchanges may be in flight at once (e.g. one micro-batch's dispatch and
// another's combine); implementations are used from one thread.
class ExpertExchange {
 public:
  virtual ~ExpertExchange() = default;
  virtual int size() const = 0;  // EP
  virtual int rank() const = 0;  // this rank's index in the EP group

  // The counts ahead of a dispatch: expert_counts[E] = rows this rank sends to each global expert; after Wait,
  // recv_counts[EP · E/EP] holds, for each source rank s, the rows it sends to each of this rank's experts.
  virtual ExchangeTicket StartCounts(int64_t layer, std::span<const int32_t> expert_counts,
                                     std::span<int32_t> recv_counts) = 0;
  virtual ExchangeTicket StartRows(const ExchangeRows& rows) = 0;
  virtual Status Wait(ExchangeTicket ticket) = 0;
};

}  // namespace shoal::model
