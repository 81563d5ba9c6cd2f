// ExpectedHfTensors, IsFp8ExportedWeight and CheckHfTensorSet: the §9.1 layout of a ModelConfig.
#include <set>

#include "worker/checkpoint/export.h"

namespace shoal::checkpoint {

namespace {

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

void AddLayer(const ModelConfig& c, int64_t l, std::vector<HfTensorSpec>* out) {
  const std::string p = "model.layers." + std::to_string(l) + ".";
  const int64_t H = c.hidden_size, nh = c.num_attention_heads;
  auto add = [&](std::string name, std::vector<int64_t> shape) { out->push_back({p + name, std::move(shape)}); };

  if (c.is_mtp_layer(l)) {
    add("embed_tokens.weight", {c.vocab_size, H});
    add("enorm.weight", {H});
    add("hnorm.weight", {H});
    add("eh_proj.weight", {H, 2 * H});
  }
  add("input_layernorm.weight", {H});
  if (c.has_q_lora()) {
    add("self_attn.q_a_proj.weight", {c.q_lora_rank, H});
    add("self_attn.q_a_layernorm.weight", {c.q_lora_rank});
    add("self_attn.q_b_proj.weight", {nh * c.qk_head_dim(), c.q_lora_rank});
  } else {
    add("self_attn.q_proj.weight", {nh * c.qk_head_dim(), H});
  }
  add("self_attn.kv_a_proj_with_mqa.weight", {c.kv_lora_rank + c.qk_rope_head_dim, H});
  add("self_attn.kv_a_layernorm.weight", {c.kv_lora_rank});
  add("self_attn.kv_b_proj.weight", {nh * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank});
  add("self_attn.o_proj.weight", {H, nh * c.v_head_dim});
  add("post_attention_layernorm.weight", {H});
  if (c.is_moe_layer(l)) {
    const int64_t Im = c.moe_intermediate_size, Is = c.n_shared_experts * c.moe_intermediate_size;
    add("mlp.gate.weight", {c.n_routed_experts, H});
    add("mlp.gate.e_score_correction_bias", {c.n_routed_experts});
    for (int64_t e = 0; e < c.n_routed_experts; ++e) {
      const std::string x = "mlp.experts." + std::to_string(e) + ".";
      add(x + "gate_proj.weight", {Im, H});
      add(x + "up_proj.weight", {Im, H});
      add(x + "down_proj.weight", {H, Im});
    }
    if (c.n_shared_experts > 0) {
      add("mlp.shared_experts.gate_proj.weight", {Is, H});
      add("mlp.shared_experts.up_proj.weight", {Is, H});
      add("mlp.shared_experts.down_proj.weight", {H, Is});
    }
  } else {
    add("mlp.gate_proj.weight", {c.intermediate_size, H});
    add("mlp.up_proj.weight", {c.intermediate_size, H});
    add("mlp.down_proj.weight", {H, c.intermediate_size});
  }
  if (c.is_mtp_layer(l)) {
    add("shared_head.norm.weight", {H});
    add("shared_head.head.weight", {c.vocab_size, H});
  }
}

}  // namespace

std::vector<HfTensorSpec> ExpectedHfTensors(const ModelConfig& c, bool include_mtp) {
  std::vector<HfTensorSpec> out;
  out.push_back({"model.embed_tokens.weight", {c.vocab_size, c.hidden_size}});
  const int64_t num_layers = include_mtp ? c.num_blocks() : c.num_hidden_layers;
  for (int64_t l = 0; l < num_layers; ++l) AddLayer(c, l, &out);
  out.push_back({"model.norm.weight", {c.hidden_size}});
  out.push_back({"lm_head.weight", {c.vocab_size, c.hidden_size}});
  return out;
}

bool IsFp8ExportedWeight(std::string_view name) {
  if (!name.starts_with("model.layers.") || !EndsWith(name, ".weight")) return false;
  for (std::string_view proj : {".self_attn.q_proj.weight", ".self_attn.q_a_proj.weight", ".self_attn.q_b_proj.weight",
                                ".self_attn.kv_a_proj_with_mqa.weight", ".self_attn.kv_b_proj.weight",
                                ".self_attn.o_proj.weight"}) {
    if (EndsWith(name, proj)) return true;
  }
  // Dense MLP, shared experts and routed experts: every *_proj under .mlp. (the router is mlp.gate.weight).
  if (name.find(".mlp.") != std::string_view::npos) {
    for (std::string_view proj : {".gate_proj.weight", ".up_proj.weight", ".down_proj.weight"}) {
      if (EndsWith(name, proj)) return true;
    }
  }
  return false;
}

Status CheckHfTensorSet(const ModelConfig& config, const TensorRefMap& tensors, bool include_mtp) {
  std::vector<std::string> problems;
  std::set<std::string, std::less<>> expected_names;
  for (const HfTensorSpec& spec : ExpectedHfTensors(config, include_mtp)) {
    expected_names.insert(spec.name);
    auto it = tensors.find(spec.name);
    if (it == tensors.end()) {
      problems.push_back("missing " + spec.name + " " + ShapeString(spec.shape));
    } else if (it->second.shape != spec.shape) {
      problems.push_back(spec.name + " has shape " + ShapeString(it->second.shape) + ", expected " +
                         ShapeString(spec.shape));
    } else if (!IsFloatDType(it->second.dtype) || it->second.dtype == DType::kF8E4M3) {
      problems.push_back(spec.name + " is " + std::string(DTypeName(it->second.dtype)) +
                         ", expected a floating-point tensor (F32/BF16/F16)");
    }
  }
  for (const auto& [name, _] : tensors) {
    if (!expected_names.count(name)) problems.push_back("unexpected " + name);
  }
  if (problems.empty()) return Status::OK();
  constexpr size_t kShown = 12;
  std::string msg = "tensors do not match the DeepSeek-V3 layout of this config (deepseek-v3.md §9.1, " +
                    std::to_string(expected_names.size()) + " tensors" + (include_mtp ? " incl. MTP" : "") + "): ";
  for (size_t i = 0; i < problems.size() && i < kShown; ++i) msg += (i ? "; " : "") + problems[i];
  if (problems.size() > kShown) msg += "; and " + std::to_string(problems.size() - kShown) + " more";
  msg += ". Check that config.json describes the model these tensors came from";
  return InvalidArgumentError(std::move(msg));
}

Status CheckHfTensorSet(const ModelConfig& config, const TensorSet& tensors, bool include_mtp) {
  return CheckHfTensorSet(config, RefsOf(tensors), include_mtp);
}

}  // namespace shoal::checkpoint
