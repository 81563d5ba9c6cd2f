// Every CUDA model op (kernels/cuda/ops.h) against its CPU twin on the same inputs. Skips cleanly without a
// CUDA device (label gpu).
#include "kernels/cuda/ops.h"

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <vector>

#include "kernels/cpu/adamw.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/clip.h"
#include "kernels/cpu/cross_entropy.h"
#include "kernels/cpu/embedding.h"
#include "kernels/cpu/ops_ref.h"
#include "kernels/cpu/permute.h"
#include "kernels/cpu/rmsnorm.h"
#include "kernels/cpu/rope.h"
#include "kernels/cpu/router.h"
#include "kernels/cpu/swiglu.h"
#include "kernels/cuda/gemm.h"
#include "kernels/device.h"
#include "tests/kernels/gradcheck.h"

namespace shoal::kernels {
namespace {

using testing::AllClose;
using testing::RandomInts;
using testing::RandomVecF;

#define CUDA_OK(expr)                                                               \
  do {                                                                              \
    cudaError_t e_ = (expr);                                                        \
    ASSERT_EQ(e_, cudaSuccess) << #expr << ": " << cudaGetErrorString(e_);          \
  } while (0)

// A device copy of a host vector, freed on destruction.
template <typename T>
class Dev {
 public:
  explicit Dev(const std::vector<T>& host) : n_(host.size()) {
    if (cudaMalloc(&p_, std::max<size_t>(1, n_) * sizeof(T)) != cudaSuccess) p_ = nullptr;
    if (p_ != nullptr && n_ > 0) cudaMemcpy(p_, host.data(), n_ * sizeof(T), cudaMemcpyHostToDevice);
  }
  explicit Dev(size_t n) : Dev(std::vector<T>(n)) {}
  ~Dev() { cudaFree(p_); }
  Dev(const Dev&) = delete;
  Dev& operator=(const Dev&) = delete;
  T* get() const { return p_; }
  std::vector<T> Host() const {
    std::vector<T> h(n_);
    if (n_ > 0) cudaMemcpy(h.data(), p_, n_ * sizeof(T), cudaMemcpyDeviceToHost);
    return h;
  }

 private:
  T* p_ = nullptr;
  size_t n_;
};

class OpsCudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device: " << CudaDeviceDescription();
    CUDA_OK(cudaStreamCreate(&stream_));
  }
  void TearDown() override {
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }
  void Sync() {
    CUDA_OK(cudaGetLastError());
    CUDA_OK(cudaStreamSynchronize(stream_));
  }
  cudaStream_t stream_ = nullptr;
};

TEST_F(OpsCudaTest, Embedding) {
  const int N = 1000, C = 96, V = 77;
  auto table = RandomVecF((size_t)V * C, 1);
  auto tok = RandomInts(N, 2, 0, V - 1);
  auto dout = RandomVecF((size_t)N * C, 3), dt0 = RandomVecF(table.size(), 4);
  std::vector<float> out((size_t)N * C), dt = dt0;
  embedding_forward(out.data(), tok.data(), table.data(), N, C, V);
  embedding_backward(dt.data(), dout.data(), tok.data(), N, C, V);
  Dev<float> d_table(table), d_out(out.size()), d_dout(dout), d_dt(dt0);
  Dev<int32_t> d_tok(tok);
  cuda::embedding_forward(d_out.get(), d_tok.get(), d_table.get(), N, C, V, stream_);
  cuda::embedding_backward(d_dt.get(), d_dout.get(), d_tok.get(), N, C, V, stream_);
  Sync();
  EXPECT_EQ(d_out.Host(), out);
  EXPECT_TRUE(AllClose(d_dt.Host(), dt, 1e-5, 1e-5));
}

TEST_F(OpsCudaTest, RmsNorm) {
  const int N = 300, C = 200;
  auto x = RandomVecF((size_t)N * C, 5, -3, 3), w = RandomVecF(C, 6, 0.5f, 1.5f), dout = RandomVecF(x.size(), 7);
  auto dx0 = RandomVecF(x.size(), 8), dw0 = RandomVecF(C, 9);
  std::vector<float> out(x.size()), rstd(N), dx = dx0, dw = dw0, scratch(rmsnorm_backward_scratch_floats(N, C));
  rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), N, C, 1e-6f);
  rmsnorm_backward(dx.data(), dw.data(), scratch.data(), dout.data(), rstd.data(), x.data(), w.data(), N, C);
  Dev<float> d_x(x), d_w(w), d_dout(dout), d_out(out.size()), d_rstd(N), d_dx(dx0), d_dw(dw0);
  Dev<float> d_scratch(cuda::rmsnorm_backward_scratch_floats(N, C));
  cuda::rmsnorm_forward(d_out.get(), d_rstd.get(), d_x.get(), d_w.get(), N, C, 1e-6f, stream_);
  cuda::rmsnorm_backward(d_dx.get(), d_dw.get(), d_scratch.get(), d_dout.get(), d_rstd.get(), d_x.get(), d_w.get(), N,
                         C, stream_);
  Sync();
  EXPECT_TRUE(AllClose(d_out.Host(), out, 1e-5, 1e-6));
  EXPECT_TRUE(AllClose(d_rstd.Host(), rstd, 1e-5, 0));
  EXPECT_TRUE(AllClose(d_dx.Host(), dx, 1e-4, 1e-5));
  EXPECT_TRUE(AllClose(d_dw.Host(), dw, 1e-4, 1e-4));
}

TEST_F(OpsCudaTest, Rope) {
  const int N = 500, NH = 3, D = 16, ld = 40, off = 24, P = 256;
  std::vector<float> inv(D / 2), cs((size_t)P * D);
  rope_inv_freq(inv.data(), D, 10000.0f, nullptr);
  rope_table(cs.data(), inv.data(), P, D);
  auto pos = RandomInts(N, 10, 0, P - 1);
  auto x = RandomVecF((size_t)N * NH * ld, 11);
  std::vector<float> out = x, back = x;
  rope_forward(out.data() + off, x.data() + off, pos.data(), cs.data(), N, NH, D, ld);
  rope_backward(back.data() + off, x.data() + off, pos.data(), cs.data(), N, NH, D, ld);
  Dev<float> d_x(x), d_out(x), d_back(x), d_cs(cs);
  Dev<int32_t> d_pos(pos);
  cuda::rope_forward(d_out.get() + off, d_x.get() + off, d_pos.get(), d_cs.get(), N, NH, D, ld, stream_);
  cuda::rope_backward(d_back.get() + off, d_x.get() + off, d_pos.get(), d_cs.get(), N, NH, D, ld, stream_);
  Sync();
  EXPECT_TRUE(AllClose(d_out.Host(), out, 1e-6, 1e-6));
  EXPECT_TRUE(AllClose(d_back.Host(), back, 1e-6, 1e-6));
}

TEST_F(OpsCudaTest, Attention) {
  struct Shape { int B, T, NH, Dqk, Dv; };
  for (Shape s : {Shape{2, 128, 4, 48, 32}, Shape{1, 70, 2, 96, 64}, Shape{1, 40, 1, 192, 128},
                  Shape{1, 33, 2, 256, 256}})
    for (bool with_seg : {false, true}) {
      SCOPED_TRACE(::testing::Message() << "T=" << s.T << " Dqk=" << s.Dqk << " Dv=" << s.Dv << " seg=" << with_seg);
      const size_t nq = (size_t)s.B * s.T * s.NH * s.Dqk, nv = (size_t)s.B * s.T * s.NH * s.Dv;
      const size_t nl = (size_t)s.B * s.NH * s.T;
      auto q = RandomVecF(nq, 12, -2, 2), k = RandomVecF(nq, 13, -2, 2), v = RandomVecF(nv, 14);
      auto dout = RandomVecF(nv, 15), dq0 = RandomVecF(nq, 16), dk0 = RandomVecF(nq, 17), dv0 = RandomVecF(nv, 18);
      std::vector<int32_t> seg((size_t)s.B * s.T);
      for (size_t i = 0; i < seg.size(); ++i) seg[i] = static_cast<int32_t>((i % s.T) * 3 / s.T);
      const int32_t* segp = with_seg ? seg.data() : nullptr;
      const float scale = 1.0f / std::sqrt((float)s.Dqk);
      std::vector<float> out(nv), lse(nl), dq = dq0, dk = dk0, dv = dv0;
      attention_forward(out.data(), lse.data(), q.data(), k.data(), v.data(), segp, s.B, s.T, s.NH, s.Dqk, s.Dv,
                        scale);
      attention_backward(dq.data(), dk.data(), dv.data(), dout.data(), out.data(), lse.data(), q.data(), k.data(),
                         v.data(), segp, s.B, s.T, s.NH, s.Dqk, s.Dv, scale);
      Dev<float> d_q(q), d_k(k), d_v(v), d_out(nv), d_lse(nl), d_dout(dout), d_dq(dq0), d_dk(dk0), d_dv(dv0);
      Dev<float> d_scratch(cuda::attention_backward_scratch_floats(s.B, s.T, s.NH));
      Dev<int32_t> d_seg(seg);
      const int32_t* dsegp = with_seg ? d_seg.get() : nullptr;
      cuda::attention_forward(d_out.get(), d_lse.get(), d_q.get(), d_k.get(), d_v.get(), dsegp, s.B, s.T, s.NH, s.Dqk,
                              s.Dv, scale, stream_);
      // The backward consumes the CPU forward's out/lse so that only the backward is compared.
      Dev<float> d_out_cpu(out), d_lse_cpu(lse);
      cuda::attention_backward(d_dq.get(), d_dk.get(), d_dv.get(), d_scratch.get(), d_dout.get(), d_out_cpu.get(),
                               d_lse_cpu.get(), d_q.get(), d_k.get(), d_v.get(), dsegp, s.B, s.T, s.NH, s.Dqk, s.Dv,
                               scale, stream_);
      Sync();
      EXPECT_TRUE(AllClose(d_out.Host(), out, 1e-4, 1e-5));
      EXPECT_TRUE(AllClose(d_lse.Host(), lse, 1e-5, 1e-5));
      EXPECT_TRUE(AllClose(d_dq.Host(), dq, 1e-3, 1e-4));
      EXPECT_TRUE(AllClose(d_dk.Host(), dk, 1e-3, 1e-4));
      EXPECT_TRUE(AllClose(d_dv.Host(), dv, 1e-3, 1e-4));
    }
}

TEST_F(OpsCudaTest, Swiglu) {
  const int N = 300, I = 70;
  auto gu = RandomVecF((size_t)N * 2 * I, 19, -8, 8), dout = RandomVecF((size_t)N * I, 20);
  auto d0 = RandomVecF(gu.size(), 21);
  std::vector<float> out((size_t)N * I), d = d0;
  swiglu_forward(out.data(), gu.data(), N, I);
  swiglu_backward(d.data(), dout.data(), gu.data(), N, I);
  Dev<float> d_gu(gu), d_out(out.size()), d_dout(dout), d_d(d0);
  cuda::swiglu_forward(d_out.get(), d_gu.get(), N, I, stream_);
  cuda::swiglu_backward(d_d.get(), d_dout.get(), d_gu.get(), N, I, stream_);
  Sync();
  EXPECT_TRUE(AllClose(d_out.Host(), out, 1e-5, 1e-6));
  EXPECT_TRUE(AllClose(d_d.Host(), d, 1e-5, 1e-6));
}

TEST_F(OpsCudaTest, Router) {
  const int B = 8, T = 64, N = B * T, E = 64, K = 6, G = 8, TG = 3;
  auto logits = RandomVecF((size_t)N * E, 22, -3, 3), bias = RandomVecF(E, 23, -0.05f, 0.05f);
  std::vector<float> s((size_t)N * E), w((size_t)N * K);
  std::vector<int32_t> idx((size_t)N * K);
  router_forward(s.data(), idx.data(), w.data(), logits.data(), bias.data(), N, E, K, G, TG, 2.5f);
  auto dw = RandomVecF(w.size(), 24), dl0 = RandomVecF(s.size(), 25);
  std::vector<float> dl = dl0;
  router_backward(dl.data(), dw.data(), s.data(), idx.data(), N, E, K, 2.5f);
  const float loss = router_balance_loss(dl.data(), s.data(), B, T, E, K, 1e-2f, 0.5f);
  std::vector<int32_t> loads(E, 0);
  router_count_loads(loads.data(), idx.data(), N, K, E);
  std::vector<float> b = bias;
  router_update_bias(b.data(), loads.data(), E, 1e-3f);

  Dev<float> d_logits(logits), d_bias(bias), d_s(s.size()), d_w(w.size()), d_dw(dw), d_dl(dl0), d_loss(1);
  Dev<float> d_scratch(cuda::router_balance_loss_scratch_floats(B, T));
  Dev<int32_t> d_idx(idx.size()), d_loads(std::vector<int32_t>(E, 0));
  cuda::router_forward(d_s.get(), d_idx.get(), d_w.get(), d_logits.get(), d_bias.get(), N, E, K, G, TG, 2.5f, stream_);
  Sync();
  EXPECT_TRUE(AllClose(d_s.Host(), s, 1e-6, 1e-7));
  EXPECT_EQ(d_idx.Host(), idx);
  EXPECT_TRUE(AllClose(d_w.Host(), w, 1e-5, 1e-6));
  // Backward from the CPU scores/selection, so that only the backward is compared.
  Dev<float> d_s_cpu(s);
  Dev<int32_t> d_idx_cpu(idx);
  cuda::router_backward(d_dl.get(), d_dw.get(), d_s_cpu.get(), d_idx_cpu.get(), N, E, K, 2.5f, stream_);
  cuda::router_balance_loss(d_loss.get(), d_dl.get(), d_scratch.get(), d_s_cpu.get(), B, T, E, K, 1e-2f, 0.5f,
                            stream_);
  cuda::router_count_loads(d_loads.get(), d_idx_cpu.get(), N, K, E, stream_);
  cuda::router_update_bias(d_bias.get(), d_loads.get(), E, 1e-3f, stream_);
  Sync();
  EXPECT_TRUE(AllClose(d_dl.Host(), dl, 1e-4, 1e-7));
  EXPECT_NEAR(d_loss.Host()[0], loss, 1e-5 * std::abs(loss));
  EXPECT_EQ(d_loads.Host(), loads);
  EXPECT_EQ(d_bias.Host(), b);
}

TEST_F(OpsCudaTest, Permute) {
  const int N = 3000, K = 3, E = 40, C = 48;
  auto idx = RandomInts((size_t)N * K, 26, 0, E - 1);
  std::vector<int32_t> off(E + 1), sorted((size_t)N * K), pos((size_t)N * K);
  moe_permute_plan(off.data(), sorted.data(), pos.data(), idx.data(), N, K, E);
  auto x = RandomVecF((size_t)N * C, 27), ys = RandomVecF((size_t)N * K * C, 28), w = RandomVecF((size_t)N * K, 29);
  auto dout = RandomVecF(x.size(), 30), dxs = RandomVecF(ys.size(), 31);
  auto dx0 = RandomVecF(x.size(), 32), out0 = RandomVecF(x.size(), 33), dys0 = RandomVecF(ys.size(), 34);
  auto dw0 = RandomVecF(w.size(), 35);
  std::vector<float> xs(ys.size()), dx = dx0, out = out0, dys = dys0, dw = dw0;
  moe_permute_forward(xs.data(), x.data(), sorted.data(), N, K, C);
  moe_permute_backward(dx.data(), dxs.data(), pos.data(), N, K, C);
  moe_unpermute_forward(out.data(), ys.data(), w.data(), pos.data(), N, K, C);
  moe_unpermute_backward(dys.data(), dw.data(), dout.data(), ys.data(), w.data(), pos.data(), N, K, C);

  Dev<int32_t> d_idx(idx), d_off(E + 1), d_sorted(sorted.size()), d_pos(pos.size());
  Dev<int32_t> d_scratch(cuda::moe_permute_plan_scratch_ints(N, K, E));
  Dev<float> d_x(x), d_ys(ys), d_w(w), d_dout(dout), d_dxs(dxs), d_xs(xs.size()), d_dx(dx0), d_out(out0);
  Dev<float> d_dys(dys0), d_dw(dw0);
  cuda::moe_permute_plan(d_off.get(), d_sorted.get(), d_pos.get(), d_scratch.get(), d_idx.get(), N, K, E, stream_);
  cuda::moe_permute_forward(d_xs.get(), d_x.get(), d_sorted.get(), N, K, C, stream_);
  cuda::moe_permute_backward(d_dx.get(), d_dxs.get(), d_pos.get(), N, K, C, stream_);
  cuda::moe_unpermute_forward(d_out.get(), d_ys.get(), d_w.get(), d_pos.get(), N, K, C, stream_);
  cuda::moe_unpermute_backward(d_dys.get(), d_dw.get(), d_dout.get(), d_ys.get(), d_w.get(), d_pos.get(), N, K, C,
                               stream_);
  Sync();
  EXPECT_EQ(d_off.Host(), off);
  EXPECT_EQ(d_sorted.Host(), sorted);  // stable: the exact same order
  EXPECT_EQ(d_pos.Host(), pos);
  EXPECT_EQ(d_xs.Host(), xs);
  EXPECT_TRUE(AllClose(d_dx.Host(), dx, 1e-6, 1e-6));
  EXPECT_TRUE(AllClose(d_out.Host(), out, 1e-5, 1e-6));
  EXPECT_TRUE(AllClose(d_dys.Host(), dys, 1e-6, 1e-6));
  EXPECT_TRUE(AllClose(d_dw.Host(), dw, 1e-5, 1e-5));
}

TEST_F(OpsCudaTest, CrossEntropy) {
  const int N = 300, C = 64, V = 500, chunk = 128;
  auto z = RandomVecF((size_t)N * C, 36), W = RandomVecF((size_t)V * C, 37, -0.3f, 0.3f);
  auto tgt = RandomInts(N, 38, -1, V - 1);
  auto dz0 = RandomVecF(z.size(), 39), dW0 = RandomVecF(W.size(), 40);
  std::vector<float> dz = dz0, dW = dW0, tl(N), scratch(cross_entropy_scratch_floats(V, chunk));
  const double loss = cross_entropy_forward_backward(dz.data(), dW.data(), tl.data(), scratch.data(), z.data(),
                                                     W.data(), tgt.data(), N, C, V, chunk, 0.01f);
  std::vector<float> logits((size_t)N * V);
  cross_entropy_forward(logits.data(), nullptr, nullptr, z.data(), W.data(), nullptr, N, C, V, chunk);

  auto blas = cuda::BlasContext::Create();
  ASSERT_TRUE(blas.ok()) << blas.status().ToString();
  Dev<float> d_z(z), d_W(W), d_dz(dz0), d_dW(dW0), d_tl(N), d_sum(1), d_scratch(cross_entropy_scratch_floats(V, chunk));
  Dev<float> d_logits(logits.size());
  Dev<int32_t> d_tgt(tgt);
  ASSERT_TRUE(cuda::cross_entropy_forward_backward(**blas, d_dz.get(), d_dW.get(), d_tl.get(), d_sum.get(),
                                                   d_scratch.get(), d_z.get(), d_W.get(), d_tgt.get(), N, C, V, chunk,
                                                   0.01f, stream_)
                  .ok());
  ASSERT_TRUE(cuda::cross_entropy_forward(**blas, d_logits.get(), nullptr, nullptr, nullptr, d_z.get(), d_W.get(),
                                          nullptr, N, C, V, chunk, stream_)
                  .ok());
  Sync();
  EXPECT_NEAR(d_sum.Host()[0], loss, 1e-5 * loss);
  EXPECT_TRUE(AllClose(d_tl.Host(), tl, 1e-4, 1e-5));
  EXPECT_TRUE(AllClose(d_dz.Host(), dz, 1e-4, 1e-6));
  EXPECT_TRUE(AllClose(d_dW.Host(), dW, 1e-4, 1e-6));
  EXPECT_TRUE(AllClose(d_logits.Host(), logits, 1e-4, 1e-5));
}

TEST_F(OpsCudaTest, AdamW) {
  const int n = 10000;
  auto p0 = RandomVecF(n, 41);
  std::vector<float> p = p0;
  std::vector<bf16_t> m(n, 0), v(n, 0);
  Dev<float> d_p(p0);
  Dev<bf16_t> d_m(m), d_v(v);
  for (int t = 1; t <= 5; ++t) {
    auto g = RandomVecF(n, 100 + t, -0.1f, 0.1f);
    adamw_update(p.data(), m.data(), v.data(), g.data(), n, t, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f);
    Dev<float> d_g(g);
    cuda::adamw_update(d_p.get(), d_m.get(), d_v.get(), d_g.get(), n, t, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, stream_);
    Sync();
  }
  EXPECT_TRUE(AllClose(d_p.Host(), p, 1e-6, 1e-6));
  auto dm = d_m.Host(), dv = d_v.Host();
  for (int i = 0; i < n; ++i) {
    EXPECT_LE(std::abs((int)dm[i] - (int)m[i]), 1) << i;
    EXPECT_LE(std::abs((int)dv[i] - (int)v[i]), 1) << i;
  }
}

TEST_F(OpsCudaTest, ClipByGlobalNorm) {
  auto a = RandomVecF(100000, 42), b = RandomVecF(33, 43);
  const float* bufs[] = {a.data(), b.data()};
  const int64_t sizes[] = {(int64_t)a.size(), (int64_t)b.size()};
  const double norm = global_norm(bufs, sizes, 2);
  Dev<float> d_a(a), d_b(b);
  Dev<double> d_ss(std::vector<double>{0.0});
  const float* dbufs[] = {d_a.get(), d_b.get()};
  float* dbufs_mut[] = {d_a.get(), d_b.get()};
  cuda::global_norm_squared(d_ss.get(), dbufs, sizes, 2, stream_);
  cuda::clip_by_global_norm(dbufs_mut, sizes, 2, d_ss.get(), 1.0f, stream_);
  Sync();
  EXPECT_NEAR(std::sqrt(d_ss.Host()[0]), norm, 1e-12 * norm);
  float* hb[] = {a.data(), b.data()};
  scale_buffers(hb, sizes, 2, clip_scale(norm, 1.0f));
  EXPECT_TRUE(AllClose(d_a.Host(), a, 1e-6, 0));
  EXPECT_TRUE(AllClose(d_b.Host(), b, 1e-6, 0));
}

}  // namespace
}  // namespace shoal::kernels
