#include "worker/model/linear.h"

#include <algorithm>
#include <cstring>

#include "common/check.h"
#include "common/thread_pool.h"
#include "kernels/cpu/blas.h"
#include "kernels/cpu/fp8_gemm.h"
#include "kernels/cpu/grouped_gemm.h"
#include "kernels/dtype.h"
#include "kernels/fp8.h"

namespace shoal::model {

using kernels::Fp8Matrix;
using kernels::Fp8NumScales;
using kernels::Fp8ScaleCols;
using kernels::kFp8Block128x128;
using kernels::kFp8Tile128x1;
using kernels::kFp8Tile1x128;
using kernels::cpu::fp8_gemm;
using kernels::cpu::sgemm;

GemmMode FP8EligibleMode(Precision precision) {
  switch (precision) {
    case Precision::kFp32: return GemmMode::kFp32;
    case Precision::kBf16: return GemmMode::kBf16;
    case Precision::kFp8: return GemmMode::kFp8;
  }
  return GemmMode::kFp32;
}

GemmMode HighPrecisionMode(Precision precision) {
  return precision == Precision::kFp32 ? GemmMode::kFp32 : GemmMode::kBf16;
}

void LinearNeeds::Merge(const LinearNeeds& o) {
  x_elems = std::max(x_elems, o.x_elems);
  x_scales = std::max(x_scales, o.x_scales);
  dy_elems = std::max(dy_elems, o.dy_elems);
  dy_scales = std::max(dy_scales, o.dy_scales);
  out_elems = std::max(out_elems, o.out_elems);
}

void LinearWorkspace::Declare(BufferPlan& plan, const LinearNeeds& n) {
  x = plan.F32("linear.x", Shape{n.x_elems});
  dy = plan.F32("linear.dy", Shape{n.dy_elems});
  out = plan.F32("linear.out", Shape{n.out_elems});
  xq = plan.U8("linear.xq", Shape{n.x_elems});
  xs = plan.F32("linear.xs", Shape{n.x_scales});
  dyq = plan.U8("linear.dyq", Shape{n.dy_elems});
  dys = plan.F32("linear.dys", Shape{n.dy_scales});
}

namespace {

// Elementwise loops over large buffers run on the default pool in 64K-element chunks.
template <typename Fn>
void ParallelElems(int64_t n, Fn&& fn) {
  ThreadPool::Default().ParallelFor(n, int64_t{1} << 16, [&](int64_t b, int64_t e, int) { fn(b, e); });
}

// dst[rows, cols] (contiguous) = src (row stride ld).
void CopyRows(float* dst, const float* src, int64_t rows, int64_t cols, int64_t ld) {
  if (ld == cols) {
    std::memcpy(dst, src, sizeof(float) * rows * cols);
    return;
  }
  for (int64_t r = 0; r < rows; ++r) std::memcpy(dst + r * cols, src + r * ld, sizeof(float) * cols);
}

// dst (row stride ld) = src[rows, cols] (contiguous).
void ScatterRows(float* dst, int64_t ld, const float* src, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) std::memcpy(dst + r * ld, src + r * cols, sizeof(float) * cols);
}

int64_t MaxPart(const std::vector<int64_t>& parts) { return *std::max_element(parts.begin(), parts.end()); }

int64_t WeightScaleCount(const std::vector<int64_t>& parts, int64_t in) {
  int64_t n = 0;
  for (int64_t r : parts) n += Fp8NumScales(r, in, kFp8Block128x128);
  return n;
}

void QuantizeWeight(uint8_t* q, float* scale, const float* w, const std::vector<int64_t>& parts, int64_t in) {
  for (int64_t r : parts) {
    kernels::quantize_fp8(q, scale, w, r, in, kFp8Block128x128, /*pow2_scale=*/false);
    q += r * in;
    w += r * in;
    scale += Fp8NumScales(r, in, kFp8Block128x128);
  }
}

// (ceil(R/128) + E)·cols bounds the 128×1 scales of R rows cut into E expert segments.
int64_t SegmentedScales(int64_t rows, int64_t experts, int64_t cols) {
  return (kernels::CeilDiv(rows, kernels::kFp8BlockSize) + experts) * cols;
}

}  // namespace

void RoundRowsToBf16(float* dst, const float* src, int64_t rows, int64_t cols, int64_t ld) {
  if (ld == cols) {
    ParallelElems(rows * cols, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) dst[i] = kernels::round_to_bf16(src[i]);
    });
    return;
  }
  ThreadPool::Default().ParallelFor(rows, std::max<int64_t>(1, (int64_t{1} << 16) / std::max<int64_t>(1, cols)),
                                    [&](int64_t b, int64_t e, int) {
                                      for (int64_t r = b; r < e; ++r) {
                                        for (int64_t c = 0; c < cols; ++c)
                                          dst[r * cols + c] = kernels::round_to_bf16(src[r * ld + c]);
                                      }
                                    });
}

// ---- Linear -----------------------------------------------------------------------------------------------

void Linear::Declare(const std::string& name, ParamRef w, int64_t out, int64_t in, std::vector<int64_t> part_rows,
                     GemmMode mode, BufferPlan& cache) {
  name_ = name;
  w_ = w;
  out_ = out;
  in_ = in;
  part_rows_ = part_rows.empty() ? std::vector<int64_t>{out} : std::move(part_rows);
  mode_ = mode;
  if (mode == GemmMode::kBf16) {
    w_bf16_ = cache.F32(name + ".bf16", Shape{out * in});
  } else if (mode == GemmMode::kFp8) {
    w_q_ = cache.U8(name + ".fp8", Shape{out * in});
    w_scale_ = cache.F32(name + ".fp8_scale", Shape{WeightScaleCount(part_rows_, in)});
  }
}

LinearNeeds Linear::Needs(int64_t rows) const {
  LinearNeeds n;
  if (mode_ == GemmMode::kBf16) {
    n.x_elems = rows * in_;
    n.dy_elems = rows * out_;
  } else if (mode_ == GemmMode::kFp8) {
    const int64_t p = MaxPart(part_rows_);
    n.x_elems = rows * in_;
    n.x_scales = std::max(Fp8NumScales(rows, in_, kFp8Tile1x128), Fp8NumScales(rows, in_, kFp8Tile128x1));
    n.dy_elems = rows * p;
    n.dy_scales = std::max(Fp8NumScales(rows, p, kFp8Tile1x128), Fp8NumScales(rows, p, kFp8Tile128x1));
    n.out_elems = rows * p;
  }
  return n;
}

void Linear::PrepareWeights() {
  if (mode_ == GemmMode::kBf16) {
    RoundRowsToBf16(w_bf16_, w_.w, out_, in_, in_);
  } else if (mode_ == GemmMode::kFp8) {
    QuantizeWeight(w_q_, w_scale_, w_.w, part_rows_, in_);
  }
}

void Linear::Forward(float* y, int64_t ldy, const float* x, int64_t ldx, int64_t rows,
                     const LinearWorkspace& ws) const {
  if (rows == 0) return;
  switch (mode_) {
    case GemmMode::kFp32:
      sgemm(false, true, rows, out_, in_, 1.f, x, ldx, w_.w, in_, 0.f, y, ldy);
      return;
    case GemmMode::kBf16:
      RoundRowsToBf16(ws.x, x, rows, in_, ldx);
      sgemm(false, true, rows, out_, in_, 1.f, ws.x, in_, w_bf16_, in_, 0.f, y, ldy);
      return;
    case GemmMode::kFp8: {
      const float* xc = x;
      if (ldx != in_) {
        CopyRows(ws.x, x, rows, in_, ldx);
        xc = ws.x;
      }
      kernels::quantize_fp8(ws.xq, ws.xs, xc, rows, in_, kFp8Tile1x128, false);
      const Fp8Matrix a{ws.xq, ws.xs, rows, in_, kFp8Tile1x128};
      int64_t row0 = 0, scale_off = 0;
      for (int64_t rp : part_rows_) {
        const Fp8Matrix b{w_q_ + row0 * in_, w_scale_ + scale_off, rp, in_, kFp8Block128x128};
        if (part_rows_.size() == 1 && ldy == out_) {
          fp8_gemm(y, a, false, b, true, false);
        } else {
          fp8_gemm(ws.out, a, false, b, true, false);
          ScatterRows(y + row0, ldy, ws.out, rows, rp);
        }
        row0 += rp;
        scale_off += Fp8NumScales(rp, in_, kFp8Block128x128);
      }
      return;
    }
  }
}

void Linear::BackwardInput(float* dx, const float* dy, int64_t ldy, int64_t rows, const LinearWorkspace& ws,
                           bool accumulate) const {
  if (rows == 0) return;
  const float beta = accumulate ? 1.f : 0.f;
  switch (mode_) {
    case GemmMode::kFp32:
      sgemm(false, false, rows, in_, out_, 1.f, dy, ldy, w_.w, in_, beta, dx, in_);
      return;
    case GemmMode::kBf16:
      RoundRowsToBf16(ws.dy, dy, rows, out_, ldy);
      sgemm(false, false, rows, in_, out_, 1.f, ws.dy, out_, w_bf16_, in_, beta, dx, in_);
      return;
    case GemmMode::kFp8: {
      int64_t row0 = 0, scale_off = 0;
      for (int64_t rp : part_rows_) {
        const float* dyc = dy + row0;
        if (ldy != rp) {
          CopyRows(ws.dy, dy + row0, rows, rp, ldy);
          dyc = ws.dy;
        }
        kernels::quantize_fp8(ws.dyq, ws.dys, dyc, rows, rp, kFp8Tile1x128, false);
        const Fp8Matrix a{ws.dyq, ws.dys, rows, rp, kFp8Tile1x128};
        const Fp8Matrix b{w_q_ + row0 * in_, w_scale_ + scale_off, rp, in_, kFp8Block128x128};
        fp8_gemm(dx, a, false, b, false, /*accumulate=*/accumulate || row0 > 0);
        row0 += rp;
        scale_off += Fp8NumScales(rp, in_, kFp8Block128x128);
      }
      return;
    }
  }
}

void Linear::BackwardWeight(const float* dy, int64_t ldy, const float* x, int64_t ldx, int64_t rows,
                            const LinearWorkspace& ws) const {
  if (rows == 0 || w_.g == nullptr) return;
  switch (mode_) {
    case GemmMode::kFp32:
      sgemm(true, false, out_, in_, rows, 1.f, dy, ldy, x, ldx, 1.f, w_.g, in_);
      return;
    case GemmMode::kBf16:
      RoundRowsToBf16(ws.dy, dy, rows, out_, ldy);
      RoundRowsToBf16(ws.x, x, rows, in_, ldx);
      sgemm(true, false, out_, in_, rows, 1.f, ws.dy, out_, ws.x, in_, 1.f, w_.g, in_);
      return;
    case GemmMode::kFp8: {
      const float* xc = x;
      if (ldx != in_) {
        CopyRows(ws.x, x, rows, in_, ldx);
        xc = ws.x;
      }
      kernels::quantize_fp8(ws.xq, ws.xs, xc, rows, in_, kFp8Tile128x1, false);
      const Fp8Matrix b{ws.xq, ws.xs, rows, in_, kFp8Tile128x1};
      int64_t row0 = 0;
      for (int64_t rp : part_rows_) {
        const float* dyc = dy + row0;
        if (ldy != rp) {
          CopyRows(ws.dy, dy + row0, rows, rp, ldy);
          dyc = ws.dy;
        }
        kernels::quantize_fp8(ws.dyq, ws.dys, dyc, rows, rp, kFp8Tile128x1, false);
        const Fp8Matrix a{ws.dyq, ws.dys, rows, rp, kFp8Tile128x1};
        fp8_gemm(w_.g + row0 * in_, a, /*trans_a=*/true, b, false, /*accumulate=*/true);
        row0 += rp;
      }
      return;
    }
  }
}

// ---- ExpertLinear -----------------------------------------------------------------------------------------

void ExpertLinear::Declare(const std::string& name, ParamRef w, int64_t num_experts, int64_t out, int64_t in,
                           std::vector<int64_t> part_rows, GemmMode mode, BufferPlan& cache) {
  name_ = name;
  w_ = w;
  num_experts_ = num_experts;
  out_ = out;
  in_ = in;
  part_rows_ = part_rows.empty() ? std::vector<int64_t>{out} : std::move(part_rows);
  mode_ = mode;
  if (mode == GemmMode::kBf16) {
    w_bf16_ = cache.F32(name + ".bf16", Shape{num_experts * out * in});
  } else if (mode == GemmMode::kFp8) {
    w_q_ = cache.U8(name + ".fp8", Shape{num_experts * out * in});
    w_scale_ = cache.F32(name + ".fp8_scale", Shape{num_experts * ScaleCount()});
  }
}

int64_t ExpertLinear::ScaleCount() const { return WeightScaleCount(part_rows_, in_); }

LinearNeeds ExpertLinear::Needs(int64_t rows) const {
  LinearNeeds n;
  if (mode_ == GemmMode::kBf16) {
    n.x_elems = rows * in_;
    n.dy_elems = rows * out_;
  } else if (mode_ == GemmMode::kFp8) {
    const int64_t p = MaxPart(part_rows_);
    n.x_elems = rows * in_;
    n.x_scales = std::max(Fp8NumScales(rows, in_, kFp8Tile1x128), SegmentedScales(rows, num_experts_, in_));
    n.dy_elems = rows * p;
    n.dy_scales = std::max(Fp8NumScales(rows, p, kFp8Tile1x128), SegmentedScales(rows, num_experts_, p));
    n.out_elems = rows * p;
  }
  return n;
}

void ExpertLinear::PrepareWeights() {
  if (mode_ == GemmMode::kBf16) {
    RoundRowsToBf16(w_bf16_, w_.w, num_experts_ * out_, in_, in_);
  } else if (mode_ == GemmMode::kFp8) {
    for (int64_t e = 0; e < num_experts_; ++e) {
      QuantizeWeight(w_q_ + e * out_ * in_, w_scale_ + e * ScaleCount(), w_.w + e * out_ * in_, part_rows_, in_);
    }
  }
}

void ExpertLinear::Forward(float* y, const float* x, const int32_t* offsets, const LinearWorkspace& ws) const {
  const int64_t R = offsets[num_experts_];
  if (R == 0) return;
  switch (mode_) {
    case GemmMode::kFp32:
      kernels::cpu::grouped_matmul_forward(y, x, w_.w, offsets, num_experts_, in_, out_);
      return;
    case GemmMode::kBf16:
      RoundRowsToBf16(ws.x, x, R, in_, in_);
      kernels::cpu::grouped_matmul_forward(y, ws.x, w_bf16_, offsets, num_experts_, in_, out_);
      return;
    case GemmMode::kFp8: {
      kernels::quantize_fp8(ws.xq, ws.xs, x, R, in_, kFp8Tile1x128, false);
      const int64_t xs_per_row = Fp8ScaleCols(in_, kFp8Tile1x128);
      for (int64_t e = 0; e < num_experts_; ++e) {
        const int64_t r0 = offsets[e], rows = offsets[e + 1] - offsets[e];
        if (rows == 0) continue;
        const Fp8Matrix a{ws.xq + r0 * in_, ws.xs + r0 * xs_per_row, rows, in_, kFp8Tile1x128};
        int64_t row0 = 0, scale_off = e * ScaleCount();
        for (int64_t rp : part_rows_) {
          const Fp8Matrix b{w_q_ + (e * out_ + row0) * in_, w_scale_ + scale_off, rp, in_, kFp8Block128x128};
          if (part_rows_.size() == 1) {
            fp8_gemm(y + r0 * out_, a, false, b, true, false);
          } else {
            fp8_gemm(ws.out, a, false, b, true, false);
            ScatterRows(y + r0 * out_ + row0, out_, ws.out, rows, rp);
          }
          row0 += rp;
          scale_off += Fp8NumScales(rp, in_, kFp8Block128x128);
        }
      }
      return;
    }
  }
}

void ExpertLinear::BackwardInput(float* dx, const float* dy, const int32_t* offsets,
                                 const LinearWorkspace& ws) const {
  const int64_t R = offsets[num_experts_];
  if (R == 0) return;
  switch (mode_) {
    case GemmMode::kFp32:
      kernels::cpu::grouped_matmul_backward(dx, nullptr, dy, nullptr, w_.w, offsets, num_experts_, in_, out_);
      return;
    case GemmMode::kBf16:
      RoundRowsToBf16(ws.dy, dy, R, out_, out_);
      kernels::cpu::grouped_matmul_backward(dx, nullptr, ws.dy, nullptr, w_bf16_, offsets, num_experts_, in_, out_);
      return;
    case GemmMode::kFp8: {
      int64_t row0 = 0, part_scale_off = 0;
      for (int64_t rp : part_rows_) {
        const float* dyc = dy + row0;
        if (out_ != rp) {
          CopyRows(ws.dy, dy + row0, R, rp, out_);
          dyc = ws.dy;
        }
        kernels::quantize_fp8(ws.dyq, ws.dys, dyc, R, rp, kFp8Tile1x128, false);
        const int64_t ds_per_row = Fp8ScaleCols(rp, kFp8Tile1x128);
        for (int64_t e = 0; e < num_experts_; ++e) {
          const int64_t r0 = offsets[e], rows = offsets[e + 1] - offsets[e];
          if (rows == 0) continue;
          const Fp8Matrix a{ws.dyq + r0 * rp, ws.dys + r0 * ds_per_row, rows, rp, kFp8Tile1x128};
          const Fp8Matrix b{w_q_ + (e * out_ + row0) * in_, w_scale_ + e * ScaleCount() + part_scale_off, rp, in_,
                            kFp8Block128x128};
          fp8_gemm(dx + r0 * in_, a, false, b, false, /*accumulate=*/true);
        }
        row0 += rp;
        part_scale_off += Fp8NumScales(rp, in_, kFp8Block128x128);
      }
      return;
    }
  }
}

void ExpertLinear::BackwardWeight(const float* dy, const float* x, const int32_t* offsets,
                                  const LinearWorkspace& ws) const {
  const int64_t R = offsets[num_experts_];
  if (R == 0 || w_.g == nullptr) return;
  switch (mode_) {
    case GemmMode::kFp32:
      kernels::cpu::grouped_matmul_backward(nullptr, w_.g, dy, x, nullptr, offsets, num_experts_, in_, out_);
      return;
    case GemmMode::kBf16:
      RoundRowsToBf16(ws.dy, dy, R, out_, out_);
      RoundRowsToBf16(ws.x, x, R, in_, in_);
      kernels::cpu::grouped_matmul_backward(nullptr, w_.g, ws.dy, ws.x, nullptr, offsets, num_experts_, in_, out_);
      return;
    case GemmMode::kFp8: {
      // 128×1 tiles start at each expert's first row: quantise every expert's segment on its own.
      int64_t xs_off = 0;
      for (int64_t e = 0; e < num_experts_; ++e) {
        const int64_t r0 = offsets[e], rows = offsets[e + 1] - offsets[e];
        if (rows == 0) continue;
        kernels::quantize_fp8(ws.xq + r0 * in_, ws.xs + xs_off, x + r0 * in_, rows, in_, kFp8Tile128x1, false);
        xs_off += Fp8NumScales(rows, in_, kFp8Tile128x1);
      }
      int64_t row0 = 0;
      for (int64_t rp : part_rows_) {
        const float* dyc = dy + row0;
        if (out_ != rp) {
          CopyRows(ws.dy, dy + row0, R, rp, out_);
          dyc = ws.dy;
        }
        int64_t xoff = 0, doff = 0;
        for (int64_t e = 0; e < num_experts_; ++e) {
          const int64_t r0 = offsets[e], rows = offsets[e + 1] - offsets[e];
          if (rows == 0) continue;
          kernels::quantize_fp8(ws.dyq + r0 * rp, ws.dys + doff, dyc + r0 * rp, rows, rp, kFp8Tile128x1, false);
          const Fp8Matrix a{ws.dyq + r0 * rp, ws.dys + doff, rows, rp, kFp8Tile128x1};
          const Fp8Matrix b{ws.xq + r0 * in_, ws.xs + xoff, rows, in_, kFp8Tile128x1};
          fp8_gemm(w_.g + (e * out_ + row0) * in_, a, /*trans_a=*/true, b, false, /*accumulate=*/true);
          xoff += Fp8NumScales(rows, in_, kFp8Tile128x1);
          doff += Fp8NumScales(rows, rp, kFp8Tile128x1);
        }
        row0 += rp;
      }
      return;
    }
  }
}

}  // namespace shoal::model
