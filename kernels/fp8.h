// FP8 E4M3 ("fn": 1 sign, 4 exponent bits with bias 7, 3 mantissa bits; max ±448, smallest normal 2^-6,
// smallest subnormal 2^-9, no infinities) and DeepSeek-V3's fine-grained quantisation
// (../shared/reference/deepseek-v3.md §5.1-5.2).
//
// A quantised matrix is its E4M3 bytes q[rows, cols] (row-major) plus one fp32 scale per tile of
// tile_rows × tile_cols elements, stored row-major as scale[ceil(rows/tile_rows), ceil(cols/tile_cols)].
// The scale is the dequantisation multiplier (checkpoints call it weight_scale_inv): x ≈ q · s with
// s = max(amax, 1e-4) / 448 over the tile, or its power-of-two round-up 2^ceil(log2(amax/448)).
// Ragged edge tiles behave as if zero-padded to full size (padding never changes amax).
//   activations, Fprop/Dgrad:      1×128 tiles   (per token, 128 channels along K)
//   weights:                       128×128 blocks
//   Wgrad operands (reduce over T): 128×1 tiles  (128 tokens, one channel)
#pragma once

#include <cstdint>
#include <cstring>

#include "common/thread_pool.h"

namespace shoal::kernels {

inline constexpr float kE4M3Max = 448.f;
inline constexpr int64_t kFp8BlockSize = 128;  // tile edge and GEMM promotion interval along K
inline constexpr float kFp8AmaxFloor = 1e-4f;  // amax is clamped to at least this before scaling

// Round-to-nearest-even to E4M3, saturating to ±448 (also ±inf); NaN -> 0x7f/0xff.
inline uint8_t f32_to_e4m3(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  const uint8_t sign = static_cast<uint8_t>((bits >> 24) & 0x80u);
  const uint32_t abs = bits & 0x7fffffffu;
  if (abs > 0x7f800000u) return sign | 0x7f;   // NaN
  if (abs >= 0x43e00000u) return sign | 0x7e;  // |f| >= 448: saturate (RNE would give 448 up to 464 anyway)
  if (abs < 0x3c800000u) {                     // |f| < 2^-6: E4M3 subnormal range, step 2^-9
    float a;
    std::memcpy(&a, &abs, 4);
    // Adding 2^14 rounds (RNE) to a multiple of 2^-9, the fp32 ulp at 2^14; code = multiple (8 = 2^-6).
    const float rounded = (a + 16384.f) - 16384.f;
    return sign | static_cast<uint8_t>(rounded * 512.f);
  }
  // Normal: round the 23-bit mantissa to 3 bits (RNE; a carry moves into the exponent), then rebias 127 -> 7.
  const uint32_t rounded = abs + 0x7ffffu + ((abs >> 20) & 1u);
  return sign | static_cast<uint8_t>((rounded >> 20) - (120u << 3));
}

// Exact: every E4M3 value is an fp32 value.
inline float e4m3_to_f32(uint8_t b) {
  const uint32_t mag = b & 0x7fu;
  float v;
  if (mag == 0x7fu) {
    const uint32_t nan = 0x7fc00000u;
    std::memcpy(&v, &nan, 4);
  } else if (mag < 8) {
    v = static_cast<float>(mag) * 0x1p-9f;  // subnormal: mag · 2^-9
  } else {
    const uint32_t bits = (mag << 20) + (120u << 23);  // exponent field E+120, mantissa in the top 3 bits
    std::memcpy(&v, &bits, 4);
  }
  return (b & 0x80u) ? -v : v;
}

struct Fp8Tiling {
  int64_t tile_rows = 1;
  int64_t tile_cols = kFp8BlockSize;
};
inline constexpr Fp8Tiling kFp8Tile1x128{1, kFp8BlockSize};
inline constexpr Fp8Tiling kFp8Tile128x1{kFp8BlockSize, 1};
inline constexpr Fp8Tiling kFp8Block128x128{kFp8BlockSize, kFp8BlockSize};
// One scale for the whole [rows, cols] matrix.
inline Fp8Tiling Fp8PerTensor(int64_t rows, int64_t cols) { return {rows > 0 ? rows : 1, cols > 0 ? cols : 1}; }

inline constexpr int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t Fp8ScaleRows(int64_t rows, Fp8Tiling t) { return CeilDiv(rows, t.tile_rows); }
inline int64_t Fp8ScaleCols(int64_t cols, Fp8Tiling t) { return CeilDiv(cols, t.tile_cols); }
inline int64_t Fp8NumScales(int64_t rows, int64_t cols, Fp8Tiling t) {
  return Fp8ScaleRows(rows, t) * Fp8ScaleCols(cols, t);
}

// A quantised matrix as stored: q[rows, cols] row-major with one scale per tile (host or device pointers).
struct Fp8Matrix {
  const uint8_t* q = nullptr;
  const float* scale = nullptr;  // [Fp8ScaleRows(rows), Fp8ScaleCols(cols)] row-major
  int64_t rows = 0;
  int64_t cols = 0;
  Fp8Tiling tiling;
};

// s = max(amax, 1e-4) / 448, or with pow2 the smallest power of two >= that.
float Fp8ScaleFromAmax(float amax, bool pow2);

// q[i] = E4M3(x[i] / scale). Vectorised (AVX-512 when the CPU has it); bit-identical to f32_to_e4m3.
void encode_e4m3(uint8_t* q, const float* x, int64_t n, float scale);
// x[i] = e4m3_to_f32(q[i]).
void decode_e4m3(float* x, const uint8_t* q, int64_t n);
// max |x[i]| (0 for n = 0).
float amax_f32(const float* x, int64_t n);

// q[rows, cols] and scale[Fp8ScaleRows, Fp8ScaleCols] from x[rows, cols]; tiles run on `pool`.
void quantize_fp8(uint8_t* q, float* scale, const float* x, int64_t rows, int64_t cols, Fp8Tiling tiling,
                  bool pow2_scale, ThreadPool* pool = nullptr);
// x[rows, cols] = q · scale of its tile.
void dequantize_fp8(float* x, const uint8_t* q, const float* scale, int64_t rows, int64_t cols, Fp8Tiling tiling,
                    ThreadPool* pool = nullptr);

}  // namespace shoal::kernels
