#include "worker/checkpoint/tensor_set.h"

#include <cmath>
#include <cstring>

#include "common/check.h"
#include "kernels/dtype.h"
#include "kernels/fp8.h"

namespace shoal::checkpoint {

namespace {

struct DTypeInfo {
  DType dtype;
  std::string_view name;
  int64_t size;
};
constexpr DTypeInfo kDTypes[] = {
    {DType::kF32, "F32", 4},     {DType::kF16, "F16", 2}, {DType::kBF16, "BF16", 2}, {DType::kF8E4M3, "F8_E4M3", 1},
    {DType::kI32, "I32", 4},     {DType::kI64, "I64", 8}, {DType::kU8, "U8", 1},
};

template <typename T>
T Load(const uint8_t* p, int64_t i) {
  T v;
  std::memcpy(&v, p + i * static_cast<int64_t>(sizeof(T)), sizeof(T));
  return v;
}

}  // namespace

std::string_view DTypeName(DType dtype) {
  for (const auto& d : kDTypes)
    if (d.dtype == dtype) return d.name;
  return "?";
}

std::optional<DType> DTypeFromName(std::string_view name) {
  for (const auto& d : kDTypes)
    if (d.name == name) return d.dtype;
  return std::nullopt;
}

int64_t DTypeSize(DType dtype) {
  for (const auto& d : kDTypes)
    if (d.dtype == dtype) return d.size;
  return 0;
}

bool IsFloatDType(DType dtype) {
  return dtype == DType::kF32 || dtype == DType::kF16 || dtype == DType::kBF16 || dtype == DType::kF8E4M3;
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

std::optional<int64_t> NumElements(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) return std::nullopt;
    if (d != 0 && n > INT64_MAX / d) return std::nullopt;
    n *= d;
  }
  return n;
}

int64_t TensorRef::numel() const { return NumElements(shape).value_or(0); }
int64_t Tensor::numel() const { return NumElements(shape).value_or(0); }

void Tensor::CheckElementSize(size_t size) const {
  CHECK(static_cast<int64_t>(size) == DTypeSize(dtype))
      << "Tensor::values: element size " << size << " does not match dtype " << DTypeName(dtype);
}

Tensor Tensor::Copy(const TensorRef& ref) {
  Tensor t;
  t.dtype = ref.dtype;
  t.shape = ref.shape;
  const auto* p = static_cast<const uint8_t*>(ref.data);
  t.bytes.assign(p, p + ref.nbytes());
  return t;
}

Tensor Tensor::Zeros(DType dtype, std::vector<int64_t> shape) {
  Tensor t;
  t.dtype = dtype;
  t.shape = std::move(shape);
  t.bytes.assign(static_cast<size_t>(t.numel() * DTypeSize(dtype)), 0);
  return t;
}

Tensor Tensor::FromF32(std::vector<int64_t> shape, std::span<const float> values) {
  Tensor t = Zeros(DType::kF32, std::move(shape));
  CHECK(static_cast<int64_t>(values.size()) == t.numel())
      << "Tensor::FromF32: " << values.size() << " values for shape " << ShapeString(t.shape);
  if (!values.empty()) std::memcpy(t.bytes.data(), values.data(), t.bytes.size());
  return t;
}

Tensor Tensor::ScalarI64(int64_t value) {
  Tensor t = Zeros(DType::kI64, {});
  std::memcpy(t.bytes.data(), &value, sizeof(value));
  return t;
}

TensorRefMap RefsOf(const TensorSet& tensors) {
  TensorRefMap refs;
  for (const auto& [name, t] : tensors) refs.emplace(name, t.ref());
  return refs;
}

float F16ToF32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);  // inf / NaN
  } else if (exp == 0) {
    // Zero or subnormal: mant · 2^-24, exact in f32.
    float v = std::ldexp(static_cast<float>(mant), -24);
    std::memcpy(&bits, &v, 4);
    bits |= sign;
  } else {
    bits = sign | ((exp + 112u) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t F32ToF16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  const uint32_t abs = bits & 0x7fffffffu;
  if (abs > 0x7f800000u) return sign | 0x7e00u;   // NaN
  if (abs >= 0x477ff000u) return sign | 0x7c00u;  // rounds to >= 65520: inf
  if (abs < 0x38800000u) {                        // below 2^-14: subnormal half, step 2^-24
    float a;
    std::memcpy(&a, &abs, 4);
    const float rounded = (a + 0.5f) - 0.5f;  // RNE to a multiple of 2^-24 (the f32 ulp at 0.5)
    return sign | static_cast<uint16_t>(rounded * 16777216.f);
  }
  const uint32_t rounded = abs + 0xfffu + ((abs >> 13) & 1u);
  return sign | static_cast<uint16_t>((rounded >> 13) - (112u << 10));
}

std::vector<float> ToF32(const TensorRef& ref) {
  const int64_t n = ref.numel();
  const auto* p = static_cast<const uint8_t*>(ref.data);
  std::vector<float> out(static_cast<size_t>(n));
  switch (ref.dtype) {
    case DType::kF32:
      if (n) std::memcpy(out.data(), p, static_cast<size_t>(n) * 4);
      break;
    case DType::kBF16:
      for (int64_t i = 0; i < n; ++i) out[i] = kernels::bf16_to_f32(Load<uint16_t>(p, i));
      break;
    case DType::kF16:
      for (int64_t i = 0; i < n; ++i) out[i] = F16ToF32(Load<uint16_t>(p, i));
      break;
    case DType::kF8E4M3:
      for (int64_t i = 0; i < n; ++i) out[i] = kernels::e4m3_to_f32(p[i]);
      break;
    case DType::kI32:
      for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(Load<int32_t>(p, i));
      break;
    case DType::kI64:
      for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(Load<int64_t>(p, i));
      break;
    case DType::kU8:
      for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(p[i]);
      break;
  }
  return out;
}

Result<Tensor> ConvertFloat(const TensorRef& ref, DType to, std::string_view what) {
  if (ref.dtype == DType::kF8E4M3 || !IsFloatDType(ref.dtype)) {
    return InvalidArgumentError(std::string(what) + ": cannot convert a " + std::string(DTypeName(ref.dtype)) +
                                " tensor to " + std::string(DTypeName(to)) +
                                " (only F32/BF16/F16 sources; dequantise FP8 weights with their scale first)");
  }
  if (to != DType::kF32 && to != DType::kBF16 && to != DType::kF16) {
    return InvalidArgumentError(std::string(what) + ": conversion target must be F32, BF16 or F16, got " +
                                std::string(DTypeName(to)));
  }
  if (ref.dtype == to) return Tensor::Copy(ref);
  const std::vector<float> f = ToF32(ref);
  Tensor t = Tensor::Zeros(to, ref.shape);
  if (to == DType::kF32) {
    if (!f.empty()) std::memcpy(t.bytes.data(), f.data(), f.size() * 4);
  } else {
    auto out = t.mutable_values<uint16_t>();
    for (size_t i = 0; i < f.size(); ++i) out[i] = to == DType::kBF16 ? kernels::f32_to_bf16(f[i]) : F32ToF16(f[i]);
  }
  return t;
}

Result<std::vector<float>> DequantizeFp8(const TensorRef& q, const TensorRef& scale_inv, std::string_view what,
                                         int64_t block_rows, int64_t block_cols) {
  const std::string w(what);
  if (q.dtype != DType::kF8E4M3 || q.shape.size() != 2) {
    return InvalidArgumentError(w + ": an FP8 weight must be a 2-D F8_E4M3 tensor, got " +
                                std::string(DTypeName(q.dtype)) + " " + ShapeString(q.shape));
  }
  if (block_rows <= 0 || block_cols <= 0) {
    return InvalidArgumentError(w + ": FP8 block size must be positive, got " + std::to_string(block_rows) + "x" +
                                std::to_string(block_cols));
  }
  const int64_t rows = q.shape[0], cols = q.shape[1];
  const std::vector<int64_t> want = {kernels::CeilDiv(rows, block_rows), kernels::CeilDiv(cols, block_cols)};
  if (scale_inv.dtype != DType::kF32 || scale_inv.shape != want) {
    return InvalidArgumentError(w + "_scale_inv: expected F32 " + ShapeString(want) + " (one scale per " +
                                std::to_string(block_rows) + "x" + std::to_string(block_cols) + " block of " +
                                ShapeString(q.shape) + "), got " + std::string(DTypeName(scale_inv.dtype)) + " " +
                                ShapeString(scale_inv.shape));
  }
  // Both may be unaligned views into a file: copy to aligned storage for the kernel.
  std::vector<uint8_t> qb(static_cast<const uint8_t*>(q.data), static_cast<const uint8_t*>(q.data) + q.nbytes());
  const std::vector<float> s = ToF32(scale_inv);
  std::vector<float> out(static_cast<size_t>(rows * cols));
  kernels::dequantize_fp8(out.data(), qb.data(), s.data(), rows, cols, {block_rows, block_cols});
  return out;
}

}  // namespace shoal::checkpoint
