// Helpers shared by the checkpoint tests: a temporary directory, raw file access for corrupting files, random
// tensors, and the dsv3-micro config built in code (so most tests do not need the fixture files).
#pragma once

#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "spec/model_config.h"
#include "worker/checkpoint/export.h"
#include "worker/checkpoint/tensor_set.h"

namespace shoal {
inline void PrintTo(StatusCode code, std::ostream* os) { *os << StatusCodeName(code); }
}  // namespace shoal

namespace shoal::checkpoint::testing_util {

class TempDir {
 public:
  TempDir() {
    const char* base = getenv("TMPDIR");
    std::string tmpl = std::string(base != nullptr && *base != '\0' ? base : "/tmp") + "/shoal-ckpt-XXXXXX";
    if (mkdtemp(tmpl.data()) == nullptr) ADD_FAILURE() << "mkdtemp " << tmpl << " failed";
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  std::string Sub(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

inline std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

inline void WriteBytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// Files of a directory (names only), sorted.
inline std::vector<std::string> ListDir(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

inline std::vector<float> RandomValues(int64_t n, uint32_t seed, float stddev = 0.02f, float mean = 0.f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(mean, stddev);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = dist(rng);
  return v;
}

inline Tensor RandomTensor(std::vector<int64_t> shape, uint32_t seed, float stddev = 0.02f) {
  const int64_t n = NumElements(shape).value_or(0);
  return Tensor::FromF32(std::move(shape), RandomValues(n, seed, stddev));
}

// dsv3-micro (../shared/fixtures/dsv3-micro/README.md §1): ten pairwise-distinct sizes, 3 main layers + 1 MTP.
inline ModelConfig MicroConfig() {
  ModelConfig c;
  c.vocab_size = 320;
  c.hidden_size = 64;
  c.intermediate_size = 160;
  c.moe_intermediate_size = 20;
  c.num_hidden_layers = 3;
  c.num_nextn_predict_layers = 1;
  c.num_attention_heads = 2;
  c.num_key_value_heads = 2;
  c.q_lora_rank = 48;
  c.kv_lora_rank = 24;
  c.qk_nope_head_dim = 16;
  c.qk_rope_head_dim = 8;
  c.v_head_dim = 28;
  c.n_routed_experts = 12;
  c.n_shared_experts = 1;
  c.num_experts_per_tok = 3;
  c.n_group = 3;
  c.topk_group = 2;
  c.first_k_dense_replace = 1;
  c.max_position_embeddings = 64;
  return c;
}

// A full random model for `config` in F32 (norms around 1, biases small), MTP copies equal to the shared ones.
inline TensorSet RandomModel(const ModelConfig& config, uint32_t seed = 1, bool include_mtp = true) {
  TensorSet out;
  uint32_t s = seed;
  for (const HfTensorSpec& spec : ExpectedHfTensors(config, include_mtp)) {
    const bool norm = spec.shape.size() == 1 && spec.name.find("e_score") == std::string::npos;
    Tensor t = RandomTensor(spec.shape, s++, norm ? 0.1f : 0.02f);
    if (norm)
      for (float& x : t.mutable_values<float>()) x += 1.f;
    out.emplace(spec.name, std::move(t));
  }
  for (int64_t l = config.num_hidden_layers; include_mtp && l < config.num_blocks(); ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    out[p + "embed_tokens.weight"] = out["model.embed_tokens.weight"];
    out[p + "shared_head.head.weight"] = out["lm_head.weight"];
  }
  return out;
}

inline std::string FixtureDir() {
#ifdef SHOAL_DSV3_MICRO_DIR
  return SHOAL_DSV3_MICRO_DIR;
#else
  return "";
#endif
}

inline bool HaveFixture() {
  return !FixtureDir().empty() && std::filesystem::exists(FixtureDir() + "/model.safetensors");
}

}  // namespace shoal::checkpoint::testing_util
