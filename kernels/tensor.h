// TensorView: a non-owning, typed, strided view of memory that lives in an arena (kernels/arena.h).
// Kernels take raw pointers plus dims (STYLE.md §5); views are how the model and the arenas name, shape and
// hand out those pointers. A view never frees anything.
//
// Shape glossary used across kernels/: B batch, T tokens (sequence), C channels (hidden, "in"), OC output
// channels ("out"), E experts, K reduction dim of a GEMM, M/N the other two GEMM dims.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <string>

#include "common/check.h"
#include "kernels/dtype.h"

namespace shoal::kernels {

enum class Device : uint8_t { kCpu = 0, kCuda = 1 };
inline constexpr const char* DeviceName(Device d) { return d == Device::kCpu ? "cpu" : "cuda"; }

inline constexpr int kMaxDims = 5;

// Up to kMaxDims extents, outermost first.
class Shape {
 public:
  Shape() = default;
  Shape(std::initializer_list<int64_t> dims);

  int ndim() const { return ndim_; }
  // Negative indices count from the end: dim(-1) is the innermost extent.
  int64_t dim(int i) const;
  int64_t operator[](int i) const { return dim(i); }
  int64_t numel() const;
  std::string ToString() const;  // "[4, 128]"
  // A copy with extent i replaced.
  Shape WithDim(int i, int64_t extent) const;

  friend bool operator==(const Shape& a, const Shape& b);

 private:
  int ndim_ = 0;
  std::array<int64_t, kMaxDims> dims_{};
};

// Element types as C++ types: f32 = float, bf16 = bf16_t, f8e4m3 = uint8_t (E4M3 bits), i32 = int32_t.
template <typename T>
constexpr DType DTypeOf();
template <>
constexpr DType DTypeOf<float>() {
  return DType::kF32;
}
template <>
constexpr DType DTypeOf<bf16_t>() {
  return DType::kBF16;
}
template <>
constexpr DType DTypeOf<uint8_t>() {
  return DType::kF8E4M3;
}
template <>
constexpr DType DTypeOf<int32_t>() {
  return DType::kI32;
}

struct TensorView {
  void* data = nullptr;
  DType dtype = DType::kF32;
  Device device = Device::kCpu;
  Shape shape;
  std::array<int64_t, kMaxDims> strides{};  // in elements, outermost first

  // A row-major (contiguous) view of `shape` at `data`.
  static TensorView Contiguous(void* data, DType dtype, Shape shape, Device device = Device::kCpu);

  int ndim() const { return shape.ndim(); }
  int64_t dim(int i) const { return shape.dim(i); }
  int64_t numel() const { return shape.numel(); }
  // Bytes spanned by a contiguous view (numel × element size).
  int64_t nbytes() const { return numel() * DTypeSize(dtype); }
  bool is_contiguous() const;

  // Typed data pointer; aborts when T does not match dtype (a bug, not an input error).
  template <typename T>
  T* as() const {
    CHECK(dtype == DTypeOf<T>()) << "TensorView::as<" << DTypeName(DTypeOf<T>()) << "> on a " << DTypeName(dtype)
                                 << " view";
    return static_cast<T*>(data);
  }

  // Rows [begin, end) of the outermost dimension.
  TensorView Slice(int64_t begin, int64_t end) const;
  // Same memory, new shape with the same numel; the view must be contiguous.
  TensorView Reshape(Shape new_shape) const;

  std::string DebugString() const;  // "f32[4, 128] cpu contiguous"
};

}  // namespace shoal::kernels
