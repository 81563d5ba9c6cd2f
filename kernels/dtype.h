// Element types of kernel tensors and scalar conversions (host side; header-only, no dependencies).
// bf16: round-to-nearest-even from fp32, NaN kept quiet. FP8 E4M3 lives in kernels/fp8.h.
#pragma once

#include <cstdint>
#include <cstring>

namespace shoal::kernels {

enum class DType : uint8_t { kF32 = 0, kBF16 = 1, kF8E4M3 = 2, kI32 = 3 };

inline constexpr int DTypeSize(DType t) {
  return t == DType::kF32 ? 4 : t == DType::kBF16 ? 2 : t == DType::kF8E4M3 ? 1 : 4;
}
inline constexpr const char* DTypeName(DType t) {
  return t == DType::kF32 ? "f32" : t == DType::kBF16 ? "bf16" : t == DType::kF8E4M3 ? "f8e4m3" : "i32";
}

using bf16_t = uint16_t;

inline float bf16_to_f32(bf16_t h) {
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline bf16_t f32_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<bf16_t>((bits >> 16) | 0x40);  // quiet NaN
  uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<bf16_t>((bits + rounding) >> 16);
}

// Round an fp32 value to the nearest bf16-representable fp32 value.
inline float round_to_bf16(float f) { return bf16_to_f32(f32_to_bf16(f)); }

}  // namespace shoal::kernels
