#include "kernels/cpu/adamw.h"

#include <cmath>

#if defined(__x86_64__)
#include <immintrin.h>
// GCC 12's AVX-512 conversion intrinsics start from an undefined vector and trip these falsely.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include "common/check.h"
#include "kernels/cpu/ops_parallel.h"

namespace shoal::kernels {
namespace {

struct AdamWScalars {
  float lr, beta1, beta2, eps, weight_decay, bc1, bc2;
};

// Portable path: the reference's operation order, element by element.
void adamw_range_scalar(float* param, bf16_t* m, bf16_t* v, const float* grad, int64_t i0, int64_t i1,
                        const AdamWScalars& k) {
  for (int64_t i = i0; i < i1; ++i) {
    const float g = grad[i];
    const float mi = k.beta1 * bf16_to_f32(m[i]) + (1.0f - k.beta1) * g;
    const float vi = k.beta2 * bf16_to_f32(v[i]) + (1.0f - k.beta2) * g * g;
    const float mhat = mi / k.bc1, vhat = vi / k.bc2;
    float p = param[i];
    p -= k.lr * k.weight_decay * p;
    p -= k.lr * mhat / (std::sqrt(vhat) + k.eps);
    param[i] = p;
    m[i] = f32_to_bf16(mi);
    v[i] = f32_to_bf16(vi);
  }
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
// AVX-512 path (runtime-dispatched: the build has no -march). Same formulas; the vector sqrt and division are
// IEEE-exact like the scalar ones, only FMA contraction may move the last bit of m', v', θ.
__attribute__((target("avx512f"))) __m512i bf16_round_bits(__m512 x) {
  const __m512i bits = _mm512_castps_si512(x);
  const __m512i hi = _mm512_srli_epi32(bits, 16);
  const __m512i rounding = _mm512_add_epi32(_mm512_set1_epi32(0x7fff), _mm512_and_si512(hi, _mm512_set1_epi32(1)));
  const __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(bits, rounding), 16);
  const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(bits, _mm512_set1_epi32(0x7fffffff)),
                                                _mm512_set1_epi32(0x7f800000));
  return _mm512_mask_mov_epi32(rounded, nan, _mm512_or_si512(hi, _mm512_set1_epi32(0x40)));
}

__attribute__((target("avx512f"))) void adamw_range_avx512(float* param, bf16_t* m, bf16_t* v, const float* grad,
                                                           int64_t i0, int64_t i1, const AdamWScalars& k) {
  const __m512 b1 = _mm512_set1_ps(k.beta1), b2 = _mm512_set1_ps(k.beta2);
  const __m512 ob1 = _mm512_set1_ps(1.0f - k.beta1), ob2 = _mm512_set1_ps(1.0f - k.beta2);
  const __m512 bc1 = _mm512_set1_ps(k.bc1), bc2 = _mm512_set1_ps(k.bc2), eps = _mm512_set1_ps(k.eps);
  const __m512 lr = _mm512_set1_ps(k.lr), lrwd = _mm512_set1_ps(k.lr * k.weight_decay);
  int64_t i = i0;
  for (; i + 16 <= i1; i += 16) {
    const __m512 g = _mm512_loadu_ps(grad + i);
    const __m512 mo = _mm512_castsi512_ps(
        _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(m + i))), 16));
    const __m512 vo = _mm512_castsi512_ps(
        _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(v + i))), 16));
    const __m512 mi = _mm512_add_ps(_mm512_mul_ps(b1, mo), _mm512_mul_ps(ob1, g));
    const __m512 vi = _mm512_add_ps(_mm512_mul_ps(b2, vo), _mm512_mul_ps(_mm512_mul_ps(ob2, g), g));
    const __m512 mhat = _mm512_div_ps(mi, bc1), vhat = _mm512_div_ps(vi, bc2);
    __m512 p = _mm512_loadu_ps(param + i);
    p = _mm512_sub_ps(p, _mm512_mul_ps(lrwd, p));
    p = _mm512_sub_ps(p, _mm512_div_ps(_mm512_mul_ps(lr, mhat), _mm512_add_ps(_mm512_sqrt_ps(vhat), eps)));
    _mm512_storeu_ps(param + i, p);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(m + i), _mm512_cvtepi32_epi16(bf16_round_bits(mi)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(v + i), _mm512_cvtepi32_epi16(bf16_round_bits(vi)));
  }
  adamw_range_scalar(param, m, v, grad, i, i1, k);
}

bool have_avx512() {
  static const bool yes = __builtin_cpu_supports("avx512f");
  return yes;
}
#else
bool have_avx512() { return false; }
void adamw_range_avx512(float*, bf16_t*, bf16_t*, const float*, int64_t, int64_t, const AdamWScalars&) {}
#endif

}  // namespace

void adamw_update(float* param, bf16_t* m, bf16_t* v, const float* grad, int64_t n, int step, float lr, float beta1,
                  float beta2, float eps, float weight_decay) {
  CHECK(step >= 1) << "adamw_update: step " << step << " (steps count from 1)";
  const float bc1 = static_cast<float>(1.0 - std::pow(static_cast<double>(beta1), step));
  const float bc2 = static_cast<float>(1.0 - std::pow(static_cast<double>(beta2), step));
  const AdamWScalars k{lr, beta1, beta2, eps, weight_decay, bc1, bc2};
  const bool avx512 = have_avx512();
  detail::ParallelRows(n, 20, [&](int64_t b, int64_t e) {
    if (avx512)
      adamw_range_avx512(param, m, v, grad, b, e, k);
    else
      adamw_range_scalar(param, m, v, grad, b, e, k);
  });
}

}  // namespace shoal::kernels
