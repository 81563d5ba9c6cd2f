// The data plane for GPU memory: the NCCL twin of Communicator (communicator.h). One NcclCommunicator per rank
// and device; operations are enqueued on the caller's CUDA stream and return an NcclHandle (a CUDA event
// recorded after the operation) that the caller waits on later with a deadline, so compute on other streams
// overlaps with communication (STYLE.md §7).
//
// Setup: one rank calls NewUniqueId() and the caller distributes the text (the coordinator's assignment carries
// it like the UCX address); every rank then calls Create(id, rank, world_size, device, timeout). The
// communicator is created non-blocking (ncclConfig_t.blocking = 0), so a rank that never shows up ends
// Create with DeadlineExceeded instead of hanging, and every wait polls ncclCommGetAsyncError: a dead peer
// surfaces as an error or a deadline, never as a hang. NCCL cannot withdraw one operation, so Cancel aborts the
// whole communicator (ncclCommAbort); make a new one for the next epoch.
//
// Collectives: AllReduce / ReduceScatter (sum, fp32), AllGather (bytes), AllToAllV (bytes, as grouped
// ncclSend/ncclRecv), Send/Recv. Subgroups come from Split (ncclCommSplit).
//
// Built only with CUDA and NCCL (SHOAL_HAVE_CUDA and NCCL::nccl); links cudart, never the driver stub. Without
// a device every call fails with FailedPrecondition; DeviceAvailable() says whether one is there.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <span>
#include <string>

#include "common/status.h"

struct CUstream_st;  // cudaStream_t is CUstream_st*
struct CUevent_st;   // cudaEvent_t
struct ncclComm;     // ncclComm_t

namespace shoal::comm {

class NcclCommunicator;

// Completion of one enqueued NCCL operation. Move-only; owns its CUDA event.
class NcclHandle {
 public:
  NcclHandle() = default;
  ~NcclHandle();
  NcclHandle(NcclHandle&& other) noexcept;
  NcclHandle& operator=(NcclHandle&& other) noexcept;
  NcclHandle(const NcclHandle&) = delete;
  NcclHandle& operator=(const NcclHandle&) = delete;

  bool valid() const { return comm_ != nullptr || !status_.ok(); }
  // Non-blocking: has the operation finished on its stream?
  bool Done() const;
  // Polls the event and the communicator's async error until the operation finished, NCCL reported an error
  // (the communicator is then aborted), or `timeout` passed (DeadlineExceeded; the operation keeps running).
  Status Wait(std::chrono::steady_clock::duration timeout);
  // NCCL cannot withdraw one operation: aborts the communicator (every later operation fails).
  Status Cancel();

 private:
  friend class NcclCommunicator;
  NcclHandle(NcclCommunicator* comm, CUevent_st* event, std::string name)
      : comm_(comm), event_(event), name_(std::move(name)) {}
  explicit NcclHandle(Status status) : status_(std::move(status)) {}
  NcclCommunicator* comm_ = nullptr;
  CUevent_st* event_ = nullptr;
  std::string name_;
  Status status_;  // set when the operation could not be enqueued
};

class NcclCommunicator {
 public:
  // True when the CUDA runtime sees at least one device (false on a driverless machine; never aborts).
  static bool DeviceAvailable();
  static int DeviceCount();
  // A fresh ncclUniqueId as hex text, for the caller to hand to every rank.
  static Result<std::string> NewUniqueId();
  // Joins the communicator of `world_size` ranks identified by `unique_id_hex` as `rank`, on CUDA `device`.
  static Result<std::unique_ptr<NcclCommunicator>> Create(const std::string& unique_id_hex, int rank, int world_size,
                                                          int device, std::chrono::steady_clock::duration timeout);
  // ncclCommDestroy after success, ncclCommAbort after an error or a timeout.
  ~NcclCommunicator();
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  int device() const { return device_; }

  // Ranks with the same color form a sub-communicator, ordered by key (ncclCommSplit); every rank must call
  // it. A negative color (NCCL_SPLIT_NOCOLOR) returns nullptr for ranks that are in no subgroup.
  Result<std::unique_ptr<NcclCommunicator>> Split(int color, int key, std::chrono::steady_clock::duration timeout);

  NcclHandle Send(const void* buffer, size_t bytes, int peer, CUstream_st* stream);
  NcclHandle Recv(void* buffer, size_t bytes, int peer, CUstream_st* stream);
  NcclHandle AllReduce(const float* send, float* recv, size_t count, CUstream_st* stream);
  // recv gets recv_count floats: this rank's chunk of the sum of `send` (size() * recv_count floats).
  NcclHandle ReduceScatter(const float* send, float* recv, size_t recv_count, CUstream_st* stream);
  // recv gets size() * send_bytes bytes, rank order.
  NcclHandle AllGather(const void* send, void* recv, size_t send_bytes, CUstream_st* stream);
  // Byte counts/offsets per rank, as Communicator::AllToAllV.
  NcclHandle AllToAllV(const void* send, std::span<const size_t> send_counts, std::span<const size_t> send_offsets,
                       void* recv, std::span<const size_t> recv_counts, std::span<const size_t> recv_offsets,
                       CUstream_st* stream);

  // Aborts outstanding work; the communicator is unusable afterwards.
  Status Abort();
  // The communicator's asynchronous error (OK while healthy).
  Status AsyncError();
  bool aborted() const { return aborted_; }

 private:
  friend class NcclHandle;
  NcclCommunicator(ncclComm* comm, int rank, int size, int device)
      : comm_(comm), rank_(rank), size_(size), device_(device) {}
  // Polls the (non-blocking) communicator until the last call finished enqueueing.
  Status WaitReady(std::chrono::steady_clock::time_point deadline, const std::string& what);
  NcclHandle Finish(const std::string& name, int nccl_result, CUstream_st* stream);

  ncclComm* comm_ = nullptr;
  int rank_ = 0;
  int size_ = 0;
  int device_ = 0;
  bool aborted_ = false;
};

}  // namespace shoal::comm
