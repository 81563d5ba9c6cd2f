// ModelConfig: every DeepSeek-V3 architecture knob under its Hugging Face name (reference/deepseek-v3.md §1.2, §9.2),
// the named presets (demo = dsv3-tiny §8.1, small = dsv3-small-fp8 §8.3, deepseek-v3-671b = §1.2), the parameter
// counts of §1.3/§8.3, validation, and the HF `config.json` round trip. Plain values; no I/O.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace shoal {

// YaRN context extension (§2.4), as HF's `rope_scaling` dict. HF semantics for the two mscale knobs: 0 means
// "absent" (HF reads them with `.get(key)` / `.get(key, 0)`), so a dict without them keeps the plain softmax scale.
struct RopeScaling {
  std::string type = "yarn";  // the only kind DeepSeek-V3 uses
  double factor = 1.0;        // s
  int64_t original_max_position_embeddings = 4096;
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  double mscale = 0.0;
  double mscale_all_dim = 0.0;

  friend bool operator==(const RopeScaling&, const RopeScaling&) = default;
};

// A problem found by ModelConfig::Issues(): the HF key it is about and what is wrong.
struct ConfigIssue {
  std::string key;
  std::string message;
};

struct ModelConfig {
  // Sizes. Default-constructed sizes are 0 (invalid): start from a preset or set every size explicitly.
  int64_t vocab_size = 0;               // V
  int64_t hidden_size = 0;              // H
  int64_t intermediate_size = 0;        // I, dense SwiGLU
  int64_t moe_intermediate_size = 0;    // I_m, per expert (the shared expert is N_s·I_m wide)
  int64_t num_hidden_layers = 0;        // L, main layers
  int64_t num_nextn_predict_layers = 1; // D, MTP depth; stored as model.layers.{L..L+D-1}
  int64_t num_attention_heads = 0;      // n_h
  int64_t num_key_value_heads = 0;      // must equal n_h
  int64_t q_lora_rank = 0;              // d_c'; 0 = none (a single q_proj; HF null)
  int64_t kv_lora_rank = 0;             // d_c
  int64_t qk_nope_head_dim = 0;         // d_nope
  int64_t qk_rope_head_dim = 0;         // d_R, even
  int64_t v_head_dim = 0;               // d_v
  // MoE.
  int64_t n_routed_experts = 0;         // N_r
  int64_t n_shared_experts = 1;         // N_s
  int64_t num_experts_per_tok = 0;      // K_r
  int64_t n_group = 1;                  // routing groups (= nodes for node-limited routing)
  int64_t topk_group = 1;               // groups kept per token (M)
  std::string topk_method = "noaux_tc";
  std::string scoring_func = "sigmoid";
  bool norm_topk_prob = true;
  double routed_scaling_factor = 2.5;
  int64_t first_k_dense_replace = 0;    // layers [0, k) are dense
  int64_t moe_layer_freq = 1;           // HF rule: MoE iff l >= first_k_dense_replace && l % moe_layer_freq == 0
  int64_t ep_size = 1;                  // HF inference knob, kept for the round trip; training EP is the job's
  // Everything else.
  std::string hidden_act = "silu";
  double rms_norm_eps = 1e-6;
  double initializer_range = 0.02;
  int64_t max_position_embeddings = 4096;
  double rope_theta = 10000.0;
  std::optional<RopeScaling> rope_scaling;  // nullopt = plain RoPE (HF null)
  bool rope_interleave = true;              // DeepSeek's interleaved-pair RoPE (§2.3)
  bool attention_bias = false;
  double attention_dropout = 0.0;
  bool tie_word_embeddings = false;
  bool use_cache = true;
  int64_t bos_token_id = 0;
  int64_t eos_token_id = 1;
  std::string torch_dtype = "bfloat16";

  friend bool operator==(const ModelConfig&, const ModelConfig&) = default;

  // Derived.
  int64_t qk_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }  // d_qk
  bool has_q_lora() const { return q_lora_rank > 0; }
  int64_t experts_per_group() const { return n_group > 0 ? n_routed_experts / n_group : 0; }
  // Main layers followed by the MTP layers: the blocks a pipeline splits (HF indices 0..L+D-1).
  int64_t num_blocks() const { return num_hidden_layers + num_nextn_predict_layers; }
  bool is_mtp_layer(int64_t layer_idx) const { return layer_idx >= num_hidden_layers; }
  // HF's rule for main layers; MTP layers (layer_idx >= L) always hold one MoE block (§4.1).
  bool is_moe_layer(int64_t layer_idx) const;
  int64_t num_moe_main_layers() const;
  int64_t num_dense_main_layers() const { return num_hidden_layers - num_moe_main_layers(); }
  // Attention softmax scale: d_qk^-1/2, times yarn_get_mscale(factor, mscale_all_dim)^2 under YaRN (§2.4, HF).
  double softmax_scale() const;
  // YaRN cos/sin "attention factor" (HF _compute_yarn_parameters); 1.0 without rope_scaling.
  double yarn_attention_factor() const;

  // Every problem, each naming its key; empty when the config is usable by our engine.
  std::vector<ConfigIssue> Issues() const;
  // InvalidArgument listing Issues() ("key: message; key: message"), or OK.
  Status Validate() const;
};

// Presets by name: "demo" (dsv3-tiny, §8.1), "small" (dsv3-small-fp8, §8.3), "deepseek-v3-671b" (§1.2, as the
// hub config.json: YaRN factor 40, 163840 positions).
std::vector<std::string> ModelPresetNames();
// NotFound naming the known presets when `name` is not one of them.
Result<ModelConfig> ModelPreset(std::string_view name);

// Parameter counts with the formulas of §8.3 (embedding and head are V·H each; the router is N_r·H and counts as
// activated; the e_score_correction_bias buffers are not parameters).
struct ParamCounts {
  int64_t mla_per_layer = 0;
  int64_t dense_layer = 0;          // MLA + 2 norms + SwiGLU(I)
  int64_t routed_expert = 0;        // 3·H·I_m
  int64_t moe_layer_total = 0;      // MLA + 2 norms + (N_r + N_s) experts + router
  int64_t moe_layer_activated = 0;  // MLA + 2 norms + (K_r + N_s) experts + router
  int64_t embedding = 0;            // V·H
  int64_t head = 0;                 // V·H
  int64_t main_total = 0;           // embedding + L layers + final norm + head
  int64_t main_activated = 0;       // per token, incl. embedding and head (the §8.2 convention)
  int64_t main_activated_excl_embedding = 0;  // per token, excl. embedding, incl. head (the §1.3 convention)
  int64_t mtp_unique = 0;           // all D MTP modules: enorm, hnorm, eh_proj, MoE block, shared_head.norm
  int64_t checkpoint_total = 0;     // main + MTP + the duplicated embed_tokens/shared_head.head per MTP layer
};
ParamCounts CountParams(const ModelConfig& config);

// HF config.json with every key of §9.2 written explicitly, in that order (q_lora_rank 0 is written as null).
std::string ToHfConfigJson(const ModelConfig& config);
// Reads a config.json (ours or the hub's). Every size key must be present: HF's class defaults are the 671B
// values, so a missing size would silently mean a huge model. Optional keys take the defaults above; unknown
// keys (auto_map, quantization_config, transformers_version, ...) are ignored. The result is Validate()d.
Result<ModelConfig> ModelConfigFromHfJson(std::string_view json_text);

}  // namespace shoal
