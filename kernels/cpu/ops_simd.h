// Internal to the fast CPU ops (kernels/cpu/*.cc): a 16-lane fp32 vector written with GCC vector
// extensions, plus exp/sigmoid/reductions on it, and the macro that compiles a hot function twice.
//
// Why this shape: the build has no -march flag (binaries must run on any x86-64), so hot loops are written
// once on `vf16` and compiled by SHOAL_SIMD_CLONES into an x86-64-v4 (AVX-512) clone and a portable
// default clone; the dynamic loader picks one at startup (GCC target_clones / ifunc). On AVX-512 a vf16 is
// one zmm register; on the default clone GCC lowers it to four SSE registers.
//
// Rules for code using it: vectors cross function boundaries only by const reference (passing 64-byte
// vectors by value triggers an ABI note without AVX-512); helpers are always_inline; clone-annotated
// functions are plain static functions (no templates, no lambdas inside that carry the hot loop).
#pragma once

#include <cstdint>
#include <cstring>

// -Wpsabi stays off for the rest of the including file: it fires at every call of an always_inline helper that
// returns a vf16 (harmless: they are always inlined, no ABI boundary is crossed).
#pragma GCC diagnostic ignored "-Wpsabi"

// Define SHOAL_SIMD_CLONES as empty on the command line to build only the portable version (how the
// default clone is tested on an AVX-512 machine).
#ifndef SHOAL_SIMD_CLONES
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__CUDACC__)
#define SHOAL_SIMD_CLONES __attribute__((target_clones("arch=x86-64-v4", "default")))
#else
#define SHOAL_SIMD_CLONES
#endif
#endif
#define SHOAL_INLINE inline __attribute__((always_inline))

namespace shoal::kernels::simd {

inline constexpr int kW = 16;  // lanes
typedef float vf16 __attribute__((vector_size(64)));
typedef int32_t vi16 __attribute__((vector_size(64)));
typedef float vf16u __attribute__((vector_size(64), aligned(4), may_alias));

SHOAL_INLINE vf16 load(const float* p) { return *reinterpret_cast<const vf16u*>(p); }
SHOAL_INLINE void store(float* p, const vf16& v) { *reinterpret_cast<vf16u*>(p) = v; }
SHOAL_INLINE vf16 splat(float x) { return vf16{} + x; }

// Partial load/store of the first n < 16 lanes (rest zero).
SHOAL_INLINE vf16 load_n(const float* p, int n) {
  float tmp[kW] = {};
  for (int i = 0; i < n; ++i) tmp[i] = p[i];
  return load(tmp);
}
SHOAL_INLINE void store_n(float* p, const vf16& v, int n) {
  float tmp[kW];
  store(tmp, v);
  for (int i = 0; i < n; ++i) p[i] = tmp[i];
}

SHOAL_INLINE vf16 vmax(const vf16& a, const vf16& b) { return a > b ? a : b; }
SHOAL_INLINE vf16 vmin(const vf16& a, const vf16& b) { return a < b ? a : b; }

SHOAL_INLINE float reduce_add(const vf16& v) {
  typedef float vf8 __attribute__((vector_size(32)));
  typedef float vf4 __attribute__((vector_size(16)));
  vf8 a = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
          __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
  vf4 b = __builtin_shufflevector(a, a, 0, 1, 2, 3) + __builtin_shufflevector(a, a, 4, 5, 6, 7);
  return (b[0] + b[2]) + (b[1] + b[3]);
}
SHOAL_INLINE float reduce_max(const vf16& v) {
  typedef float vf8 __attribute__((vector_size(32)));
  typedef float vf4 __attribute__((vector_size(16)));
  vf8 lo = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7);
  vf8 hi = __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
  vf8 a = lo > hi ? lo : hi;
  vf4 b0 = __builtin_shufflevector(a, a, 0, 1, 2, 3), b1 = __builtin_shufflevector(a, a, 4, 5, 6, 7);
  vf4 b = b0 > b1 ? b0 : b1;
  float m0 = b[0] > b[2] ? b[0] : b[2], m1 = b[1] > b[3] ? b[1] : b[3];
  return m0 > m1 ? m0 : m1;
}

// exp(x) to ~2 ulp over the fp32 range (Cephes expf polynomial); exp(x) = 0 for x < -87.3 (incl. -inf),
// +inf above 88.7. NaN in gives NaN out.
SHOAL_INLINE vf16 exp(const vf16& x_in) {
  const vf16 x = vmin(x_in, splat(88.7228f));
  const vf16 xc = vmax(x, splat(-87.3365f));
  const vf16 n = (xc * 1.44269504088896341f + 12582912.f) - 12582912.f;  // round to nearest
  vf16 r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  vf16 p = splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  const vi16 ni = __builtin_convertvector(n, vi16);
  const vf16 scale = reinterpret_cast<vf16>((ni + 127) << 23);
  vf16 y = p * scale;
  y = x_in < -87.3365f ? vf16{} : y;
  y = x_in > 88.7228f ? splat(__builtin_inff()) : y;
  return x_in != x_in ? x_in : y;
}

// sigmoid(x) = 1 / (1 + exp(-x)).
SHOAL_INLINE vf16 sigmoid(const vf16& x) { return 1.0f / (1.0f + exp(-x)); }

// In-register transpose of a 16×16 block held as 16 row vectors: four butterfly stages (block sizes 8, 4, 2,
// 1), each swapping the off-diagonal s×s blocks of row pairs (i, i+s) with two-source shuffles.
#define SHOAL_T_STAGE(S, LO, HI)                                       \
  for (int i = 0; i < kW; ++i) {                                      \
    if (i & (S)) continue;                                            \
    const vf16 a = r[i], b = r[i + (S)];                              \
    r[i] = __builtin_shufflevector(a, b, LO);                         \
    r[i + (S)] = __builtin_shufflevector(a, b, HI);                   \
  }
SHOAL_INLINE void transpose16(vf16* r) {
#define SHOAL_L8 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23
#define SHOAL_H8 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31
#define SHOAL_L4 0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27
#define SHOAL_H4 4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31
#define SHOAL_L2 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29
#define SHOAL_H2 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31
#define SHOAL_L1 0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30
#define SHOAL_H1 1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31
#pragma GCC unroll 16
  SHOAL_T_STAGE(8, SHOAL_L8, SHOAL_H8)
#pragma GCC unroll 16
  SHOAL_T_STAGE(4, SHOAL_L4, SHOAL_H4)
#pragma GCC unroll 16
  SHOAL_T_STAGE(2, SHOAL_L2, SHOAL_H2)
#pragma GCC unroll 16
  SHOAL_T_STAGE(1, SHOAL_L1, SHOAL_H1)
#undef SHOAL_L8
#undef SHOAL_H8
#undef SHOAL_L4
#undef SHOAL_H4
#undef SHOAL_L2
#undef SHOAL_H2
#undef SHOAL_L1
#undef SHOAL_H1
}
#undef SHOAL_T_STAGE

}  // namespace shoal::kernels::simd
