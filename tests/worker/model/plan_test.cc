// Memory planning and partial models: PlanMemory sizes the 671B preset without allocating (parameter count =
// CountParams), plans match what Create allocates, and stage / expert-range models hold exactly their tensors
// under Hugging Face names.
#include <gtest/gtest.h>

#include <map>
#include <set>

#include "spec/model_config.h"
#include "spec/stage_layout.h"
#include "tests/worker/model/test_util.h"
#include "worker/checkpoint/export.h"
#include "worker/model/model.h"

namespace shoal::model {
namespace {

ModelConfig Preset(const char* name) {
  auto c = ModelPreset(name);
  EXPECT_TRUE(c.ok()) << c.status();
  return *c;
}

std::map<std::string, std::vector<int64_t>> Shapes(const std::vector<NamedTensor>& tensors) {
  std::map<std::string, std::vector<int64_t>> out;
  for (const NamedTensor& t : tensors) EXPECT_TRUE(out.emplace(t.name, t.shape).second) << "duplicate " << t.name;
  return out;
}

std::map<std::string, std::vector<int64_t>> Expected(const ModelConfig& c, const std::function<bool(const std::string&)>& keep) {
  std::map<std::string, std::vector<int64_t>> out;
  for (const checkpoint::HfTensorSpec& s : checkpoint::ExpectedHfTensors(c)) {
    if (keep(s.name)) out.emplace(s.name, s.shape);
  }
  return out;
}

bool IsMtpCopy(const std::string& name, int64_t L) {
  const std::string pre = "model.layers." + std::to_string(L) + ".";
  return name == pre + "embed_tokens.weight" || name == pre + "shared_head.head.weight";
}

int64_t LayerOf(const std::string& name) {
  if (!name.starts_with("model.layers.")) return -1;
  return std::stoll(name.substr(13, name.find('.', 13) - 13));
}

TEST(PlanMemoryTest, DeepSeekV3ParameterCountWithoutAllocating) {
  const ModelConfig c = Preset("deepseek-v3-671b");
  const ParamCounts counts = CountParams(c);
  // Would need ~2.7 TB for parameters alone if anything were allocated.
  auto plan = PlanMemory(c, ModelOptions{});
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(counts.main_total, 671'026'404'352);
  EXPECT_EQ(plan->trainable, counts.main_total + counts.mtp_unique);
  EXPECT_EQ(plan->trainable, 682'636'472'320);
  // The only non-trainable tensors: one e_score_correction_bias per MoE layer (58 main + 1 MTP).
  EXPECT_EQ(plan->params - plan->trainable, (c.num_moe_main_layers() + c.num_nextn_predict_layers) * c.n_routed_experts);
  EXPECT_GE(plan->param_bytes, 4 * plan->params);
  EXPECT_GE(plan->grad_bytes, 4 * plan->trainable);
  EXPECT_EQ(plan->optimizer_bytes, 4 * plan->trainable);
  EXPECT_EQ(plan->weight_cache_bytes, 0);  // fp32 keeps no low-precision copies
  EXPECT_GT(plan->activation_bytes_per_microbatch, 0);
  std::printf("[plan] 671B fp32, micro-batch 8x128: params %lld (%.1f GB), activations %.2f GB per micro-batch\n",
              static_cast<long long>(plan->params), plan->param_bytes / 1e9,
              plan->activation_bytes_per_microbatch / 1e9);

  // FP8: an E4M3 copy (1 byte per element + 128×128-block scales) of the FP8 Linear weights and a bf16-valued
  // copy of the head (§5.4): about a quarter of the fp32 parameter bytes, more than the routed experts alone.
  ModelOptions fp8;
  fp8.precision = Precision::kFp8;
  auto plan8 = PlanMemory(c, fp8);
  ASSERT_TRUE(plan8.ok()) << plan8.status();
  const int64_t routed = (c.num_moe_main_layers() + 1) * c.n_routed_experts * counts.routed_expert;
  EXPECT_GT(plan8->weight_cache_bytes, routed);
  EXPECT_LT(plan8->weight_cache_bytes, plan8->param_bytes / 4 + 4 * c.vocab_size * c.hidden_size);
}

TEST(PlanMemoryTest, PipelineStagesAndExpertShardsAddUp) {
  const ModelConfig c = Preset("deepseek-v3-671b");
  const ParamCounts counts = CountParams(c);
  int64_t sum = 0;
  for (const StageLayout& s : SplitLayers(c, 16)) {
    ModelOptions o;
    o.layer_begin = s.layer_begin;
    o.layer_end = s.layer_end;
    o.has_embedding = s.has_embedding;
    o.has_head = s.has_head;
    auto plan = PlanMemory(c, o);
    ASSERT_TRUE(plan.ok()) << "stage " << s.stage_idx << ": " << plan.status();
    sum += plan->trainable;
  }
  // The last stage holds the MTP layer without model.embed_tokens: it keeps its own copy (layers.61.embed_tokens).
  EXPECT_EQ(sum, counts.main_total + counts.mtp_unique + counts.embedding);

  // EP: 8 shards of 32 experts hold the routed experts once between them; everything else is replicated.
  ModelOptions shard;
  shard.expert_begin = 32;
  shard.expert_end = 64;
  auto plan = PlanMemory(c, shard);
  ASSERT_TRUE(plan.ok()) << plan.status();
  const int64_t moe_layers = c.num_moe_main_layers() + c.num_nextn_predict_layers;
  EXPECT_EQ(plan->trainable, counts.main_total + counts.mtp_unique - moe_layers * (256 - 32) * counts.routed_expert);
}

TEST(PlanMemoryTest, PlanMatchesWhatCreateAllocates) {
  for (const char* preset : {"demo", "small"}) {
    for (Precision p : {Precision::kFp32, Precision::kBf16, Precision::kFp8}) {
      for (bool defer : {false, true}) {
        ModelOptions o;
        o.precision = p;
        o.max_batch = 2;
        o.max_seq = 16;
        o.defer_weight_grads = defer;
        const ModelConfig c = Preset(preset);
        auto plan = PlanMemory(c, o);
        ASSERT_TRUE(plan.ok()) << plan.status();
        auto model = Model::Create(c, o);
        ASSERT_TRUE(model.ok()) << model.status();
        const std::string what = std::string(preset) + " " + std::string(ToString(p)) + (defer ? " deferred" : "");
        EXPECT_EQ(static_cast<int64_t>((*model)->ActivationBytes()), plan->activation_bytes_per_microbatch) << what;
        EXPECT_EQ(static_cast<int64_t>((*model)->ParameterCount()), plan->params) << what;
        const ParamCounts counts = CountParams(c);
        EXPECT_EQ(plan->trainable, counts.main_total + counts.mtp_unique) << what;
        if (p == Precision::kFp32) {
          EXPECT_EQ(plan->weight_cache_bytes, 0) << what;
        } else {
          EXPECT_GT(plan->weight_cache_bytes, 0) << what;
        }
      }
    }
  }
  // Deferring the weight gradients keeps every layer's output gradients: more activation memory.
  ModelOptions a, b;
  b.defer_weight_grads = true;
  EXPECT_GT(PlanMemory(Preset("small"), b)->activation_bytes_per_microbatch,
            PlanMemory(Preset("small"), a)->activation_bytes_per_microbatch);
}

TEST(PartialModelTest, FullModelHoldsTheHfTensors) {
  const ModelConfig c = Preset("demo");
  auto model = Model::Create(c, ModelOptions{.max_batch = 1, .max_seq = 8});
  ASSERT_TRUE(model.ok()) << model.status();
  const int64_t L = c.num_hidden_layers;
  EXPECT_EQ(Shapes((*model)->HfTensors()), Expected(c, [](const std::string&) { return true; }));
  EXPECT_EQ(Shapes((*model)->Parameters()), Expected(c, [&](const std::string& n) { return !IsMtpCopy(n, L); }));
  auto grads = Shapes((*model)->Gradients());
  EXPECT_EQ(grads, Expected(c, [&](const std::string& n) {
              return !IsMtpCopy(n, L) && n.find("e_score_correction_bias") == std::string::npos;
            }));
  EXPECT_TRUE((*model)->IsTrainable("model.layers.4.eh_proj.weight"));
  EXPECT_FALSE((*model)->IsTrainable("model.layers.4.mlp.gate.e_score_correction_bias"));
  EXPECT_FALSE((*model)->IsTrainable("no.such.tensor"));
  // The copies are views of the shared tensors.
  std::map<std::string, float*> data;
  for (const NamedTensor& t : (*model)->HfTensors()) data[t.name] = t.data;
  EXPECT_EQ(data["model.layers.4.embed_tokens.weight"], data["model.embed_tokens.weight"]);
  EXPECT_EQ(data["model.layers.4.shared_head.head.weight"], data["lm_head.weight"]);
}

TEST(PartialModelTest, StagesAndExpertRangesHoldTheirTensors) {
  const ModelConfig c = Preset("demo");  // 4 main layers (0 dense), MTP layer 4, 16 experts
  const int64_t L = c.num_hidden_layers;
  {  // A middle stage: layers 1-2, no embedding, no head.
    ModelOptions o{.layer_begin = 1, .layer_end = 3, .has_embedding = false, .has_head = false, .max_batch = 1,
                   .max_seq = 8};
    auto m = Model::Create(c, o);
    ASSERT_TRUE(m.ok()) << m.status();
    EXPECT_EQ(Shapes((*m)->Parameters()), Expected(c, [](const std::string& n) {
                const int64_t l = LayerOf(n);
                return l == 1 || l == 2;
              }));
    EXPECT_TRUE((*m)->Loads().size() == 2);
  }
  {  // The last stage: layer 3, the MTP layer and the head, no embedding: the MTP layer keeps its own embedding.
    ModelOptions o{.layer_begin = 3, .layer_end = 5, .has_embedding = false, .has_head = true, .max_batch = 1,
                   .max_seq = 8};
    auto m = Model::Create(c, o);
    ASSERT_TRUE(m.ok()) << m.status();
    auto want = Expected(c, [&](const std::string& n) {
      const int64_t l = LayerOf(n);
      return l == 3 || (l == L && n != "model.layers.4.shared_head.head.weight") || n == "model.norm.weight" ||
             n == "lm_head.weight";
    });
    EXPECT_EQ(Shapes((*m)->Parameters()), want);
    EXPECT_TRUE((*m)->IsTrainable("model.layers.4.embed_tokens.weight"));
    EXPECT_EQ(Shapes((*m)->HfTensors()).count("model.layers.4.shared_head.head.weight"), 1u);
  }
  {  // Experts 4..7 of every MoE layer; the router and the shared expert stay whole.
    ModelOptions o{.expert_begin = 4, .expert_end = 8, .max_batch = 1, .max_seq = 8};
    auto m = Model::Create(c, o);
    ASSERT_TRUE(m.ok()) << m.status();
    auto want = Expected(c, [&](const std::string& n) {
      if (IsMtpCopy(n, L)) return false;
      const size_t p = n.find(".experts.");
      if (p == std::string::npos) return true;
      const int64_t e = std::stoll(n.substr(p + 9, n.find('.', p + 9) - p - 9));
      return e >= 4 && e < 8;
    });
    EXPECT_EQ(Shapes((*m)->Parameters()), want);
    for (const auto& [layer, loads] : (*m)->Loads()) EXPECT_EQ(loads.size(), 16u) << layer;  // routing sees all
  }
}

TEST(PartialModelTest, RejectsUnusableLayouts) {
  const ModelConfig c = Preset("demo");
  auto code = [&](ModelOptions o) { return Model::Create(c, o).status().code(); };
  EXPECT_EQ(code({.layer_begin = 1, .has_embedding = true}), StatusCode::kInvalidArgument);
  EXPECT_EQ(code({.layer_begin = 0, .layer_end = 2, .has_head = true}), StatusCode::kInvalidArgument);
  EXPECT_EQ(code({.layer_begin = 2, .layer_end = 5, .has_embedding = false, .has_head = false}),
            StatusCode::kInvalidArgument);  // MTP without the head
  EXPECT_EQ(code({.layer_begin = 2, .layer_end = 2, .has_embedding = false}), StatusCode::kInvalidArgument);
  EXPECT_EQ(code({.layer_end = 6}), StatusCode::kInvalidArgument);
  EXPECT_EQ(code({.expert_begin = 8, .expert_end = 4}), StatusCode::kInvalidArgument);
  EXPECT_EQ(code({.expert_end = 17}), StatusCode::kInvalidArgument);
  EXPECT_EQ(code({.max_batch = 0}), StatusCode::kInvalidArgument);
  ModelConfig deep = c;
  deep.num_nextn_predict_layers = 2;
  EXPECT_EQ(Model::Create(deep, {}).status().code(), StatusCode::kUnimplemented);
  // Without the MTP layers, a depth-2 config is fine.
  EXPECT_TRUE(Model::Create(deep, {.layer_end = 4, .max_batch = 1, .max_seq = 4}).ok());
}

TEST(PartialModelTest, InitRandomDependsOnlyOnNames) {
  const ModelConfig c = Preset("demo");
  auto full = Model::Create(c, {.max_batch = 1, .max_seq = 4});
  auto last = Model::Create(c, {.layer_begin = 3, .has_embedding = false, .expert_begin = 8, .max_batch = 1,
                                .max_seq = 4});
  ASSERT_TRUE(full.ok() && last.ok());
  (*full)->InitRandom(42, 0.02f);
  (*last)->InitRandom(42, 0.02f);
  std::map<std::string, NamedTensor> by_name;
  for (const NamedTensor& t : (*full)->HfTensors()) by_name[t.name] = t;
  int compared = 0;
  for (const NamedTensor& t : (*last)->Parameters()) {
    ASSERT_EQ(by_name.count(t.name), 1u) << t.name;
    const NamedTensor& f = by_name[t.name];
    ASSERT_EQ(f.numel(), t.numel());
    EXPECT_EQ(std::vector<float>(f.data, f.data + f.numel()), std::vector<float>(t.data, t.data + t.numel())) << t.name;
    ++compared;
  }
  EXPECT_GT(compared, 20);
  // Statistics: matrices ~ N(0, 0.02²), norms 1, biases 0.
  for (const NamedTensor& t : (*full)->Parameters()) {
    double s = 0, s2 = 0;
    for (int64_t i = 0; i < t.numel(); ++i) {
      s += t.data[i];
      s2 += static_cast<double>(t.data[i]) * t.data[i];
    }
    const double mean = s / t.numel(), var = s2 / t.numel() - mean * mean;
    if (t.name.ends_with("norm.weight")) {
      EXPECT_EQ(mean, 1.0) << t.name;
    } else if (t.name.ends_with("e_score_correction_bias")) {
      EXPECT_EQ(s2, 0.0) << t.name;
    } else if (t.numel() >= 4096) {
      EXPECT_NEAR(std::sqrt(var), 0.02, 0.02 * 0.1) << t.name;
      EXPECT_NEAR(mean, 0.0, 0.02 * 0.1) << t.name;
    }
  }
}

}  // namespace
}  // namespace shoal::model
