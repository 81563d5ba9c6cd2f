#include "kernels/cpu/rope.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "common/check.h"
#include "kernels/cpu/ops_parallel.h"
#include "kernels/cpu/ops_simd.h"

namespace shoal::kernels {
namespace {

using simd::kW;
using simd::vf16;

// Rotates rows [n0, n1). sign = +1 forward, −1 backward. The table is interleaved like the data, so a vector
// of 8 pairs is rotated as x·(c,c,..) + swap(x)·(−s,+s,..).
SHOAL_SIMD_CLONES void rope_rows(float* out, const float* x, const int32_t* pos, const float* cos_sin, int64_t n0,
                                 int64_t n1, int NH, int D, int ld, float sign) {
  const vf16 alt = {-1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1};
  const vf16 sgn = alt * sign;
  for (int64_t n = n0; n < n1; ++n) {
    const float* cs = cos_sin + (int64_t)pos[n] * D;
    for (int h = 0; h < NH; ++h) {
      const int64_t base = (n * NH + h) * ld;
      const float* xr = x + base;
      float* yr = out + base;
      int d = 0;
      for (; d + kW <= D; d += kW) {
        vf16 t = simd::load(cs + d);
        vf16 c = __builtin_shufflevector(t, t, 0, 0, 2, 2, 4, 4, 6, 6, 8, 8, 10, 10, 12, 12, 14, 14);
        vf16 s = __builtin_shufflevector(t, t, 1, 1, 3, 3, 5, 5, 7, 7, 9, 9, 11, 11, 13, 13, 15, 15);
        vf16 v = simd::load(xr + d);
        vf16 sw = __builtin_shufflevector(v, v, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14);
        simd::store(yr + d, v * c + sw * s * sgn);
      }
      for (; d < D; d += 2) {
        const float c = cs[d], s = sign * cs[d + 1];
        const float x0 = xr[d], x1 = xr[d + 1];
        yr[d] = x0 * c - x1 * s;
        yr[d + 1] = x0 * s + x1 * c;
      }
    }
  }
}

void rope_apply(float* out, const float* x, const int32_t* pos, const float* cos_sin, int N, int NH, int D, int ld,
                float sign) {
  CHECK(D % 2 == 0 && ld >= D) << "rope: D=" << D << " must be even and ≤ ld=" << ld;
  detail::ParallelRows(N, (int64_t)NH * D * 8, [&](int64_t b, int64_t e) {
    rope_rows(out, x, pos, cos_sin, b, e, NH, D, ld, sign);
  });
}

}  // namespace

void rope_inv_freq(float* inv_freq, int D, float base, const YarnConfig* yarn) {
  CHECK(D % 2 == 0 && D > 0) << "rope dim " << D;
  for (int j = 0; j < D / 2; ++j) inv_freq[j] = static_cast<float>(std::pow((double)base, -2.0 * j / D));
  if (yarn == nullptr || yarn->factor <= 1.0f) return;
  auto corr = [&](double rotations) {
    return D * std::log(yarn->original_max_position / (rotations * 2 * std::numbers::pi)) /
           (2 * std::log((double)base));
  };
  double low = std::max(std::floor(corr(yarn->beta_fast)), 0.0);
  double high = std::min(std::ceil(corr(yarn->beta_slow)), static_cast<double>(D - 1));
  if (low == high) high += 0.001;
  for (int j = 0; j < D / 2; ++j) {
    double ramp = std::clamp((j - low) / (high - low), 0.0, 1.0);
    double keep = 1.0 - ramp;
    double f = inv_freq[j];
    inv_freq[j] = static_cast<float>(f / yarn->factor * (1.0 - keep) + f * keep);
  }
}

float yarn_mscale(float factor, float mscale) {
  if (factor <= 1.0f) return 1.0f;
  return static_cast<float>(0.1 * mscale * std::log((double)factor) + 1.0);
}

void rope_table(float* cos_sin, const float* inv_freq, int P, int D) {
  for (int64_t p = 0; p < P; ++p)
    for (int j = 0; j < D / 2; ++j) {
      const float angle = static_cast<float>(p) * inv_freq[j];
      cos_sin[(p * (D / 2) + j) * 2] = static_cast<float>(std::cos((double)angle));
      cos_sin[(p * (D / 2) + j) * 2 + 1] = static_cast<float>(std::sin((double)angle));
    }
}

void rope_forward(float* out, const float* x, const int32_t* pos, const float* cos_sin, int N, int NH, int D,
                  int ld) {
  rope_apply(out, x, pos, cos_sin, N, NH, D, ld, 1.0f);
}

void rope_backward(float* dx, const float* dout, const int32_t* pos, const float* cos_sin, int N, int NH, int D,
                   int ld) {
  rope_apply(dx, dout, pos, cos_sin, N, NH, D, ld, -1.0f);
}

}  // namespace shoal::kernels
