#include "worker/model/inference.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <unordered_map>

#include "kernels/cpu/blas.h"
#include "kernels/cpu/rmsnorm.h"
#include "kernels/cpu/rope.h"
#include "kernels/cpu/router.h"
#include "kernels/cpu/swiglu.h"
#include "worker/model/layer_context.h"
#include "worker/model/model_impl.h"

namespace shoal::model {

using kernels::cpu::sgemm;

struct Decoder::Layer {
  int64_t idx = 0;
  bool moe = false;
  const float *in_norm = nullptr, *q_a = nullptr, *q_norm = nullptr, *q_b = nullptr, *q_proj = nullptr;
  const float *kv_a = nullptr, *kv_norm = nullptr, *kv_b = nullptr, *o_proj = nullptr, *post_norm = nullptr;
  const float *gate_up = nullptr, *down = nullptr;                    // dense MLP ([2I, H], [H, I])
  const float *router = nullptr, *bias = nullptr;                     // MoE
  const float *experts_gate_up = nullptr, *experts_down = nullptr;    // [E, 2I_m, H], [E, H, I_m]
  const float *shared_gate_up = nullptr, *shared_down = nullptr;
  float* cache = nullptr;  // [max_batch, max_len, d_c + d_R]
};

namespace {

// Extend and MtpExtend run at most this many rows per pass.
constexpr int64_t kExtendChunk = 16;

// y[rows, out] = alpha · x[rows, in] · W[out, in]ᵀ + beta · y.
void Gemm(float* y, const float* x, const float* w, int64_t rows, int64_t in, int64_t out, float alpha = 1.f,
          float beta = 0.f) {
  sgemm(false, true, rows, out, in, alpha, x, in, w, in, beta, y, out);
}

}  // namespace

Decoder::Decoder(Model& model, int64_t max_batch, int64_t max_len)
    : model_(model), c_(model.config()), max_batch_(max_batch), max_len_(max_len) {}

Decoder::~Decoder() = default;

Result<std::unique_ptr<Decoder>> Decoder::Create(Model& model, int64_t max_batch, int64_t max_len) {
  const ModelConfig& c = model.config();
  const ModelOptions& o = model.options();
  if (!o.has_embedding || !o.has_head || o.layer_begin != 0 || o.layer_end < c.num_hidden_layers ||
      o.expert_begin != 0 || o.expert_end != c.n_routed_experts) {
    return FailedPreconditionError("Decoder: the model must hold the embedding, the head, every main layer and "
                                   "every expert");
  }
  if (max_batch <= 0 || max_len <= 0) return InvalidArgumentError("Decoder: max_batch and max_len must be positive");
  std::unique_ptr<Decoder> d(new Decoder(model, max_batch, max_len));
  std::unordered_map<std::string, const float*> w;
  for (const NamedTensor& t : model.Parameters()) w[t.name] = t.data;
  auto get = [&](const std::string& name) -> const float* {
    auto it = w.find(name);
    return it == w.end() ? nullptr : it->second;
  };
  const int64_t H = c.hidden_size, Im = c.moe_intermediate_size, I = c.intermediate_size;
  const int64_t lc = c.kv_lora_rank + c.qk_rope_head_dim;
  d->cache_.assign(static_cast<size_t>(c.num_hidden_layers * max_batch * max_len * lc), 0.f);
  d->embed_ = get("model.embed_tokens.weight");
  d->final_norm_ = get("model.norm.weight");
  d->head_ = get("lm_head.weight");
  // One decoder layer's weights (main layers and the MTP layer alike).
  auto build = [&](int64_t l) -> Result<std::unique_ptr<Layer>> {
    auto layer = std::make_unique<Layer>();
    const std::string p = LayerPrefix(l), a = p + "self_attn.";
    layer->idx = l;
    layer->moe = c.is_moe_layer(l);
    layer->in_norm = get(p + "input_layernorm.weight");
    layer->q_a = get(a + "q_a_proj.weight");
    layer->q_norm = get(a + "q_a_layernorm.weight");
    layer->q_b = get(a + "q_b_proj.weight");
    layer->q_proj = get(a + "q_proj.weight");
    layer->kv_a = get(a + "kv_a_proj_with_mqa.weight");
    layer->kv_norm = get(a + "kv_a_layernorm.weight");
    layer->kv_b = get(a + "kv_b_proj.weight");
    layer->o_proj = get(a + "o_proj.weight");
    layer->post_norm = get(p + "post_attention_layernorm.weight");
    // The model stores gate_proj|up_proj back to back and all experts stacked (worker/model/mlp.h, moe.h).
    bool stacked = true;
    if (layer->moe) {
      layer->router = get(p + "mlp.gate.weight");
      layer->bias = get(p + "mlp.gate.e_score_correction_bias");
      layer->experts_gate_up = get(p + "mlp.experts.0.gate_proj.weight");
      layer->experts_down = get(p + "mlp.experts.0.down_proj.weight");
      for (int64_t e = 0; e < c.n_routed_experts; ++e) {
        const std::string x = p + "mlp.experts." + std::to_string(e) + ".";
        stacked = stacked && get(x + "gate_proj.weight") == layer->experts_gate_up + e * 2 * Im * H &&
                  get(x + "up_proj.weight") == layer->experts_gate_up + (e * 2 + 1) * Im * H &&
                  get(x + "down_proj.weight") == layer->experts_down + e * H * Im;
      }
      if (c.n_shared_experts > 0) {
        layer->shared_gate_up = get(p + "mlp.shared_experts.gate_proj.weight");
        layer->shared_down = get(p + "mlp.shared_experts.down_proj.weight");
        stacked = stacked && get(p + "mlp.shared_experts.up_proj.weight") ==
                                 layer->shared_gate_up + c.n_shared_experts * Im * H;
      }
    } else {
      layer->gate_up = get(p + "mlp.gate_proj.weight");
      layer->down = get(p + "mlp.down_proj.weight");
      stacked = stacked && get(p + "mlp.up_proj.weight") == layer->gate_up + I * H;
    }
    if (!stacked) return InternalError("Decoder: layer " + std::to_string(l) + "'s MLP weights are not stacked");
    return layer;
  };
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    ASSIGN_OR_RETURN(auto layer, build(l));
    layer->cache = d->cache_.data() + l * max_batch * max_len * lc;
    d->layers_.push_back(std::move(layer));
  }
  // The (first) MTP layer, when the model holds it.
  const int64_t L = c.num_hidden_layers;
  const std::string mp = LayerPrefix(L);
  if (c.num_nextn_predict_layers > 0 && get(mp + "eh_proj.weight") != nullptr) {
    ASSIGN_OR_RETURN(d->mtp_, build(L));
    d->mtp_enorm_ = get(mp + "enorm.weight");
    d->mtp_hnorm_ = get(mp + "hnorm.weight");
    d->mtp_eh_proj_ = get(mp + "eh_proj.weight");
    d->mtp_shared_norm_ = get(mp + "shared_head.norm.weight");
    if (d->mtp_enorm_ == nullptr || d->mtp_hnorm_ == nullptr || d->mtp_shared_norm_ == nullptr) {
      return InternalError("Decoder: the MTP layer " + std::to_string(L) + " lacks its norms");
    }
    d->mtp_cache_.assign(static_cast<size_t>(max_len * lc), 0.f);
    d->mtp_->cache = d->mtp_cache_.data();
  }
  d->rope_positions_ = std::max<int64_t>(c.max_position_embeddings, max_len);
  d->rope_ = BuildRopeTable(c, d->rope_positions_);

  d->rows_ = std::max<int64_t>(max_batch, kExtendChunk);
  const int64_t B = d->rows_, nh = c.num_attention_heads, V = c.vocab_size;
  const int64_t widest = std::max({2 * I, 2 * c.n_shared_experts * Im, 2 * Im});
  d->x_.resize(B * H);
  d->xn_.resize(B * H);
  d->tmp_.resize(B * H);
  d->q_a_.resize(B * std::max<int64_t>(1, c.q_lora_rank));
  d->q_.resize(B * nh * c.qk_head_dim());
  d->kv_a_.resize(B * lc);
  d->qhat_.resize(B * nh * lc);
  d->scores_.resize(nh * max_len);
  d->ohat_.resize(B * nh * c.kv_lora_rank);
  d->o_.resize(B * nh * c.v_head_dim);
  d->gate_up_.resize(B * widest);
  d->m_.resize(B * widest / 2);
  d->router_.resize(2 * B * c.n_routed_experts);
  d->topw_.resize(B * c.num_experts_per_tok);
  d->topk_.resize(B * c.num_experts_per_tok);
  d->rstd_.resize(B);
  d->pos_.resize(B);
  d->seq_.resize(B);
  if (d->mtp_) d->cat_.resize(B * 2 * H);
  (void)V;
  return d;
}

int64_t Decoder::cache_bytes() const { return static_cast<int64_t>(cache_.size() * sizeof(float)); }

void Decoder::Reset() {
  len_ = 0;
  batch_ = 0;
  mtp_len_ = 0;
}

void Decoder::Truncate(int64_t len) { len_ = std::clamp<int64_t>(len, 0, len_); }

void Decoder::MtpTruncate(int64_t len) { mtp_len_ = std::clamp<int64_t>(len, 0, mtp_len_); }

Status Decoder::CheckTokens(const int32_t* tokens, int n) const {
  for (int b = 0; b < n; ++b) {
    if (tokens[b] < 0 || tokens[b] >= c_.vocab_size) {
      return InvalidArgumentError("Decoder: token " + std::to_string(tokens[b]) + " outside the vocabulary");
    }
  }
  return Status::OK();
}

void Decoder::LayerRows(Layer& l, int n) {
  const int64_t H = c_.hidden_size;
  const int h = static_cast<int>(H);
  const float eps = static_cast<float>(c_.rms_norm_eps);
  kernels::rmsnorm_forward(xn_.data(), rstd_.data(), x_.data(), l.in_norm, n, h, eps);
  Attention(l, tmp_.data(), xn_.data(), n);
  for (int64_t i = 0; i < n * H; ++i) x_[i] += tmp_[i];
  kernels::rmsnorm_forward(xn_.data(), rstd_.data(), x_.data(), l.post_norm, n, h, eps);
  Ffn(l, tmp_.data(), xn_.data(), n);
  for (int64_t i = 0; i < n * H; ++i) x_[i] += tmp_[i];
}

void Decoder::MainRows(int n, float* logits, float* normed_hidden) {
  const int64_t H = c_.hidden_size;
  for (auto& layer : layers_) LayerRows(*layer, n);
  kernels::rmsnorm_forward(xn_.data(), rstd_.data(), x_.data(), final_norm_, n, static_cast<int>(H),
                           static_cast<float>(c_.rms_norm_eps));
  if (normed_hidden != nullptr) std::memcpy(normed_hidden, xn_.data(), sizeof(float) * n * H);
  Gemm(logits, xn_.data(), head_, n, H, c_.vocab_size);
}

Status Decoder::Extend(const int32_t* tokens, int n, float* logits, float* normed_hidden) {
  if (n <= 0) return InvalidArgumentError("Decoder::Extend: no tokens");
  if (len_ > 0 && batch_ != 1) {
    return InvalidArgumentError("Decoder::Extend: one sequence only (the cache holds " + std::to_string(batch_) + ")");
  }
  if (len_ + n > max_len_) {
    return FailedPreconditionError("Decoder::Extend: " + std::to_string(n) + " more tokens do not fit the KV cache (" +
                                   std::to_string(len_) + " of " + std::to_string(max_len_) + " used)");
  }
  RETURN_IF_ERROR(CheckTokens(tokens, n));
  batch_ = 1;
  const int64_t H = c_.hidden_size, V = c_.vocab_size;
  for (int done = 0; done < n;) {
    const int m = static_cast<int>(std::min<int64_t>(rows_, n - done));
    for (int i = 0; i < m; ++i) {
      std::memcpy(x_.data() + i * H, embed_ + static_cast<int64_t>(tokens[done + i]) * H, sizeof(float) * H);
      seq_[i] = 0;
      pos_[i] = static_cast<int32_t>(len_ + i);
    }
    MainRows(m, logits + done * V, normed_hidden ? normed_hidden + done * H : nullptr);
    len_ += m;
    done += m;
  }
  return Status::OK();
}

Status Decoder::MtpExtend(const float* normed_hidden, const int32_t* next_tokens, int n, float* logits) {
  if (!mtp_) return FailedPreconditionError("Decoder: the model has no MTP layer");
  if (n <= 0) return InvalidArgumentError("Decoder::MtpExtend: no rows");
  if (mtp_len_ + n > max_len_) return FailedPreconditionError("Decoder::MtpExtend: the MTP cache is full");
  RETURN_IF_ERROR(CheckTokens(next_tokens, n));
  const int64_t H = c_.hidden_size, V = c_.vocab_size;
  const int h = static_cast<int>(H);
  const float eps = static_cast<float>(c_.rms_norm_eps);
  for (int done = 0; done < n;) {
    const int m = static_cast<int>(std::min<int64_t>(rows_, n - done));
    // h' = eh_proj · [enorm(Emb(x_{j+1})) ; hnorm(h_j)]: embedding first, as in training (model_step.cc).
    for (int i = 0; i < m; ++i) {
      std::memcpy(tmp_.data() + i * H, embed_ + static_cast<int64_t>(next_tokens[done + i]) * H, sizeof(float) * H);
      seq_[i] = 0;
      pos_[i] = static_cast<int32_t>(mtp_len_ + i);
    }
    kernels::rmsnorm_forward(xn_.data(), rstd_.data(), tmp_.data(), mtp_enorm_, m, h, eps);
    for (int i = 0; i < m; ++i) std::memcpy(cat_.data() + i * 2 * H, xn_.data() + i * H, sizeof(float) * H);
    kernels::rmsnorm_forward(xn_.data(), rstd_.data(), normed_hidden + done * H, mtp_hnorm_, m, h, eps);
    for (int i = 0; i < m; ++i) std::memcpy(cat_.data() + i * 2 * H + H, xn_.data() + i * H, sizeof(float) * H);
    Gemm(x_.data(), cat_.data(), mtp_eh_proj_, m, 2 * H, H);
    LayerRows(*mtp_, m);
    kernels::rmsnorm_forward(xn_.data(), rstd_.data(), x_.data(), mtp_shared_norm_, m, h, eps);
    Gemm(logits + done * V, xn_.data(), head_, m, H, V);
    mtp_len_ += m;
    done += m;
  }
  return Status::OK();
}

Status Decoder::Step(const int32_t* tokens, int B, float* logits, float* normed_hidden) {
  if (B <= 0 || B > max_batch_ || (len_ > 0 && B != batch_)) {
    return InvalidArgumentError("Decoder::Step: batch of " + std::to_string(B) + " (max " +
                                std::to_string(max_batch_) + (len_ > 0 ? ", current " + std::to_string(batch_) : "") +
                                ")");
  }
  if (len_ >= max_len_) {
    return FailedPreconditionError("Decoder::Step: the KV cache is full (" + std::to_string(max_len_) +
                                   " tokens); Reset() it");
  }
  RETURN_IF_ERROR(CheckTokens(tokens, B));
  batch_ = B;
  const int64_t H = c_.hidden_size;
  for (int b = 0; b < B; ++b) {
    std::memcpy(x_.data() + b * H, embed_ + static_cast<int64_t>(tokens[b]) * H, sizeof(float) * H);
    seq_[b] = b;
    pos_[b] = static_cast<int32_t>(len_);
  }
  MainRows(B, logits, normed_hidden);
  ++len_;
  return Status::OK();
}

// Absorbed MLA (§2.5) for rows b = 0..B-1: row b is position pos_[b] of sequence seq_[b] and attends to that
// sequence's cached positions 0..pos_[b] (its own included, written here first).
void Decoder::Attention(Layer& l, float* out, const float* xn, int B) {
  const int64_t H = c_.hidden_size, nh = c_.num_attention_heads, dn = c_.qk_nope_head_dim;
  const int64_t dr = c_.qk_rope_head_dim, dqk = c_.qk_head_dim(), dv = c_.v_head_dim, dc = c_.kv_lora_rank;
  const int64_t lc = dc + dr, dq = c_.q_lora_rank;
  const float eps = static_cast<float>(c_.rms_norm_eps), scale = static_cast<float>(c_.softmax_scale());
  float* q = q_.data();
  if (c_.has_q_lora()) {
    Gemm(q_a_.data(), xn, l.q_a, B, H, dq);
    kernels::rmsnorm_forward(q_a_.data(), rstd_.data(), q_a_.data(), l.q_norm, B, static_cast<int>(dq), eps);
    Gemm(q, q_a_.data(), l.q_b, B, dq, nh * dqk);
  } else {
    Gemm(q, xn, l.q_proj, B, H, nh * dqk);
  }
  kernels::rope_forward(q + dn, q + dn, pos_.data(), rope_.data(), B, static_cast<int>(nh), static_cast<int>(dr),
                        static_cast<int>(dqk));
  // Cache this token's normalised latent and rotated rope key.
  Gemm(kv_a_.data(), xn, l.kv_a, B, H, lc);
  for (int b = 0; b < B; ++b) {
    float* slot = l.cache + (static_cast<int64_t>(seq_[b]) * max_len_ + pos_[b]) * lc;
    float r;
    kernels::rmsnorm_forward(slot, &r, kv_a_.data() + b * lc, l.kv_norm, 1, static_cast<int>(dc), eps);
    kernels::rope_forward(slot + dc, kv_a_.data() + b * lc + dc, pos_.data() + b, rope_.data(), 1, 1,
                          static_cast<int>(dr), static_cast<int>(dr));
  }
  // q̂ = [W^UKᵀ q^C ; q^R] per head, laid out like a cache row so one GEMM scores both parts.
  const int64_t lkvb = dn + dv;
  for (int64_t hd = 0; hd < nh; ++hd) {
    sgemm(false, false, B, dc, dn, 1.f, q + hd * dqk, nh * dqk, l.kv_b + hd * lkvb * dc, dc, 0.f,
          qhat_.data() + hd * lc, nh * lc);
    for (int b = 0; b < B; ++b) {
      std::memcpy(qhat_.data() + (b * nh + hd) * lc + dc, q + b * nh * dqk + hd * dqk + dn, sizeof(float) * dr);
    }
  }
  for (int b = 0; b < B; ++b) {
    const float* cache = l.cache + static_cast<int64_t>(seq_[b]) * max_len_ * lc;
    const int64_t n = static_cast<int64_t>(pos_[b]) + 1;
    float* s = scores_.data();
    sgemm(false, true, nh, n, lc, scale, qhat_.data() + b * nh * lc, lc, cache, lc, 0.f, s, n);
    for (int64_t hd = 0; hd < nh; ++hd) {  // softmax over the n visible positions, in fp32
      float* row = s + hd * n;
      const float mx = *std::max_element(row, row + n);
      double sum = 0;
      for (int64_t j = 0; j < n; ++j) sum += (row[j] = std::exp(row[j] - mx));
      const float inv = static_cast<float>(1.0 / sum);
      for (int64_t j = 0; j < n; ++j) row[j] *= inv;
    }
    sgemm(false, false, nh, dc, n, 1.f, s, n, cache, lc, 0.f, ohat_.data() + b * nh * dc, dc);
  }
  // o_h = W^UV_h ô_h, then o_proj.
  for (int64_t hd = 0; hd < nh; ++hd) {
    sgemm(false, true, B, dv, dc, 1.f, ohat_.data() + hd * dc, nh * dc, l.kv_b + (hd * lkvb + dn) * dc, dc, 0.f,
          o_.data() + hd * dv, nh * dv);
  }
  Gemm(out, o_.data(), l.o_proj, B, nh * dv, H);
}

void Decoder::Mlp(const float* gate_up_w, const float* down_w, int64_t inter, float* out, const float* u, int rows,
                  bool accumulate, float scale) {
  const int64_t H = c_.hidden_size;
  Gemm(gate_up_.data(), u, gate_up_w, rows, H, 2 * inter);
  kernels::swiglu_forward(m_.data(), gate_up_.data(), rows, static_cast<int>(inter));
  Gemm(out, m_.data(), down_w, rows, inter, H, scale, accumulate ? 1.f : 0.f);
}

void Decoder::Ffn(Layer& l, float* out, const float* u, int B) {
  const int64_t H = c_.hidden_size, E = c_.n_routed_experts, K = c_.num_experts_per_tok, Im = c_.moe_intermediate_size;
  if (!l.moe) {
    Mlp(l.gate_up, l.down, c_.intermediate_size, out, u, B, false, 1.f);
    return;
  }
  float* logits = router_.data();
  float* scores = router_.data() + B * E;
  Gemm(logits, u, l.router, B, H, E);
  kernels::router_forward(scores, topk_.data(), topw_.data(), logits, l.bias, B, static_cast<int>(E),
                          static_cast<int>(K), static_cast<int>(c_.n_group), static_cast<int>(c_.topk_group),
                          static_cast<float>(c_.routed_scaling_factor));
  if (l.shared_gate_up != nullptr) {
    Mlp(l.shared_gate_up, l.shared_down, c_.n_shared_experts * Im, out, u, B, false, 1.f);
  } else {
    std::memset(out, 0, sizeof(float) * B * H);
  }
  for (int b = 0; b < B; ++b) {
    for (int64_t k = 0; k < K; ++k) {
      const int64_t e = topk_[b * K + k];
      Mlp(l.experts_gate_up + e * 2 * Im * H, l.experts_down + e * H * Im, Im, out + b * H, u + b * H, 1, true,
          topw_[b * K + k]);
    }
  }
}

void SampleTokens(int32_t* tokens, const float* logits, int B, int64_t V, float temperature, std::mt19937_64& rng) {
  for (int b = 0; b < B; ++b) {
    const float* row = logits + b * V;
    const int64_t best = std::max_element(row, row + V) - row;
    if (temperature <= 0.f) {
      tokens[b] = static_cast<int32_t>(best);
      continue;
    }
    // Inverse-CDF sampling in double over exp((l - max) / T).
    double total = 0;
    for (int64_t v = 0; v < V; ++v) total += std::exp((row[v] - row[best]) / static_cast<double>(temperature));
    const double u = std::uniform_real_distribution<double>(0.0, total)(rng);
    double acc = 0;
    int64_t pick = V - 1;
    for (int64_t v = 0; v < V; ++v) {
      acc += std::exp((row[v] - row[best]) / static_cast<double>(temperature));
      if (u < acc) {
        pick = v;
        break;
      }
    }
    tokens[b] = static_cast<int32_t>(pick);
  }
}

Status Generate(Decoder& decoder, const int32_t* prompts, int B, int P, int num_new, float temperature,
                uint64_t seed, int32_t* out) {
  if (P <= 0 || num_new <= 0 || P + num_new - 1 > decoder.max_len()) {
    return InvalidArgumentError("Generate: a prompt of " + std::to_string(P) + " tokens and " +
                                std::to_string(num_new) + " new ones do not fit the decoder's " +
                                std::to_string(decoder.max_len()) + " positions");
  }
  decoder.Reset();
  std::mt19937_64 rng(seed);
  const int64_t V = decoder.vocab_size();
  std::vector<float> logits(static_cast<size_t>(B) * V);
  std::vector<int32_t> step(B);
  for (int t = 0; t < P; ++t) {
    for (int b = 0; b < B; ++b) step[b] = prompts[b * P + t];
    RETURN_IF_ERROR(decoder.Step(step.data(), B, logits.data()));
  }
  for (int i = 0; i < num_new; ++i) {
    SampleTokens(step.data(), logits.data(), B, V, temperature, rng);
    for (int b = 0; b < B; ++b) out[b * num_new + i] = step[b];
    if (i + 1 < num_new) RETURN_IF_ERROR(decoder.Step(step.data(), B, logits.data()));
  }
  return Status::OK();
}

}  // namespace shoal::model
