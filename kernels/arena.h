// Arenas (STYLE.md §6): parameters, grads, optimizer state, activations and scratch are each ONE aligned
// allocation carved into typed views. Where each tensor goes is decided by a pure size function
// (ComputeArenaLayout), unit-tested on its own; Arena only allocates that many bytes and hands out views.
//
//   std::vector<TensorSpec> specs = {{"model.embed_tokens.weight", DType::kF32, {512, 128}}, ...};
//   ASSIGN_OR_RETURN(std::unique_ptr<Arena> params, Arena::Create(specs, CpuAllocator()));
//   TensorView w = params->view(0);
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "kernels/tensor.h"

namespace shoal::kernels {

// Every view in a CPU arena starts on a 64-byte boundary (a cache line; one AVX-512 register).
inline constexpr int64_t kCpuArenaAlignment = 64;
// CUDA arenas align views to 256 bytes (what cudaMalloc returns; enough for vectorised and TMA loads).
inline constexpr int64_t kCudaArenaAlignment = 256;

inline constexpr int64_t AlignUp(int64_t x, int64_t alignment) { return (x + alignment - 1) / alignment * alignment; }

struct TensorSpec {
  std::string name;  // Hugging Face DeepSeek-V3 name where there is one
  DType dtype = DType::kF32;
  Shape shape;

  int64_t nbytes() const { return shape.numel() * DTypeSize(dtype); }
};

struct ArenaLayout {
  std::vector<int64_t> offsets;  // byte offset of each spec, in spec order; each a multiple of the alignment
  int64_t total_bytes = 0;       // a multiple of the alignment (0 for no specs)
};

// Pure: places the specs back to back in order, each at the next multiple of `alignment` (a power of two).
ArenaLayout ComputeArenaLayout(const std::vector<TensorSpec>& specs, int64_t alignment);

// Where an arena's bytes come from. Implementations are stateless function tables.
class DeviceAllocator {
 public:
  virtual ~DeviceAllocator() = default;
  virtual Device device() const = 0;
  virtual int64_t alignment() const = 0;
  // `bytes` is a multiple of alignment(); the result is aligned to it. 0 bytes gives nullptr.
  virtual Result<void*> Allocate(int64_t bytes) = 0;
  virtual void Free(void* ptr) = 0;
  virtual Status Zero(void* ptr, int64_t bytes) = 0;
};

// 64-byte aligned host memory (std::aligned_alloc).
DeviceAllocator& CpuAllocator();
#ifdef SHOAL_HAVE_CUDA
// cudaMalloc on the current device (kernels/cuda/arena_cuda.cc; only in shoal_kernels_cuda).
DeviceAllocator& CudaAllocator();
#endif

class Arena {
 public:
  // Allocates ComputeArenaLayout(specs, allocator.alignment()).total_bytes. The memory is not zeroed.
  static Result<std::unique_ptr<Arena>> Create(std::vector<TensorSpec> specs, DeviceAllocator& allocator);
  ~Arena();
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;

  int64_t num_tensors() const { return static_cast<int64_t>(specs_.size()); }
  const TensorSpec& spec(int64_t idx) const { return specs_[idx]; }
  const ArenaLayout& layout() const { return layout_; }
  TensorView view(int64_t idx) const;
  // NotFound when no spec has this name.
  Result<TensorView> Find(std::string_view name) const;

  Device device() const { return allocator_.device(); }
  void* data() const { return base_; }
  int64_t bytes() const { return layout_.total_bytes; }
  Status Zero();

 private:
  Arena(std::vector<TensorSpec> specs, ArenaLayout layout, DeviceAllocator& allocator, void* base);

  std::vector<TensorSpec> specs_;
  ArenaLayout layout_;
  DeviceAllocator& allocator_;
  void* base_;  // owned: freed through allocator_ in the destructor
};

}  // namespace shoal::kernels
