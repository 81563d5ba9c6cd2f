#include "kernels/cpu/swiglu.h"

#include <cmath>

#include "kernels/cpu/ops_parallel.h"
#include "kernels/cpu/ops_simd.h"

namespace shoal::kernels {
namespace {

using simd::kW;
using simd::load;
using simd::store;
using simd::vf16;

SHOAL_SIMD_CLONES void swiglu_rows(float* out, const float* gate_up, int64_t r0, int64_t r1, int I) {
  for (int64_t n = r0; n < r1; ++n) {
    const float* a = gate_up + n * 2 * I;
    const float* b = a + I;
    float* m = out + n * I;
    int i = 0;
    for (; i + kW <= I; i += kW) {
      vf16 av = load(a + i);
      store(m + i, av * simd::sigmoid(av) * load(b + i));
    }
    for (; i < I; ++i) m[i] = a[i] / (1.0f + std::exp(-a[i])) * b[i];
  }
}

SHOAL_SIMD_CLONES void swiglu_backward_rows(float* dgate_up, const float* dout, const float* gate_up, int64_t r0,
                                            int64_t r1, int I) {
  for (int64_t n = r0; n < r1; ++n) {
    const float* a = gate_up + n * 2 * I;
    const float* b = a + I;
    float* da = dgate_up + n * 2 * I;
    float* db = da + I;
    const float* dm = dout + n * I;
    int i = 0;
    for (; i + kW <= I; i += kW) {
      vf16 av = load(a + i), dmv = load(dm + i);
      vf16 sg = simd::sigmoid(av);
      store(da + i, load(da + i) + dmv * load(b + i) * sg * (1.0f + av * (1.0f - sg)));
      store(db + i, load(db + i) + dmv * av * sg);
    }
    for (; i < I; ++i) {
      const float sg = 1.0f / (1.0f + std::exp(-a[i]));
      da[i] += dm[i] * b[i] * sg * (1.0f + a[i] * (1.0f - sg));
      db[i] += dm[i] * a[i] * sg;
    }
  }
}

}  // namespace

void swiglu_forward(float* out, const float* gate_up, int N, int I) {
  detail::ParallelRows(N, (int64_t)I * 12, [&](int64_t b, int64_t e) { swiglu_rows(out, gate_up, b, e, I); });
}

void swiglu_backward(float* dgate_up, const float* dout, const float* gate_up, int N, int I) {
  detail::ParallelRows(N, (int64_t)I * 28,
                       [&](int64_t b, int64_t e) { swiglu_backward_rows(dgate_up, dout, gate_up, b, e, I); });
}

}  // namespace shoal::kernels
