// CUDA FP8 (quantiser, block-scaled GEMM kernel, cuBLASLt block scaling) against the CPU twins. The device
// tests skip without a GPU; the host-side E4M3 oracle check runs everywhere.
#include <cuda_fp8.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/cpu/fp8_gemm.h"
#include "kernels/cuda/fp8.h"
#include "kernels/cuda/gemm.h"
#include "kernels/device.h"
#include "kernels/fp8.h"

namespace shoal::kernels {
namespace {

// No device needed: cuda_fp8.h's host conversion is an independent implementation of saturating RNE E4M3.
TEST(CudaFp8HostTest, EncoderMatchesCudaFp8Header) {
  for (uint64_t u = 0; u <= 0xffffffffull; u += 257) {
    const uint32_t bits = static_cast<uint32_t>(u);
    float f;
    std::memcpy(&f, &bits, 4);
    const uint8_t ours = f32_to_e4m3(f);
    const uint8_t ref = __nv_cvt_float_to_fp8(f, __NV_SATFINITE, __NV_E4M3);
    if ((ours & 0x7f) == 0x7f && (ref & 0x7f) == 0x7f) continue;  // both NaN
    ASSERT_EQ(ours, ref) << "bits 0x" << std::hex << bits;
  }
  for (int c = 0; c < 256; ++c) {
    __nv_fp8_e4m3 v;
    v.__x = static_cast<__nv_fp8_storage_t>(c);
    const float ref = static_cast<float>(v), ours = e4m3_to_f32(static_cast<uint8_t>(c));
    if (std::isnan(ref)) {
      EXPECT_TRUE(std::isnan(ours)) << c;
    } else {
      EXPECT_EQ(ours, ref) << c;
    }
  }
}

template <typename T>
struct DeviceVector {
  explicit DeviceVector(size_t count) : n(count) { EXPECT_EQ(cudaMalloc(&ptr, n * sizeof(T)), cudaSuccess); }
  explicit DeviceVector(const std::vector<T>& host) : DeviceVector(host.size()) {
    EXPECT_EQ(cudaMemcpy(ptr, host.data(), n * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  }
  ~DeviceVector() { cudaFree(ptr); }
  std::vector<T> ToHost() const {
    std::vector<T> host(n);
    EXPECT_EQ(cudaMemcpy(host.data(), ptr, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    return host;
  }
  T* ptr = nullptr;
  size_t n;
};

class CudaFp8Test : public ::testing::Test {
 protected:
  void SetUp() override {
    if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device: " << CudaDeviceDescription();
  }
};

std::vector<float> RandomMatrix(int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.f, 1.f);
  std::vector<float> x(rows * cols);
  for (int64_t r = 0; r < rows; ++r) {
    const float row_scale = std::ldexp(1.f, static_cast<int>(gen() % 16) - 8);
    for (int64_t c = 0; c < cols; ++c) x[r * cols + c] = dist(gen) * row_scale;
  }
  return x;
}

double RelErr(const std::vector<float>& x, const std::vector<float>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    num += (double(x[i]) - ref[i]) * (double(x[i]) - ref[i]);
    den += double(ref[i]) * ref[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

// Host and device quantisers share the arithmetic: identical codes and scales.
TEST_F(CudaFp8Test, QuantizeIsBitIdenticalToCpu) {
  const int64_t rows = 200, cols = 300;
  auto x = RandomMatrix(rows, cols, 1);
  DeviceVector<float> dx(x);
  for (Fp8Tiling tiling : {kFp8Tile1x128, kFp8Tile128x1, kFp8Block128x128, Fp8PerTensor(rows, cols)}) {
    for (bool pow2 : {false, true}) {
      const int64_t num_scales = Fp8NumScales(rows, cols, tiling);
      std::vector<uint8_t> q(rows * cols);
      std::vector<float> s(num_scales), deq(rows * cols);
      quantize_fp8(q.data(), s.data(), x.data(), rows, cols, tiling, pow2);
      dequantize_fp8(deq.data(), q.data(), s.data(), rows, cols, tiling);
      DeviceVector<uint8_t> dq(rows * cols);
      DeviceVector<float> ds(num_scales), ddeq(rows * cols);
      ASSERT_TRUE(cuda::quantize_fp8(dq.ptr, ds.ptr, dx.ptr, rows, cols, tiling, pow2, nullptr).ok());
      ASSERT_TRUE(cuda::dequantize_fp8(ddeq.ptr, dq.ptr, ds.ptr, rows, cols, tiling, nullptr).ok());
      EXPECT_EQ(ds.ToHost(), s) << tiling.tile_rows << "x" << tiling.tile_cols << " pow2=" << pow2;
      EXPECT_EQ(dq.ToHost(), q) << tiling.tile_rows << "x" << tiling.tile_cols << " pow2=" << pow2;
      EXPECT_EQ(ddeq.ToHost(), deq);
    }
  }
}

struct Quantised {
  std::vector<uint8_t> q;
  std::vector<float> s;
  Fp8Matrix host;
};

Quantised Quantise(const std::vector<float>& x, int64_t rows, int64_t cols, Fp8Tiling tiling) {
  Quantised out{std::vector<uint8_t>(rows * cols), std::vector<float>(Fp8NumScales(rows, cols, tiling)), {}};
  quantize_fp8(out.q.data(), out.s.data(), x.data(), rows, cols, tiling, false);
  out.host = Fp8Matrix{out.q.data(), out.s.data(), rows, cols, tiling};
  return out;
}

TEST_F(CudaFp8Test, BlockScaledGemmKernelMatchesCpuForAllTransposes) {
  const int64_t M = 70, N = 150, K = 300;
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      const int64_t ar = ta ? K : M, ac = ta ? M : K, br = tb ? N : K, bc = tb ? K : N;
      Quantised qa = Quantise(RandomMatrix(ar, ac, 2), ar, ac, ta ? kFp8Tile128x1 : kFp8Tile1x128);
      Quantised qb = Quantise(RandomMatrix(br, bc, 3), br, bc, kFp8Block128x128);
      std::vector<float> ref(M * N);
      cpu::fp8_gemm(ref.data(), qa.host, ta, qb.host, tb, false);
      DeviceVector<uint8_t> daq(qa.q), dbq(qb.q);
      DeviceVector<float> das(qa.s), dbs(qb.s), dout(M * N);
      Fp8Matrix da = qa.host, db = qb.host;
      da.q = daq.ptr;
      da.scale = das.ptr;
      db.q = dbq.ptr;
      db.scale = dbs.ptr;
      ASSERT_TRUE(cuda::fp8_gemm(dout.ptr, da, ta, db, tb, false, nullptr).ok());
      EXPECT_LT(RelErr(dout.ToHost(), ref), 1e-5) << "ta=" << ta << " tb=" << tb;
    }
  }
}

// cuBLASLt's Hopper block scaling: 1×128 activations × 128×128 weights, as in Fprop.
TEST_F(CudaFp8Test, CublasLtBlockScalingMatchesCpu) {
  cudaDeviceProp prop{};
  ASSERT_EQ(cudaGetDeviceProperties(&prop, 0), cudaSuccess);
  auto ctx = cuda::BlasContext::Create();
  ASSERT_TRUE(ctx.ok()) << ctx.status();
  const int64_t M = 256, N = 384, K = 512;
  Quantised qa = Quantise(RandomMatrix(M, K, 4), M, K, kFp8Tile1x128);
  Quantised qb = Quantise(RandomMatrix(N, K, 5), N, K, kFp8Block128x128);
  std::vector<float> ref(M * N);
  cpu::fp8_gemm(ref.data(), qa.host, false, qb.host, true, false);

  DeviceVector<uint8_t> daq(qa.q), dbq(qb.q);
  DeviceVector<float> das(qa.s), dbs(qb.s);
  DeviceVector<float> das_lt(cuda::CublasLtScaleCount(M, K, kFp8Tile1x128));
  DeviceVector<float> dbs_lt(cuda::CublasLtScaleCount(N, K, kFp8Block128x128));
  Fp8Matrix da{daq.ptr, das.ptr, M, K, kFp8Tile1x128}, db{dbq.ptr, dbs.ptr, N, K, kFp8Block128x128};
  ASSERT_TRUE(cuda::fp8_scales_to_cublaslt(das_lt.ptr, da, nullptr).ok());
  ASSERT_TRUE(cuda::fp8_scales_to_cublaslt(dbs_lt.ptr, db, nullptr).ok());
  da.scale = das_lt.ptr;
  db.scale = dbs_lt.ptr;
  DeviceVector<float> dout(M * N);
  Status st = cuda::fp8_gemm_cublaslt(**ctx, dout.ptr, DType::kF32, da, db, nullptr);
  if (st.code() == StatusCode::kUnimplemented && prop.major != 9) {
    GTEST_SKIP() << "cuBLASLt block scaling is a Hopper feature; sm_" << prop.major << prop.minor << ": " << st;
  }
  ASSERT_TRUE(st.ok()) << st;
  // Tensor cores accumulate each block in limited precision before promotion; the CPU sums exactly in fp32.
  EXPECT_LT(RelErr(dout.ToHost(), ref), 2e-3);

  DeviceVector<bf16_t> dout_bf16(M * N);
  ASSERT_TRUE(cuda::fp8_gemm_cublaslt(**ctx, dout_bf16.ptr, DType::kBF16, da, db, nullptr).ok());
  std::vector<bf16_t> ob = dout_bf16.ToHost();
  std::vector<float> of(ob.size());
  for (size_t i = 0; i < ob.size(); ++i) of[i] = bf16_to_f32(ob[i]);
  EXPECT_LT(RelErr(of, ref), 6e-3);
}

TEST(CudaFp8LayoutTest, CublasLtScaleCounts) {
  EXPECT_EQ(cuda::CublasLtScaleCount(/*outer=*/10, /*k=*/300, kFp8Tile1x128), 3 * 12);
  EXPECT_EQ(cuda::CublasLtScaleCount(/*outer=*/300, /*k=*/300, kFp8Block128x128), 3 * 4);
  EXPECT_EQ(cuda::CublasLtScaleCount(/*outer=*/256, /*k=*/1024, kFp8Block128x128), 2 * 8);
  Fp8Matrix bad{nullptr, nullptr, 128, 128, kFp8Tile128x1};
  EXPECT_EQ(cuda::CheckCublasLtTiling(bad, "x").code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace shoal::kernels
