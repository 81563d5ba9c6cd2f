// ModelConfig: presets against the spec's tables, parameter counts against the published numbers, validation,
// softmax scale, and the HF config.json round trip (incl. the dsv3-micro fixture).
#include "spec/model_config.h"

#include <cmath>
#include <fstream>
#include <sstream>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace shoal {
namespace {

using ::testing::HasSubstr;

ModelConfig Preset(std::string_view name) {
  Result<ModelConfig> c = ModelPreset(name);
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? *c : ModelConfig();
}

std::string ReadTestdata(const std::string& name) {
  std::ifstream in(std::string(SHOAL_SPEC_TESTDATA_DIR) + "/" + name);
  EXPECT_TRUE(in.good()) << name;
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool HasIssue(const ModelConfig& c, const std::string& key) {
  for (const ConfigIssue& i : c.Issues())
    if (i.key == key) return true;
  return false;
}

TEST(ModelPresetTest, DemoIsDsv3TinyExactly) {
  ModelConfig c = Preset("demo");
  EXPECT_EQ(c.vocab_size, 512);
  EXPECT_EQ(c.hidden_size, 128);
  EXPECT_EQ(c.num_hidden_layers, 4);
  EXPECT_EQ(c.first_k_dense_replace, 1);
  EXPECT_EQ(c.num_attention_heads, 4);
  EXPECT_EQ(c.num_key_value_heads, 4);
  EXPECT_EQ(c.q_lora_rank, 64);
  EXPECT_EQ(c.kv_lora_rank, 32);
  EXPECT_EQ(c.qk_nope_head_dim, 32);
  EXPECT_EQ(c.qk_rope_head_dim, 16);
  EXPECT_EQ(c.v_head_dim, 32);
  EXPECT_EQ(c.intermediate_size, 384);
  EXPECT_EQ(c.moe_intermediate_size, 64);
  EXPECT_EQ(c.n_routed_experts, 16);
  EXPECT_EQ(c.n_shared_experts, 1);
  EXPECT_EQ(c.num_experts_per_tok, 2);
  EXPECT_EQ(c.n_group, 4);
  EXPECT_EQ(c.topk_group, 2);
  EXPECT_EQ(c.routed_scaling_factor, 2.5);
  EXPECT_EQ(c.scoring_func, "sigmoid");
  EXPECT_EQ(c.topk_method, "noaux_tc");
  EXPECT_TRUE(c.norm_topk_prob);
  EXPECT_EQ(c.num_nextn_predict_layers, 1);
  EXPECT_EQ(c.rope_theta, 10000.0);
  EXPECT_FALSE(c.rope_scaling.has_value());
  EXPECT_EQ(c.rms_norm_eps, 1e-6);
  EXPECT_EQ(c.max_position_embeddings, 256);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_TRUE(c.Validate().ok()) << c.Validate();
}

TEST(ModelPresetTest, DeepSeekV3Is671BConfig) {
  ModelConfig c = Preset("deepseek-v3-671b");
  EXPECT_EQ(c.vocab_size, 129280);
  EXPECT_EQ(c.hidden_size, 7168);
  EXPECT_EQ(c.intermediate_size, 18432);
  EXPECT_EQ(c.moe_intermediate_size, 2048);
  EXPECT_EQ(c.num_hidden_layers, 61);
  EXPECT_EQ(c.first_k_dense_replace, 3);
  EXPECT_EQ(c.num_attention_heads, 128);
  EXPECT_EQ(c.n_routed_experts, 256);
  EXPECT_EQ(c.num_experts_per_tok, 8);
  EXPECT_EQ(c.n_group, 8);
  EXPECT_EQ(c.topk_group, 4);
  EXPECT_EQ(c.q_lora_rank, 1536);
  EXPECT_EQ(c.kv_lora_rank, 512);
  EXPECT_EQ(c.max_position_embeddings, 163840);
  ASSERT_TRUE(c.rope_scaling.has_value());
  EXPECT_EQ(c.rope_scaling->factor, 40.0);
  EXPECT_EQ(c.rope_scaling->original_max_position_embeddings, 4096);
  EXPECT_TRUE(c.Validate().ok()) << c.Validate();
  EXPECT_TRUE(Preset("small").Validate().ok());
}

TEST(ModelPresetTest, UnknownPresetIsNotFoundAndListsKnownOnes) {
  Result<ModelConfig> c = ModelPreset("tiny");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::kNotFound);
  EXPECT_THAT(c.status().message(), HasSubstr("demo, small, deepseek-v3-671b"));
}

TEST(ParamCountsTest, DemoMatchesSection82) {
  ParamCounts p = CountParams(Preset("demo"));
  EXPECT_EQ(p.mla_per_layer, 51'296);
  EXPECT_EQ(p.dense_layer, 199'008);
  EXPECT_EQ(p.routed_expert, 24'576);
  EXPECT_EQ(p.moe_layer_total, 471'392);
  EXPECT_EQ(p.moe_layer_activated, 127'328);
  EXPECT_EQ(p.embedding, 65'536);
  EXPECT_EQ(p.main_total, 1'744'384);
  EXPECT_EQ(p.main_activated, 712'192);
  EXPECT_EQ(p.mtp_unique, 504'544);
  EXPECT_EQ(p.checkpoint_total, 2'380'000);
}

TEST(ParamCountsTest, SmallMatchesSection83) {
  ParamCounts p = CountParams(Preset("small"));
  EXPECT_EQ(p.main_total, 7'159'040);
  EXPECT_EQ(p.main_activated, 3'030'272);
  EXPECT_EQ(p.mtp_unique, 2'061'824);
  EXPECT_EQ(p.checkpoint_total, 9'745'152);
}

TEST(ParamCountsTest, DeepSeekV3MatchesSection13) {
  ParamCounts p = CountParams(Preset("deepseek-v3-671b"));
  EXPECT_EQ(p.mla_per_layer, 187'107'328);
  EXPECT_EQ(p.dense_layer, 583'483'392);
  EXPECT_EQ(p.routed_expert, 44'040'192);
  EXPECT_EQ(p.moe_layer_total, 11'507'286'016);
  EXPECT_EQ(p.moe_layer_activated, 585'318'400);
  EXPECT_EQ(p.embedding, 926'679'040);
  EXPECT_EQ(p.main_total, 671'026'404'352);
  EXPECT_EQ(p.main_activated_excl_embedding, 36'625'603'584);
  EXPECT_EQ(p.main_activated, 37'552'282'624);  // "with both it is 37,552,282,624" (§1.3)
  EXPECT_EQ(p.mtp_unique, 11'610'067'968);
  EXPECT_EQ(p.checkpoint_total, 684'489'830'400);
}

TEST(ParamCountsTest, NoQueryLoraUsesOneQProj) {
  ModelConfig c = Preset("demo");
  c.q_lora_rank = 0;
  // q_a_proj (64x128) + q_a_layernorm (64) + q_b_proj (192x64) -> q_proj (4·48 x 128).
  EXPECT_EQ(CountParams(c).mla_per_layer, 51'296 - (64 * 128 + 64 + 192 * 64) + 192 * 128);
  EXPECT_TRUE(c.Validate().ok());
}

TEST(ModelConfigTest, MoeLayersFollowHfRuleAndMtpIsMoe) {
  ModelConfig c = Preset("demo");
  EXPECT_FALSE(c.is_moe_layer(0));
  EXPECT_TRUE(c.is_moe_layer(1));
  EXPECT_TRUE(c.is_moe_layer(3));
  EXPECT_TRUE(c.is_moe_layer(4));  // the MTP layer
  EXPECT_TRUE(c.is_mtp_layer(4));
  EXPECT_FALSE(c.is_mtp_layer(3));
  EXPECT_EQ(c.num_moe_main_layers(), 3);
  c.moe_layer_freq = 2;  // HF: MoE iff l >= k and l % freq == 0
  EXPECT_FALSE(c.is_moe_layer(1));
  EXPECT_TRUE(c.is_moe_layer(2));
  EXPECT_FALSE(c.is_moe_layer(3));
  EXPECT_EQ(c.num_moe_main_layers(), 1);
  // One dense layer more, one MoE layer fewer (x2) than the demo.
  ParamCounts p = CountParams(c);
  EXPECT_EQ(p.main_total, 1'744'384 + 2 * (199'008 - 471'392));
}

TEST(ModelConfigTest, SoftmaxScaleIncludesYarnMscale) {
  ModelConfig demo = Preset("demo");
  EXPECT_EQ(demo.qk_head_dim(), 48);
  EXPECT_NEAR(demo.softmax_scale(), 0.144338, 1e-6);
  EXPECT_EQ(demo.yarn_attention_factor(), 1.0);
  ModelConfig big = Preset("deepseek-v3-671b");
  EXPECT_EQ(big.qk_head_dim(), 192);
  EXPECT_NEAR(big.softmax_scale(), 0.1352338, 1e-7);  // 192^-1/2 · (0.1 ln 40 + 1)^2, §2.4
  EXPECT_NEAR(big.yarn_attention_factor(), 1.0, 1e-12);
  big.rope_scaling->mscale_all_dim = 0;  // HF: absent -> plain scale, and cos/sin take the mscale factor
  EXPECT_NEAR(big.softmax_scale(), 1 / std::sqrt(192.0), 1e-12);
  EXPECT_NEAR(big.yarn_attention_factor(), 0.1 * std::log(40.0) + 1, 1e-12);
}

TEST(ModelConfigTest, ValidateNamesEachBrokenKey) {
  ModelConfig base = Preset("demo");
  ASSERT_TRUE(base.Issues().empty());
  struct Case {
    const char* key;
    void (*mutate)(ModelConfig&);
  };
  const Case cases[] = {
      {"num_key_value_heads", [](ModelConfig& c) { c.num_key_value_heads = 2; }},
      {"qk_rope_head_dim", [](ModelConfig& c) { c.qk_rope_head_dim = 15; }},
      {"n_routed_experts", [](ModelConfig& c) { c.n_routed_experts = 18; }},
      {"n_group", [](ModelConfig& c) { c.n_group = 16; c.topk_group = 2; }},
      {"topk_group", [](ModelConfig& c) { c.topk_group = 5; }},
      {"num_experts_per_tok", [](ModelConfig& c) { c.num_experts_per_tok = 9; }},  // 2 groups x 4 = 8 reachable
      {"first_k_dense_replace", [](ModelConfig& c) { c.first_k_dense_replace = 5; }},
      {"tie_word_embeddings", [](ModelConfig& c) { c.tie_word_embeddings = true; }},
      {"hidden_size", [](ModelConfig& c) { c.hidden_size = 0; }},
      {"eos_token_id", [](ModelConfig& c) { c.eos_token_id = 512; }},
      {"scoring_func", [](ModelConfig& c) { c.scoring_func = "softmax"; }},
      {"rope_scaling.factor", [](ModelConfig& c) { c.rope_scaling = RopeScaling{.factor = 0.5}; }},
  };
  for (const Case& tc : cases) {
    ModelConfig c = base;
    tc.mutate(c);
    EXPECT_TRUE(HasIssue(c, tc.key)) << tc.key;
    Status s = c.Validate();
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << tc.key;
    EXPECT_THAT(s.message(), HasSubstr(std::string(tc.key) + ": ")) << tc.key;
  }
  ModelConfig c = base;
  c.num_experts_per_tok = 8;  // exactly the experts of the 2 kept groups
  EXPECT_TRUE(c.Validate().ok()) << c.Validate();
}

TEST(HfConfigJsonTest, ReadsTheDsv3MicroFixture) {
  Result<ModelConfig> c = ModelConfigFromHfJson(ReadTestdata("dsv3-micro-config.json"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->vocab_size, 320);
  EXPECT_EQ(c->hidden_size, 64);
  EXPECT_EQ(c->num_hidden_layers, 3);
  EXPECT_EQ(c->num_attention_heads, 2);
  EXPECT_EQ(c->num_key_value_heads, 2);
  EXPECT_EQ(c->q_lora_rank, 48);
  EXPECT_EQ(c->kv_lora_rank, 24);
  EXPECT_EQ(c->qk_nope_head_dim, 16);
  EXPECT_EQ(c->qk_rope_head_dim, 8);
  EXPECT_EQ(c->v_head_dim, 28);
  EXPECT_EQ(c->intermediate_size, 160);
  EXPECT_EQ(c->moe_intermediate_size, 20);
  EXPECT_EQ(c->n_routed_experts, 12);
  EXPECT_EQ(c->n_group, 3);
  EXPECT_EQ(c->topk_group, 2);
  EXPECT_EQ(c->num_experts_per_tok, 3);
  EXPECT_EQ(c->n_shared_experts, 1);
  EXPECT_EQ(c->first_k_dense_replace, 1);
  EXPECT_EQ(c->num_nextn_predict_layers, 1);
  EXPECT_EQ(c->max_position_embeddings, 64);
  EXPECT_EQ(c->rms_norm_eps, 1e-6);
  EXPECT_EQ(c->routed_scaling_factor, 2.5);
  EXPECT_FALSE(c->rope_scaling.has_value());
  EXPECT_EQ(c->torch_dtype, "bfloat16");
  EXPECT_NEAR(c->softmax_scale(), 0.2041241, 1e-7);  // 24^-1/2, as the fixture's README says
}

TEST(HfConfigJsonTest, WritesBackEveryKeyOfTheFixture) {
  const std::string text = ReadTestdata("dsv3-micro-config.json");
  Result<ModelConfig> c = ModelConfigFromHfJson(text);
  ASSERT_TRUE(c.ok()) << c.status();
  nlohmann::ordered_json ours = nlohmann::ordered_json::parse(ToHfConfigJson(*c));
  nlohmann::ordered_json theirs = nlohmann::ordered_json::parse(text);
  // Same keys, same order, same values.
  std::vector<std::string> our_keys, their_keys;
  for (auto& [k, v] : ours.items()) our_keys.push_back(k);
  for (auto& [k, v] : theirs.items()) their_keys.push_back(k);
  EXPECT_EQ(our_keys, their_keys);
  EXPECT_EQ(ours, theirs) << ToHfConfigJson(*c);
}

TEST(HfConfigJsonTest, DemoMatchesSection92) {
  // §9.2's listing, verbatim (values for dsv3-tiny).
  const char* kSection92 = R"({
    "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3",
    "vocab_size": 512, "hidden_size": 128, "intermediate_size": 384, "moe_intermediate_size": 64,
    "num_hidden_layers": 4, "num_nextn_predict_layers": 1,
    "num_attention_heads": 4, "num_key_value_heads": 4,
    "q_lora_rank": 64, "kv_lora_rank": 32, "qk_nope_head_dim": 32, "qk_rope_head_dim": 16, "v_head_dim": 32,
    "n_routed_experts": 16, "n_shared_experts": 1, "num_experts_per_tok": 2,
    "n_group": 4, "topk_group": 2, "topk_method": "noaux_tc", "scoring_func": "sigmoid",
    "norm_topk_prob": true, "routed_scaling_factor": 2.5,
    "first_k_dense_replace": 1, "moe_layer_freq": 1, "ep_size": 1,
    "hidden_act": "silu", "rms_norm_eps": 1e-06, "initializer_range": 0.02,
    "max_position_embeddings": 256, "rope_theta": 10000, "rope_scaling": null, "rope_interleave": true,
    "attention_bias": false, "attention_dropout": 0.0,
    "tie_word_embeddings": false, "use_cache": true,
    "bos_token_id": 0, "eos_token_id": 1,
    "torch_dtype": "bfloat16"})";
  nlohmann::ordered_json want = nlohmann::ordered_json::parse(kSection92);
  nlohmann::ordered_json got = nlohmann::ordered_json::parse(ToHfConfigJson(Preset("demo")));
  EXPECT_EQ(got, want);
  std::vector<std::string> want_keys, got_keys;
  for (auto& [k, v] : want.items()) want_keys.push_back(k);
  for (auto& [k, v] : got.items()) got_keys.push_back(k);
  EXPECT_EQ(got_keys, want_keys);
  EXPECT_EQ(got.find("head_dim"), got.end());  // §9.2: never write head_dim
}

TEST(HfConfigJsonTest, PresetsRoundTrip) {
  for (const std::string& name : ModelPresetNames()) {
    ModelConfig c = Preset(name);
    Result<ModelConfig> back = ModelConfigFromHfJson(ToHfConfigJson(c));
    ASSERT_TRUE(back.ok()) << name << ": " << back.status();
    EXPECT_EQ(*back, c) << name;
  }
  ModelConfig no_q = Preset("demo");
  no_q.q_lora_rank = 0;
  no_q.rms_norm_eps = 1e-5;
  no_q.rope_theta = 50000.5;
  std::string text = ToHfConfigJson(no_q);
  EXPECT_THAT(text, HasSubstr("\"q_lora_rank\": null"));
  Result<ModelConfig> back = ModelConfigFromHfJson(text);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, no_q);
}

TEST(HfConfigJsonTest, YarnRopeScalingRoundTripsAsTheHubWritesIt) {
  std::string text = ToHfConfigJson(Preset("deepseek-v3-671b"));
  nlohmann::json j = nlohmann::json::parse(text);
  nlohmann::json want = {{"type", "yarn"},      {"factor", 40},  {"original_max_position_embeddings", 4096},
                         {"beta_fast", 32},     {"beta_slow", 1}, {"mscale", 1.0},
                         {"mscale_all_dim", 1.0}};
  EXPECT_EQ(j["rope_scaling"], want);
  // transformers >= 4.45 writes "rope_type" instead of "type".
  j["rope_scaling"].erase("type");
  j["rope_scaling"]["rope_type"] = "yarn";
  Result<ModelConfig> back = ModelConfigFromHfJson(j.dump());
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, Preset("deepseek-v3-671b"));
}

TEST(HfConfigJsonTest, ErrorsNameTheKey) {
  nlohmann::json j = nlohmann::json::parse(ToHfConfigJson(Preset("demo")));
  auto expect_error = [](const nlohmann::json& doc, const std::string& needle) {
    Result<ModelConfig> r = ModelConfigFromHfJson(doc.dump());
    ASSERT_FALSE(r.ok()) << needle;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_THAT(r.status().message(), HasSubstr(needle));
  };
  nlohmann::json missing = j;
  missing.erase("hidden_size");
  expect_error(missing, "missing \"hidden_size\"");
  nlohmann::json wrong_type = j;
  wrong_type["num_hidden_layers"] = "four";
  expect_error(wrong_type, "\"num_hidden_layers\": expected an integer");
  nlohmann::json wrong_model = j;
  wrong_model["model_type"] = "llama";
  expect_error(wrong_model, "\"model_type\": expected \"deepseek_v3\"");
  nlohmann::json invalid = j;
  invalid["num_key_value_heads"] = 128;  // HF's default; MLA needs it equal to the heads
  expect_error(invalid, "num_key_value_heads: must equal num_attention_heads (4)");
  Result<ModelConfig> not_json = ModelConfigFromHfJson("{\"vocab_size\": ");
  ASSERT_FALSE(not_json.ok());
  EXPECT_THAT(not_json.status().message(), HasSubstr("not valid JSON"));
  // Unknown keys (hub extras) are fine.
  nlohmann::json extra = j;
  extra["transformers_version"] = "4.46.0";
  extra["quantization_config"] = {{"quant_method", "fp8"}};
  EXPECT_TRUE(ModelConfigFromHfJson(extra.dump()).ok());
}

}  // namespace
}  // namespace shoal
