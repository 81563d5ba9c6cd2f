// Model: one micro-batch's forward and backward (reference/deepseek-v3.md §1.1, §4, Appendix A).
#include <algorithm>
#include <cmath>
#include <cstring>

#include "common/thread_pool.h"
#include "kernels/cpu/blas.h"

#include "kernels/cpu/cross_entropy.h"
#include "kernels/cpu/embedding.h"
#include "kernels/cpu/rmsnorm.h"
#include "worker/model/model.h"
#include "worker/model/model_impl.h"

namespace shoal::model {

namespace {

Status CheckIds(const int32_t* ids, int64_t n, int32_t lo, int64_t hi, const char* what) {
  for (int64_t i = 0; i < n; ++i) {
    if (ids[i] < lo || ids[i] >= hi) {
      return InvalidArgumentError(std::string("micro-batch: ") + what + "[" + std::to_string(i) + "] = " +
                                  std::to_string(ids[i]) + " is outside [" + std::to_string(lo) + ", " +
                                  std::to_string(hi) + ")");
    }
  }
  return Status::OK();
}

template <typename Impl>
double BalanceLoss(const Impl& m) {
  double sum = 0;
  for (const auto& block : m.blocks) {
    if (block->moe()) sum += block->moe()->balance_loss();
  }
  if (m.mtp && m.ran_mtp) sum += m.mtp->block->moe()->balance_loss();
  return sum;
}

int64_t CountTargets(const int32_t* targets, int64_t n) {
  if (targets == nullptr) return 0;
  int64_t c = 0;
  for (int64_t i = 0; i < n; ++i) c += targets[i] >= 0 ? 1 : 0;
  return c;
}

// The fused cross-entropy of kernels/cpu/cross_entropy.h with a weight per row on the gradient:
// dz += scale·w_n·(softmax − onehot)·W, dW += Σ_n scale·w_n·(softmax − onehot)ᵀ·z_n. Returns Σ_n CE_n (unweighted).
double WeightedCrossEntropy(float* dz, float* dW, float* scratch, float* row_loss, const float* z, const float* W,
                            const int32_t* targets, const float* weights, int64_t N, int64_t C, int64_t V,
                            int64_t chunk, float scale) {
  double total = 0;
  for (int64_t r0 = 0; r0 < N; r0 += chunk) {
    const int64_t rows = std::min(chunk, N - r0);
    kernels::cpu::sgemm(false, true, rows, V, C, 1.f, z + r0 * C, C, W, C, 0.f, scratch, V);
    ThreadPool::Default().ParallelFor(rows, 1, [&](int64_t b, int64_t e, int) {
      for (int64_t r = b; r < e; ++r) {
        float* row = scratch + r * V;
        const int32_t tgt = targets[r0 + r];
        if (tgt < 0) {
          row_loss[r] = 0;
          std::fill(row, row + V, 0.f);
          continue;
        }
        const float mx = *std::max_element(row, row + V);
        double sum = 0;
        for (int64_t v = 0; v < V; ++v) sum += std::exp(static_cast<double>(row[v] - mx));
        const float lse = mx + static_cast<float>(std::log(sum));
        row_loss[r] = lse - row[tgt];
        const float g = scale * weights[r0 + r];
        for (int64_t v = 0; v < V; ++v) row[v] = std::exp(row[v] - lse) * g;
        row[tgt] -= g;
      }
    });
    for (int64_t r = 0; r < rows; ++r) total += row_loss[r];
    kernels::cpu::sgemm(false, false, rows, C, V, 1.f, scratch, V, W, C, 1.f, dz + r0 * C, C);
    kernels::cpu::sgemm(true, false, V, C, rows, 1.f, scratch, V, z + r0 * C, C, 1.f, dW, C);
  }
  return total;
}

void CopyColumns(float* dst, const float* src, int64_t rows, int64_t cols, int64_t ld_dst, int64_t ld_src) {
  for (int64_t r = 0; r < rows; ++r) std::memcpy(dst + r * ld_dst, src + r * ld_src, sizeof(float) * cols);
}

}  // namespace

Status Model::CheckBatch(const MicroBatch& b, bool needs_targets) const {
  const Impl& m = *impl_;
  if (b.B <= 0 || b.T <= 0 || b.B > options_.max_batch || b.T > options_.max_seq) {
    return InvalidArgumentError("micro-batch of [" + std::to_string(b.B) + ", " + std::to_string(b.T) +
                                "] tokens does not fit the model's activation arena of [" +
                                std::to_string(options_.max_batch) + ", " + std::to_string(options_.max_seq) +
                                "] (ModelOptions max_batch, max_seq)");
  }
  const int64_t N = static_cast<int64_t>(b.B) * b.T, V = config_.vocab_size;
  if (options_.has_embedding) {
    if (b.inputs == nullptr) return InvalidArgumentError("micro-batch: inputs are missing");
    RETURN_IF_ERROR(CheckIds(b.inputs, N, 0, V, "inputs"));
  }
  if (options_.has_head) {
    if (needs_targets && b.targets == nullptr) return InvalidArgumentError("micro-batch: targets are missing");
    if (b.targets != nullptr) RETURN_IF_ERROR(CheckIds(b.targets, N, -1, V, "targets"));
  }
  if (m.mtp && b.mtp_inputs != nullptr) {
    RETURN_IF_ERROR(CheckIds(b.mtp_inputs, N, 0, V, "mtp_inputs"));
    if (needs_targets && b.mtp_targets == nullptr) {
      return InvalidArgumentError("micro-batch: mtp_targets are missing (mtp_inputs are given)");
    }
    if (b.mtp_targets != nullptr) RETURN_IF_ERROR(CheckIds(b.mtp_targets, N, -1, V, "mtp_targets"));
  }
  if (b.positions != nullptr) RETURN_IF_ERROR(CheckIds(b.positions, N, 0, m.rope_positions, "positions"));
  if (b.target_weights != nullptr) {
    for (int64_t i = 0; i < N; ++i) {
      if (!std::isfinite(b.target_weights[i])) {
        return InvalidArgumentError("micro-batch: target_weights[" + std::to_string(i) + "] is not finite");
      }
    }
  }
  return Status::OK();
}

void Model::SetUpStep(const MicroBatch& b, bool training, float balance_scale) {
  Impl& m = *impl_;
  StepContext& ctx = m.ctx;
  ctx.B = b.B;
  ctx.T = b.T;
  ctx.N = static_cast<int64_t>(b.B) * b.T;
  if (b.positions != nullptr) {
    ctx.positions = b.positions;
  } else {
    for (int64_t i = 0; i < ctx.N; ++i) m.default_positions[i] = static_cast<int32_t>(i % b.T);
    ctx.positions = m.default_positions;
  }
  ctx.segment_ids = b.segment_ids;
  ctx.rope_cos_sin = m.rope.data();
  ctx.linear = &m.linear;
  ctx.training = training;
  ctx.balance_grad_scale = balance_scale;
}

Status Model::CheckExchange() const {
  const Impl& m = *impl_;
  if (options_.expert_end - options_.expert_begin < config_.n_routed_experts && m.exchange == nullptr) {
    return FailedPreconditionError("model holds routed experts [" + std::to_string(options_.expert_begin) + ", " +
                                   std::to_string(options_.expert_end) + ") of " +
                                   std::to_string(config_.n_routed_experts) +
                                   ": an expert-parallel model needs its EP group's exchange (SetExpertExchange) "
                                   "before it runs");
  }
  return Status::OK();
}

Status Model::RunForward(const MicroBatch& b, const float* hidden_in, float* hidden_out) {
  Impl& m = *impl_;
  m.have_forward = false;
  const StepContext& ctx = m.ctx;
  const int64_t N = ctx.N, H = config_.hidden_size, V = config_.vocab_size;
  const int n = static_cast<int>(N), h = static_cast<int>(H), v = static_cast<int>(V);
  const float eps = static_cast<float>(config_.rms_norm_eps);

  for (auto& block : m.blocks) block->PrepareWeights();
  if (m.mtp) {
    m.mtp->block->PrepareWeights();
    m.mtp->eh_proj.PrepareWeights();
  }
  if (m.head_bf16 != nullptr) RoundRowsToBf16(m.head_bf16, m.head.w, V, H, H);

  if (options_.has_embedding) {
    kernels::embedding_forward(m.hs[0], b.inputs, m.embed.w, n, h, v);
  } else {
    std::memcpy(m.hs[0], hidden_in, sizeof(float) * N * H);
  }
  for (size_t i = 0; i < m.blocks.size(); ++i) RETURN_IF_ERROR(m.blocks[i]->Forward(m.hs[i + 1], m.hs[i], ctx));
  const float* last = m.hs[m.blocks.size()];
  if (!options_.has_head) {
    std::memcpy(hidden_out, last, sizeof(float) * N * H);
    m.have_forward = true;
    return Status::OK();
  }
  kernels::rmsnorm_forward(m.h0n, m.rstd_final, last, m.final_norm.w, n, h, eps);
  m.ran_mtp = m.mtp != nullptr && b.mtp_inputs != nullptr;
  if (m.ran_mtp) {
    MtpModule& t = *m.mtp;
    const float* table = options_.has_embedding ? m.embed.w : t.embed_copy.w;
    kernels::embedding_forward(t.emb, b.mtp_inputs, table, n, h, v);
    // h' = eh_proj · [enorm(Emb(x_{i+1})) ; hnorm(h0_i)]: embedding first (§4.1).
    kernels::rmsnorm_forward(t.norm_out, t.rstd_e, t.emb, t.enorm.w, n, h, eps);
    CopyColumns(t.cat, t.norm_out, N, H, 2 * H, H);
    kernels::rmsnorm_forward(t.norm_out, t.rstd_h, m.h0n, t.hnorm.w, n, h, eps);
    CopyColumns(t.cat + H, t.norm_out, N, H, 2 * H, H);
    t.eh_proj.Forward(t.h_in, H, t.cat, 2 * H, N, m.linear);
    RETURN_IF_ERROR(t.block->Forward(t.h_out, t.h_in, ctx));
    kernels::rmsnorm_forward(t.z, t.rstd_sh, t.h_out, t.shared_norm.w, n, h, eps);
  }
  m.have_forward = true;
  return Status::OK();
}

double Model::HeadLoss(const float* z, const int32_t* targets, const float* weights, float* dz, float scale,
                       float* logits_out) {
  Impl& m = *impl_;
  const int64_t N = m.ctx.N, H = config_.hidden_size, V = config_.vocab_size;
  const float* zz = z;
  const float* w = m.head.w;
  if (m.head_bf16 != nullptr) {  // the head in bf16 (bf16 and fp8 precisions, §5.4)
    RoundRowsToBf16(m.z_round, z, N, H, H);
    zz = m.z_round;
    w = m.head_bf16;
  }
  const int n = static_cast<int>(N), h = static_cast<int>(H), v = static_cast<int>(V);
  if (dz != nullptr && weights != nullptr) {
    return WeightedCrossEntropy(dz, m.head.g, m.ce_scratch, m.ce_row_loss, zz, w, targets, weights, N, H, V,
                                m.ce_chunk, scale);
  }
  if (dz != nullptr) {
    return kernels::cross_entropy_forward_backward(dz, m.head.g, nullptr, m.ce_scratch, zz, w, targets, n, h, v,
                                                   m.ce_chunk, scale);
  }
  if (targets == nullptr && logits_out == nullptr) return 0.0;
  return kernels::cross_entropy_forward(logits_out, nullptr, logits_out ? nullptr : m.ce_scratch, zz, w, targets, n,
                                        h, v, m.ce_chunk);
}

Result<StepLosses> Model::RunBackward(const MicroBatch& b, const LossScales& scales, const float* dhidden_out,
                                      float* dhidden_in, bool weights_now) {
  Impl& m = *impl_;
  StepContext& ctx = m.ctx;
  ctx.balance_grad_scale = scales.balance;
  ctx.weight_grads_now = weights_now;
  const int64_t N = ctx.N, H = config_.hidden_size, V = config_.vocab_size;
  const int n = static_cast<int>(N), h = static_cast<int>(H), v = static_cast<int>(V);
  StepLosses losses;
  float* g = m.g;

  if (options_.has_head) {
    std::memset(m.d_h0n, 0, sizeof(float) * N * H);
    if (m.ran_mtp) {
      MtpModule& t = *m.mtp;
      std::memset(t.dz, 0, sizeof(float) * N * H);
      if (b.mtp_targets != nullptr) {
        losses.mtp_sum = HeadLoss(t.z, b.mtp_targets, nullptr, t.dz, scales.mtp, nullptr);
        losses.mtp_count = CountTargets(b.mtp_targets, N);
      }
      std::memset(t.g, 0, sizeof(float) * N * H);
      kernels::rmsnorm_backward(t.g, t.shared_norm.g, m.rms_scratch, t.dz, t.rstd_sh, t.h_out, t.shared_norm.w, n, h);
      RETURN_IF_ERROR(t.block->BackwardInput(t.g, t.h_in, ctx));
      if (weights_now) t.block->BackwardWeight(ctx);
      t.eh_proj.BackwardInput(t.dcat, t.g, H, N, m.linear, /*accumulate=*/false);
      if (weights_now) t.eh_proj.BackwardWeight(t.g, H, t.cat, 2 * H, N, m.linear);
      // The embedding half: enorm, then the lookup of x_{i+1} into the (shared) embedding.
      CopyColumns(t.d_half, t.dcat, N, H, H, 2 * H);
      std::memset(t.d_emb, 0, sizeof(float) * N * H);
      kernels::rmsnorm_backward(t.d_emb, t.enorm.g, m.rms_scratch, t.d_half, t.rstd_e, t.emb, t.enorm.w, n, h);
      float* table_grad = options_.has_embedding ? m.embed.g : t.embed_copy.g;
      kernels::embedding_backward(table_grad, t.d_emb, b.mtp_inputs, n, h, v);
      // The hidden half: hnorm, into the gradient of model.norm's output.
      CopyColumns(t.d_half, t.dcat + H, N, H, H, 2 * H);
      kernels::rmsnorm_backward(m.d_h0n, t.hnorm.g, m.rms_scratch, t.d_half, t.rstd_h, m.h0n, t.hnorm.w, n, h);
    }
    if (b.targets != nullptr) {
      losses.main_sum = HeadLoss(m.h0n, b.targets, b.target_weights, m.d_h0n, scales.main, nullptr);
      losses.main_count = CountTargets(b.targets, N);
    }
    std::memset(g, 0, sizeof(float) * N * H);
    kernels::rmsnorm_backward(g, m.final_norm.g, m.rms_scratch, m.d_h0n, m.rstd_final, m.hs[m.blocks.size()],
                              m.final_norm.w, n, h);
  } else {
    std::memcpy(g, dhidden_out, sizeof(float) * N * H);
  }
  for (size_t i = m.blocks.size(); i-- > 0;) {
    RETURN_IF_ERROR(m.blocks[i]->BackwardInput(g, m.hs[i], ctx));
    if (weights_now) m.blocks[i]->BackwardWeight(ctx);
  }
  if (options_.has_embedding) {
    kernels::embedding_backward(m.embed.g, g, b.inputs, n, h, v);
  } else {
    std::memcpy(dhidden_in, g, sizeof(float) * N * H);
  }
  losses.balance = BalanceLoss(m);
  return losses;
}

Result<StepLosses> Model::ForwardBackward(const MicroBatch& batch, const LossScales& scales) {
  if (!options_.has_embedding || !options_.has_head) {
    return FailedPreconditionError("ForwardBackward needs the embedding and the head; a pipeline stage runs "
                                   "ForwardStage / BackwardStage");
  }
  RETURN_IF_ERROR(CheckBatch(batch, /*needs_targets=*/true));
  RETURN_IF_ERROR(CheckExchange());
  SetUpStep(batch, /*training=*/true, scales.balance);
  RETURN_IF_ERROR(RunForward(batch, nullptr, nullptr));
  return RunBackward(batch, scales, nullptr, nullptr, /*weights_now=*/true);
}

Result<StepLosses> Model::Forward(const MicroBatch& batch, float* logits_out, float* mtp_logits_out) {
  if (!options_.has_embedding || !options_.has_head) {
    return FailedPreconditionError("Forward needs the embedding and the head; a pipeline stage runs ForwardStage");
  }
  RETURN_IF_ERROR(CheckBatch(batch, /*needs_targets=*/false));
  RETURN_IF_ERROR(CheckExchange());
  SetUpStep(batch, /*training=*/false, 0.f);
  RETURN_IF_ERROR(RunForward(batch, nullptr, nullptr));
  Impl& m = *impl_;
  if (mtp_logits_out != nullptr && !m.ran_mtp) {
    return InvalidArgumentError("Forward: MTP logits need a model with MTP layers and mtp_inputs");
  }
  StepLosses losses;
  losses.main_sum = HeadLoss(m.h0n, batch.targets, nullptr, nullptr, 1.f, logits_out);
  losses.main_count = CountTargets(batch.targets, m.ctx.N);
  if (m.ran_mtp) {
    losses.mtp_sum = HeadLoss(m.mtp->z, batch.mtp_targets, nullptr, nullptr, 1.f, mtp_logits_out);
    losses.mtp_count = CountTargets(batch.mtp_targets, m.ctx.N);
  }
  losses.balance = BalanceLoss(m);
  return losses;
}

Status Model::ForwardStage(const MicroBatch& batch, const float* hidden_in, float* hidden_out, bool training) {
  if ((hidden_in == nullptr) != options_.has_embedding || (hidden_out == nullptr) != options_.has_head) {
    return InvalidArgumentError("ForwardStage: hidden_in must be given iff the stage has no embedding, hidden_out "
                                "iff it has no head");
  }
  RETURN_IF_ERROR(CheckBatch(batch, /*needs_targets=*/false));
  if (impl_->mtp && batch.mtp_inputs == nullptr) {
    return InvalidArgumentError("ForwardStage: mtp_inputs are missing (the stage holds the MTP layers)");
  }
  RETURN_IF_ERROR(CheckExchange());
  SetUpStep(batch, training, 0.f);
  return RunForward(batch, hidden_in, hidden_out);
}

Result<StepLosses> Model::BackwardStage(const MicroBatch& batch, const LossScales& scales, const float* dhidden_out,
                                        float* dhidden_in) {
  if ((dhidden_out == nullptr) != options_.has_head || (dhidden_in == nullptr) != options_.has_embedding) {
    return InvalidArgumentError("BackwardStage: dhidden_out must be given iff the stage has no head, dhidden_in "
                                "iff it has no embedding");
  }
  if (!impl_->have_forward || batch.B != impl_->ctx.B || batch.T != impl_->ctx.T) {
    return FailedPreconditionError("BackwardStage: run ForwardStage on this micro-batch first");
  }
  return RunBackward(batch, scales, dhidden_out, dhidden_in, /*weights_now=*/!options_.defer_weight_grads);
}

void Model::BackwardWeightStage() {
  Impl& m = *impl_;
  if (!options_.defer_weight_grads) return;
  if (m.ran_mtp) {
    m.mtp->block->BackwardWeight(m.ctx);
    m.mtp->eh_proj.BackwardWeight(m.mtp->g, config_.hidden_size, m.mtp->cat, 2 * config_.hidden_size, m.ctx.N,
                                  m.linear);
  }
  for (size_t i = m.blocks.size(); i-- > 0;) m.blocks[i]->BackwardWeight(m.ctx);
}

}  // namespace shoal::model
