#include "worker/comm/nccl_communicator.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <cstring>
#include <thread>
#include <utility>
#include <vector>

#include "worker/comm/ucx_util.h"  // HexEncode / HexDecode

namespace shoal::comm {
namespace {

using SteadyClock = std::chrono::steady_clock;
constexpr auto kPollInterval = std::chrono::microseconds(50);

Status NcclStatus(ncclResult_t r, ncclComm_t comm, const std::string& what) {
  if (r == ncclSuccess || r == ncclInProgress) return Status::OK();
  std::string msg = what + ": NCCL " + ncclGetErrorString(r) + " (" + std::to_string(static_cast<int>(r)) + ")";
  if (comm != nullptr) {
    const char* last = ncclGetLastError(comm);
    if (last && *last) msg += std::string(": ") + last;
  }
  switch (r) {
    case ncclInvalidArgument:
    case ncclInvalidUsage:
      return InvalidArgumentError(std::move(msg));
    case ncclSystemError:
    case ncclRemoteError:
      return UnavailableError(std::move(msg));
    default:
      return InternalError(std::move(msg));
  }
}

Status CudaStatus(cudaError_t e, const std::string& what) {
  if (e == cudaSuccess) return Status::OK();
  std::string msg = what + ": CUDA " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")";
  if (e == cudaErrorInsufficientDriver || e == cudaErrorNoDevice) return FailedPreconditionError(std::move(msg));
  return InternalError(std::move(msg));
}

// Polls a non-blocking communicator until its last call left ncclInProgress.
Status PollComm(ncclComm_t comm, SteadyClock::time_point deadline, const std::string& what) {
  while (true) {
    ncclResult_t state = ncclSuccess;
    ncclResult_t r = ncclCommGetAsyncError(comm, &state);
    if (r != ncclSuccess) return NcclStatus(r, comm, what);
    if (state == ncclSuccess) return Status::OK();
    if (state != ncclInProgress) return NcclStatus(state, comm, what);
    if (SteadyClock::now() >= deadline) {
      return DeadlineExceededError(what + ": NCCL still in progress at the deadline (is every rank there?)");
    }
    std::this_thread::sleep_for(kPollInterval);
  }
}

}  // namespace

// ---- NcclHandle --------------------------------------------------------------------------------------------

NcclHandle::~NcclHandle() {
  if (event_) cudaEventDestroy(event_);
}

NcclHandle::NcclHandle(NcclHandle&& other) noexcept { *this = std::move(other); }

NcclHandle& NcclHandle::operator=(NcclHandle&& other) noexcept {
  if (this != &other) {
    if (event_) cudaEventDestroy(event_);
    comm_ = std::exchange(other.comm_, nullptr);
    event_ = std::exchange(other.event_, nullptr);
    name_ = std::move(other.name_);
    status_ = std::move(other.status_);
  }
  return *this;
}

bool NcclHandle::Done() const {
  if (!status_.ok() || event_ == nullptr) return true;
  return cudaEventQuery(event_) != cudaErrorNotReady;
}

Status NcclHandle::Wait(std::chrono::steady_clock::duration timeout) {
  if (!status_.ok()) return status_;
  if (comm_ == nullptr || event_ == nullptr) return FailedPreconditionError("comm: Wait on an empty NCCL handle");
  auto deadline = SteadyClock::now() + timeout;
  while (true) {
    cudaError_t e = cudaEventQuery(event_);
    if (e == cudaSuccess) return Status::OK();
    if (e != cudaErrorNotReady) return CudaStatus(e, name_);
    if (comm_->aborted()) return AbortedError(name_ + ": the NCCL communicator was aborted");
    Status async = comm_->AsyncError();
    if (!async.ok()) {
      comm_->Abort().IgnoreError();
      return async.WithContext(name_);
    }
    if (SteadyClock::now() >= deadline) {
      return DeadlineExceededError(name_ + " (NCCL rank " + std::to_string(comm_->rank()) + " of " +
                                   std::to_string(comm_->size()) +
                                   "): not done by the deadline; a peer is dead or hung. Cancel aborts the "
                                   "communicator");
    }
    std::this_thread::sleep_for(kPollInterval);
  }
}

Status NcclHandle::Cancel() {
  if (!status_.ok()) return status_;
  if (comm_ == nullptr) return FailedPreconditionError("comm: Cancel on an empty NCCL handle");
  if (Done()) return Status::OK();
  RETURN_IF_ERROR(comm_->Abort());
  return CancelledError(name_ + ": cancelled (the NCCL communicator was aborted)");
}

// ---- NcclCommunicator --------------------------------------------------------------------------------------

int NcclCommunicator::DeviceCount() {
  int count = 0;  // cudaGetDeviceCount leaves it untouched without a driver
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error
    return 0;
  }
  return count;
}

bool NcclCommunicator::DeviceAvailable() { return DeviceCount() > 0; }

Result<std::string> NcclCommunicator::NewUniqueId() {
  ncclUniqueId id;
  RETURN_IF_ERROR(NcclStatus(ncclGetUniqueId(&id), nullptr, "comm: ncclGetUniqueId"));
  return HexEncode(std::string_view(id.internal, sizeof(id.internal)));
}

Result<std::unique_ptr<NcclCommunicator>> NcclCommunicator::Create(const std::string& unique_id_hex, int rank,
                                                                   int world_size, int device,
                                                                   std::chrono::steady_clock::duration timeout) {
  if (world_size <= 0 || rank < 0 || rank >= world_size) {
    return InvalidArgumentError("comm: NCCL rank " + std::to_string(rank) + " of " + std::to_string(world_size));
  }
  ASSIGN_OR_RETURN(std::string raw, HexDecode(unique_id_hex));
  ncclUniqueId id;
  if (raw.size() != sizeof(id.internal)) {
    return InvalidArgumentError("comm: NCCL unique id has " + std::to_string(raw.size()) + " bytes, expected " +
                                std::to_string(sizeof(id.internal)) + " (the text NewUniqueId returned)");
  }
  std::memcpy(id.internal, raw.data(), raw.size());
  if (!DeviceAvailable()) return FailedPreconditionError("comm: NCCL needs a CUDA device and none is visible");
  RETURN_IF_ERROR(CudaStatus(cudaSetDevice(device), "comm: cudaSetDevice(" + std::to_string(device) + ")"));
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;  // so that a missing rank ends in a deadline, not a hang
  ncclComm_t comm = nullptr;
  std::string what = "comm: ncclCommInitRankConfig(rank " + std::to_string(rank) + " of " +
                     std::to_string(world_size) + ")";
  ncclResult_t r = ncclCommInitRankConfig(&comm, world_size, id, rank, &config);
  if (r != ncclSuccess && r != ncclInProgress) {
    if (comm) ncclCommAbort(comm);
    return NcclStatus(r, nullptr, what);
  }
  Status ready = PollComm(comm, SteadyClock::now() + timeout, what);
  if (!ready.ok()) {
    ncclCommAbort(comm);
    return ready;
  }
  return std::unique_ptr<NcclCommunicator>(new NcclCommunicator(comm, rank, world_size, device));
}

NcclCommunicator::~NcclCommunicator() {
  if (comm_ == nullptr) return;
  cudaSetDevice(device_);
  if (aborted_ || !AsyncError().ok()) {
    if (!aborted_) ncclCommAbort(comm_);
  } else {
    // Non-blocking: finalize (bounded, in case a peer never finishes), then destroy.
    ncclResult_t r = ncclCommFinalize(comm_);
    if ((r == ncclSuccess || r == ncclInProgress) &&
        PollComm(comm_, SteadyClock::now() + std::chrono::seconds(10), "comm: ncclCommFinalize").ok()) {
      ncclCommDestroy(comm_);
      return;
    }
    ncclCommAbort(comm_);
  }
}

Status NcclCommunicator::Abort() {
  if (aborted_) return Status::OK();
  aborted_ = true;
  cudaSetDevice(device_);
  return NcclStatus(ncclCommAbort(comm_), nullptr, "comm: ncclCommAbort");
}

Status NcclCommunicator::AsyncError() {
  if (aborted_) return AbortedError("comm: the NCCL communicator was aborted");
  ncclResult_t state = ncclSuccess;
  RETURN_IF_ERROR(NcclStatus(ncclCommGetAsyncError(comm_, &state), comm_, "comm: ncclCommGetAsyncError"));
  if (state == ncclSuccess || state == ncclInProgress) return Status::OK();
  return NcclStatus(state, comm_, "comm: NCCL rank " + std::to_string(rank_));
}

Status NcclCommunicator::WaitReady(SteadyClock::time_point deadline, const std::string& what) {
  return PollComm(comm_, deadline, what);
}

Result<std::unique_ptr<NcclCommunicator>> NcclCommunicator::Split(int color, int key,
                                                                  std::chrono::steady_clock::duration timeout) {
  if (aborted_) return AbortedError("comm: Split on an aborted NCCL communicator");
  cudaSetDevice(device_);
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  ncclComm_t sub = nullptr;
  std::string what = "comm: ncclCommSplit(color " + std::to_string(color) + ", key " + std::to_string(key) + ")";
  RETURN_IF_ERROR(NcclStatus(ncclCommSplit(comm_, color < 0 ? NCCL_SPLIT_NOCOLOR : color, key, &sub, &config),
                             comm_, what));
  RETURN_IF_ERROR(WaitReady(SteadyClock::now() + timeout, what));
  if (sub == nullptr) return std::unique_ptr<NcclCommunicator>();
  Status ready = PollComm(sub, SteadyClock::now() + timeout, what);
  if (!ready.ok()) {
    ncclCommAbort(sub);
    return ready;
  }
  int sub_rank = 0, sub_size = 0;
  ncclCommUserRank(sub, &sub_rank);
  ncclCommCount(sub, &sub_size);
  return std::unique_ptr<NcclCommunicator>(new NcclCommunicator(sub, sub_rank, sub_size, device_));
}

NcclHandle NcclCommunicator::Finish(const std::string& name, int nccl_result, CUstream_st* stream) {
  auto r = static_cast<ncclResult_t>(nccl_result);
  Status s = NcclStatus(r, comm_, name);
  if (s.ok()) s = WaitReady(SteadyClock::now() + std::chrono::seconds(60), name);  // enqueueing, not the transfer
  if (!s.ok()) return NcclHandle(std::move(s));
  cudaEvent_t event = nullptr;
  s = CudaStatus(cudaEventCreateWithFlags(&event, cudaEventDisableTiming), name + ": cudaEventCreate");
  if (s.ok()) s = CudaStatus(cudaEventRecord(event, stream), name + ": cudaEventRecord");
  if (!s.ok()) {
    if (event) cudaEventDestroy(event);
    return NcclHandle(std::move(s));
  }
  return NcclHandle(this, event, name);
}

NcclHandle NcclCommunicator::Send(const void* buffer, size_t bytes, int peer, CUstream_st* stream) {
  std::string name = "NCCL Send(" + std::to_string(bytes) + " bytes to rank " + std::to_string(peer) + ")";
  if (aborted_) return NcclHandle(AbortedError(name + ": the communicator was aborted"));
  cudaSetDevice(device_);
  return Finish(name, ncclSend(buffer, bytes, ncclUint8, peer, comm_, stream), stream);
}

NcclHandle NcclCommunicator::Recv(void* buffer, size_t bytes, int peer, CUstream_st* stream) {
  std::string name = "NCCL Recv(" + std::to_string(bytes) + " bytes from rank " + std::to_string(peer) + ")";
  if (aborted_) return NcclHandle(AbortedError(name + ": the communicator was aborted"));
  cudaSetDevice(device_);
  return Finish(name, ncclRecv(buffer, bytes, ncclUint8, peer, comm_, stream), stream);
}

NcclHandle NcclCommunicator::AllReduce(const float* send, float* recv, size_t count, CUstream_st* stream) {
  std::string name = "NCCL AllReduce(" + std::to_string(count) + " floats)";
  if (aborted_) return NcclHandle(AbortedError(name + ": the communicator was aborted"));
  cudaSetDevice(device_);
  return Finish(name, ncclAllReduce(send, recv, count, ncclFloat32, ncclSum, comm_, stream), stream);
}

NcclHandle NcclCommunicator::ReduceScatter(const float* send, float* recv, size_t recv_count, CUstream_st* stream) {
  std::string name = "NCCL ReduceScatter(" + std::to_string(recv_count) + " floats per rank)";
  if (aborted_) return NcclHandle(AbortedError(name + ": the communicator was aborted"));
  cudaSetDevice(device_);
  return Finish(name, ncclReduceScatter(send, recv, recv_count, ncclFloat32, ncclSum, comm_, stream), stream);
}

NcclHandle NcclCommunicator::AllGather(const void* send, void* recv, size_t send_bytes, CUstream_st* stream) {
  std::string name = "NCCL AllGather(" + std::to_string(send_bytes) + " bytes per rank)";
  if (aborted_) return NcclHandle(AbortedError(name + ": the communicator was aborted"));
  cudaSetDevice(device_);
  return Finish(name, ncclAllGather(send, recv, send_bytes, ncclUint8, comm_, stream), stream);
}

NcclHandle NcclCommunicator::AllToAllV(const void* send, std::span<const size_t> send_counts,
                                       std::span<const size_t> send_offsets, void* recv,
                                       std::span<const size_t> recv_counts, std::span<const size_t> recv_offsets,
                                       CUstream_st* stream) {
  std::string name = "NCCL AllToAllV(" + std::to_string(size_) + " ranks)";
  if (aborted_) return NcclHandle(AbortedError(name + ": the communicator was aborted"));
  const size_t n = static_cast<size_t>(size_);
  if (send_counts.size() != n || send_offsets.size() != n || recv_counts.size() != n || recv_offsets.size() != n) {
    return NcclHandle(InvalidArgumentError(name + ": counts and offsets need one entry per rank"));
  }
  cudaSetDevice(device_);
  const auto* s = static_cast<const std::byte*>(send);
  auto* r = static_cast<std::byte*>(recv);
  ncclResult_t result = ncclGroupStart();
  for (size_t j = 0; j < n && (result == ncclSuccess || result == ncclInProgress); ++j) {
    if (send_counts[j] > 0) {
      result = ncclSend(s + send_offsets[j], send_counts[j], ncclUint8, static_cast<int>(j), comm_, stream);
    }
    if ((result == ncclSuccess || result == ncclInProgress) && recv_counts[j] > 0) {
      result = ncclRecv(r + recv_offsets[j], recv_counts[j], ncclUint8, static_cast<int>(j), comm_, stream);
    }
  }
  ncclResult_t end = ncclGroupEnd();
  if (result == ncclSuccess || result == ncclInProgress) result = end;
  return Finish(name, result, stream);
}

}  // namespace shoal::comm
