#include "worker/train/optimizer.h"

#include "kernels/cpu/adamw.h"
#include "kernels/cpu/clip.h"

namespace shoal::train {

AdamW::AdamW(std::vector<OptimizedTensor> tensors, AdamWParams params)
    : tensors_(std::move(tensors)), params_(params) {
  int64_t total = 0;
  for (const auto& t : tensors_) {
    offsets_.push_back(total);
    total += t.numel;
  }
  m_.assign(static_cast<size_t>(total), 0);
  v_.assign(static_cast<size_t>(total), 0);
}

int64_t AdamW::StateBytes(const std::vector<OptimizedTensor>& tensors) {
  int64_t total = 0;
  for (const auto& t : tensors) total += t.numel;
  return total * 2 * static_cast<int64_t>(sizeof(kernels::bf16_t));
}

double AdamW::ClipGradNorm(double max_norm) {
  std::vector<float*> bufs;
  std::vector<int64_t> sizes;
  for (const auto& t : tensors_) {
    bufs.push_back(const_cast<float*>(t.grad));  // the gradients are the model's, writable
    sizes.push_back(t.numel);
  }
  int n = static_cast<int>(bufs.size());
  return max_norm > 0 ? kernels::clip_grad_norm(bufs.data(), sizes.data(), n, static_cast<float>(max_norm))
                      : kernels::global_norm(bufs.data(), sizes.data(), n);
}

void AdamW::Step(double lr) {
  ++step_;
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const auto& t = tensors_[i];
    kernels::adamw_update(t.param, exp_avg(i), exp_avg_sq(i), t.grad, t.numel, static_cast<int>(step_),
                          static_cast<float>(lr), static_cast<float>(params_.beta1),
                          static_cast<float>(params_.beta2), static_cast<float>(params_.eps),
                          t.decay ? static_cast<float>(params_.weight_decay) : 0.0f);
  }
}

Status AdamW::LoadMoments(const std::string& name, const kernels::bf16_t* m, const kernels::bf16_t* v, int64_t numel) {
  for (size_t i = 0; i < tensors_.size(); ++i) {
    if (tensors_[i].name != name) continue;
    if (tensors_[i].numel != numel) {
      return InvalidArgumentError("optimizer state for " + name + " has " + std::to_string(numel) +
                                  " elements, the model has " + std::to_string(tensors_[i].numel));
    }
    std::copy(m, m + numel, exp_avg(i));
    std::copy(v, v + numel, exp_avg_sq(i));
    return Status::OK();
  }
  return NotFoundError("optimizer state for unknown tensor " + name);
}

}  // namespace shoal::train
