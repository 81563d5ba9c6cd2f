#include "worker/model/expert_parallel.h"

#include <algorithm>
#include <cstring>

#include "kernels/cpu/ops_parallel.h"
#include "kernels/dtype.h"
#include "kernels/fp8.h"

namespace shoal::model {

Result<EpLayout> EpLayoutOf(int64_t num_experts, int64_t expert_begin, int64_t expert_end) {
  const int64_t n = expert_end - expert_begin;
  if (num_experts <= 0 || n <= 0 || expert_begin < 0 || expert_end > num_experts || num_experts % n != 0 ||
      expert_begin % n != 0) {
    return InvalidArgumentError("expert range [" + std::to_string(expert_begin) + ", " + std::to_string(expert_end) +
                                ") is not one of " + std::to_string(num_experts) +
                                " routed experts split into equal contiguous ranges (EP rank r holds [r·E/EP, "
                                "(r+1)·E/EP))");
  }
  return EpLayout{num_experts / n, expert_begin / n, n};
}

std::pair<int64_t, int64_t> EpExpertRange(int64_t num_experts, int64_t size, int64_t rank) {
  const int64_t per = num_experts / size;
  return {rank * per, (rank + 1) * per};
}

int64_t MaxRanksPerToken(int64_t n_group, int64_t topk_group, int64_t k, int64_t ep_size) {
  int64_t bound = std::min(k, ep_size);
  if (n_group > 0 && topk_group > 0 && topk_group < n_group && ep_size % n_group == 0) {
    bound = std::min(bound, topk_group * (ep_size / n_group));
  }
  return bound;
}

const char* ExchangeKindName(ExchangeKind kind) {
  switch (kind) {
    case ExchangeKind::kDispatch: return "dispatch";
    case ExchangeKind::kCombine: return "combine";
    case ExchangeKind::kGradDispatch: return "grad dispatch";
    case ExchangeKind::kGradCombine: return "grad combine";
  }
  return "?";
}

const char* WireFormatName(WireFormat format) {
  switch (format) {
    case WireFormat::kFp32: return "fp32";
    case WireFormat::kBf16: return "bf16";
    case WireFormat::kFp8: return "fp8";
  }
  return "?";
}

WireFormat ExchangePrecision::FormatOf(ExchangeKind kind) const {
  switch (kind) {
    case ExchangeKind::kDispatch:
    case ExchangeKind::kGradDispatch:
      return dispatch_fp8 ? WireFormat::kFp8 : WireFormat::kFp32;
    case ExchangeKind::kCombine:
    case ExchangeKind::kGradCombine:
      return combine_bf16 ? WireFormat::kBf16 : WireFormat::kFp32;
  }
  return WireFormat::kFp32;
}

namespace {

int64_t Fp8Tiles(int64_t width) { return kernels::CeilDiv(width, kernels::kFp8BlockSize); }

}  // namespace

int64_t WireRowBytes(WireFormat format, int64_t width) {
  switch (format) {
    case WireFormat::kFp32: return 4 * width;
    case WireFormat::kBf16: return 2 * width;
    case WireFormat::kFp8: return 4 * Fp8Tiles(width) + width;
  }
  return 0;
}

void EncodeRows(WireFormat format, std::byte* out, const float* rows, int64_t num_rows, int64_t width) {
  if (num_rows <= 0) return;
  if (format == WireFormat::kFp32) {
    std::memcpy(out, rows, sizeof(float) * num_rows * width);
    return;
  }
  const int64_t row_bytes = WireRowBytes(format, width);
  kernels::detail::ParallelRows(num_rows, 4 * width, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* x = rows + r * width;
      std::byte* o = out + r * row_bytes;
      if (format == WireFormat::kBf16) {
        for (int64_t i = 0; i < width; ++i) {
          const kernels::bf16_t h = kernels::f32_to_bf16(x[i]);
          std::memcpy(o + 2 * i, &h, 2);
        }
        continue;
      }
      // FP8: one power-of-two scale per 128 channels (§5.2, §5.5), scales first.
      const int64_t tiles = Fp8Tiles(width);
      auto* q = reinterpret_cast<uint8_t*>(o + 4 * tiles);
      for (int64_t t = 0; t < tiles; ++t) {
        const int64_t c0 = t * kernels::kFp8BlockSize, n = std::min(kernels::kFp8BlockSize, width - c0);
        const float scale = kernels::Fp8ScaleFromAmax(kernels::amax_f32(x + c0, n), /*pow2=*/true);
        std::memcpy(o + 4 * t, &scale, 4);
        kernels::encode_e4m3(q + c0, x + c0, n, scale);
      }
    }
  });
}

void DecodeRows(WireFormat format, float* rows, const std::byte* in, int64_t num_rows, int64_t width) {
  if (num_rows <= 0) return;
  if (format == WireFormat::kFp32) {
    std::memcpy(rows, in, sizeof(float) * num_rows * width);
    return;
  }
  const int64_t row_bytes = WireRowBytes(format, width);
  kernels::detail::ParallelRows(num_rows, 4 * width, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      float* x = rows + r * width;
      const std::byte* o = in + r * row_bytes;
      if (format == WireFormat::kBf16) {
        for (int64_t i = 0; i < width; ++i) {
          kernels::bf16_t h;
          std::memcpy(&h, o + 2 * i, 2);
          x[i] = kernels::bf16_to_f32(h);
        }
        continue;
      }
      const int64_t tiles = Fp8Tiles(width);
      const auto* q = reinterpret_cast<const uint8_t*>(o + 4 * tiles);
      for (int64_t t = 0; t < tiles; ++t) {
        const int64_t c0 = t * kernels::kFp8BlockSize, n = std::min(kernels::kFp8BlockSize, width - c0);
        float scale;
        std::memcpy(&scale, o + 4 * t, 4);
        kernels::decode_e4m3(x + c0, q + c0, n);
        for (int64_t i = 0; i < n; ++i) x[c0 + i] *= scale;
      }
    }
  });
}

}  // namespace shoal::model
