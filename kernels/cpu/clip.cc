#include "kernels/cpu/clip.h"

#include <algorithm>
#include <cmath>

#include "kernels/cpu/ops_parallel.h"
#include "kernels/cpu/ops_simd.h"

namespace shoal::kernels {
namespace {

constexpr int kMaxChunks = 64;
constexpr int64_t kMinChunk = 1 << 16;

SHOAL_SIMD_CLONES double sumsq(const float* x, int64_t b, int64_t e) {
  typedef double vd8 __attribute__((vector_size(64)));
  vd8 a0{}, a1{};
  int64_t i = b;
  for (; i + 16 <= e; i += 16) {
    const simd::vf16 v = simd::load(x + i);
    const vd8 lo = __builtin_convertvector(__builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7), vd8);
    const vd8 hi = __builtin_convertvector(__builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15), vd8);
    a0 += lo * lo;
    a1 += hi * hi;
  }
  const vd8 a = a0 + a1;
  double s = 0;
  for (int l = 0; l < 8; ++l) s += a[l];
  for (; i < e; ++i) s += static_cast<double>(x[i]) * x[i];
  return s;
}

SHOAL_SIMD_CLONES void scale_range(float* x, int64_t b, int64_t e, float s) {
  int64_t i = b;
  for (; i + 16 <= e; i += 16) simd::store(x + i, simd::load(x + i) * s);
  for (; i < e; ++i) x[i] *= s;
}

}  // namespace

double global_norm(const float* const* bufs, const int64_t* sizes, int num_bufs) {
  double total = 0;
  for (int k = 0; k < num_bufs; ++k) {
    const int64_t n = sizes[k];
    const int chunks = detail::NumFixedChunks(n, kMaxChunks, kMinChunk);
    if (chunks == 1) {
      total += sumsq(bufs[k], 0, n);
      continue;
    }
    double partial[kMaxChunks];
    detail::ParallelFixedChunks(n, chunks, [&](int c, int64_t b, int64_t e) { partial[c] = sumsq(bufs[k], b, e); });
    for (int c = 0; c < chunks; ++c) total += partial[c];
  }
  return std::sqrt(total);
}

float clip_scale(double norm, float max_norm) {
  return static_cast<float>(std::min(1.0, static_cast<double>(max_norm) / (norm + 1e-6)));
}

void scale_buffers(float* const* bufs, const int64_t* sizes, int num_bufs, float scale) {
  if (scale == 1.0f) return;
  for (int k = 0; k < num_bufs; ++k) {
    if (sizes[k] < kMinChunk) {
      scale_range(bufs[k], 0, sizes[k], scale);
      continue;
    }
    detail::ParallelRows(sizes[k], 8, [&](int64_t b, int64_t e) { scale_range(bufs[k], b, e, scale); });
  }
}

double clip_grad_norm(float* const* bufs, const int64_t* sizes, int num_bufs, float max_norm) {
  const double norm = global_norm(bufs, sizes, num_bufs);
  scale_buffers(bufs, sizes, num_bufs, clip_scale(norm, max_norm));
  return norm;
}

}  // namespace shoal::kernels
