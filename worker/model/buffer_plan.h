// How the model's memory is laid out (STYLE.md §6). Every component describes its buffers ONCE, in a
// `Declare(BufferPlan&)`-style function that is run twice: first on a planning BufferPlan, which records
// TensorSpecs and hands out null pointers (a pure size function: PlanMemory uses only this pass, so the 671B
// preset is sized without allocating), then on a binding BufferPlan over the allocated bytes, which hands out
// the same buffers in the same order. A binding pass that asks for something else than the planning pass
// recorded is our bug and CHECK-fails.
//
// ParamPlan does the same for parameters: a storage is one contiguous fp32 block holding one or more Hugging
// Face tensors (gate_proj|up_proj of an MLP back to back, so that one GEMM against the fused [2I, H] weight
// computes both; all experts of a layer stacked, for the grouped GEMM). Trainable storages also get a block
// of the same size in the gradient arena.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/arena.h"
#include "kernels/tensor.h"

namespace shoal::model {

using kernels::Shape;
using kernels::TensorSpec;

// Buffers of one region (saved activations, scratch, weight caches, ...).
class BufferPlan {
 public:
  // A planning pass.
  BufferPlan() = default;
  // A binding pass over `base`, which holds ComputeArenaLayout(specs, 64) of an identical planning pass.
  BufferPlan(std::byte* base, const std::vector<TensorSpec>* specs, const kernels::ArenaLayout* layout);

  bool binding() const { return base_ != nullptr; }
  float* F32(const std::string& name, Shape shape) { return static_cast<float*>(Take(name, kernels::DType::kF32, shape)); }
  int32_t* I32(const std::string& name, Shape shape) {
    return static_cast<int32_t*>(Take(name, kernels::DType::kI32, shape));
  }
  uint8_t* U8(const std::string& name, Shape shape) {
    return static_cast<uint8_t*>(Take(name, kernels::DType::kF8E4M3, shape));
  }

  // Planning pass results.
  const std::vector<TensorSpec>& specs() const { return specs_; }
  int64_t bytes() const;  // ComputeArenaLayout(specs, kCpuArenaAlignment).total_bytes

 private:
  void* Take(const std::string& name, kernels::DType dtype, Shape shape);

  std::vector<TensorSpec> specs_;  // planning
  std::byte* base_ = nullptr;      // binding
  const std::vector<TensorSpec>* bind_specs_ = nullptr;
  const kernels::ArenaLayout* bind_layout_ = nullptr;
  size_t next_ = 0;
};

// A region that several components use one after the other (scratch; per-layer buffers that need not outlive
// the layer): its size is the maximum over the components, and each binds its own layout at the same base.
class SharedRegion {
 public:
  // Planning: record one user's buffers and keep the maximum size.
  void Add(const BufferPlan& plan) {
    const int64_t b = plan.bytes();
    if (b > bytes_) bytes_ = b;
  }
  int64_t bytes() const { return bytes_; }

 private:
  int64_t bytes_ = 0;
};

// One Hugging Face tensor inside a storage.
struct ParamPart {
  std::string name;            // HF name, e.g. model.layers.3.mlp.experts.7.up_proj.weight
  std::vector<int64_t> shape;
  int64_t offset = 0;          // elements from the start of its storage
  int64_t numel() const;
};

struct ParamStorage {
  std::string name;  // the HF name for a single tensor, a descriptive name for a fused/stacked one
  int64_t numel = 0;
  bool trainable = true;
  std::vector<ParamPart> parts;
};

struct ParamRef {
  float* w = nullptr;  // parameter (fp32 master)
  float* g = nullptr;  // gradient (null for non-trainable storages)
};

class ParamPlan {
 public:
  ParamPlan() = default;  // planning
  // Binding over the parameter and gradient arenas laid out by ParamArenaSpecs / GradArenaSpecs.
  ParamPlan(const std::vector<ParamStorage>* storages, std::vector<float*> storage_w, std::vector<float*> storage_g);

  bool binding() const { return bind_storages_ != nullptr; }
  // A storage holding one HF tensor.
  ParamRef Tensor(const std::string& hf_name, std::vector<int64_t> shape, bool trainable = true);
  // A storage holding the given HF tensors back to back, in order (offsets are filled in).
  ParamRef Stack(const std::string& storage_name, std::vector<ParamPart> parts, bool trainable = true);

  const std::vector<ParamStorage>& storages() const { return storages_; }

 private:
  std::vector<ParamStorage> storages_;  // planning
  const std::vector<ParamStorage>* bind_storages_ = nullptr;
  std::vector<float*> storage_w_, storage_g_;
  size_t next_ = 0;
};

// The parameter arena holds every storage; the gradient arena the trainable ones (same order).
std::vector<TensorSpec> ParamArenaSpecs(const std::vector<ParamStorage>& storages);
std::vector<TensorSpec> GradArenaSpecs(const std::vector<ParamStorage>& storages);

}  // namespace shoal::model
