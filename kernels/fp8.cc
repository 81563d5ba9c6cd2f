#include "kernels/fp8.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include "common/check.h"

// GCC 12's AVX-512 intrinsics start from _mm512_undefined_*() and trip (-W)maybe-uninitialized falsely.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace shoal::kernels {
namespace {

// ---- Portable loops (also the tails of the AVX-512 ones).

float AmaxScalar(const float* x, int64_t n) {
  float m = 0.f;
  for (int64_t i = 0; i < n; ++i) m = std::max(m, std::fabs(x[i]));
  return m;
}

// acc[i] = max(acc[i], |x[i]|)
void AbsMaxIntoScalar(float* acc, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) acc[i] = std::max(acc[i], std::fabs(x[i]));
}

// q[i] = E4M3(x[i] / s[i]) (kPerElement) or E4M3(x[i] / s[0]).
template <bool kPerElement>
void EncodeScalar(uint8_t* q, const float* x, int64_t n, const float* s) {
  for (int64_t i = 0; i < n; ++i) q[i] = f32_to_e4m3(x[i] / s[kPerElement ? i : 0]);
}

void DecodeScalar(float* x, const uint8_t* q, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = e4m3_to_f32(q[i]);
}

// ---- AVX-512 (chosen at run time; the build never assumes it).
#define SHOAL_AVX512 __attribute__((target("avx512f")))

SHOAL_AVX512 float AmaxAvx512(const float* x, int64_t n) {
  __m512 m = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) m = _mm512_max_ps(m, _mm512_abs_ps(_mm512_loadu_ps(x + i)));
  return std::max(_mm512_reduce_max_ps(m), AmaxScalar(x + i, n - i));
}

SHOAL_AVX512 void AbsMaxIntoAvx512(float* acc, const float* x, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    _mm512_storeu_ps(acc + i, _mm512_max_ps(_mm512_loadu_ps(acc + i), _mm512_abs_ps(_mm512_loadu_ps(x + i))));
  }
  AbsMaxIntoScalar(acc + i, x + i, n - i);
}

// The branches of f32_to_e4m3 evaluated on 16 lanes and selected by mask.
SHOAL_AVX512 inline __m128i EncodeLanes(__m512 v) {
  const __m512i bits = _mm512_castps_si512(v);
  const __m512i abs = _mm512_and_si512(bits, _mm512_set1_epi32(0x7fffffff));
  const __m512i sign = _mm512_srli_epi32(_mm512_and_si512(bits, _mm512_set1_epi32(int32_t(0x80000000u))), 24);
  // normal
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(abs, 20), _mm512_set1_epi32(1));
  const __m512i rounded = _mm512_add_epi32(abs, _mm512_add_epi32(_mm512_set1_epi32(0x7ffff), lsb));
  __m512i code = _mm512_sub_epi32(_mm512_srli_epi32(rounded, 20), _mm512_set1_epi32(120 << 3));
  // subnormal
  const __m512 big = _mm512_set1_ps(16384.f);
  const __m512 sub = _mm512_sub_ps(_mm512_add_ps(_mm512_castsi512_ps(abs), big), big);
  const __m512i code_sub = _mm512_cvttps_epi32(_mm512_mul_ps(sub, _mm512_set1_ps(512.f)));
  code = _mm512_mask_mov_epi32(code, _mm512_cmplt_epu32_mask(abs, _mm512_set1_epi32(0x3c800000)), code_sub);
  code =
      _mm512_mask_mov_epi32(code, _mm512_cmpge_epu32_mask(abs, _mm512_set1_epi32(0x43e00000)), _mm512_set1_epi32(0x7e));
  code =
      _mm512_mask_mov_epi32(code, _mm512_cmpgt_epu32_mask(abs, _mm512_set1_epi32(0x7f800000)), _mm512_set1_epi32(0x7f));
  return _mm512_cvtepi32_epi8(_mm512_or_si512(code, sign));
}

template <bool kPerElement>
SHOAL_AVX512 void EncodeAvx512(uint8_t* q, const float* x, int64_t n, const float* s) {
  const __m512 s0 = _mm512_set1_ps(s[0]);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 scale = kPerElement ? _mm512_loadu_ps(s + i) : s0;
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + i), EncodeLanes(_mm512_div_ps(_mm512_loadu_ps(x + i), scale)));
  }
  EncodeScalar<kPerElement>(q + i, x + i, n - i, kPerElement ? s + i : s);
}

SHOAL_AVX512 void DecodeAvx512(float* x, const uint8_t* q, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512i b = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q + i)));
    const __m512i mag = _mm512_and_si512(b, _mm512_set1_epi32(0x7f));
    const __m512i sign = _mm512_slli_epi32(_mm512_and_si512(b, _mm512_set1_epi32(0x80)), 24);
    __m512 v = _mm512_castsi512_ps(_mm512_add_epi32(_mm512_slli_epi32(mag, 20), _mm512_set1_epi32(120 << 23)));
    const __m512 sub = _mm512_mul_ps(_mm512_cvtepi32_ps(mag), _mm512_set1_ps(0x1p-9f));
    v = _mm512_mask_mov_ps(v, _mm512_cmplt_epi32_mask(mag, _mm512_set1_epi32(8)), sub);
    v = _mm512_mask_mov_ps(v, _mm512_cmpeq_epi32_mask(mag, _mm512_set1_epi32(0x7f)),
                           _mm512_castsi512_ps(_mm512_set1_epi32(0x7fc00000)));
    _mm512_storeu_ps(x + i, _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(v), sign)));
  }
  DecodeScalar(x + i, q + i, n - i);
}

SHOAL_AVX512 void ScaleByAvx512(float* x, const float* s, int64_t n, bool per_element) {
  const __m512 s0 = _mm512_set1_ps(s[0]);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    _mm512_storeu_ps(x + i, _mm512_mul_ps(_mm512_loadu_ps(x + i), per_element ? _mm512_loadu_ps(s + i) : s0));
  }
  for (; i < n; ++i) x[i] *= s[per_element ? i : 0];
}

#undef SHOAL_AVX512

bool HaveAvx512() {
  static const bool have = __builtin_cpu_supports("avx512f");
  return have;
}

void AbsMaxInto(float* acc, const float* x, int64_t n) {
  HaveAvx512() ? AbsMaxIntoAvx512(acc, x, n) : AbsMaxIntoScalar(acc, x, n);
}

// x[i] *= s (scalar) or s[i] (vector).
void ScaleBy(float* x, float s, int64_t n) {
  if (HaveAvx512()) return ScaleByAvx512(x, &s, n, false);
  for (int64_t i = 0; i < n; ++i) x[i] *= s;
}
void ScaleByVector(float* x, const float* s, int64_t n) {
  if (HaveAvx512()) return ScaleByAvx512(x, s, n, true);
  for (int64_t i = 0; i < n; ++i) x[i] *= s[i];
}

void EncodePerElement(uint8_t* q, const float* x, int64_t n, const float* s) {
  HaveAvx512() ? EncodeAvx512<true>(q, x, n, s) : EncodeScalar<true>(q, x, n, s);
}

// Quantises rows [r0, r1) (one tile-row) with their scale row.
void QuantizeRowBlock(uint8_t* q, float* scale_row, const float* x, int64_t r0, int64_t r1, int64_t cols,
                      Fp8Tiling tiling, bool pow2) {
  const int64_t tc = tiling.tile_cols;
  const int64_t num_col_tiles = Fp8ScaleCols(cols, tiling);
  // The scale row doubles as the amax accumulator.
  std::fill(scale_row, scale_row + num_col_tiles, 0.f);
  for (int64_t r = r0; r < r1; ++r) {
    const float* xr = x + r * cols;
    if (tc == 1) {
      AbsMaxInto(scale_row, xr, cols);
    } else {
      for (int64_t j = 0; j < num_col_tiles; ++j) {
        scale_row[j] = std::max(scale_row[j], amax_f32(xr + j * tc, std::min(tc, cols - j * tc)));
      }
    }
  }
  for (int64_t j = 0; j < num_col_tiles; ++j) scale_row[j] = Fp8ScaleFromAmax(scale_row[j], pow2);
  for (int64_t r = r0; r < r1; ++r) {
    if (tc == 1) {
      EncodePerElement(q + r * cols, x + r * cols, cols, scale_row);
    } else {
      for (int64_t j = 0; j < num_col_tiles; ++j) {
        encode_e4m3(q + r * cols + j * tc, x + r * cols + j * tc, std::min(tc, cols - j * tc), scale_row[j]);
      }
    }
  }
}

void CheckTiling(Fp8Tiling t) {
  CHECK(t.tile_rows > 0 && t.tile_cols > 0) << "FP8 tiling " << t.tile_rows << "x" << t.tile_cols;
}

}  // namespace

float Fp8ScaleFromAmax(float amax, bool pow2) {
  const float s = std::max(amax, kFp8AmaxFloor) / kE4M3Max;
  if (!pow2) return s;
  int e = 0;
  const float m = std::frexp(s, &e);  // s = m · 2^e, m in [0.5, 1)
  return m == 0.5f ? s : std::ldexp(1.f, e);
}

void encode_e4m3(uint8_t* q, const float* x, int64_t n, float scale) {
  HaveAvx512() ? EncodeAvx512<false>(q, x, n, &scale) : EncodeScalar<false>(q, x, n, &scale);
}

void decode_e4m3(float* x, const uint8_t* q, int64_t n) {
  HaveAvx512() ? DecodeAvx512(x, q, n) : DecodeScalar(x, q, n);
}

float amax_f32(const float* x, int64_t n) { return HaveAvx512() ? AmaxAvx512(x, n) : AmaxScalar(x, n); }

void quantize_fp8(uint8_t* q, float* scale, const float* x, int64_t rows, int64_t cols, Fp8Tiling tiling,
                  bool pow2_scale, ThreadPool* pool) {
  CheckTiling(tiling);
  if (rows == 0 || cols == 0) return;
  const int64_t num_row_tiles = Fp8ScaleRows(rows, tiling);
  const int64_t num_col_tiles = Fp8ScaleCols(cols, tiling);
  ThreadPool& tp = pool ? *pool : ThreadPool::Default();
  // Aim for >= 64 KiB of input per chunk so small tensors stay on the calling thread.
  const int64_t grain = std::max<int64_t>(1, (16 << 10) / std::max<int64_t>(1, tiling.tile_rows * cols));
  tp.ParallelFor(num_row_tiles, grain, [&](int64_t begin, int64_t end, int) {
    for (int64_t rt = begin; rt < end; ++rt) {
      const int64_t r0 = rt * tiling.tile_rows, r1 = std::min(rows, r0 + tiling.tile_rows);
      QuantizeRowBlock(q, scale + rt * num_col_tiles, x, r0, r1, cols, tiling, pow2_scale);
    }
  });
}

void dequantize_fp8(float* x, const uint8_t* q, const float* scale, int64_t rows, int64_t cols, Fp8Tiling tiling,
                    ThreadPool* pool) {
  CheckTiling(tiling);
  if (rows == 0 || cols == 0) return;
  const int64_t num_col_tiles = Fp8ScaleCols(cols, tiling);
  ThreadPool& tp = pool ? *pool : ThreadPool::Default();
  const int64_t grain = std::max<int64_t>(1, (16 << 10) / cols);
  tp.ParallelFor(rows, grain, [&](int64_t begin, int64_t end, int) {
    for (int64_t r = begin; r < end; ++r) {
      float* xr = x + r * cols;
      const float* srow = scale + (r / tiling.tile_rows) * num_col_tiles;
      decode_e4m3(xr, q + r * cols, cols);
      if (tiling.tile_cols == 1) {
        ScaleByVector(xr, srow, cols);
      } else {
        for (int64_t j = 0; j < num_col_tiles; ++j) {
          const int64_t c0 = j * tiling.tile_cols;
          ScaleBy(xr + c0, srow[j], std::min(tiling.tile_cols, cols - c0));
        }
      }
    }
  });
}

}  // namespace shoal::kernels
