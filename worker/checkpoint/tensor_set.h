// Host tensors as checkpoints see them: the safetensors element types, an owning Tensor (dtype, shape,
// little-endian row-major bytes), TensorSet (tensors by name, sorted), and TensorRef, a borrowed view used to
// write straight from a trainer's arenas without a copy. Model-agnostic: names are whatever the model uses
// (Hugging Face DeepSeek-V3 names in shoal, STYLE.md §11).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace shoal::checkpoint {

// The safetensors dtypes shoal reads and writes (F16 is read-only in practice: nothing here produces it).
enum class DType : uint8_t { kF32, kF16, kBF16, kF8E4M3, kI32, kI64, kU8 };

// "F32", "F16", "BF16", "F8_E4M3", "I32", "I64", "U8": the safetensors spelling.
std::string_view DTypeName(DType dtype);
std::optional<DType> DTypeFromName(std::string_view name);
int64_t DTypeSize(DType dtype);
bool IsFloatDType(DType dtype);  // F32, F16, BF16, F8_E4M3

std::string ShapeString(const std::vector<int64_t>& shape);  // "[320, 64]"
// Product of the extents (1 for a scalar []); nullopt when an extent is negative or the product overflows.
std::optional<int64_t> NumElements(const std::vector<int64_t>& shape);

// A borrowed tensor: `data` holds numel·DTypeSize bytes, little-endian row-major, and must outlive every use
// of the ref. It may be unaligned (views into a foreign safetensors file); read it with memcpy or via ToF32.
struct TensorRef {
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const void* data = nullptr;

  int64_t numel() const;
  int64_t nbytes() const { return numel() * DTypeSize(dtype); }
};

// An owning tensor. bytes.size() == numel·DTypeSize(dtype).
struct Tensor {
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;

  int64_t numel() const;
  int64_t nbytes() const { return static_cast<int64_t>(bytes.size()); }
  TensorRef ref() const { return {dtype, shape, bytes.data()}; }

  static Tensor Copy(const TensorRef& ref);
  static Tensor Zeros(DType dtype, std::vector<int64_t> shape);
  static Tensor FromF32(std::vector<int64_t> shape, std::span<const float> values);
  static Tensor ScalarI64(int64_t value);

  // Typed access for callers that know the dtype (F32 -> float, BF16/F16 -> uint16_t, I32 -> int32_t,
  // I64 -> int64_t, F8_E4M3/U8 -> uint8_t). CHECKs the element size: a mismatch is the caller's bug.
  template <typename T>
  std::span<const T> values() const {
    CheckElementSize(sizeof(T));
    return {reinterpret_cast<const T*>(bytes.data()), bytes.size() / sizeof(T)};
  }
  template <typename T>
  std::span<T> mutable_values() {
    CheckElementSize(sizeof(T));
    return {reinterpret_cast<T*>(bytes.data()), bytes.size() / sizeof(T)};
  }

  friend bool operator==(const Tensor&, const Tensor&) = default;

 private:
  void CheckElementSize(size_t size) const;
};

// Tensors by name, sorted (so every iteration, and every file written from one, is deterministic).
using TensorSet = std::map<std::string, Tensor, std::less<>>;
// Borrowed tensors by name, sorted: what the writers take.
using TensorRefMap = std::map<std::string, TensorRef, std::less<>>;

TensorRefMap RefsOf(const TensorSet& tensors);

// Every element as f32: F32 as is, BF16/F16 widened exactly, F8_E4M3 decoded without any scale (use
// DequantizeFp8 for block-scaled weights), integers converted.
std::vector<float> ToF32(const TensorRef& ref);
// A copy of a floating-point tensor in `to` (F32 or BF16, round-to-nearest-even; F16 too). InvalidArgument
// for integer or FP8 sources and for FP8 targets (quantise with kernels/fp8.h: it needs a scale).
Result<Tensor> ConvertFloat(const TensorRef& ref, DType to, std::string_view what);

// W = q ⊙ scale_inv broadcast over blocks of block_rows × block_cols: q F8_E4M3 [rows, cols], scale_inv F32
// [ceil(rows/block_rows), ceil(cols/block_cols)] (deepseek-v3.md §9.4). InvalidArgument naming `what` when the
// shapes or dtypes do not fit.
Result<std::vector<float>> DequantizeFp8(const TensorRef& q, const TensorRef& scale_inv, std::string_view what,
                                         int64_t block_rows = 128, int64_t block_cols = 128);

// IEEE half <-> f32 (round-to-nearest-even).
float F16ToF32(uint16_t h);
uint16_t F32ToF16(float f);

}  // namespace shoal::checkpoint
