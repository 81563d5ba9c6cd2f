#include "spec/model_config.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <sstream>

#include "spec/model_config_fields.h"

namespace shoal {
namespace {

ModelConfig DemoConfig() {  // dsv3-tiny, §8.1
  ModelConfig c;
  c.vocab_size = 512;
  c.hidden_size = 128;
  c.intermediate_size = 384;
  c.moe_intermediate_size = 64;
  c.num_hidden_layers = 4;
  c.num_nextn_predict_layers = 1;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 4;
  c.q_lora_rank = 64;
  c.kv_lora_rank = 32;
  c.qk_nope_head_dim = 32;
  c.qk_rope_head_dim = 16;
  c.v_head_dim = 32;
  c.n_routed_experts = 16;
  c.n_shared_experts = 1;
  c.num_experts_per_tok = 2;
  c.n_group = 4;
  c.topk_group = 2;
  c.routed_scaling_factor = 2.5;
  c.first_k_dense_replace = 1;
  c.max_position_embeddings = 256;
  return c;
}

ModelConfig SmallConfig() {  // dsv3-small-fp8, §8.3: every Linear dim a multiple of 128 but kv_a_proj_with_mqa
  ModelConfig c = DemoConfig();
  c.vocab_size = 1024;
  c.hidden_size = 256;
  c.intermediate_size = 768;
  c.moe_intermediate_size = 128;
  c.q_lora_rank = 128;
  c.kv_lora_rank = 128;
  c.qk_nope_head_dim = 64;
  c.qk_rope_head_dim = 32;
  c.v_head_dim = 64;
  c.max_position_embeddings = 1024;  // §8.3 does not say; room for seq_len up to 1K
  return c;
}

ModelConfig DeepSeekV3Config() {  // §1.2, the hub config.json
  ModelConfig c;
  c.vocab_size = 129280;
  c.hidden_size = 7168;
  c.intermediate_size = 18432;
  c.moe_intermediate_size = 2048;
  c.num_hidden_layers = 61;
  c.num_nextn_predict_layers = 1;
  c.num_attention_heads = 128;
  c.num_key_value_heads = 128;
  c.q_lora_rank = 1536;
  c.kv_lora_rank = 512;
  c.qk_nope_head_dim = 128;
  c.qk_rope_head_dim = 64;
  c.v_head_dim = 128;
  c.n_routed_experts = 256;
  c.n_shared_experts = 1;
  c.num_experts_per_tok = 8;
  c.n_group = 8;
  c.topk_group = 4;
  c.routed_scaling_factor = 2.5;
  c.first_k_dense_replace = 3;
  c.max_position_embeddings = 163840;
  c.rope_scaling = RopeScaling{.type = "yarn",
                               .factor = 40.0,
                               .original_max_position_embeddings = 4096,
                               .beta_fast = 32.0,
                               .beta_slow = 1.0,
                               .mscale = 1.0,
                               .mscale_all_dim = 1.0};
  return c;
}

// yarn_get_mscale of HF / the reference model.
double YarnMscale(double scale, double mscale) {
  if (scale <= 1.0) return 1.0;
  return 0.1 * mscale * std::log(scale) + 1.0;
}

std::string Str(int64_t v) { return std::to_string(v); }

}  // namespace

bool ModelConfig::is_moe_layer(int64_t layer_idx) const {
  if (layer_idx >= num_hidden_layers) return true;
  return layer_idx >= first_k_dense_replace && moe_layer_freq > 0 && layer_idx % moe_layer_freq == 0;
}

int64_t ModelConfig::num_moe_main_layers() const {
  int64_t n = 0;
  for (int64_t l = 0; l < num_hidden_layers; ++l) n += is_moe_layer(l) ? 1 : 0;
  return n;
}

double ModelConfig::softmax_scale() const {
  double scale = 1.0 / std::sqrt(static_cast<double>(qk_head_dim()));
  if (rope_scaling && rope_scaling->mscale_all_dim != 0.0) {
    double m = YarnMscale(rope_scaling->factor, rope_scaling->mscale_all_dim);
    scale *= m * m;
  }
  return scale;
}

double ModelConfig::yarn_attention_factor() const {
  if (!rope_scaling) return 1.0;
  const RopeScaling& r = *rope_scaling;
  if (r.mscale != 0.0 && r.mscale_all_dim != 0.0)
    return YarnMscale(r.factor, r.mscale) / YarnMscale(r.factor, r.mscale_all_dim);
  return YarnMscale(r.factor, 1.0);
}

std::vector<ConfigIssue> ModelConfig::Issues() const {
  std::vector<ConfigIssue> out;
  auto add = [&](std::string key, std::string msg) { out.push_back({std::move(key), std::move(msg)}); };
  auto positive = [&](std::string_view key, int64_t v) {
    if (v <= 0) add(std::string(key), "must be a positive integer, got " + Str(v));
  };
  positive("vocab_size", vocab_size);
  positive("hidden_size", hidden_size);
  positive("intermediate_size", intermediate_size);
  positive("moe_intermediate_size", moe_intermediate_size);
  positive("num_hidden_layers", num_hidden_layers);
  positive("num_attention_heads", num_attention_heads);
  positive("kv_lora_rank", kv_lora_rank);
  positive("qk_nope_head_dim", qk_nope_head_dim);
  positive("qk_rope_head_dim", qk_rope_head_dim);
  positive("v_head_dim", v_head_dim);
  positive("n_routed_experts", n_routed_experts);
  positive("num_experts_per_tok", num_experts_per_tok);
  positive("n_group", n_group);
  positive("topk_group", topk_group);
  positive("moe_layer_freq", moe_layer_freq);
  positive("max_position_embeddings", max_position_embeddings);
  positive("ep_size", ep_size);
  if (q_lora_rank < 0) add("q_lora_rank", "must be >= 0 (0 = no query compression), got " + Str(q_lora_rank));
  if (n_shared_experts < 0) add("n_shared_experts", "must be >= 0, got " + Str(n_shared_experts));
  if (num_nextn_predict_layers < 0)
    add("num_nextn_predict_layers", "must be >= 0, got " + Str(num_nextn_predict_layers));
  if (num_key_value_heads != num_attention_heads)
    add("num_key_value_heads", "must equal num_attention_heads (" + Str(num_attention_heads) + "), got " +
                                   Str(num_key_value_heads) + " (MLA has no grouped KV heads)");
  if (qk_rope_head_dim > 0 && qk_rope_head_dim % 2 != 0)
    add("qk_rope_head_dim", "must be even (RoPE rotates pairs), got " + Str(qk_rope_head_dim));
  if (first_k_dense_replace < 0 || first_k_dense_replace > num_hidden_layers)
    add("first_k_dense_replace",
        "must be in [0, num_hidden_layers=" + Str(num_hidden_layers) + "], got " + Str(first_k_dense_replace));
  if (n_routed_experts > 0 && n_group > 0) {
    if (n_routed_experts % n_group != 0) {
      add("n_routed_experts", "must be divisible by n_group (" + Str(n_group) + "), got " + Str(n_routed_experts));
    } else {
      if (experts_per_group() < 2)
        add("n_group", "each routing group needs >= 2 experts (the group score is the sum of its top 2); " +
                           Str(n_routed_experts) + " experts in " + Str(n_group) + " groups leaves " +
                           Str(experts_per_group()));
      if (topk_group > n_group)
        add("topk_group", "must be <= n_group (" + Str(n_group) + "), got " + Str(topk_group));
      int64_t reachable = std::min(topk_group, n_group) * experts_per_group();
      if (topk_group > 0 && num_experts_per_tok > reachable)
        add("num_experts_per_tok", "must be <= the experts in the kept groups (topk_group " + Str(topk_group) +
                                       " x " + Str(experts_per_group()) + " = " + Str(reachable) + "), got " +
                                       Str(num_experts_per_tok));
    }
  }
  if (topk_method != "noaux_tc") add("topk_method", "only \"noaux_tc\" is supported, got \"" + topk_method + "\"");
  if (scoring_func != "sigmoid") add("scoring_func", "only \"sigmoid\" is supported, got \"" + scoring_func + "\"");
  if (hidden_act != "silu") add("hidden_act", "only \"silu\" is supported, got \"" + hidden_act + "\"");
  if (!(routed_scaling_factor > 0)) add("routed_scaling_factor", "must be > 0");
  if (!(rms_norm_eps > 0)) add("rms_norm_eps", "must be > 0");
  if (!(initializer_range > 0)) add("initializer_range", "must be > 0");
  if (!(rope_theta > 0)) add("rope_theta", "must be > 0");
  if (!(attention_dropout >= 0 && attention_dropout < 1)) add("attention_dropout", "must be in [0, 1)");
  if (!rope_interleave) add("rope_interleave", "must be true (DeepSeek's interleaved-pair RoPE, §2.3)");
  if (attention_bias) add("attention_bias", "must be false (DeepSeek-V3 linear layers have no bias)");
  if (tie_word_embeddings) add("tie_word_embeddings", "must be false (DeepSeek-V3 keeps lm_head separate)");
  if (bos_token_id < 0 || bos_token_id >= vocab_size)
    add("bos_token_id", "must be in [0, vocab_size=" + Str(vocab_size) + "), got " + Str(bos_token_id));
  if (eos_token_id < 0 || eos_token_id >= vocab_size)
    add("eos_token_id", "must be in [0, vocab_size=" + Str(vocab_size) + "), got " + Str(eos_token_id));
  if (torch_dtype != "bfloat16" && torch_dtype != "float32" && torch_dtype != "float16")
    add("torch_dtype", "must be bfloat16, float32 or float16, got \"" + torch_dtype + "\"");
  if (rope_scaling) {
    const RopeScaling& r = *rope_scaling;
    if (r.type != "yarn") add("rope_scaling.type", "only \"yarn\" is supported, got \"" + r.type + "\"");
    if (!(r.factor >= 1.0)) add("rope_scaling.factor", "must be >= 1");
    if (r.original_max_position_embeddings <= 0)
      add("rope_scaling.original_max_position_embeddings", "must be a positive integer");
    if (!(r.beta_fast > 0 && r.beta_slow > 0 && r.beta_fast >= r.beta_slow))
      add("rope_scaling.beta_fast", "need beta_fast >= beta_slow > 0");
    if (r.mscale < 0 || r.mscale_all_dim < 0) add("rope_scaling.mscale", "mscale and mscale_all_dim must be >= 0");
  }
  return out;
}

Status ModelConfig::Validate() const {
  std::vector<ConfigIssue> issues = Issues();
  if (issues.empty()) return Status::OK();
  std::string msg = "invalid model config: ";
  for (size_t i = 0; i < issues.size(); ++i) {
    if (i) msg += "; ";
    msg += issues[i].key + ": " + issues[i].message;
  }
  return InvalidArgumentError(std::move(msg));
}

std::vector<std::string> ModelPresetNames() { return {"demo", "small", "deepseek-v3-671b"}; }

Result<ModelConfig> ModelPreset(std::string_view name) {
  if (name == "demo") return DemoConfig();
  if (name == "small") return SmallConfig();
  if (name == "deepseek-v3-671b") return DeepSeekV3Config();
  std::string msg = "unknown model preset \"" + std::string(name) + "\"; known presets are ";
  std::vector<std::string> names = ModelPresetNames();
  for (size_t i = 0; i < names.size(); ++i) msg += (i ? ", " : "") + names[i];
  return NotFoundError(std::move(msg));
}

ParamCounts CountParams(const ModelConfig& c) {
  const int64_t H = c.hidden_size;
  const int64_t n_h = c.num_attention_heads;
  ParamCounts p;
  int64_t q_part = c.has_q_lora() ? H * c.q_lora_rank + c.q_lora_rank + c.q_lora_rank * n_h * c.qk_head_dim()
                                  : H * n_h * c.qk_head_dim();
  p.mla_per_layer = q_part + H * (c.kv_lora_rank + c.qk_rope_head_dim) + c.kv_lora_rank +
                    c.kv_lora_rank * n_h * (c.qk_nope_head_dim + c.v_head_dim) + n_h * c.v_head_dim * H;
  const int64_t norms = 2 * H;
  p.dense_layer = p.mla_per_layer + norms + 3 * H * c.intermediate_size;
  p.routed_expert = 3 * H * c.moe_intermediate_size;
  const int64_t router = c.n_routed_experts * H;
  p.moe_layer_total =
      p.mla_per_layer + norms + (c.n_routed_experts + c.n_shared_experts) * p.routed_expert + router;
  p.moe_layer_activated =
      p.mla_per_layer + norms + (c.num_experts_per_tok + c.n_shared_experts) * p.routed_expert + router;
  p.embedding = c.vocab_size * H;
  p.head = c.vocab_size * H;
  const int64_t n_moe = c.num_moe_main_layers();
  const int64_t n_dense = c.num_hidden_layers - n_moe;
  const int64_t final_norm = H;
  p.main_total = p.embedding + n_dense * p.dense_layer + n_moe * p.moe_layer_total + final_norm + p.head;
  p.main_activated_excl_embedding = n_dense * p.dense_layer + n_moe * p.moe_layer_activated + final_norm + p.head;
  p.main_activated = p.embedding + p.main_activated_excl_embedding;
  const int64_t mtp_one = 2 * H + 2 * H * H + p.moe_layer_total + H;  // enorm, hnorm, eh_proj, block, shared_head.norm
  p.mtp_unique = c.num_nextn_predict_layers * mtp_one;
  p.checkpoint_total = p.main_total + p.mtp_unique + c.num_nextn_predict_layers * (p.embedding + p.head);
  return p;
}

namespace spec_internal {

std::span<const ModelField> ModelFields() {
  using C = ModelConfig;
  static const ModelField kFields[] = {
      {"vocab_size", &C::vocab_size, true},
      {"hidden_size", &C::hidden_size, true},
      {"intermediate_size", &C::intermediate_size, true},
      {"moe_intermediate_size", &C::moe_intermediate_size, true},
      {"num_hidden_layers", &C::num_hidden_layers, true},
      {"num_nextn_predict_layers", &C::num_nextn_predict_layers},
      {"num_attention_heads", &C::num_attention_heads, true},
      {"num_key_value_heads", &C::num_key_value_heads, true},
      {"q_lora_rank", &C::q_lora_rank, true, /*zero_is_null=*/true},
      {"kv_lora_rank", &C::kv_lora_rank, true},
      {"qk_nope_head_dim", &C::qk_nope_head_dim, true},
      {"qk_rope_head_dim", &C::qk_rope_head_dim, true},
      {"v_head_dim", &C::v_head_dim, true},
      {"n_routed_experts", &C::n_routed_experts, true},
      {"n_shared_experts", &C::n_shared_experts},
      {"num_experts_per_tok", &C::num_experts_per_tok, true},
      {"n_group", &C::n_group, true},
      {"topk_group", &C::topk_group, true},
      {"topk_method", &C::topk_method},
      {"scoring_func", &C::scoring_func},
      {"norm_topk_prob", &C::norm_topk_prob},
      {"routed_scaling_factor", &C::routed_scaling_factor},
      {"first_k_dense_replace", &C::first_k_dense_replace, true},
      {"moe_layer_freq", &C::moe_layer_freq},
      {"ep_size", &C::ep_size},
      {"hidden_act", &C::hidden_act},
      {"rms_norm_eps", &C::rms_norm_eps},
      {"initializer_range", &C::initializer_range},
      {"max_position_embeddings", &C::max_position_embeddings, true},
      {"rope_theta", &C::rope_theta},
      {"rope_scaling", &C::rope_scaling},
      {"rope_interleave", &C::rope_interleave},
      {"attention_bias", &C::attention_bias},
      {"attention_dropout", &C::attention_dropout},
      {"tie_word_embeddings", &C::tie_word_embeddings},
      {"use_cache", &C::use_cache},
      {"bos_token_id", &C::bos_token_id},
      {"eos_token_id", &C::eos_token_id},
      {"torch_dtype", &C::torch_dtype},
  };
  return kFields;
}

const ModelField* FindModelField(std::string_view name) {
  for (const ModelField& f : ModelFields())
    if (f.name == name) return &f;
  return nullptr;
}

std::span<const RopeField> RopeFields() {
  using R = RopeScaling;
  static const RopeField kFields[] = {
      {"type", &R::type},
      {"factor", &R::factor, true},
      {"original_max_position_embeddings", &R::original_max_position_embeddings, true},
      {"beta_fast", &R::beta_fast},
      {"beta_slow", &R::beta_slow},
      {"mscale", &R::mscale},
      {"mscale_all_dim", &R::mscale_all_dim},
  };
  return kFields;
}

std::string FormatDouble(double v) {
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v);
  if (ec != std::errc()) {
    std::ostringstream os;
    os.precision(17);
    os << v;
    return os.str();
  }
  return std::string(buf, end);
}

size_t EditDistance(std::string_view a, std::string_view b) {
  // Optimal string alignment: insertions, deletions, substitutions and adjacent transpositions cost 1.
  std::vector<std::vector<size_t>> d(a.size() + 1, std::vector<size_t>(b.size() + 1));
  for (size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    for (size_t j = 1; j <= b.size(); ++j) {
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[a.size()][b.size()];
}

std::string NearestName(std::string_view word, std::span<const std::string> candidates) {
  std::string best;
  size_t best_d = static_cast<size_t>(-1);
  for (const std::string& c : candidates) {
    size_t d = EditDistance(word, c);
    if (d < best_d) best_d = d, best = c;
  }
  // A typo, not a different word: one edit per three letters of the longer name, at least 1, at most 2.
  size_t limit = std::clamp<size_t>(std::max(word.size(), best.size()) / 3, 1, 2);
  if (best_d <= limit) return best;
  // Or a longer/shorter spelling of a known key ("seq_length" for "seq_len").
  for (const std::string& c : candidates) {
    size_t n = std::min(c.size(), word.size());
    if (n >= 3 && c.compare(0, n, word, 0, n) == 0) return c;
  }
  return std::string();
}

}  // namespace spec_internal
}  // namespace shoal
