#include "kernels/arena.h"

#include <cstdlib>
#include <cstring>

namespace shoal::kernels {

ArenaLayout ComputeArenaLayout(const std::vector<TensorSpec>& specs, int64_t alignment) {
  CHECK(alignment > 0 && (alignment & (alignment - 1)) == 0) << "alignment " << alignment;
  ArenaLayout layout;
  layout.offsets.reserve(specs.size());
  int64_t offset = 0;
  for (const TensorSpec& spec : specs) {
    layout.offsets.push_back(offset);
    offset = AlignUp(offset + spec.nbytes(), alignment);
  }
  layout.total_bytes = offset;
  return layout;
}

namespace {

class CpuAllocatorImpl final : public DeviceAllocator {
 public:
  Device device() const override { return Device::kCpu; }
  int64_t alignment() const override { return kCpuArenaAlignment; }
  Result<void*> Allocate(int64_t bytes) override {
    if (bytes == 0) return static_cast<void*>(nullptr);
    void* p = std::aligned_alloc(kCpuArenaAlignment, static_cast<size_t>(AlignUp(bytes, kCpuArenaAlignment)));
    if (p == nullptr) {
      return ResourceExhaustedError("CPU arena: aligned_alloc of " + std::to_string(bytes) +
                                    " bytes failed; reduce the batch or model size");
    }
    return p;
  }
  void Free(void* ptr) override { std::free(ptr); }
  Status Zero(void* ptr, int64_t bytes) override {
    if (bytes > 0) std::memset(ptr, 0, static_cast<size_t>(bytes));
    return Status::OK();
  }
};

}  // namespace

DeviceAllocator& CpuAllocator() {
  static CpuAllocatorImpl allocator;
  return allocator;
}

Result<std::unique_ptr<Arena>> Arena::Create(std::vector<TensorSpec> specs, DeviceAllocator& allocator) {
  ArenaLayout layout = ComputeArenaLayout(specs, allocator.alignment());
  ASSIGN_OR_RETURN(void* base, allocator.Allocate(layout.total_bytes));
  return std::unique_ptr<Arena>(new Arena(std::move(specs), std::move(layout), allocator, base));
}

Arena::Arena(std::vector<TensorSpec> specs, ArenaLayout layout, DeviceAllocator& allocator, void* base)
    : specs_(std::move(specs)), layout_(std::move(layout)), allocator_(allocator), base_(base) {}

Arena::~Arena() {
  if (base_ != nullptr) allocator_.Free(base_);
}

TensorView Arena::view(int64_t idx) const {
  CHECK(idx >= 0 && idx < num_tensors()) << "arena view " << idx << " of " << num_tensors();
  const TensorSpec& spec = specs_[idx];
  return TensorView::Contiguous(static_cast<char*>(base_) + layout_.offsets[idx], spec.dtype, spec.shape,
                                allocator_.device());
}

Result<TensorView> Arena::Find(std::string_view name) const {
  for (int64_t i = 0; i < num_tensors(); ++i) {
    if (specs_[i].name == name) return view(i);
  }
  return NotFoundError("arena has no tensor named \"" + std::string(name) + "\" (" + std::to_string(num_tensors()) +
                       " tensors)");
}

Status Arena::Zero() { return allocator_.Zero(base_, layout_.total_bytes); }

}  // namespace shoal::kernels
