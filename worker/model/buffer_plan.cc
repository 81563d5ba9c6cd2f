#include "worker/model/buffer_plan.h"

#include "common/check.h"

namespace shoal::model {

BufferPlan::BufferPlan(std::byte* base, const std::vector<TensorSpec>* specs, const kernels::ArenaLayout* layout)
    : base_(base), bind_specs_(specs), bind_layout_(layout) {
  CHECK(base != nullptr || specs->empty() || layout->total_bytes == 0) << "BufferPlan: binding without memory";
  if (base_ == nullptr) base_ = reinterpret_cast<std::byte*>(alignof(std::max_align_t));  // empty region
}

int64_t BufferPlan::bytes() const {
  return kernels::ComputeArenaLayout(specs_, kernels::kCpuArenaAlignment).total_bytes;
}

void* BufferPlan::Take(const std::string& name, kernels::DType dtype, Shape shape) {
  if (!binding()) {
    specs_.push_back(TensorSpec{name, dtype, shape});
    return nullptr;
  }
  CHECK(next_ < bind_specs_->size()) << "BufferPlan: binding asks for " << name << " beyond the planned "
                                     << bind_specs_->size() << " buffers";
  const TensorSpec& spec = (*bind_specs_)[next_];
  CHECK(spec.name == name && spec.dtype == dtype && spec.shape == shape)
      << "BufferPlan: binding asks for " << name << " " << shape.ToString() << ", planned " << spec.name << " "
      << spec.shape.ToString();
  void* p = base_ + bind_layout_->offsets[next_];
  ++next_;
  return p;
}

int64_t ParamPart::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

ParamPlan::ParamPlan(const std::vector<ParamStorage>* storages, std::vector<float*> storage_w,
                     std::vector<float*> storage_g)
    : bind_storages_(storages), storage_w_(std::move(storage_w)), storage_g_(std::move(storage_g)) {}

ParamRef ParamPlan::Tensor(const std::string& hf_name, std::vector<int64_t> shape, bool trainable) {
  return Stack(hf_name, {ParamPart{hf_name, std::move(shape), 0}}, trainable);
}

ParamRef ParamPlan::Stack(const std::string& storage_name, std::vector<ParamPart> parts, bool trainable) {
  int64_t offset = 0;
  for (ParamPart& p : parts) {
    p.offset = offset;
    offset += p.numel();
  }
  if (!binding()) {
    storages_.push_back(ParamStorage{storage_name, offset, trainable, std::move(parts)});
    return {};
  }
  CHECK(next_ < bind_storages_->size()) << "ParamPlan: binding asks for " << storage_name;
  const ParamStorage& s = (*bind_storages_)[next_];
  CHECK(s.name == storage_name && s.numel == offset && s.trainable == trainable)
      << "ParamPlan: binding asks for " << storage_name << ", planned " << s.name;
  ParamRef ref{storage_w_[next_], storage_g_[next_]};
  ++next_;
  return ref;
}

std::vector<TensorSpec> ParamArenaSpecs(const std::vector<ParamStorage>& storages) {
  std::vector<TensorSpec> specs;
  specs.reserve(storages.size());
  for (const ParamStorage& s : storages) specs.push_back({s.name, kernels::DType::kF32, Shape{s.numel}});
  return specs;
}

std::vector<TensorSpec> GradArenaSpecs(const std::vector<ParamStorage>& storages) {
  std::vector<TensorSpec> specs;
  for (const ParamStorage& s : storages) {
    if (s.trainable) specs.push_back({s.name, kernels::DType::kF32, Shape{s.numel}});
  }
  return specs;
}

}  // namespace shoal::model
