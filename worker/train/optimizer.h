// AdamW over a model's trainable tensors: fp32 master weights (the model's), bf16 moments (one arena here),
// decoupled weight decay on matrices only (1-D tensors — RMSNorm weights — are not decayed; the spec leaves the
// exclusion list unspecified and this is the common practice). The step counter drives bias correction.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "kernels/dtype.h"

namespace shoal::train {

struct AdamWParams {
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;
};

struct OptimizedTensor {
  std::string name;
  float* param = nullptr;
  const float* grad = nullptr;
  int64_t numel = 0;
  bool decay = true;
};

class AdamW {
 public:
  AdamW(std::vector<OptimizedTensor> tensors, AdamWParams params);

  // The global L2 norm of every tensor's gradient (before clipping); scales the gradients down to max_norm when
  // it is larger (max_norm <= 0: no clipping).
  double ClipGradNorm(double max_norm);
  // One update of every tensor with learning rate `lr`; increments step().
  void Step(double lr);
  int64_t step() const { return step_; }
  void set_step(int64_t step) { step_ = step; }

  // The moments of tensor i: [numel] bf16 each (for checkpoints).
  kernels::bf16_t* exp_avg(size_t i) { return m_.data() + offsets_[i]; }
  kernels::bf16_t* exp_avg_sq(size_t i) { return v_.data() + offsets_[i]; }
  const std::vector<OptimizedTensor>& tensors() const { return tensors_; }
  // Restores the moments of the tensor named `name` (sizes must match).
  Status LoadMoments(const std::string& name, const kernels::bf16_t* exp_avg, const kernels::bf16_t* exp_avg_sq,
                     int64_t numel);

  // Bytes of optimizer state (a pure function of the tensor sizes).
  static int64_t StateBytes(const std::vector<OptimizedTensor>& tensors);

 private:
  std::vector<OptimizedTensor> tensors_;
  AdamWParams params_;
  std::vector<int64_t> offsets_;
  std::vector<kernels::bf16_t> m_, v_;
  int64_t step_ = 0;
};

}  // namespace shoal::train
