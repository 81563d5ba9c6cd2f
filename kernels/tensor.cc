#include "kernels/tensor.h"

#include <sstream>

namespace shoal::kernels {

Shape::Shape(std::initializer_list<int64_t> dims) {
  CHECK(dims.size() <= static_cast<size_t>(kMaxDims))
      << "Shape with " << dims.size() << " dims (max " << kMaxDims << ")";
  for (int64_t d : dims) {
    CHECK(d >= 0) << "negative extent " << d;
    dims_[ndim_++] = d;
  }
}

int64_t Shape::dim(int i) const {
  int idx = i < 0 ? ndim_ + i : i;
  CHECK(idx >= 0 && idx < ndim_) << "dim " << i << " of a " << ndim_ << "-d shape";
  return dims_[idx];
}

int64_t Shape::numel() const {
  int64_t n = 1;
  for (int i = 0; i < ndim_; ++i) n *= dims_[i];
  return n;
}

std::string Shape::ToString() const {
  std::ostringstream os;
  os << '[';
  for (int i = 0; i < ndim_; ++i) os << (i ? ", " : "") << dims_[i];
  os << ']';
  return os.str();
}

Shape Shape::WithDim(int i, int64_t extent) const {
  int idx = i < 0 ? ndim_ + i : i;
  CHECK(idx >= 0 && idx < ndim_ && extent >= 0) << "WithDim(" << i << ", " << extent << ") of " << ToString();
  Shape s = *this;
  s.dims_[idx] = extent;
  return s;
}

bool operator==(const Shape& a, const Shape& b) {
  if (a.ndim_ != b.ndim_) return false;
  for (int i = 0; i < a.ndim_; ++i) {
    if (a.dims_[i] != b.dims_[i]) return false;
  }
  return true;
}

TensorView TensorView::Contiguous(void* data, DType dtype, Shape shape, Device device) {
  TensorView v;
  v.data = data;
  v.dtype = dtype;
  v.device = device;
  v.shape = shape;
  int64_t stride = 1;
  for (int i = shape.ndim() - 1; i >= 0; --i) {
    v.strides[i] = stride;
    stride *= shape.dim(i);
  }
  return v;
}

bool TensorView::is_contiguous() const {
  int64_t stride = 1;
  for (int i = ndim() - 1; i >= 0; --i) {
    if (dim(i) != 1 && strides[i] != stride) return false;
    stride *= dim(i);
  }
  return true;
}

TensorView TensorView::Slice(int64_t begin, int64_t end) const {
  CHECK(ndim() >= 1) << "Slice of a 0-d view";
  CHECK(0 <= begin && begin <= end && end <= dim(0))
      << "Slice [" << begin << ", " << end << ") of " << shape.ToString();
  TensorView v = *this;
  v.data = static_cast<char*>(data) + begin * strides[0] * DTypeSize(dtype);
  v.shape = shape.WithDim(0, end - begin);
  return v;
}

TensorView TensorView::Reshape(Shape new_shape) const {
  CHECK(is_contiguous()) << "Reshape of a non-contiguous view " << DebugString();
  CHECK(new_shape.numel() == numel()) << "Reshape " << shape.ToString() << " -> " << new_shape.ToString();
  return Contiguous(data, dtype, new_shape, device);
}

std::string TensorView::DebugString() const {
  std::ostringstream os;
  os << DTypeName(dtype) << shape.ToString() << ' ' << DeviceName(device)
     << (is_contiguous() ? " contiguous" : " strided");
  return os.str();
}

}  // namespace shoal::kernels
