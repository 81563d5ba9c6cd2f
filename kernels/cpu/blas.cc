#include "kernels/cpu/blas.h"

#include <cblas.h>
#include <immintrin.h>

#include <algorithm>
#include <climits>
#include <memory>

#include "common/check.h"

// GCC 12's AVX-512 intrinsics start from _mm512_undefined_*() and trip (-W)maybe-uninitialized falsely.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace shoal::kernels::cpu {
namespace {

blasint ToBlasInt(int64_t v) {
  CHECK(v >= 0 && v <= INT_MAX) << "BLAS dimension " << v << " out of range";
  return static_cast<blasint>(v);
}

// bf16 tiles are widened to fp32 in blocks of this many rows/columns (256 KiB of fp32 per operand tile).
constexpr int64_t kBf16Tile = 256;

struct Bf16Scratch {
  std::unique_ptr<float[]> a;
  std::unique_ptr<float[]> b;
};

// One per thread, allocated on first use and reused (like OpenBLAS's own packing buffers).
Bf16Scratch& ThreadBf16Scratch() {
  thread_local Bf16Scratch scratch;
  if (!scratch.a) {
    scratch.a.reset(new float[kBf16Tile * kBf16Tile]);
    scratch.b.reset(new float[kBf16Tile * kBf16Tile]);
  }
  return scratch;
}

void WidenRowScalar(float* d, const bf16_t* s, int64_t n) {
  for (int64_t i = 0; i < n; ++i) d[i] = bf16_to_f32(s[i]);
}

// GCC -O2 does not vectorise the loop above; the AVX-512 version is chosen at run time.
__attribute__((target("avx512f"))) void WidenRowAvx512(float* d, const bf16_t* s, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512i h = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + i)));
    _mm512_storeu_si512(d + i, _mm512_slli_epi32(h, 16));
  }
  WidenRowScalar(d + i, s + i, n - i);
}

// dst[rows, cols] (row stride cols) = src[rows, cols] (row stride src_ld), widened.
void WidenBf16(float* dst, const bf16_t* src, int64_t src_ld, int64_t rows, int64_t cols) {
  static const bool avx512 = __builtin_cpu_supports("avx512f");
  for (int64_t r = 0; r < rows; ++r) {
    avx512 ? WidenRowAvx512(dst + r * cols, src + r * src_ld, cols)
           : WidenRowScalar(dst + r * cols, src + r * src_ld, cols);
  }
}

void ScaleC(float beta, float* C, int64_t ldc, int64_t M, int64_t N) {
  for (int64_t m = 0; m < M; ++m) {
    float* c = C + m * ldc;
    if (beta == 0.f) {
      std::fill(c, c + N, 0.f);
    } else {
      for (int64_t n = 0; n < N; ++n) c[n] *= beta;
    }
  }
}

}  // namespace

void SetBlasThreads(int n) { openblas_set_num_threads(n > 0 ? n : ThreadPool::Default().num_threads()); }

int BlasThreads() { return openblas_get_num_threads(); }

ScopedBlasThreads::ScopedBlasThreads(int n) : previous_(openblas_get_num_threads()) {
  if (n != previous_) openblas_set_num_threads(n);
}

ScopedBlasThreads::~ScopedBlasThreads() {
  if (openblas_get_num_threads() != previous_) openblas_set_num_threads(previous_);
}

void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  if (K == 0) {
    ScaleC(beta, C, ldc, M, N);
    return;
  }
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, ToBlasInt(M),
              ToBlasInt(N), ToBlasInt(K), alpha, A, ToBlasInt(lda), B, ToBlasInt(ldb), beta, C, ToBlasInt(ldc));
}

void gemm_bf16(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const bf16_t* A, int64_t lda,
               const bf16_t* B, int64_t ldb, float beta, float* C, int64_t ldc, ThreadPool* pool) {
  if (M == 0 || N == 0) return;
  if (K == 0) {
    ScaleC(beta, C, ldc, M, N);
    return;
  }
  const int64_t num_mt = (M + kBf16Tile - 1) / kBf16Tile;
  const int64_t num_nt = (N + kBf16Tile - 1) / kBf16Tile;
  const int64_t num_tasks = num_mt * num_nt;
  auto run_tile = [&](int64_t task) {
    const int64_t m0 = (task / num_nt) * kBf16Tile, n0 = (task % num_nt) * kBf16Tile;
    const int64_t mlen = std::min(kBf16Tile, M - m0), nlen = std::min(kBf16Tile, N - n0);
    Bf16Scratch& scratch = ThreadBf16Scratch();
    for (int64_t k0 = 0; k0 < K; k0 += kBf16Tile) {
      const int64_t klen = std::min(kBf16Tile, K - k0);
      // Widen the tiles keeping their stored orientation, so sgemm sees the same transposes.
      if (trans_a) {
        WidenBf16(scratch.a.get(), A + k0 * lda + m0, lda, klen, mlen);
      } else {
        WidenBf16(scratch.a.get(), A + m0 * lda + k0, lda, mlen, klen);
      }
      if (trans_b) {
        WidenBf16(scratch.b.get(), B + n0 * ldb + k0, ldb, nlen, klen);
      } else {
        WidenBf16(scratch.b.get(), B + k0 * ldb + n0, ldb, klen, nlen);
      }
      sgemm(trans_a, trans_b, mlen, nlen, klen, alpha, scratch.a.get(), trans_a ? mlen : klen, scratch.b.get(),
            trans_b ? klen : nlen, k0 == 0 ? beta : 1.f, C + m0 * ldc + n0, ldc);
    }
  };
  ThreadPool& tp = pool ? *pool : ThreadPool::Default();
  if (num_tasks == 1 || tp.num_threads() == 1) {
    for (int64_t t = 0; t < num_tasks; ++t) run_tile(t);  // OpenBLAS threads parallelise each tile
    return;
  }
  ScopedBlasThreads single(1);
  tp.ParallelFor(num_tasks, 1, [&](int64_t begin, int64_t end, int) {
    for (int64_t t = begin; t < end; ++t) run_tile(t);
  });
}

void matmul_forward(float* out, const float* inp, const float* weight, int64_t N, int64_t C, int64_t OC) {
  sgemm(false, true, N, OC, C, 1.f, inp, C, weight, C, 0.f, out, OC);
}

void matmul_backward(float* dinp, float* dweight, const float* dout, const float* inp, const float* weight, int64_t N,
                     int64_t C, int64_t OC) {
  if (dinp != nullptr) sgemm(false, false, N, C, OC, 1.f, dout, OC, weight, C, 1.f, dinp, C);
  if (dweight != nullptr) sgemm(true, false, OC, C, N, 1.f, dout, OC, inp, C, 1.f, dweight, C);
}

void matmul_forward_bf16(float* out, const bf16_t* inp, const bf16_t* weight, int64_t N, int64_t C, int64_t OC,
                         ThreadPool* pool) {
  gemm_bf16(false, true, N, OC, C, 1.f, inp, C, weight, C, 0.f, out, OC, pool);
}

void matmul_backward_bf16(float* dinp, float* dweight, const bf16_t* dout, const bf16_t* inp, const bf16_t* weight,
                          int64_t N, int64_t C, int64_t OC, ThreadPool* pool) {
  if (dinp != nullptr) gemm_bf16(false, false, N, C, OC, 1.f, dout, OC, weight, C, 1.f, dinp, C, pool);
  if (dweight != nullptr) gemm_bf16(true, false, OC, C, N, 1.f, dout, OC, inp, C, 1.f, dweight, C, pool);
}

}  // namespace shoal::kernels::cpu
