// Linear layers y = x·Wᵀ (weights [out, in], Hugging Face layout) in the job's precision, with the backward split
// the pipeline schedules need: BackwardInput (dX = dY·W) and BackwardWeight (dW += dYᵀ·X) are separate calls.
//
//   fp32  sgemm on the fp32 master weights.
//   bf16  inputs, weights and output gradients rounded to bf16 (the weights once per forward, into a cache);
//         products and sums in fp32, i.e. exactly a bf16 GEMM with fp32 accumulation.
//   fp8   DeepSeek-V3's recipe (reference/deepseek-v3.md §5.2-5.3): E4M3 weights in 128×128 blocks (cached,
//         quantised once per forward from the fp32 master), activations in 1×128 tiles for Fprop, dY in 1×128
//         tiles for Dgrad, dY and X in 128×1 tiles for Wgrad, fp32 promotion every 128 of K
//         (kernels/cpu/fp8_gemm.h). Each Hugging Face tensor of a fused weight (gate_proj|up_proj) is quantised
//         on its own, as the released checkpoints store it.
//
// ExpertLinear is the same for the stacked routed experts of a MoE layer ([E, out, in]); rows of x are sorted
// by expert (offsets[e]..offsets[e+1]) and fp32/bf16 use the grouped GEMM.
//
// Caches and scratch come from BufferPlan regions (buffer_plan.h); nothing here allocates.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "spec/job_spec.h"
#include "worker/model/buffer_plan.h"

namespace shoal::model {

enum class GemmMode { kFp32, kBf16, kFp8 };

// What a Linear of this kind runs in under `precision`: FP8-eligible layers (MLA projections, dense FFN, shared and
// routed experts) follow the precision; the layers §5.4 keeps in high precision (eh_proj, the output head) run in
// bf16 under fp8 (the recipe's high precision) and as the precision says otherwise.
GemmMode FP8EligibleMode(Precision precision);
GemmMode HighPrecisionMode(Precision precision);

// Sizes of the shared Linear scratch: the maximum over every Linear of the model.
struct LinearNeeds {
  int64_t x_elems = 0, x_scales = 0;    // input copy / quantised input
  int64_t dy_elems = 0, dy_scales = 0;  // output-gradient copy / quantised dY
  int64_t out_elems = 0;                // fp8 output of one part before it is scattered
  void Merge(const LinearNeeds& o);
};

struct LinearWorkspace {
  float* x = nullptr;
  float* dy = nullptr;
  float* out = nullptr;
  uint8_t* xq = nullptr;
  float* xs = nullptr;
  uint8_t* dyq = nullptr;
  float* dys = nullptr;
  void Declare(BufferPlan& plan, const LinearNeeds& needs);
};

class Linear {
 public:
  // `w` holds the weight [out, in] (and its gradient); part_rows lists the row counts of the HF tensors fused in it
  // (empty = one tensor). The cache buffers are declared in `cache` (nothing for fp32).
  void Declare(const std::string& name, ParamRef w, int64_t out, int64_t in, std::vector<int64_t> part_rows,
               GemmMode mode, BufferPlan& cache);
  // The Linear's scratch needs for `rows` input rows.
  LinearNeeds Needs(int64_t rows) const;

  // Refreshes the bf16/fp8 cache from the fp32 master (call before the first Forward after the weights changed).
  void PrepareWeights();
  // y[rows, out] (row stride ldy) = x[rows, in] (row stride ldx) · Wᵀ.
  void Forward(float* y, int64_t ldy, const float* x, int64_t ldx, int64_t rows, const LinearWorkspace& ws) const;
  // dx[rows, in] (contiguous) += dy[rows, out] (row stride ldy) · W; with accumulate = false, dx = ... instead
  // (dx is not read, so it need not be zeroed first).
  void BackwardInput(float* dx, const float* dy, int64_t ldy, int64_t rows, const LinearWorkspace& ws,
                     bool accumulate = true) const;
  // dW[out, in] += dyᵀ · x.
  void BackwardWeight(const float* dy, int64_t ldy, const float* x, int64_t ldx, int64_t rows,
                      const LinearWorkspace& ws) const;

  int64_t out() const { return out_; }
  int64_t in() const { return in_; }
  GemmMode mode() const { return mode_; }
  const float* weight() const { return w_.w; }
  float* grad() const { return w_.g; }

 private:
  std::string name_;
  ParamRef w_;
  int64_t out_ = 0, in_ = 0;
  std::vector<int64_t> part_rows_;
  GemmMode mode_ = GemmMode::kFp32;
  float* w_bf16_ = nullptr;    // [out, in] bf16-valued fp32
  uint8_t* w_q_ = nullptr;     // [out, in] E4M3
  float* w_scale_ = nullptr;   // per part: [ceil(rows_p/128), ceil(in/128)], back to back
};

class ExpertLinear {
 public:
  // `w` holds num_experts weights [out, in] back to back (expert e at e·out·in).
  void Declare(const std::string& name, ParamRef w, int64_t num_experts, int64_t out, int64_t in,
               std::vector<int64_t> part_rows, GemmMode mode, BufferPlan& cache);
  LinearNeeds Needs(int64_t rows) const;
  void PrepareWeights();
  // offsets[num_experts + 1] (offsets[0] = 0): expert e owns rows [offsets[e], offsets[e+1]) of x, y, dy, dx.
  void Forward(float* y, const float* x, const int32_t* offsets, const LinearWorkspace& ws) const;
  void BackwardInput(float* dx, const float* dy, const int32_t* offsets, const LinearWorkspace& ws) const;
  void BackwardWeight(const float* dy, const float* x, const int32_t* offsets, const LinearWorkspace& ws) const;

  int64_t num_experts() const { return num_experts_; }

 private:
  int64_t ScaleCount() const;  // fp8 scales of one expert

  std::string name_;
  ParamRef w_;
  int64_t num_experts_ = 0, out_ = 0, in_ = 0;
  std::vector<int64_t> part_rows_;
  GemmMode mode_ = GemmMode::kFp32;
  float* w_bf16_ = nullptr;
  uint8_t* w_q_ = nullptr;
  float* w_scale_ = nullptr;
};

// dst[i] = bf16(src[i]) as fp32, for rows×cols elements read with row stride ld (dst contiguous).
void RoundRowsToBf16(float* dst, const float* src, int64_t rows, int64_t cols, int64_t ld);

}  // namespace shoal::model
