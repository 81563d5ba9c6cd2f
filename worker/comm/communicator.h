// The data plane for host memory: one Communicator per worker process owns a UCP context, a UCP worker and a
// progress thread, and moves activations, gradients and MoE tokens between the ranks of a job (DESIGN.md §2).
//
// Setup. Create() publishes this process's worker address as hex text (address(): the coordinator carries it
// as RankAssignment.dataAddress). Connect(epoch, rank, peers) enters a job epoch as `rank` with endpoints to
// the given peers (rank -> address text); a later Connect ends every operation of the previous epoch.
//
// Operations (Send, Recv, AllToAllV, AllReduce, ReduceScatter, AllGather) are asynchronous: each returns a
// CommHandle at once, the progress thread moves the bytes (and does the reductions) while the caller computes,
// and the caller waits on the handle later with a deadline (STYLE.md §7):
//
//   CommHandle dispatch = comm->AllToAllV(ep_group, send, send_counts, send_offsets, recv, recv_counts, ...);
//   RunAttention(next_micro_batch);                        // overlaps with the exchange
//   RETURN_IF_ERROR(dispatch.Wait(std::chrono::seconds(30)));
//
// Buffers: an operation reads/writes the caller's spans until its handle is done; the communicator owns every
// other buffer (reduction scratch, drained messages). After Wait returned (OK or not) or Cancel returned,
// nothing of the operation touches caller memory again (see "Cancel" below for the one shm exception).
//
// Collectives run over a Group (a subset of the job's ranks) and are built on the tagged point-to-point layer
// with the pairwise-exchange algorithms: reduce-scatter sends chunk j to member j, and member j sums the
// contributions in group order (((x_0 + x_1) + x_2) + ...); all-gather sends the owned chunk to every member;
// all-reduce is the two in sequence. Every byte crosses the wire once per hop as in a ring ((n-1)/n of the
// buffer each way), all n-1 exchanges are in flight at once (no ring-step latency chain), and the summation
// order is fixed, so sums are bitwise equal on every member, run to run, and equal to a serial loop in
// group order. Every member must call the collectives of a group in the same order (as in MPI).
//
// Failure (DESIGN.md §6): every Wait has a deadline and reports the peers it still waits on; an operation
// with a dead peer ends with Unavailable naming the rank as soon as UCX reports the peer (see Transport); a
// peer that hangs without dying ends Waits with DeadlineExceeded (the coordinator then kills it and bumps the
// epoch). Tags carry the epoch, so messages from an older epoch (zombies) never match; they are drained.
//
// Transport (measured on the 2-vCPU build VM with bench_comm and ucx_perftest, UCX 1.13.1, two processes;
// loopback, both ranks on one host; see tools/bench/comm):
//
//   mode  UCX setup                                       1 MiB tag bw  16 MiB    8 B latency  dead peer seen
//   shm   UCP_ERR_HANDLING_MODE_NONE; sysv/posix + cma     10.4 GB/s     7.1 GB/s  13 us        via a tcp PEER-mode
//         (any transport across hosts)                                                         "liveness" endpoint
//   tcp   UCP_ERR_HANDLING_MODE_PEER; UCX_TLS=tcp           3.4 GB/s     2.9 GB/s  39 us        by UCX itself
//   (Communicator figures, best of 3; a raw UCP loop reaches 9.9 / 3.3 GB/s at 1 MiB, 1.1 / 9.4 us.)
//
// UCX 1.13 only reports peer failure on PEER-mode endpoints, and PEER mode only works over tcp
// (../shared/reference/dependencies.md §4). shm mode gets both: data moves over a NONE-mode endpoint (shared
// memory on one host, whatever UCX picks across hosts) and a second, idle PEER-mode tcp endpoint to the same
// peer only watches liveness; its error callback marks the peer dead within milliseconds of kill -9. What shm
// mode gives up: UCX cannot withdraw a NONE-mode send (ucp_request_cancel ignores sends, FLAG_FORCE close is
// refused). A failed or cancelled operation whose rendezvous send the peer never matches waits
// `send_withdraw_grace` for the peer to drain it (peers drain the messages of failed calls and old epochs),
// then breaks the link: the liveness endpoint is force-closed, so the peer sees this rank as dead for the
// epoch and never matches the send later, and the send is orphaned (UCX may still read, never write, the
// caller's buffer until the communicator is destroyed; with cma only the peer's kernel reads it). tcp mode
// force-closes the data endpoint instead, which completes the send. Both modes rebuild broken links at the next
// Connect.
//
// Default: tcp. shm has ~3x the bandwidth but is not safe against a peer killed mid-transfer: a cma rendezvous
// read (process_vm_readv) from a peer that has just died is fatal in UCX 1.13 and aborts this process too
// ("cma_ep.c: process_vm_readv ... No such process", seen about once in ten kill -9 runs of
// tests/integration/distributed_test.cc), and without cma a receive that matched the dead peer's rendezvous can
// neither complete nor be withdrawn. In tcp (PEER) mode UCX fails every request of a dead peer by itself.
// SHOAL_UCX_MODE=shm (or CommunicatorOptions::transport) picks shm where the speed is worth that risk.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"
#include "worker/comm/group.h"

namespace shoal::comm {

class Engine;
struct OpPlan;
struct OpState;

enum class Transport { kShm, kTcp };
std::string_view TransportName(Transport transport);
// "shm" | "tcp".
Result<Transport> ParseTransport(std::string_view text);

struct CommunicatorOptions {
  Transport transport = Transport::kTcp;
  // shm: a PEER-mode tcp endpoint beside each data endpoint, so that UCX reports a dead peer. Without it, a dead
  // peer is only noticed by Wait deadlines.
  bool liveness_endpoints = true;
  // The progress thread busy-polls this long after the last event before it sleeps on the worker's event fd.
  std::chrono::microseconds progress_spin{100};
  // Wait() spins (yielding) this long on completion before it sleeps on a condition variable: small messages
  // complete within it and skip a futex wake-up.
  std::chrono::microseconds wait_spin{50};
  // How long a failed or cancelled operation waits for its unfinished sends to be consumed or drained by their
  // peers before it breaks the links to them (see the header comment).
  std::chrono::milliseconds send_withdraw_grace{500};
  // Extra UCX settings for this context only, e.g. {"NET_DEVICES", "lo"} (names without the UCX_ prefix).
  std::vector<std::pair<std::string, std::string>> ucx_config;

  // Defaults, with the transport from SHOAL_UCX_MODE (shm|tcp) when it is set. Read once by the process's
  // main, never inside the library.
  static Result<CommunicatorOptions> FromEnvironment();
};

// The caller's end of one asynchronous operation. Move-only RAII: destroying or overwriting a handle whose
// operation is still running cancels it (and blocks until it is released).
class CommHandle {
 public:
  CommHandle() = default;
  ~CommHandle();
  CommHandle(CommHandle&& other) noexcept = default;
  CommHandle& operator=(CommHandle&& other) noexcept;
  CommHandle(const CommHandle&) = delete;
  CommHandle& operator=(const CommHandle&) = delete;

  bool valid() const { return state_ != nullptr; }
  // True once the operation ended (successfully or not); never blocks.
  bool Done() const;
  // Waits until the operation ends or `timeout` passes. Returns its status, or DeadlineExceeded naming the
  // ranks it still waits on; the operation then keeps running (Wait again, or Cancel).
  Status Wait(std::chrono::steady_clock::duration timeout);
  Status WaitUntil(std::chrono::steady_clock::time_point deadline);
  // Ends the operation: receives are withdrawn at once; unfinished sends as described in the header comment.
  // Returns once nothing of the operation references caller memory: the operation's own status if it had
  // already ended, else Cancelled.
  Status Cancel();
  // Recv only: the length of the received message (valid once Wait returned OK).
  size_t received_bytes() const;
  // "AllReduce(group 812 [0,1,2] call #3, 4096 floats)".
  const std::string& name() const;

 private:
  friend class Communicator;
  explicit CommHandle(std::shared_ptr<OpState> state, std::chrono::microseconds wait_spin)
      : state_(std::move(state)), wait_spin_(wait_spin) {}
  std::shared_ptr<OpState> state_;
  std::chrono::microseconds wait_spin_{0};
};

class Communicator {
 public:
  struct Stats {
    uint64_t drained_messages = 0;   // messages of older epochs or failed calls, received and dropped
    uint64_t broken_links = 0;       // peers declared dead or cut off
    uint64_t orphaned_sends = 0;     // NONE-mode sends abandoned to UCX (see the header comment)
    uint64_t operations = 0;         // operations started
  };

  static Result<std::unique_ptr<Communicator>> Create(CommunicatorOptions options);
  // Ends every operation (Aborted), closes endpoints (peers see this rank as gone), stops the progress thread.
  ~Communicator();
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  // This process's UCX worker address as lowercase hex text (RankAssignment.dataAddress).
  const std::string& address() const { return address_; }
  Transport transport() const { return options_.transport; }

  // Enters `epoch` as `rank` with endpoints to `peers` (rank -> the address() text each peer published; this
  // rank may be listed too and is skipped). Every operation of the previous epoch ends with Aborted first.
  // Endpoints to unchanged addresses are kept; broken ones are rebuilt.
  Status Connect(uint64_t epoch, int rank, const std::map<int, std::string>& peers);
  int rank() const;
  uint64_t epoch() const;

  // Point-to-point, tag < 2^24. Sends/receives pair up in order per (peer, tag). A Recv buffer may be larger
  // than the message (received_bytes() says how much came); a larger message is DataLoss.
  CommHandle Send(int peer, uint32_t tag, std::span<const std::byte> buffer);
  CommHandle Recv(int peer, uint32_t tag, std::span<std::byte> buffer);

  // MoE dispatch/combine: byte counts and offsets per group member (in group order). Member j receives
  // send[send_offsets[j], +send_counts[j]) into its recv[recv_offsets[me], +recv_counts[me]); every pair
  // exchanges a message (empty ones too), so mismatched counts are reported as DataLoss, never a hang. The
  // bytes this member sends itself are copied on the calling thread, while the progress thread moves the
  // rest, before the call returns (AllGather does the same with its own chunk).
  CommHandle AllToAllV(const Group& group, std::span<const std::byte> send, std::span<const size_t> send_counts,
                       std::span<const size_t> send_offsets, std::span<std::byte> recv,
                       std::span<const size_t> recv_counts, std::span<const size_t> recv_offsets);
  // In-place sum over the group (fp32), bitwise equal on every member.
  CommHandle AllReduce(const Group& group, std::span<float> data);
  // Sums `send` over the group; member j receives elements [offset_j, +counts[j]) of the sum in `recv`.
  // counts empty: equal chunks (send.size() must be divisible by the group size).
  CommHandle ReduceScatter(const Group& group, std::span<const float> send, std::span<float> recv,
                           std::span<const size_t> counts = {});
  // Concatenates every member's `send` in group order into `recv`. counts (bytes per member) empty: equal
  // sizes (recv.size() == group size * send.size()).
  CommHandle AllGather(const Group& group, std::span<const std::byte> send, std::span<std::byte> recv,
                       std::span<const size_t> counts = {});

  Stats stats() const;

 private:
  Communicator(CommunicatorOptions options, std::unique_ptr<Engine> engine);
  CommHandle Start(std::unique_ptr<OpPlan> plan);
  CommHandle Failed(std::string name, Status status);
  // Tag fields for the next operation; under mu_.
  uint32_t NextP2pSeq(std::map<std::pair<int, uint32_t>, uint32_t>& counters, int peer, uint32_t tag);
  uint32_t NextGroupSeq(const Group& group);
  Status CheckGroup(const Group& group, int* my_index) const;

  CommunicatorOptions options_;
  std::string address_;
  std::unique_ptr<Engine> engine_;

  mutable std::mutex mu_;
  uint64_t epoch_ = 0;
  int rank_ = -1;
  bool connected_ = false;
  std::map<std::pair<int, uint32_t>, uint32_t> send_seq_;   // (peer, tag) -> next sequence
  std::map<std::pair<int, uint32_t>, uint32_t> recv_seq_;
  // (group id, members) -> next call number: collectives of groups with other ids may interleave in any order.
  std::map<std::pair<uint32_t, std::vector<int>>, uint32_t> group_seq_;
};

}  // namespace shoal::comm
