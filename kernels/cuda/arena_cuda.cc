// The CUDA side of kernels/arena.h: device memory from cudaMalloc on the current device.
#include <cuda_runtime.h>

#include <string>

#include "kernels/arena.h"

namespace shoal::kernels {
namespace {

class CudaAllocatorImpl final : public DeviceAllocator {
 public:
  Device device() const override { return Device::kCuda; }
  int64_t alignment() const override { return kCudaArenaAlignment; }
  Result<void*> Allocate(int64_t bytes) override {
    if (bytes == 0) return static_cast<void*>(nullptr);
    void* p = nullptr;
    cudaError_t err = cudaMalloc(&p, static_cast<size_t>(bytes));
    if (err != cudaSuccess) {
      cudaGetLastError();  // clear the sticky error
      std::string what = "CUDA arena: cudaMalloc of " + std::to_string(bytes) +
                         " bytes failed: " + cudaGetErrorName(err) + " (" + cudaGetErrorString(err) + ")";
      if (err == cudaErrorMemoryAllocation) return ResourceExhaustedError(what + "; reduce the batch or model size");
      return UnavailableError(what + "; is a CUDA device present?");
    }
    return p;
  }
  void Free(void* ptr) override { cudaFree(ptr); }
  Status Zero(void* ptr, int64_t bytes) override {
    if (bytes == 0) return Status::OK();
    cudaError_t err = cudaMemset(ptr, 0, static_cast<size_t>(bytes));
    if (err != cudaSuccess) {
      return InternalError(std::string("CUDA arena: cudaMemset failed: ") + cudaGetErrorName(err));
    }
    return Status::OK();
  }
};

}  // namespace

DeviceAllocator& CudaAllocator() {
  static CudaAllocatorImpl allocator;
  return allocator;
}

}  // namespace shoal::kernels
