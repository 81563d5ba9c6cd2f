#include "kernels/cpu/rmsnorm.h"

#include <cmath>
#include <cstring>

#include "kernels/cpu/ops_parallel.h"
#include "kernels/cpu/ops_simd.h"

namespace shoal::kernels {
namespace {

using simd::kW;
using simd::load;
using simd::store;
using simd::vf16;

constexpr int kMaxRowChunks = 32;

SHOAL_SIMD_CLONES void rmsnorm_rows(float* out, float* rstd, const float* x, const float* w, int64_t r0, int64_t r1,
                                    int C, float eps) {
  for (int64_t n = r0; n < r1; ++n) {
    const float* xr = x + n * C;
    float* yr = out + n * C;
    vf16 acc0{}, acc1{};
    int c = 0;
    for (; c + 2 * kW <= C; c += 2 * kW) {
      vf16 a = load(xr + c), b = load(xr + c + kW);
      acc0 += a * a;
      acc1 += b * b;
    }
    for (; c + kW <= C; c += kW) {
      vf16 a = load(xr + c);
      acc0 += a * a;
    }
    float ss = simd::reduce_add(acc0 + acc1);
    for (; c < C; ++c) ss += xr[c] * xr[c];
    const float r = 1.0f / std::sqrt(ss / C + eps);
    rstd[n] = r;
    c = 0;
    for (; c + kW <= C; c += kW) store(yr + c, load(xr + c) * r * load(w + c));
    for (; c < C; ++c) yr[c] = xr[c] * r * w[c];
  }
}

// dx rows [r0, r1) and this chunk's partial dw (overwritten into pdw).
SHOAL_SIMD_CLONES void rmsnorm_backward_rows(float* dx, float* pdw, const float* dout, const float* rstd,
                                             const float* x, const float* w, int64_t r0, int64_t r1, int C) {
  std::memset(pdw, 0, sizeof(float) * C);
  for (int64_t n = r0; n < r1; ++n) {
    const float* xr = x + n * C;
    const float* dy = dout + n * C;
    float* dxr = dx + n * C;
    const float r = rstd[n];
    vf16 acc{};
    int c = 0;
    for (; c + kW <= C; c += kW) acc += load(w + c) * load(dy + c) * load(xr + c);
    float dot = simd::reduce_add(acc);
    for (; c < C; ++c) dot += w[c] * dy[c] * xr[c];
    const float k = r * r * r / C * dot;
    c = 0;
    for (; c + kW <= C; c += kW) {
      vf16 xv = load(xr + c), dyv = load(dy + c);
      store(dxr + c, load(dxr + c) + r * load(w + c) * dyv - k * xv);
      store(pdw + c, load(pdw + c) + dyv * xv * r);
    }
    for (; c < C; ++c) {
      dxr[c] += r * w[c] * dy[c] - k * xr[c];
      pdw[c] += dy[c] * xr[c] * r;
    }
  }
}

SHOAL_SIMD_CLONES void reduce_chunks(float* dw, const float* partial, int num_chunks, int c0, int c1, int C) {
  for (int ch = 0; ch < num_chunks; ++ch) {
    const float* p = partial + (int64_t)ch * C;
    int c = c0;
    for (; c + kW <= c1; c += kW) store(dw + c, load(dw + c) + load(p + c));
    for (; c < c1; ++c) dw[c] += p[c];
  }
}

int num_row_chunks(int N, int C) {
  return detail::NumFixedChunks(N, kMaxRowChunks, std::max(1, 4096 / std::max(1, C)));
}

}  // namespace

void rmsnorm_forward(float* out, float* rstd, const float* x, const float* w, int N, int C, float eps) {
  detail::ParallelRows(N, (int64_t)C * 8,
                       [&](int64_t b, int64_t e) { rmsnorm_rows(out, rstd, x, w, b, e, C, eps); });
}

size_t rmsnorm_backward_scratch_floats(int N, int C) { return static_cast<size_t>(num_row_chunks(N, C)) * C; }

void rmsnorm_backward(float* dx, float* dw, float* scratch, const float* dout, const float* rstd, const float* x,
                      const float* w, int N, int C) {
  const int chunks = num_row_chunks(N, C);
  detail::ParallelFixedChunks(N, chunks, [&](int ch, int64_t b, int64_t e) {
    rmsnorm_backward_rows(dx, scratch + (int64_t)ch * C, dout, rstd, x, w, b, e, C);
  });
  // Sum the partials in chunk order; columns split over threads.
  const int blocks = (C + kW - 1) / kW;
  ThreadPool::Default().ParallelFor(blocks, std::max(1, 1024 / kW), [&](int64_t b, int64_t e, int) {
    reduce_chunks(dw, scratch, chunks, static_cast<int>(b * kW), static_cast<int>(std::min<int64_t>(C, e * kW)), C);
  });
}

}  // namespace shoal::kernels
