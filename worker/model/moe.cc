#include "worker/model/moe.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "common/check.h"
#include "kernels/cpu/blas.h"
#include "kernels/cpu/permute.h"
#include "kernels/cpu/router.h"
#include "kernels/cpu/swiglu.h"

namespace shoal::model {

MoeFfn::MoeFfn(const ModelConfig& config, int64_t layer_idx, int64_t expert_begin, int64_t expert_end,
               GemmMode mode, float balance_alpha, double ep_capacity_factor)
    : c_(config),
      layer_idx_(layer_idx),
      e0_(expert_begin),
      e1_(expert_end),
      H_(config.hidden_size),
      E_(config.n_routed_experts),
      K_(config.num_experts_per_tok),
      Im_(config.moe_intermediate_size),
      mode_(mode),
      alpha_(balance_alpha),
      ep_capacity_factor_(ep_capacity_factor),
      El_(expert_end - expert_begin),
      loads_(static_cast<size_t>(config.n_routed_experts), 0) {
  if (El_ < E_) {
    // Unaligned ranges (memory planning only) size their buffers as the next EP size up; Model refuses to attach
    // an exchange to them.
    ep_size_ = (E_ + El_ - 1) / El_;
    ep_rank_ = e0_ / El_;
  }
  expert_counts_.assign(static_cast<size_t>(E_), 0);
  send_rows_.assign(static_cast<size_t>(ep_size_), 0);
  recv_rows_.assign(static_cast<size_t>(ep_size_), 0);
  regroup_fill_.assign(static_cast<size_t>(El_), 0);
  if (config.n_shared_experts > 0) {
    shared_ = std::make_unique<SwiGluMlp>(LayerPrefix(layer_idx) + "mlp.shared_experts.",
                                          "layers." + std::to_string(layer_idx) + ".shared",
                                          config.hidden_size, config.n_shared_experts * config.moe_intermediate_size,
                                          mode);
  }
}

void MoeFfn::Declare(LayerPlans& p) {
  const std::string pre = LayerPrefix(layer_idx_) + "mlp.";
  const int64_t N = p.max_tokens(), R = N * K_;
  gate_ = p.params->Tensor(pre + "gate.weight", {E_, H_});
  bias_ = p.params->Tensor(pre + "gate.e_score_correction_bias", {E_}, /*trainable=*/false);

  std::vector<ParamPart> gate_up_parts, down_parts;
  for (int64_t e = e0_; e < e1_; ++e) {
    const std::string x = pre + "experts." + std::to_string(e) + ".";
    gate_up_parts.push_back({x + "gate_proj.weight", {Im_, H_}});
    gate_up_parts.push_back({x + "up_proj.weight", {Im_, H_}});
    down_parts.push_back({x + "down_proj.weight", {H_, Im_}});
  }
  const std::string range = "[" + std::to_string(e0_) + ":" + std::to_string(e1_) + "]";
  experts_gate_up_.Declare(pre + "experts" + range + ".gate_up_proj",
                           p.params->Stack(pre + "experts" + range + ".gate_up_proj", gate_up_parts), El_, 2 * Im_,
                           H_, {Im_, Im_}, mode_, *p.cache);
  experts_down_.Declare(pre + "experts" + range + ".down_proj",
                        p.params->Stack(pre + "experts" + range + ".down_proj", down_parts), El_, H_, Im_, {}, mode_,
                        *p.cache);
  if (shared_) shared_->Declare(p);

  // Rows the held experts compute: all N·K rows, or what an EP rank can receive.
  int64_t rows = R;
  if (expert_parallel()) {
    cap_ = ep_size_ * N * std::min(K_, El_);
    if (ep_capacity_factor_ > 0) {
      cap_ = std::min(cap_, static_cast<int64_t>(std::ceil(ep_capacity_factor_ * static_cast<double>(R))));
    }
    rows = cap_;
  }
  p.linear_needs->Merge(experts_gate_up_.Needs(rows));
  p.linear_needs->Merge(experts_down_.Needs(rows));

  const std::string s = "layers." + std::to_string(layer_idx_) + ".moe.";
  BufferPlan& sv = *p.saved;
  BufferPlan& dg = *p.dgrad;
  BufferPlan& sc = *p.scratch;
  scores_ = sv.F32(s + "scores", Shape{N, E_});
  topk_idx_ = sv.I32(s + "topk_idx", Shape{N, K_});
  topk_weight_ = sv.F32(s + "topk_weight", Shape{N, K_});
  balance_loss_ = sv.F32(s + "balance_loss", Shape{2});  // one double
  offsets_ = sv.I32(s + "offsets", Shape{E_ + 1});
  sorted_rows_ = sv.I32(s + "sorted_rows", Shape{R});
  row_pos_ = sv.I32(s + "row_pos", Shape{R});
  ys_ = sv.F32(s + "ys", Shape{R, H_});
  shared_out_ = shared_ ? sv.F32(s + "shared_out", Shape{N, H_}) : nullptr;
  dlogits_ = dg.F32(s + "dlogits", Shape{N, E_});
  dweight_ = dg.F32(s + "dweight", Shape{N, K_});
  logits_ = sc.F32(s + "logits", Shape{N, E_});

  xs_ = gu_s_ = m_s_ = xe_ = gu_e_ = m_e_ = dys_ = dgu_s_ = dxs_ = dye_ = dgu_e_ = nullptr;
  xr_ = ye_ = yr_ = dyr_ = dxe_ = dxr_ = nullptr;
  recv_counts_ = local_offsets_ = nullptr;
  if (!expert_parallel()) {
    xs_ = sv.F32(s + "xs", Shape{R, H_});
    gu_s_ = sv.F32(s + "gate_up", Shape{R, 2 * Im_});
    m_s_ = sv.F32(s + "m", Shape{R, Im_});
    dys_ = dg.F32(s + "dys", Shape{R, H_});
    dgu_s_ = dg.F32(s + "dgate_up", Shape{R, 2 * Im_});
    dxs_ = dg.F32(s + "dxs", Shape{R, H_});
    dm_s_ = sc.F32(s + "dm", Shape{R, Im_});
    return;
  }
  const int64_t C = cap_;
  recv_counts_ = sv.I32(s + "recv_counts", Shape{ep_size_, El_});
  local_offsets_ = sv.I32(s + "local_offsets", Shape{El_ + 1});
  xe_ = sv.F32(s + "xe", Shape{C, H_});
  gu_e_ = sv.F32(s + "gate_up", Shape{C, 2 * Im_});
  m_e_ = sv.F32(s + "m", Shape{C, Im_});
  dye_ = dg.F32(s + "dye", Shape{C, H_});
  dgu_e_ = dg.F32(s + "dgate_up", Shape{C, 2 * Im_});
  dm_s_ = sc.F32(s + "dm", Shape{C, Im_});
  // Exchange buffers: the forward's and the backward's never live at once, so they share.
  xs_ = dys_ = sc.F32(s + "send", Shape{R, H_});        // dispatch / grad-dispatch send
  dxs_ = sc.F32(s + "grad_recv", Shape{R, H_});         // grad-combine receive
  xr_ = dyr_ = sc.F32(s + "recv", Shape{C, H_});        // (grad-)dispatch receive, per source
  ye_ = dxe_ = sc.F32(s + "expert_out", Shape{C, H_});  // expert-major outputs / input gradients
  yr_ = dxr_ = sc.F32(s + "back", Shape{C, H_});        // (grad-)combine send, per source
}

void MoeFfn::PrepareWeights() {
  experts_gate_up_.PrepareWeights();
  experts_down_.PrepareWeights();
  if (shared_) shared_->PrepareWeights();
}

double MoeFfn::balance_loss() const {
  double v;
  std::memcpy(&v, balance_loss_, sizeof(v));
  return v;
}

void MoeFfn::Route(const float* u, const StepContext& ctx) {
  const int n = static_cast<int>(ctx.N), E = static_cast<int>(E_), K = static_cast<int>(K_);
  // Router in fp32 whatever the precision (§3.2 step 1, §5.4).
  kernels::cpu::sgemm(false, true, ctx.N, E_, H_, 1.f, u, H_, gate_.w, H_, 0.f, logits_, E_);
  kernels::router_forward(scores_, topk_idx_, topk_weight_, logits_, bias_.w, n, E, K,
                          static_cast<int>(c_.n_group), static_cast<int>(c_.topk_group),
                          static_cast<float>(c_.routed_scaling_factor));
  const double bl = kernels::router_balance_loss(nullptr, scores_, ctx.B, ctx.T, E, K, alpha_, 0.f);
  std::memcpy(balance_loss_, &bl, sizeof(bl));
  if (ctx.training) kernels::router_count_loads(loads_.data(), topk_idx_, n, K, E);
  kernels::moe_permute_plan(offsets_, sorted_rows_, row_pos_, topk_idx_, n, K, E);
}

void MoeFfn::ComputeRowCounts() {
  for (int64_t e = 0; e < E_; ++e) expert_counts_[e] = offsets_[e + 1] - offsets_[e];
  for (int64_t r = 0; r < ep_size_; ++r) {
    const int64_t a = std::min(E_, r * El_), b = std::min(E_, (r + 1) * El_);
    send_rows_[r] = offsets_[b] - offsets_[a];
    int64_t sum = 0;
    for (int64_t j = 0; j < El_; ++j) sum += recv_counts_[r * El_ + j];
    recv_rows_[r] = sum;
  }
}

Status MoeFfn::CheckCapacity() const {
  int64_t total = 0;
  for (int64_t v : recv_rows_) total += v;
  if (total > cap_) {
    return ResourceExhaustedError("layer " + std::to_string(layer_idx_) + ": this EP rank receives " +
                                  std::to_string(total) + " rows for its experts, more than its capacity of " +
                                  std::to_string(cap_) + " (raise ModelOptions::ep_capacity_factor, 0 = worst case)");
  }
  return Status::OK();
}

void MoeFfn::Regroup(float* dst, const float* src, bool to_expert_major) {
  // Source-major: source s's block at Σ_{s'<s} recv_rows[s'], inside it local expert j at Σ_{j'<j} cnt[s][j'].
  // Expert-major: expert j's block at local_offsets[j], inside it source s at Σ_{s'<s} cnt[s'][j].
  std::vector<int64_t>& fill = regroup_fill_;
  for (int64_t j = 0; j < El_; ++j) fill[j] = local_offsets_[j];
  int64_t src_row = 0;
  for (int64_t s = 0; s < ep_size_; ++s) {
    for (int64_t j = 0; j < El_; ++j) {
      const int64_t n = recv_counts_[s * El_ + j];
      const size_t bytes = sizeof(float) * n * H_;
      if (to_expert_major) {
        std::memcpy(dst + fill[j] * H_, src + src_row * H_, bytes);
      } else {
        std::memcpy(dst + src_row * H_, src + fill[j] * H_, bytes);
      }
      fill[j] += n;
      src_row += n;
    }
  }
}

Status MoeFfn::Exchange(ExchangeKind kind, const float* send, const std::vector<int64_t>& send_rows, float* recv,
                        const std::vector<int64_t>& recv_rows, const std::function<void()>& overlap) {
  ExchangeRows x;
  x.kind = kind;
  x.layer = layer_idx_;
  x.width = H_;
  x.send = send;
  x.send_rows = send_rows;
  x.recv = recv;
  x.recv_rows = recv_rows;
  const ExchangeTicket t = ep_->StartRows(x);
  if (overlap) overlap();
  return ep_->Wait(t);
}

Status MoeFfn::Forward(float* out, const float* base, const float* u, const StepContext& ctx) {
  const int n = static_cast<int>(ctx.N), K = static_cast<int>(K_), h = static_cast<int>(H_);
  const int64_t R = ctx.N * K_;
  const LinearWorkspace& ws = *ctx.linear;
  Route(u, ctx);
  if (!expert_parallel()) {
    kernels::moe_permute_forward(xs_, u, sorted_rows_, n, K, h);
    experts_gate_up_.Forward(gu_s_, xs_, offsets_, ws);
    kernels::swiglu_forward(m_s_, gu_s_, static_cast<int>(R), static_cast<int>(Im_));
    experts_down_.Forward(ys_, m_s_, offsets_, ws);
    if (shared_) shared_->Forward(shared_out_, u, ctx);
  } else {
    CHECK(ep_ != nullptr) << "MoE layer " << layer_idx_ << ": expert parallel without an exchange";
    // Counts first (overlapped by the permutation), then the rows (overlapped by the shared expert's first half).
    for (int64_t e = 0; e < E_; ++e) expert_counts_[e] = offsets_[e + 1] - offsets_[e];
    const ExchangeTicket counts = ep_->StartCounts(
        layer_idx_, expert_counts_, std::span<int32_t>(recv_counts_, static_cast<size_t>(ep_size_ * El_)));
    kernels::moe_permute_forward(xs_, u, sorted_rows_, n, K, h);
    RETURN_IF_ERROR(ep_->Wait(counts));
    ComputeRowCounts();
    RETURN_IF_ERROR(CheckCapacity());
    local_offsets_[0] = 0;
    for (int64_t j = 0; j < El_; ++j) {
      int64_t sum = 0;
      for (int64_t s = 0; s < ep_size_; ++s) sum += recv_counts_[s * El_ + j];
      local_offsets_[j + 1] = static_cast<int32_t>(local_offsets_[j] + sum);
    }
    RETURN_IF_ERROR(Exchange(ExchangeKind::kDispatch, xs_, send_rows_, xr_, recv_rows_, [&] {
      if (shared_) shared_->ForwardUp(u, ctx);
    }));
    Regroup(xe_, xr_, /*to_expert_major=*/true);
    const int64_t rows = local_offsets_[El_];
    experts_gate_up_.Forward(gu_e_, xe_, local_offsets_, ws);
    kernels::swiglu_forward(m_e_, gu_e_, static_cast<int>(rows), static_cast<int>(Im_));
    experts_down_.Forward(ye_, m_e_, local_offsets_, ws);
    Regroup(yr_, ye_, /*to_expert_major=*/false);
    RETURN_IF_ERROR(Exchange(ExchangeKind::kCombine, yr_, recv_rows_, ys_, send_rows_, [&] {
      if (shared_) shared_->ForwardDown(shared_out_, ctx);
    }));
  }
  const int64_t total = ctx.N * H_;
  if (shared_) {
    for (int64_t i = 0; i < total; ++i) out[i] = base[i] + shared_out_[i];
  } else if (out != base) {
    std::memcpy(out, base, sizeof(float) * total);
  }
  kernels::moe_unpermute_forward(out, ys_, topk_weight_, row_pos_, n, K, h);
  return Status::OK();
}

void MoeFfn::ExpertsBackward(float* dx, const float* dy, const int32_t* offsets, const StepContext& ctx) {
  // dm = dy·W_down, dgu = SwiGLU'(dm), dx = dgu·W_gate_up; gu_s/m_s or gu_e/m_e by path.
  const LinearWorkspace& ws = *ctx.linear;
  const int64_t rows = offsets[El_];
  const float* gu = expert_parallel() ? gu_e_ : gu_s_;
  float* dgu = expert_parallel() ? dgu_e_ : dgu_s_;
  std::memset(dm_s_, 0, sizeof(float) * rows * Im_);  // the grouped GEMM accumulates
  experts_down_.BackwardInput(dm_s_, dy, offsets, ws);
  std::memset(dgu, 0, sizeof(float) * rows * 2 * Im_);
  kernels::swiglu_backward(dgu, dm_s_, gu, static_cast<int>(rows), static_cast<int>(Im_));
  std::memset(dx, 0, sizeof(float) * rows * H_);
  experts_gate_up_.BackwardInput(dx, dgu, offsets, ws);
}

void MoeFfn::ExpertsWeight(const float* dy, const float* x, const int32_t* offsets, const StepContext& ctx) {
  const LinearWorkspace& ws = *ctx.linear;
  experts_down_.BackwardWeight(dy, expert_parallel() ? m_e_ : m_s_, offsets, ws);
  experts_gate_up_.BackwardWeight(expert_parallel() ? dgu_e_ : dgu_s_, x, offsets, ws);
}

Status MoeFfn::BackwardInput(float* du, const float* dout, const StepContext& ctx) {
  const int n = static_cast<int>(ctx.N), K = static_cast<int>(K_), E = static_cast<int>(E_),
            h = static_cast<int>(H_);
  const int64_t R = ctx.N * K_;
  // Combine's gradient: dys (rows in xs order) and the gate values' gradient.
  std::memset(dys_, 0, sizeof(float) * R * H_);
  std::memset(dweight_, 0, sizeof(float) * ctx.N * K_);
  kernels::moe_unpermute_backward(dys_, dweight_, dout, ys_, topk_weight_, row_pos_, n, K, h);
  if (!expert_parallel()) {
    ExpertsBackward(dxs_, dys_, offsets_, ctx);
    if (shared_) shared_->BackwardInput(du, dout, ctx);
  } else {
    ComputeRowCounts();
    RETURN_IF_ERROR(Exchange(ExchangeKind::kGradDispatch, dys_, send_rows_, dyr_, recv_rows_, [&] {
      if (shared_) shared_->BackwardInput(du, dout, ctx);
    }));
    Regroup(dye_, dyr_, /*to_expert_major=*/true);
    ExpertsBackward(dxe_, dye_, local_offsets_, ctx);
    Regroup(dxr_, dxe_, /*to_expert_major=*/false);
    RETURN_IF_ERROR(Exchange(ExchangeKind::kGradCombine, dxr_, recv_rows_, dxs_, send_rows_, [&] {
      if (ctx.weight_grads_now) ExpertsWeight(dye_, xe_, local_offsets_, ctx);
    }));
  }
  // The permutation, then the router: gate values (Appendix A) and the balance loss, through the router GEMM.
  kernels::moe_permute_backward(du, dxs_, row_pos_, n, K, h);
  std::memset(dlogits_, 0, sizeof(float) * ctx.N * E_);
  kernels::router_backward(dlogits_, dweight_, scores_, topk_idx_, n, E, K,
                           static_cast<float>(c_.routed_scaling_factor));
  if (ctx.balance_grad_scale != 0.f) {
    kernels::router_balance_loss(dlogits_, scores_, ctx.B, ctx.T, E, K, alpha_, ctx.balance_grad_scale);
  }
  kernels::cpu::sgemm(false, false, ctx.N, H_, E_, 1.f, dlogits_, E_, gate_.w, H_, 1.f, du, H_);
  return Status::OK();
}

void MoeFfn::BackwardWeight(const float* u, const float* dout, const StepContext& ctx) {
  kernels::cpu::sgemm(true, false, E_, H_, ctx.N, 1.f, dlogits_, E_, u, H_, 1.f, gate_.g, H_);
  if (shared_) shared_->BackwardWeight(u, dout, ctx);
  if (!expert_parallel()) {
    ExpertsWeight(dys_, xs_, offsets_, ctx);
  } else if (!ctx.weight_grads_now) {
    ExpertsWeight(dye_, xe_, local_offsets_, ctx);
  }
}

void MoeFfn::ZeroLoads() { std::fill(loads_.begin(), loads_.end(), 0); }

void MoeFfn::UpdateBias(float gamma) {
  kernels::router_update_bias(bias_.w, loads_.data(), static_cast<int>(E_), gamma);
}

}  // namespace shoal::model
