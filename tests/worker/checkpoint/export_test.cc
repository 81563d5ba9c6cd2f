// Hugging Face export/import: the §9.1 layout against the dsv3-micro fixture, F32/BF16/FP8 exports read back,
// config.json contents, sharded exports with an index, and the loader's errors.
#include "worker/checkpoint/export.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "kernels/dtype.h"
#include "kernels/fp8.h"
#include "tests/worker/checkpoint/test_util.h"
#include "worker/checkpoint/safetensors.h"

namespace shoal::checkpoint {
namespace {

using testing_util::MicroConfig;
using testing_util::RandomModel;
using testing_util::ReadBytes;
using testing_util::TempDir;
using testing_util::WriteBytes;
using ::testing::HasSubstr;
using Json = nlohmann::json;

ExportOptions Opts(DType dtype, bool fp8 = false) {
  ExportOptions o;
  o.dtype = dtype;
  o.fp8 = fp8;
  o.sync = false;
  return o;
}

TEST(HfLayoutTest, ExpectedTensorsEqualTheFixtureExactly) {
  if (!testing_util::HaveFixture()) GTEST_SKIP() << "dsv3-micro fixture not found";
  auto config = ModelConfigFromHfJson(ReadBytes(testing_util::FixtureDir() + "/config.json"));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(*config, MicroConfig());  // the in-code copy the other tests use is the fixture's config
  auto file = SafetensorsFile::Open(testing_util::FixtureDir() + "/model.safetensors");
  ASSERT_TRUE(file.ok()) << file.status();

  std::map<std::string, std::vector<int64_t>> want, got;
  for (const auto& [name, e] : file->entries()) want[name] = e.shape;
  const auto expected = ExpectedHfTensors(*config);
  for (const HfTensorSpec& s : expected) got[s.name] = s.shape;
  EXPECT_EQ(expected.size(), 171u);
  EXPECT_EQ(got.size(), expected.size()) << "duplicate names";
  EXPECT_EQ(got, want);

  auto tensors = file->ReadAll();
  ASSERT_TRUE(tensors.ok());
  EXPECT_TRUE(CheckHfTensorSet(*config, *tensors).ok());
}

TEST(HfLayoutTest, CountsAndFp8SelectionFollowTheSpec) {
  const ModelConfig c = MicroConfig();
  // 3 global + dense layer 12 + 2 MoE layers × 50 + MTP layer 56.
  EXPECT_EQ(ExpectedHfTensors(c, true).size(), 171u);
  EXPECT_EQ(ExpectedHfTensors(c, false).size(), 115u);
  ModelConfig no_lora = c;
  no_lora.q_lora_rank = 0;
  bool has_q_proj = false;
  for (const auto& s : ExpectedHfTensors(no_lora, false)) {
    EXPECT_EQ(s.name.find("q_a_proj"), std::string::npos);
    if (s.name == "model.layers.0.self_attn.q_proj.weight") {
      has_q_proj = true;
      EXPECT_EQ(s.shape, (std::vector<int64_t>{48, 64}));
    }
  }
  EXPECT_TRUE(has_q_proj);
  EXPECT_EQ(ExpectedHfTensors(no_lora, false).size(), 115u - 3 * 2);  // 3 q tensors -> 1 q_proj in 3 layers

  for (const char* yes : {"model.layers.0.self_attn.q_a_proj.weight", "model.layers.1.self_attn.kv_b_proj.weight",
                          "model.layers.0.self_attn.o_proj.weight", "model.layers.0.mlp.down_proj.weight",
                          "model.layers.2.mlp.shared_experts.up_proj.weight",
                          "model.layers.3.mlp.experts.11.gate_proj.weight",
                          "model.layers.1.self_attn.kv_a_proj_with_mqa.weight"}) {
    EXPECT_TRUE(IsFp8ExportedWeight(yes)) << yes;
  }
  for (const char* no : {"model.embed_tokens.weight", "lm_head.weight", "model.layers.1.mlp.gate.weight",
                         "model.layers.1.mlp.gate.e_score_correction_bias", "model.layers.3.eh_proj.weight",
                         "model.layers.3.shared_head.head.weight", "model.layers.3.embed_tokens.weight",
                         "model.layers.0.self_attn.q_a_layernorm.weight", "model.layers.0.input_layernorm.weight"}) {
    EXPECT_FALSE(IsFp8ExportedWeight(no)) << no;
  }
}

TEST(HfLayoutTest, CheckerNamesMissingExtraAndWrongShapes) {
  const ModelConfig c = MicroConfig();
  TensorSet t = RandomModel(c);
  ASSERT_TRUE(CheckHfTensorSet(c, t).ok());
  t.erase("model.layers.2.mlp.experts.5.up_proj.weight");
  t["model.layers.2.mlp.experts.12.up_proj.weight"] = testing_util::RandomTensor({20, 64}, 1);
  t["model.norm.weight"] = testing_util::RandomTensor({65}, 1);
  const Status s = CheckHfTensorSet(c, t);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("missing model.layers.2.mlp.experts.5.up_proj.weight [20, 64]"));
  EXPECT_THAT(s.message(), HasSubstr("unexpected model.layers.2.mlp.experts.12.up_proj.weight"));
  EXPECT_THAT(s.message(), HasSubstr("model.norm.weight has shape [65], expected [64]"));
  // Without MTP, the MTP layer's tensors are extra.
  const Status no_mtp = CheckHfTensorSet(c, RandomModel(c), /*include_mtp=*/false);
  EXPECT_THAT(no_mtp.message(), HasSubstr("unexpected model.layers.3."));
  EXPECT_THAT(no_mtp.message(), HasSubstr("more"));
}

TEST(HfExportTest, F32ExportIsBitIdenticalAndLoadsBack) {
  const ModelConfig c = MicroConfig();
  TensorSet model = RandomModel(c);
  TempDir dir;
  TensorSet input = model;  // the trainer shares embedding/head with the MTP layer: no copies passed
  input.erase("model.layers.3.embed_tokens.weight");
  input.erase("model.layers.3.shared_head.head.weight");
  ASSERT_TRUE(ExportHuggingFace(c, input, dir.path(), Opts(DType::kF32)).ok());
  EXPECT_EQ(testing_util::ListDir(dir.path()), (std::vector<std::string>{"config.json", "model.safetensors"}));

  auto config_json = Json::parse(ReadBytes(dir.Sub("config.json")));
  EXPECT_EQ(config_json["torch_dtype"], "float32");
  EXPECT_FALSE(config_json.contains("quantization_config"));
  EXPECT_FALSE(config_json.contains("head_dim"));
  for (const char* key : {"vocab_size", "hidden_size", "intermediate_size", "moe_intermediate_size",
                          "num_hidden_layers", "num_nextn_predict_layers", "num_attention_heads", "q_lora_rank",
                          "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "n_routed_experts",
                          "n_shared_experts", "num_experts_per_tok", "n_group", "topk_group",
                          "first_k_dense_replace"}) {
    EXPECT_TRUE(config_json.contains(key)) << key;
  }
  ModelConfig back_config = *ModelConfigFromHfJson(ReadBytes(dir.Sub("config.json")));
  back_config.torch_dtype = c.torch_dtype;
  EXPECT_EQ(back_config, c);

  auto file = SafetensorsFile::Open(dir.Sub("model.safetensors"));
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->metadata().at("format"), "pt");
  auto written = file->ReadAll();
  ASSERT_TRUE(written.ok());
  EXPECT_EQ(*written, model);  // incl. the MTP copies, filled in

  auto loaded = LoadHuggingFace(dir.path());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->tensors, model);
  EXPECT_TRUE(loaded->has_mtp);
  EXPECT_FALSE(loaded->fp8);
  EXPECT_EQ(loaded->files, std::vector<std::string>{"model.safetensors"});
}

TEST(HfExportTest, Bf16ExportRoundsEverythingButTheBias) {
  const ModelConfig c = MicroConfig();
  const TensorSet model = RandomModel(c, 7);
  TempDir dir;
  ASSERT_TRUE(ExportHuggingFace(c, model, dir.path(), Opts(DType::kBF16)).ok());
  EXPECT_EQ(Json::parse(ReadBytes(dir.Sub("config.json")))["torch_dtype"], "bfloat16");
  auto file = SafetensorsFile::Open(dir.Sub("model.safetensors"));
  ASSERT_TRUE(file.ok());
  EXPECT_EQ(file->entries().size(), 171u);
  for (const auto& [name, e] : file->entries()) {
    const bool bias = name.ends_with("e_score_correction_bias");
    EXPECT_EQ(e.dtype, bias ? DType::kF32 : DType::kBF16) << name;
  }
  auto loaded = LoadHuggingFace(dir.path());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  for (const auto& [name, t] : model) {
    const auto& got = loaded->tensors.at(name).values<float>();
    const auto& want = t.values<float>();
    const bool bias = name.ends_with("e_score_correction_bias");
    for (size_t i = 0; i < want.size(); ++i) {
      ASSERT_EQ(got[i], bias ? want[i] : kernels::round_to_bf16(want[i])) << name << "[" << i << "]";
    }
  }
}

TEST(HfExportTest, Fp8ExportMatchesTheReleasedLayoutAndDequantisesWithinE4M3Error) {
  const ModelConfig c = MicroConfig();
  const TensorSet model = RandomModel(c, 11);
  TempDir dir;
  ASSERT_TRUE(ExportHuggingFace(c, model, dir.path(), Opts(DType::kBF16, /*fp8=*/true)).ok());

  auto config_json = Json::parse(ReadBytes(dir.Sub("config.json")));
  EXPECT_EQ(config_json["quantization_config"],
            Json::parse(R"({"activation_scheme":"dynamic","fmt":"e4m3","quant_method":"fp8","weight_block_size":[128,128]})"));

  auto file = SafetensorsFile::Open(dir.Sub("model.safetensors"));
  ASSERT_TRUE(file.ok()) << file.status();
  int num_fp8 = 0;
  for (const auto& [name, t] : model) {
    const SafetensorsEntry& e = file->entries().at(name);
    if (!IsFp8ExportedWeight(name)) {
      EXPECT_EQ(e.dtype, name.ends_with("e_score_correction_bias") ? DType::kF32 : DType::kBF16) << name;
      EXPECT_FALSE(file->Contains(name + "_scale_inv")) << name;
      continue;
    }
    ++num_fp8;
    EXPECT_EQ(e.dtype, DType::kF8E4M3) << name;
    const SafetensorsEntry& s = file->entries().at(name + "_scale_inv");
    const int64_t rows = t.shape[0], cols = t.shape[1];
    EXPECT_EQ(s.dtype, DType::kF32);
    EXPECT_EQ(s.shape, (std::vector<int64_t>{(rows + 127) / 128, (cols + 127) / 128})) << name;
    // Each scale is the block's amax / 448 (the dequantisation multiplier), and W ≈ q · scale.
    const auto scale = file->ReadF32(name + "_scale_inv").value();
    const auto w = t.values<float>();
    for (int64_t br = 0; br < s.shape[0]; ++br) {
      for (int64_t bc = 0; bc < s.shape[1]; ++bc) {
        float amax = 0;
        for (int64_t r = br * 128; r < std::min(rows, br * 128 + 128); ++r)
          for (int64_t col = bc * 128; col < std::min(cols, bc * 128 + 128); ++col)
            amax = std::max(amax, std::fabs(w[r * cols + col]));
        EXPECT_FLOAT_EQ(scale[br * s.shape[1] + bc], std::max(amax, kernels::kFp8AmaxFloor) / 448.f) << name;
      }
    }
    const auto deq = file->ReadF32(name).value();
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t col = 0; col < cols; ++col) {
        const float x = w[r * cols + col];
        const float sc = scale[(r / 128) * s.shape[1] + col / 128];
        // E4M3 keeps 3 mantissa bits: relative error <= 2^-4 for normals, absolute <= 2^-10·scale for subnormals.
        ASSERT_LE(std::fabs(deq[r * cols + col] - x), std::fabs(x) / 16 + sc / 1024 + 1e-12f) << name;
      }
    }
  }
  // Attention (5 per layer × 4) + dense MLP 3 + (12 experts + shared) × 3 per MoE layer × 3.
  EXPECT_EQ(num_fp8, 5 * 4 + 3 + 13 * 3 * 3);
  EXPECT_EQ(file->entries().size(), 171u + num_fp8);
  // The dense gate_proj [160, 64] spans two 128-row blocks, down_proj [64, 160] two 128-column blocks.
  EXPECT_EQ(file->entries().at("model.layers.0.mlp.gate_proj.weight_scale_inv").shape,
            (std::vector<int64_t>{2, 1}));
  EXPECT_EQ(file->entries().at("model.layers.0.mlp.down_proj.weight_scale_inv").shape,
            (std::vector<int64_t>{1, 2}));

  auto loaded = LoadHuggingFace(dir.path());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_TRUE(loaded->fp8);
  EXPECT_EQ(loaded->tensors.size(), 171u);  // scales folded in and dropped
  EXPECT_EQ(loaded->tensors.at("model.layers.1.self_attn.o_proj.weight").values<float>()[5],
            file->ReadF32("model.layers.1.self_attn.o_proj.weight").value()[5]);
}

TEST(HfExportTest, LargeModelsAreShardedWithAnIndex) {
  const ModelConfig c = MicroConfig();
  const TensorSet model = RandomModel(c, 3);
  TempDir dir;
  ExportOptions o = Opts(DType::kF32);
  o.max_shard_bytes = 300'000;
  ASSERT_TRUE(ExportHuggingFace(c, model, dir.path(), o).ok());
  const auto files = testing_util::ListDir(dir.path());
  EXPECT_FALSE(std::filesystem::exists(dir.Sub("model.safetensors")));
  ASSERT_TRUE(std::filesystem::exists(dir.Sub("model.safetensors.index.json")));
  auto index = Json::parse(ReadBytes(dir.Sub("model.safetensors.index.json")));
  int64_t total = 0;
  for (const auto& [name, t] : model) total += t.nbytes();
  EXPECT_EQ(index["metadata"]["total_size"], total);
  EXPECT_EQ(index["weight_map"].size(), model.size());
  std::set<std::string> shard_files;
  for (const auto& [name, f] : index["weight_map"].items()) shard_files.insert(f.get<std::string>());
  ASSERT_GE(shard_files.size(), 4u);  // ~1.3 MB in 300 kB pieces
  const std::string n = std::to_string(shard_files.size());
  EXPECT_EQ(*shard_files.begin(), "model-00001-of-0000" + n + ".safetensors");
  for (const std::string& f : shard_files) {
    EXPECT_TRUE(std::find(files.begin(), files.end(), f) != files.end()) << f;
    auto sf = SafetensorsFile::Open(dir.Sub(f));
    ASSERT_TRUE(sf.ok()) << sf.status();
    // A shard stays under the limit unless it holds one tensor bigger than it.
    if (sf->entries().size() > 1) {
      EXPECT_LE(sf->file_size(), 300'000u + 20'000u) << f;
    }
  }
  auto loaded = LoadHuggingFace(dir.path());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->tensors, model);
  EXPECT_EQ(loaded->files.size(), shard_files.size());

  // Re-exporting unsharded into the same directory removes the stale index and shards.
  WriteBytes(dir.Sub("tokenizer.json"), "{}");
  ASSERT_TRUE(ExportHuggingFace(c, model, dir.path(), Opts(DType::kF32)).ok());
  EXPECT_EQ(testing_util::ListDir(dir.path()),
            (std::vector<std::string>{"config.json", "model.safetensors", "tokenizer.json"}));
  EXPECT_EQ(LoadHuggingFace(dir.path())->tensors, model);
}

TEST(HfExportTest, WithoutMtpTheConfigSaysNoMtpLayers) {
  const ModelConfig c = MicroConfig();
  TempDir dir;
  ExportOptions o = Opts(DType::kF32);
  o.include_mtp = false;
  ASSERT_TRUE(ExportHuggingFace(c, RandomModel(c, 5), dir.path(), o).ok());
  EXPECT_EQ(Json::parse(ReadBytes(dir.Sub("config.json")))["num_nextn_predict_layers"], 0);
  auto loaded = LoadHuggingFace(dir.path());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_FALSE(loaded->has_mtp);
  EXPECT_EQ(loaded->tensors.size(), 115u);
  EXPECT_EQ(loaded->config.num_nextn_predict_layers, 0);
}

TEST(HfExportTest, RejectsInconsistentInput) {
  const ModelConfig c = MicroConfig();
  TempDir dir;
  TensorSet missing = RandomModel(c);
  missing.erase("model.layers.1.mlp.gate.e_score_correction_bias");
  Status s = ExportHuggingFace(c, missing, dir.Sub("a"), Opts(DType::kBF16));
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("missing model.layers.1.mlp.gate.e_score_correction_bias [12]"));

  TensorSet diverged = RandomModel(c);
  diverged["model.layers.3.shared_head.head.weight"] = testing_util::RandomTensor({320, 64}, 1234);
  s = ExportHuggingFace(c, diverged, dir.Sub("b"), Opts(DType::kBF16));
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("model.layers.3.shared_head.head.weight differs from lm_head.weight"));

  ModelConfig bad = c;
  bad.hidden_size = 0;
  EXPECT_EQ(ExportHuggingFace(bad, RandomModel(c), dir.Sub("c"), Opts(DType::kBF16)).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(ExportHuggingFace(c, RandomModel(c), dir.Sub("d"), Opts(DType::kF8E4M3)).code(),
            StatusCode::kInvalidArgument);
  EXPECT_FALSE(std::filesystem::exists(dir.Sub("a/model.safetensors")));
}

TEST(HfImportTest, LoadsTheFixtureDirectoryAsItIs) {
  if (!testing_util::HaveFixture()) GTEST_SKIP() << "dsv3-micro fixture not found";
  auto loaded = LoadHuggingFace(testing_util::FixtureDir());  // batch/expected .safetensors are ignored
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->tensors.size(), 171u);
  EXPECT_TRUE(loaded->has_mtp);
  EXPECT_EQ(loaded->config, MicroConfig());
  auto direct = SafetensorsFile::Open(testing_util::FixtureDir() + "/model.safetensors")->ReadAll();
  EXPECT_EQ(loaded->tensors, *direct);
}

TEST(HfImportTest, ReportsBrokenDirectories) {
  const ModelConfig c = MicroConfig();
  TempDir dir;
  EXPECT_EQ(LoadHuggingFace(dir.path()).status().code(), StatusCode::kNotFound);  // no config.json
  WriteBytes(dir.Sub("config.json"), ToHfConfigJson(c));
  auto none = LoadHuggingFace(dir.path());
  EXPECT_EQ(none.status().code(), StatusCode::kNotFound);
  EXPECT_THAT(none.status().message(), HasSubstr("model.safetensors.index.json"));

  // An index naming a shard that is not there, or a tensor the shard does not hold.
  ExportOptions o = Opts(DType::kBF16, true);
  o.max_shard_bytes = 200'000;
  ASSERT_TRUE(ExportHuggingFace(c, RandomModel(c), dir.path(), o).ok());
  auto index = Json::parse(ReadBytes(dir.Sub("model.safetensors.index.json")));
  const std::string orig_index = index.dump();
  index["weight_map"]["model.norm.weight"] = "model-00001-of-00001.safetensors";
  WriteBytes(dir.Sub("model.safetensors.index.json"), index.dump());
  auto bad = LoadHuggingFace(dir.path());
  EXPECT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("model-00001-of-00001.safetensors"));
  index = Json::parse(orig_index);
  index["weight_map"]["model.norm.weight"] = "../escape.safetensors";
  WriteBytes(dir.Sub("model.safetensors.index.json"), index.dump());
  EXPECT_EQ(LoadHuggingFace(dir.path()).status().code(), StatusCode::kDataLoss);

  // An FP8 weight whose scales are gone.
  index = Json::parse(orig_index);
  const std::string f = index["weight_map"]["model.layers.1.self_attn.o_proj.weight_scale_inv"];
  auto shard = SafetensorsFile::Open(dir.Sub(f));
  ASSERT_TRUE(shard.ok());
  TensorSet kept = shard->ReadAll().value();
  kept.erase("model.layers.1.self_attn.o_proj.weight_scale_inv");
  ASSERT_TRUE(WriteSafetensors(dir.Sub(f), kept).ok());
  index["weight_map"].erase("model.layers.1.self_attn.o_proj.weight_scale_inv");
  WriteBytes(dir.Sub("model.safetensors.index.json"), index.dump());
  auto no_scale = LoadHuggingFace(dir.path());
  EXPECT_EQ(no_scale.status().code(), StatusCode::kDataLoss);
  EXPECT_THAT(no_scale.status().message(), HasSubstr("o_proj.weight_scale_inv"));
}

}  // namespace
}  // namespace shoal::checkpoint
