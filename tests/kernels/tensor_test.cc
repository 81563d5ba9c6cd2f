// TensorView, Shape and the arena: the pure layout function's sizes and alignment, and views that land where
// the layout says.
#include "kernels/tensor.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <set>

#include "kernels/arena.h"

namespace shoal::kernels {
namespace {

TEST(ShapeTest, DimsNumelAndNegativeIndex) {
  Shape s{2, 3, 4};
  EXPECT_EQ(s.ndim(), 3);
  EXPECT_EQ(s.numel(), 24);
  EXPECT_EQ(s.dim(-1), 4);
  EXPECT_EQ(s[0], 2);
  EXPECT_EQ(s.ToString(), "[2, 3, 4]");
  EXPECT_EQ(Shape{}.numel(), 1);  // a scalar
  EXPECT_EQ((Shape{5, 0}).numel(), 0);
  EXPECT_EQ(s.WithDim(0, 7), (Shape{7, 3, 4}));
  EXPECT_FALSE(s == (Shape{2, 3}));
}

TEST(TensorViewTest, ContiguousStridesSliceAndReshape) {
  float buf[2 * 3 * 4];
  for (int i = 0; i < 24; ++i) buf[i] = static_cast<float>(i);
  TensorView v = TensorView::Contiguous(buf, DType::kF32, {2, 3, 4});
  EXPECT_EQ(v.strides[0], 12);
  EXPECT_EQ(v.strides[1], 4);
  EXPECT_EQ(v.strides[2], 1);
  EXPECT_TRUE(v.is_contiguous());
  EXPECT_EQ(v.nbytes(), 96);

  TensorView second = v.Slice(1, 2);
  EXPECT_EQ(second.shape, (Shape{1, 3, 4}));
  EXPECT_EQ(second.as<float>()[0], 12.f);
  EXPECT_TRUE(second.is_contiguous());

  TensorView flat = v.Reshape({6, 4});
  EXPECT_EQ(flat.shape, (Shape{6, 4}));
  EXPECT_EQ(flat.as<float>()[5 * 4 + 3], 23.f);
  EXPECT_EQ(flat.DebugString(), "f32[6, 4] cpu contiguous");

  TensorView strided = v;
  strided.strides[2] = 2;
  EXPECT_FALSE(strided.is_contiguous());
}

TEST(TensorViewTest, DTypeOfMatchesElementSizes) {
  EXPECT_EQ(DTypeSize(DTypeOf<float>()), 4);
  EXPECT_EQ(DTypeSize(DTypeOf<bf16_t>()), 2);
  EXPECT_EQ(DTypeSize(DTypeOf<uint8_t>()), 1);
  EXPECT_EQ(DTypeSize(DTypeOf<int32_t>()), 4);
}

TEST(TensorViewDeathTest, WrongElementTypeAborts) {
  float x = 0;
  TensorView v = TensorView::Contiguous(&x, DType::kF32, {1});
  EXPECT_DEATH(v.as<int32_t>(), "as<i32>");
}

std::vector<TensorSpec> MixedSpecs() {
  return {
      {"a", DType::kF32, {3}},      // 12 bytes
      {"b", DType::kBF16, {5, 7}},  // 70 bytes
      {"c", DType::kF8E4M3, {1}},   // 1 byte
      {"d", DType::kI32, {0}},      // empty
      {"e", DType::kF32, {16}},     // 64 bytes, exactly one line
  };
}

TEST(ArenaLayoutTest, SizesAndOffsetsAt64Bytes) {
  ArenaLayout layout = ComputeArenaLayout(MixedSpecs(), 64);
  ASSERT_EQ(layout.offsets.size(), 5u);
  EXPECT_EQ(layout.offsets[0], 0);
  EXPECT_EQ(layout.offsets[1], 64);   // 12 -> 64
  EXPECT_EQ(layout.offsets[2], 192);  // 64 + 70 = 134 -> 192
  EXPECT_EQ(layout.offsets[3], 256);  // 193 -> 256
  EXPECT_EQ(layout.offsets[4], 256);  // the empty tensor takes no room
  EXPECT_EQ(layout.total_bytes, 320);
}

TEST(ArenaLayoutTest, SizesAndOffsetsAt256Bytes) {
  ArenaLayout layout = ComputeArenaLayout(MixedSpecs(), 256);
  EXPECT_EQ(layout.offsets[1], 256);
  EXPECT_EQ(layout.offsets[2], 512);
  EXPECT_EQ(layout.offsets[3], 768);
  EXPECT_EQ(layout.offsets[4], 768);
  EXPECT_EQ(layout.total_bytes, 1024);
}

TEST(ArenaLayoutTest, EmptyAndExactMultiples) {
  EXPECT_EQ(ComputeArenaLayout({}, 64).total_bytes, 0);
  ArenaLayout exact = ComputeArenaLayout({{"x", DType::kF32, {16}}, {"y", DType::kF32, {32}}}, 64);
  EXPECT_EQ(exact.offsets[1], 64);
  EXPECT_EQ(exact.total_bytes, 192);  // no padding when sizes are already multiples
}

TEST(ArenaLayoutTest, EveryOffsetAlignedAndTensorsDisjoint) {
  std::vector<TensorSpec> specs;
  for (int i = 1; i <= 40; ++i) {
    specs.push_back({"t" + std::to_string(i), static_cast<DType>(i % 4), {i, (i * 7) % 13 + 1}});
  }
  for (int64_t alignment : {64, 256}) {
    ArenaLayout layout = ComputeArenaLayout(specs, alignment);
    int64_t prev_end = 0;
    for (size_t i = 0; i < specs.size(); ++i) {
      EXPECT_EQ(layout.offsets[i] % alignment, 0);
      EXPECT_GE(layout.offsets[i], prev_end);
      EXPECT_LT(layout.offsets[i] - prev_end, alignment);  // no more padding than needed
      prev_end = layout.offsets[i] + specs[i].nbytes();
    }
    EXPECT_GE(layout.total_bytes, prev_end);
    EXPECT_EQ(layout.total_bytes % alignment, 0);
  }
}

TEST(ArenaTest, CpuArenaCarvesAlignedViewsThatDoNotOverlap) {
  auto arena_or = Arena::Create(MixedSpecs(), CpuAllocator());
  ASSERT_TRUE(arena_or.ok()) << arena_or.status();
  Arena& arena = **arena_or;
  EXPECT_EQ(arena.bytes(), 320);
  EXPECT_EQ(arena.device(), Device::kCpu);
  ASSERT_TRUE(arena.Zero().ok());
  // Fill each tensor with its own byte and check nobody else's bytes changed.
  for (int64_t i = 0; i < arena.num_tensors(); ++i) {
    TensorView v = arena.view(i);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(v.data) % kCpuArenaAlignment, 0u) << arena.spec(i).name;
    EXPECT_EQ(v.shape, arena.spec(i).shape);
    EXPECT_EQ(v.dtype, arena.spec(i).dtype);
    std::memset(v.data, static_cast<int>(i + 1), static_cast<size_t>(v.nbytes()));
  }
  for (int64_t i = 0; i < arena.num_tensors(); ++i) {
    TensorView v = arena.view(i);
    const auto* bytes = static_cast<const uint8_t*>(v.data);
    for (int64_t b = 0; b < v.nbytes(); ++b) ASSERT_EQ(bytes[b], i + 1) << arena.spec(i).name;
  }
  auto found = arena.Find("b");
  ASSERT_TRUE(found.ok());
  EXPECT_EQ(found->data, arena.view(1).data);
  EXPECT_EQ(found->as<bf16_t>()[0], 0x0202);
  auto missing = arena.Find("nope");
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("nope"), std::string::npos);
}

TEST(ArenaTest, EmptyArenaHasNoMemory) {
  auto arena_or = Arena::Create({}, CpuAllocator());
  ASSERT_TRUE(arena_or.ok());
  EXPECT_EQ((*arena_or)->bytes(), 0);
  EXPECT_EQ((*arena_or)->data(), nullptr);
  EXPECT_TRUE((*arena_or)->Zero().ok());
}

}  // namespace
}  // namespace shoal::kernels
