// CUDA GEMMs (cuBLASLt) and the CUDA arena against their CPU twins. Skips without a device.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "kernels/arena.h"
#include "kernels/cpu/blas.h"
#include "kernels/cuda/gemm.h"
#include "kernels/device.h"

namespace shoal::kernels {
namespace {

class CudaGemmTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device: " << CudaDeviceDescription();
    auto ctx = cuda::BlasContext::Create();
    ASSERT_TRUE(ctx.ok()) << ctx.status();
    ctx_ = std::move(*ctx);
  }
  std::unique_ptr<cuda::BlasContext> ctx_;
};

// A device copy of a host vector, freed at scope exit.
template <typename T>
struct DeviceVector {
  explicit DeviceVector(const std::vector<T>& host) : n(host.size()) {
    EXPECT_EQ(cudaMalloc(&ptr, n * sizeof(T)), cudaSuccess);
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

std::vector<float> Random(int64_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.f, 1.f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(gen);
  return v;
}

double RelErr(const std::vector<float>& x, const std::vector<float>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    num += (double(x[i]) - ref[i]) * (double(x[i]) - ref[i]);
    den += double(ref[i]) * ref[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

TEST_F(CudaGemmTest, CudaArenaViewsAreAlignedAndZeroed) {
  auto arena = Arena::Create({{"a", DType::kF32, {3}}, {"b", DType::kBF16, {100}}}, CudaAllocator());
  ASSERT_TRUE(arena.ok()) << arena.status();
  EXPECT_EQ((*arena)->device(), Device::kCuda);
  EXPECT_EQ((*arena)->bytes(), 512);
  TensorView b = (*arena)->view(1);
  EXPECT_EQ(b.device, Device::kCuda);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(b.data) % kCudaArenaAlignment, 0u);
  ASSERT_TRUE(cudaMemset((*arena)->data(), 0xff, 512) == cudaSuccess);
  ASSERT_TRUE((*arena)->Zero().ok());
  std::vector<uint8_t> host(512, 1);
  ASSERT_EQ(cudaMemcpy(host.data(), (*arena)->data(), 512, cudaMemcpyDeviceToHost), cudaSuccess);
  for (uint8_t v : host) EXPECT_EQ(v, 0);
}

TEST_F(CudaGemmTest, Fp32AllTransposesMatchCpu) {
  const int64_t M = 96, N = 80, K = 112;
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      const int64_t lda = ta ? M : K, ldb = tb ? K : N;
      auto A = Random(M * K, 1), B = Random(N * K, 2), C = Random(M * N, 3);
      std::vector<float> ref = C;
      cpu::sgemm(ta, tb, M, N, K, 0.5f, A.data(), lda, B.data(), ldb, 0.25f, ref.data(), N);
      DeviceVector<float> dA(A), dB(B), dC(C);
      ASSERT_TRUE(cuda::gemm(*ctx_, ta, tb, M, N, K, 0.5f, dA.ptr, lda, dB.ptr, ldb, 0.25f, dC.ptr, N, DType::kF32,
                             DType::kF32, nullptr)
                      .ok());
      EXPECT_LT(RelErr(dC.ToHost(), ref), 1e-5) << "ta=" << ta << " tb=" << tb;
    }
  }
}

TEST_F(CudaGemmTest, Bf16InputsMatchCpuTwin) {
  const int64_t M = 128, N = 192, K = 256;
  auto fa = Random(M * K, 4), fb = Random(N * K, 5);
  std::vector<bf16_t> A(fa.size()), B(fb.size());
  for (size_t i = 0; i < A.size(); ++i) A[i] = f32_to_bf16(fa[i]);
  for (size_t i = 0; i < B.size(); ++i) B[i] = f32_to_bf16(fb[i]);
  std::vector<float> ref(M * N);
  cpu::gemm_bf16(false, true, M, N, K, 1.f, A.data(), K, B.data(), K, 0.f, ref.data(), N);
  DeviceVector<bf16_t> dA(A), dB(B);
  DeviceVector<float> dC(std::vector<float>(M * N));
  ASSERT_TRUE(cuda::gemm(*ctx_, false, true, M, N, K, 1.f, dA.ptr, K, dB.ptr, K, 0.f, dC.ptr, N, DType::kBF16,
                         DType::kF32, nullptr)
                  .ok());
  EXPECT_LT(RelErr(dC.ToHost(), ref), 1e-5);  // fp32 accumulation of exact bf16 products
  // bf16 output: one more rounding to 8 mantissa bits.
  DeviceVector<bf16_t> dCb(std::vector<bf16_t>(M * N));
  ASSERT_TRUE(cuda::gemm(*ctx_, false, true, M, N, K, 1.f, dA.ptr, K, dB.ptr, K, 0.f, dCb.ptr, N, DType::kBF16,
                         DType::kBF16, nullptr)
                  .ok());
  std::vector<bf16_t> cb = dCb.ToHost();
  std::vector<float> c(cb.size());
  for (size_t i = 0; i < cb.size(); ++i) c[i] = bf16_to_f32(cb[i]);
  EXPECT_LT(RelErr(c, ref), 4e-3);
}

TEST_F(CudaGemmTest, MatmulForwardBackwardMatchCpu) {
  const int64_t N = 64, C = 96, OC = 160;
  auto inp = Random(N * C, 6), weight = Random(OC * C, 7), dout = Random(N * OC, 8);
  std::vector<float> out(N * OC), dinp(N * C, 1.f), dweight(OC * C, -1.f);
  DeviceVector<float> d_inp(inp), d_weight(weight), d_dout(dout), d_out(out), d_dinp(dinp), d_dweight(dweight);
  cpu::matmul_forward(out.data(), inp.data(), weight.data(), N, C, OC);
  cpu::matmul_backward(dinp.data(), dweight.data(), dout.data(), inp.data(), weight.data(), N, C, OC);
  ASSERT_TRUE(cuda::matmul_forward(*ctx_, d_out.ptr, d_inp.ptr, d_weight.ptr, N, C, OC, DType::kF32, nullptr).ok());
  ASSERT_TRUE(cuda::matmul_backward(*ctx_, d_dinp.ptr, d_dweight.ptr, d_dout.ptr, d_inp.ptr, d_weight.ptr, N, C, OC,
                                    DType::kF32, nullptr)
                  .ok());
  EXPECT_LT(RelErr(d_out.ToHost(), out), 1e-5);
  EXPECT_LT(RelErr(d_dinp.ToHost(), dinp), 1e-5);
  EXPECT_LT(RelErr(d_dweight.ToHost(), dweight), 1e-5);
}

}  // namespace
}  // namespace shoal::kernels
