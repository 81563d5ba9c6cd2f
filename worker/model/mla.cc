#include "worker/model/mla.h"

#include <algorithm>
#include <cstring>

#include "common/thread_pool.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/rmsnorm.h"
#include "kernels/cpu/rope.h"

namespace shoal::model {

namespace {

// fn(t) for every token t, split over the default pool in chunks of ~64 KiB of work.
template <typename Fn>
void ForTokens(int64_t N, int64_t bytes_per_token, Fn&& fn) {
  const int64_t grain = std::max<int64_t>(1, (int64_t{64} << 10) / std::max<int64_t>(1, bytes_per_token));
  ThreadPool::Default().ParallelFor(N, grain, [&](int64_t b, int64_t e, int) {
    for (int64_t t = b; t < e; ++t) fn(t);
  });
}

}  // namespace

MlaAttention::MlaAttention(const ModelConfig& config, int64_t layer_idx, GemmMode mode)
    : c_(config),
      layer_idx_(layer_idx),
      mode_(mode),
      H_(config.hidden_size),
      nh_(config.num_attention_heads),
      dn_(config.qk_nope_head_dim),
      dr_(config.qk_rope_head_dim),
      dqk_(config.qk_head_dim()),
      dv_(config.v_head_dim),
      dc_(config.kv_lora_rank),
      dqr_(config.q_lora_rank) {}

void MlaAttention::Declare(LayerPlans& p) {
  const std::string pre = LayerPrefix(layer_idx_);
  const std::string a = pre + "self_attn.";
  const int64_t N = p.max_tokens();
  ParamPlan& params = *p.params;
  BufferPlan& cache = *p.cache;

  w_in_norm_ = params.Tensor(pre + "input_layernorm.weight", {H_});
  if (c_.has_q_lora()) {
    q_a_.Declare(a + "q_a_proj", params.Tensor(a + "q_a_proj.weight", {dqr_, H_}), dqr_, H_, {}, mode_, cache);
    w_q_norm_ = params.Tensor(a + "q_a_layernorm.weight", {dqr_});
    q_b_.Declare(a + "q_b_proj", params.Tensor(a + "q_b_proj.weight", {nh_ * dqk_, dqr_}), nh_ * dqk_, dqr_, {},
                 mode_, cache);
  } else {
    q_proj_.Declare(a + "q_proj", params.Tensor(a + "q_proj.weight", {nh_ * dqk_, H_}), nh_ * dqk_, H_, {}, mode_,
                    cache);
  }
  kv_a_.Declare(a + "kv_a_proj_with_mqa", params.Tensor(a + "kv_a_proj_with_mqa.weight", {dc_ + dr_, H_}),
                dc_ + dr_, H_, {}, mode_, cache);
  w_kv_norm_ = params.Tensor(a + "kv_a_layernorm.weight", {dc_});
  kv_b_.Declare(a + "kv_b_proj", params.Tensor(a + "kv_b_proj.weight", {nh_ * (dn_ + dv_), dc_}), nh_ * (dn_ + dv_),
                dc_, {}, mode_, cache);
  o_proj_.Declare(a + "o_proj", params.Tensor(a + "o_proj.weight", {H_, nh_ * dv_}), H_, nh_ * dv_, {}, mode_, cache);
  if (c_.has_q_lora()) {
    p.linear_needs->Merge(q_a_.Needs(N));
    p.linear_needs->Merge(q_b_.Needs(N));
  } else {
    p.linear_needs->Merge(q_proj_.Needs(N));
  }
  for (const Linear* l : {&kv_a_, &kv_b_, &o_proj_}) p.linear_needs->Merge(l->Needs(N));

  const std::string s = "layers." + std::to_string(layer_idx_) + ".attn.";
  BufferPlan& sv = *p.saved;
  x_norm_ = sv.F32(s + "x_norm", Shape{N, H_});
  rstd_in_ = sv.F32(s + "rstd_in", Shape{N});
  cq_raw_ = rstd_q_ = cq_ = nullptr;
  if (c_.has_q_lora()) {
    cq_raw_ = sv.F32(s + "cq_raw", Shape{N, dqr_});
    rstd_q_ = sv.F32(s + "rstd_q", Shape{N});
    cq_ = sv.F32(s + "cq", Shape{N, dqr_});
  }
  q_ = sv.F32(s + "q", Shape{N, nh_ * dqk_});
  latent_ = sv.F32(s + "latent", Shape{N, dc_});
  rstd_kv_ = sv.F32(s + "rstd_kv", Shape{N});
  ckv_ = sv.F32(s + "ckv", Shape{N, dc_});
  k_ = sv.F32(s + "k", Shape{N, nh_ * dqk_});
  v_ = sv.F32(s + "v", Shape{N, nh_ * dv_});
  o_ = sv.F32(s + "o", Shape{N, nh_ * dv_});
  lse_ = sv.F32(s + "lse", Shape{p.max_batch, nh_, p.max_seq});

  BufferPlan& dg = *p.dgrad;
  d_out_ = dg.F32(s + "d_out", Shape{N, H_});
  dq_ = dg.F32(s + "dq", Shape{N, nh_ * dqk_});
  dcq_raw_ = c_.has_q_lora() ? dg.F32(s + "dcq_raw", Shape{N, dqr_}) : nullptr;
  dkv_ = dg.F32(s + "dkv", Shape{N, nh_ * (dn_ + dv_)});
  dkv_raw_ = dg.F32(s + "dkv_raw", Shape{N, dc_ + dr_});

  BufferPlan& sc = *p.scratch;
  kv_raw_ = sc.F32(s + "kv_raw", Shape{N, dc_ + dr_});
  kv_ = sc.F32(s + "kv", Shape{N, nh_ * (dn_ + dv_)});
  do_ = sc.F32(s + "do", Shape{N, nh_ * dv_});
  dk_ = sc.F32(s + "dk", Shape{N, nh_ * dqk_});
  dvv_ = sc.F32(s + "dv", Shape{N, nh_ * dv_});
  dcq_ = c_.has_q_lora() ? sc.F32(s + "dcq", Shape{N, dqr_}) : nullptr;
  dckv_ = sc.F32(s + "dckv", Shape{N, dc_});
  dlatent_ = sc.F32(s + "dlatent", Shape{N, dc_});
  dx_norm_ = sc.F32(s + "dx_norm", Shape{N, H_});
  const int64_t widest = std::max({H_, dc_, dqr_});
  rms_scratch_ =
      sc.F32(s + "rms_scratch", Shape{static_cast<int64_t>(kernels::rmsnorm_backward_scratch_floats(
                                    static_cast<int>(N), static_cast<int>(widest)))});
}

void MlaAttention::PrepareWeights() {
  if (c_.has_q_lora()) {
    q_a_.PrepareWeights();
    q_b_.PrepareWeights();
  } else {
    q_proj_.PrepareWeights();
  }
  kv_a_.PrepareWeights();
  kv_b_.PrepareWeights();
  o_proj_.PrepareWeights();
}

void MlaAttention::Forward(float* h_mid, const float* x, const StepContext& ctx) {
  const int64_t N = ctx.N;
  const int n = static_cast<int>(N);
  const float eps = static_cast<float>(c_.rms_norm_eps);
  const LinearWorkspace& ws = *ctx.linear;

  kernels::rmsnorm_forward(x_norm_, rstd_in_, x, w_in_norm_.w, n, static_cast<int>(H_), eps);
  if (c_.has_q_lora()) {
    q_a_.Forward(cq_raw_, dqr_, x_norm_, H_, N, ws);
    kernels::rmsnorm_forward(cq_, rstd_q_, cq_raw_, w_q_norm_.w, n, static_cast<int>(dqr_), eps);
    q_b_.Forward(q_, nh_ * dqk_, cq_, dqr_, N, ws);
  } else {
    q_proj_.Forward(q_, nh_ * dqk_, x_norm_, H_, N, ws);
  }
  kernels::rope_forward(q_ + dn_, q_ + dn_, ctx.positions, ctx.rope_cos_sin, n, static_cast<int>(nh_),
                        static_cast<int>(dr_), static_cast<int>(dqk_));

  const int64_t lkv = dc_ + dr_;
  kv_a_.Forward(kv_raw_, lkv, x_norm_, H_, N, ws);
  for (int64_t t = 0; t < N; ++t) std::memcpy(latent_ + t * dc_, kv_raw_ + t * lkv, sizeof(float) * dc_);
  kernels::rmsnorm_forward(ckv_, rstd_kv_, latent_, w_kv_norm_.w, n, static_cast<int>(dc_), eps);
  // The rope key: rotated in place inside kv_raw, then shared by every head of k.
  kernels::rope_forward(kv_raw_ + dc_, kv_raw_ + dc_, ctx.positions, ctx.rope_cos_sin, n, 1, static_cast<int>(dr_),
                        static_cast<int>(lkv));
  const int64_t lkvb = dn_ + dv_;
  kv_b_.Forward(kv_, nh_ * lkvb, ckv_, dc_, N, ws);
  ForTokens(N, 8 * nh_ * (dqk_ + dv_), [&](int64_t t) {
    for (int64_t h = 0; h < nh_; ++h) {
      const float* src = kv_ + (t * nh_ + h) * lkvb;
      float* kd = k_ + (t * nh_ + h) * dqk_;
      std::memcpy(kd, src, sizeof(float) * dn_);
      std::memcpy(kd + dn_, kv_raw_ + t * lkv + dc_, sizeof(float) * dr_);
      std::memcpy(v_ + (t * nh_ + h) * dv_, src + dn_, sizeof(float) * dv_);
    }
  });
  kernels::attention_forward(o_, lse_, q_, k_, v_, ctx.segment_ids, ctx.B, ctx.T, static_cast<int>(nh_),
                             static_cast<int>(dqk_), static_cast<int>(dv_), static_cast<float>(c_.softmax_scale()));
  o_proj_.Forward(h_mid, H_, o_, nh_ * dv_, N, ws);
  for (int64_t i = 0; i < N * H_; ++i) h_mid[i] += x[i];
}

void MlaAttention::BackwardInput(float* g, const float* x, const StepContext& ctx) {
  const int64_t N = ctx.N;
  const int n = static_cast<int>(N);
  const LinearWorkspace& ws = *ctx.linear;
  const int64_t lkv = dc_ + dr_, lkvb = dn_ + dv_;

  std::memcpy(d_out_, g, sizeof(float) * N * H_);
  o_proj_.BackwardInput(do_, d_out_, H_, N, ws, /*accumulate=*/false);

  std::memset(dq_, 0, sizeof(float) * N * nh_ * dqk_);
  std::memset(dk_, 0, sizeof(float) * N * nh_ * dqk_);
  std::memset(dvv_, 0, sizeof(float) * N * nh_ * dv_);
  kernels::attention_backward(dq_, dk_, dvv_, do_, o_, lse_, q_, k_, v_, ctx.segment_ids, ctx.B, ctx.T,
                              static_cast<int>(nh_), static_cast<int>(dqk_), static_cast<int>(dv_),
                              static_cast<float>(c_.softmax_scale()));
  kernels::rope_backward(dq_ + dn_, dq_ + dn_, ctx.positions, ctx.rope_cos_sin, n, static_cast<int>(nh_),
                         static_cast<int>(dr_), static_cast<int>(dqk_));

  // dkv (k_nope | v per head) and the rope key's gradient summed over heads, then un-rotated.
  ForTokens(N, 8 * nh_ * (dqk_ + dv_), [&](int64_t t) {
    float* dkr = dkv_raw_ + t * lkv + dc_;
    std::memset(dkr, 0, sizeof(float) * dr_);
    for (int64_t h = 0; h < nh_; ++h) {
      const float* dkh = dk_ + (t * nh_ + h) * dqk_;
      float* dst = dkv_ + (t * nh_ + h) * lkvb;
      std::memcpy(dst, dkh, sizeof(float) * dn_);
      std::memcpy(dst + dn_, dvv_ + (t * nh_ + h) * dv_, sizeof(float) * dv_);
      for (int64_t j = 0; j < dr_; ++j) dkr[j] += dkh[dn_ + j];
    }
  });
  kernels::rope_backward(dkv_raw_ + dc_, dkv_raw_ + dc_, ctx.positions, ctx.rope_cos_sin, n, 1,
                         static_cast<int>(dr_), static_cast<int>(lkv));

  kv_b_.BackwardInput(dckv_, dkv_, nh_ * lkvb, N, ws, /*accumulate=*/false);
  std::memset(dlatent_, 0, sizeof(float) * N * dc_);
  kernels::rmsnorm_backward(dlatent_, w_kv_norm_.g, rms_scratch_, dckv_, rstd_kv_, latent_, w_kv_norm_.w, n,
                            static_cast<int>(dc_));
  for (int64_t t = 0; t < N; ++t) std::memcpy(dkv_raw_ + t * lkv, dlatent_ + t * dc_, sizeof(float) * dc_);

  kv_a_.BackwardInput(dx_norm_, dkv_raw_, lkv, N, ws, /*accumulate=*/false);
  if (c_.has_q_lora()) {
    q_b_.BackwardInput(dcq_, dq_, nh_ * dqk_, N, ws, /*accumulate=*/false);
    std::memset(dcq_raw_, 0, sizeof(float) * N * dqr_);
    kernels::rmsnorm_backward(dcq_raw_, w_q_norm_.g, rms_scratch_, dcq_, rstd_q_, cq_raw_, w_q_norm_.w, n,
                              static_cast<int>(dqr_));
    q_a_.BackwardInput(dx_norm_, dcq_raw_, dqr_, N, ws);
  } else {
    q_proj_.BackwardInput(dx_norm_, dq_, nh_ * dqk_, N, ws);
  }
  kernels::rmsnorm_backward(g, w_in_norm_.g, rms_scratch_, dx_norm_, rstd_in_, x, w_in_norm_.w, n,
                            static_cast<int>(H_));
}

void MlaAttention::BackwardWeight(const StepContext& ctx) {
  const int64_t N = ctx.N;
  const LinearWorkspace& ws = *ctx.linear;
  o_proj_.BackwardWeight(d_out_, H_, o_, nh_ * dv_, N, ws);
  kv_b_.BackwardWeight(dkv_, nh_ * (dn_ + dv_), ckv_, dc_, N, ws);
  kv_a_.BackwardWeight(dkv_raw_, dc_ + dr_, x_norm_, H_, N, ws);
  if (c_.has_q_lora()) {
    q_b_.BackwardWeight(dq_, nh_ * dqk_, cq_, dqr_, N, ws);
    q_a_.BackwardWeight(dcq_raw_, dqr_, x_norm_, H_, N, ws);
  } else {
    q_proj_.BackwardWeight(dq_, nh_ * dqk_, x_norm_, H_, N, ws);
  }
}

}  // namespace shoal::model
