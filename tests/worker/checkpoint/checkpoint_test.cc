// Checkpoint shards: what a worker writes for a step, checksums, crash safety, the async writer's snapshot
// semantics and completion reporting, and merging shards written under different layouts.
#include "worker/checkpoint/checkpoint.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>

#include "kernels/dtype.h"
#include "tests/worker/checkpoint/test_util.h"
#include "worker/checkpoint/async_writer.h"

namespace shoal::checkpoint {
namespace {

using testing_util::ReadBytes;
using testing_util::TempDir;
using testing_util::WriteBytes;
using ::testing::HasSubstr;

// Parameters and F32 moments (as the optimizer keeps them) for a few tensors.
struct ShardData {
  TensorSet params;
  TensorSet moments;
};

ShardData MakeShardData(const std::vector<std::pair<std::string, std::vector<int64_t>>>& specs, uint32_t seed) {
  ShardData d;
  for (const auto& [name, shape] : specs) {
    d.params[name] = testing_util::RandomTensor(shape, seed++);
    d.moments[name + ".exp_avg"] = testing_util::RandomTensor(shape, seed++, 1e-3f);
    Tensor v = testing_util::RandomTensor(shape, seed++, 1e-6f);
    for (float& x : v.mutable_values<float>()) x = x * x;
    d.moments[name + ".exp_avg_sq"] = std::move(v);
  }
  return d;
}

ShardWriteRequest Request(const std::string& shard, int64_t step, const ShardData& d) {
  ShardWriteRequest r;
  r.shard = shard;
  r.state.step = step;
  r.state.phase = "pretrain";
  r.state.epoch = 2;
  r.state.data_cursor_json = R"({"epoch":0,"sample":1234,"seed":7})";
  r.state.rng_state = std::string("\x00\x01\xff\xfe rng", 8);
  r.state.extra_json = {{"tokens_seen", "987654321"}, {"note", "\"warm\""}};
  r.optimizer_step = step;
  r.params = RefsOf(d.params);
  r.moments = RefsOf(d.moments);
  return r;
}

Tensor ToBf16(const Tensor& t) { return ConvertFloat(t.ref(), DType::kBF16, "t").value(); }

const std::vector<std::pair<std::string, std::vector<int64_t>>> kSpecs = {
    {"model.layers.1.mlp.gate.e_score_correction_bias", {12}},
    {"model.layers.1.mlp.experts.3.up_proj.weight", {20, 64}},
    {"model.layers.1.input_layernorm.weight", {64}},
};

TEST(CheckpointShardTest, WritesTheLayoutAndLoadsItBack) {
  TempDir root;
  const ShardData d = MakeShardData(kSpecs, 10);
  auto manifest = WriteShard(root.path(), Request("pp0-ep1", 300, d));
  ASSERT_TRUE(manifest.ok()) << manifest.status();

  const std::string step_dir = StepDir(root.path(), 300);
  EXPECT_EQ(step_dir, root.path() + "/step-300");
  EXPECT_EQ(testing_util::ListDir(step_dir),
            (std::vector<std::string>{"manifest-pp0-ep1.json", "model-pp0-ep1.safetensors",
                                      "optim-pp0-ep1.safetensors", "state-pp0-ep1.json"}));
  // The manifest lists every file with its real size and xxh3, and is itself on disk.
  ASSERT_EQ(manifest->files.size(), 3u);
  for (const ShardFileInfo& f : manifest->files) {
    const std::string bytes = ReadBytes(step_dir + "/" + f.name);
    EXPECT_EQ(f.digest.bytes, bytes.size()) << f.name;
    EXPECT_EQ(f.digest.xxh3, Xxh3Of(bytes.data(), bytes.size())) << f.name;
  }
  EXPECT_EQ(manifest->step, 300);
  EXPECT_EQ(manifest->epoch, 2);
  EXPECT_EQ(manifest->total_bytes(), manifest->files[0].digest.bytes + manifest->files[1].digest.bytes +
                                         manifest->files[2].digest.bytes);
  auto on_disk = ShardManifest::FromJson(ReadBytes(step_dir + "/manifest-pp0-ep1.json"), "manifest");
  ASSERT_TRUE(on_disk.ok()) << on_disk.status();
  EXPECT_EQ(*on_disk, *manifest);

  auto shard = LoadShard(step_dir, "pp0-ep1", &*manifest);
  ASSERT_TRUE(shard.ok()) << shard.status();
  EXPECT_EQ(shard->params, d.params);  // F32 master weights, bit for bit (incl. the bias)
  ASSERT_EQ(shard->moments.size(), d.moments.size());
  for (const auto& [name, m] : d.moments) {
    ASSERT_TRUE(shard->moments.count(name)) << name;
    EXPECT_EQ(shard->moments.at(name).dtype, DType::kBF16) << name;
    EXPECT_EQ(shard->moments.at(name), ToBf16(m)) << name;
  }
  EXPECT_EQ(shard->optimizer_step, 300);
  const ShardWriteRequest want = Request("pp0-ep1", 300, d);
  EXPECT_EQ(shard->state.step, 300);
  EXPECT_EQ(shard->state.phase, "pretrain");
  EXPECT_EQ(shard->state.epoch, 2);
  EXPECT_EQ(shard->state.rng_state, want.state.rng_state);
  EXPECT_EQ(nlohmann::json::parse(shard->state.data_cursor_json), nlohmann::json::parse(want.state.data_cursor_json));
  EXPECT_EQ(shard->state.extra_json, want.state.extra_json);
  EXPECT_EQ(shard->manifest, *manifest);
}

TEST(CheckpointShardTest, ChecksumAndSizeMismatchesAreDataLossNamingTheFile) {
  TempDir root;
  const ShardData d = MakeShardData(kSpecs, 20);
  auto manifest = WriteShard(root.path(), Request("s0", 5, d));
  ASSERT_TRUE(manifest.ok()) << manifest.status();
  const std::string step_dir = StepDir(root.path(), 5);
  EXPECT_TRUE(VerifyShardFiles(step_dir, *manifest).ok());
  for (const std::string file : {"model-s0.safetensors", "optim-s0.safetensors", "state-s0.json"}) {
    const std::string path = step_dir + "/" + file;
    const std::string orig = ReadBytes(path);
    std::string flipped = orig;
    flipped[flipped.size() - 3] ^= 0x01;  // a bit in the data (or in the JSON's last value)
    WriteBytes(path, flipped);
    auto r = LoadShard(step_dir, "s0");
    ASSERT_FALSE(r.ok()) << file;
    EXPECT_EQ(r.status().code(), StatusCode::kDataLoss) << r.status();
    EXPECT_THAT(r.status().message(), HasSubstr(path));
    EXPECT_THAT(r.status().message(), HasSubstr("xxh3"));
    EXPECT_EQ(VerifyShardFiles(step_dir, *manifest).code(), StatusCode::kDataLoss);

    WriteBytes(path, orig.substr(0, orig.size() - 1));
    r = LoadShard(step_dir, "s0");
    EXPECT_EQ(r.status().code(), StatusCode::kDataLoss);
    EXPECT_THAT(r.status().message(), HasSubstr("size"));

    std::filesystem::remove(path);
    r = LoadShard(step_dir, "s0");
    EXPECT_EQ(r.status().code(), StatusCode::kDataLoss);
    EXPECT_THAT(r.status().message(), HasSubstr(path));

    WriteBytes(path, orig);
    ASSERT_TRUE(LoadShard(step_dir, "s0").ok()) << file;
    EXPECT_TRUE(VerifyShardFiles(step_dir, *manifest).ok());
  }
}

TEST(CheckpointShardTest, CommittedManifestMustMatchTheDisk) {
  TempDir root;
  const ShardData d = MakeShardData(kSpecs, 30);
  auto committed = WriteShard(root.path(), Request("s0", 9, d));
  ASSERT_TRUE(committed.ok());
  // A stale worker rewrites the shard after the commit with other values.
  const ShardData other = MakeShardData(kSpecs, 99);
  ASSERT_TRUE(WriteShard(root.path(), Request("s0", 9, other)).ok());
  auto r = LoadShard(StepDir(root.path(), 9), "s0", &*committed);
  EXPECT_EQ(r.status().code(), StatusCode::kDataLoss);
  EXPECT_THAT(r.status().message(), HasSubstr("committed manifest"));
}

TEST(CheckpointShardTest, ACrashAtAnyPointLeavesNoCompleteLookingShard) {
  const ShardData d1 = MakeShardData(kSpecs, 40);
  const ShardData d2 = MakeShardData(kSpecs, 50);
  for (const std::string crash_after : {"model", "optim", "state"}) {
    TempDir root;
    const std::string step_dir = StepDir(root.path(), 11);
    ASSERT_TRUE(WriteShard(root.path(), Request("s1", 11, d1)).ok());  // a complete earlier write
    ASSERT_TRUE(WriteShard(root.path(), Request("s0", 11, d1)).ok());

    ShardWriteOptions crash;
    crash.fault_hook = [&](std::string_view stage) {
      return stage == crash_after ? AbortedError("simulated crash") : Status::OK();
    };
    auto w = WriteShard(root.path(), Request("s0", 11, d2), crash);
    ASSERT_FALSE(w.ok());

    auto listing = ListShards(step_dir);
    ASSERT_TRUE(listing.ok());
    EXPECT_EQ(listing->complete, std::vector<std::string>{"s1"}) << crash_after;
    EXPECT_EQ(listing->incomplete, std::vector<std::string>{"s0"}) << crash_after;
    auto r = LoadShard(step_dir, "s0");
    EXPECT_EQ(r.status().code(), StatusCode::kNotFound) << crash_after;
    EXPECT_THAT(r.status().message(), HasSubstr("never completely written"));
    auto merged = LoadMerged(step_dir);
    EXPECT_EQ(merged.status().code(), StatusCode::kFailedPrecondition) << merged.status();
    EXPECT_THAT(merged.status().message(), HasSubstr("s0"));

    // The next complete write of the shard makes it whole again.
    ASSERT_TRUE(WriteShard(root.path(), Request("s0", 11, d2)).ok());
    auto again = LoadShard(step_dir, "s0");
    ASSERT_TRUE(again.ok()) << again.status();
    EXPECT_EQ(again->params, d2.params);
  }
}

TEST(CheckpointShardTest, LeftoverTemporaryFilesMarkTheShardIncompleteAndAreCleanedUp) {
  TempDir root;
  const std::string step_dir = StepDir(root.path(), 1);
  std::filesystem::create_directories(step_dir);
  WriteBytes(step_dir + "/.model-s0.safetensors.tmp-123-0", "partial");
  auto listing = ListShards(step_dir);
  ASSERT_TRUE(listing.ok());
  EXPECT_EQ(listing->incomplete, std::vector<std::string>{"s0"});
  EXPECT_EQ(LoadMerged(step_dir).status().code(), StatusCode::kFailedPrecondition);

  ASSERT_TRUE(WriteShard(root.path(), Request("s0", 1, MakeShardData(kSpecs, 1))).ok());
  EXPECT_FALSE(std::filesystem::exists(step_dir + "/.model-s0.safetensors.tmp-123-0"));
  listing = ListShards(step_dir);
  EXPECT_EQ(listing->complete, std::vector<std::string>{"s0"});
  EXPECT_TRUE(listing->incomplete.empty());
}

TEST(CheckpointShardTest, RejectsMalformedRequests) {
  TempDir root;
  const ShardData d = MakeShardData(kSpecs, 60);
  struct Case {
    const char* what;
    std::function<void(ShardWriteRequest&)> mutate;
    const char* mention;
  };
  const Tensor wrong_shape = testing_util::RandomTensor({3}, 1);
  const Tensor int_tensor = Tensor::ScalarI64(1);
  const std::vector<Case> cases = {
      {"shard name with a slash", [](ShardWriteRequest& r) { r.shard = "a/b"; }, "shard name"},
      {"empty shard name", [](ShardWriteRequest& r) { r.shard = ""; }, "shard name"},
      {"moment without parameter",
       [&](ShardWriteRequest& r) { r.moments["model.norm.weight.exp_avg"] = wrong_shape.ref(); }, "no parameter"},
      {"moment of another shape",
       [&](ShardWriteRequest& r) { r.moments["model.layers.1.input_layernorm.weight.exp_avg"] = wrong_shape.ref(); },
       "shape"},
      {"unknown optimizer tensor", [&](ShardWriteRequest& r) { r.moments["model.x.momentum"] = wrong_shape.ref(); },
       "exp_avg"},
      {"integer parameter", [&](ShardWriteRequest& r) { r.params["model.norm.weight"] = int_tensor.ref(); }, "I64"},
      {"cursor not JSON", [](ShardWriteRequest& r) { r.state.data_cursor_json = "{sample: 1"; }, "data cursor"},
      {"extra not JSON", [](ShardWriteRequest& r) { r.state.extra_json["note"] = "warm"; }, "note"},
      {"negative step", [](ShardWriteRequest& r) { r.state.step = -1; }, ">= 0"},
  };
  for (const Case& c : cases) {
    ShardWriteRequest r = Request("s0", 3, d);
    c.mutate(r);
    auto w = WriteShard(root.path(), r);
    EXPECT_EQ(w.status().code(), StatusCode::kInvalidArgument) << c.what << ": " << w.status();
    EXPECT_THAT(w.status().message(), HasSubstr(c.mention)) << c.what;
  }
  EXPECT_TRUE(testing_util::ListDir(root.path()).empty()) << "nothing is written for a rejected request";
}

// ---- AsyncCheckpointWriter

// A poster that queues completions until the test runs them (as a worker's strand would).
struct ManualPoster {
  std::mutex mu;
  std::vector<std::function<void()>> queued;
  AsyncCheckpointWriter::Poster poster() {
    return [this](std::function<void()> fn) {
      std::lock_guard<std::mutex> lock(mu);
      queued.push_back(std::move(fn));
    };
  }
  size_t RunAll() {
    std::vector<std::function<void()>> fns;
    {
      std::lock_guard<std::mutex> lock(mu);
      fns.swap(queued);
    }
    for (auto& fn : fns) fn();
    return fns.size();
  }
};

TEST(AsyncCheckpointWriterTest, SnapshotsTensorsSoTheTrainerCanKeepStepping) {
  TempDir root;
  ManualPoster poster;
  ShardData d = MakeShardData(kSpecs, 70);
  const ShardData before = d;
  std::vector<Result<ShardManifest>> results;
  {
    AsyncCheckpointWriter writer(root.path(), {}, poster.poster());
    ASSERT_TRUE(writer.Submit(Request("s0", 100, d), [&](Result<ShardManifest> r) { results.push_back(std::move(r)); })
                    .ok());
    // The trainer takes its next step: every arena value changes right after Submit returned.
    for (auto* set : {&d.params, &d.moments})
      for (auto& [_, t] : *set)
        for (float& x : t.mutable_values<float>()) x += 1.f;
    writer.WaitIdle();
    EXPECT_EQ(writer.pending(), 0);
    EXPECT_EQ(writer.pending_bytes(), 0);
    EXPECT_TRUE(results.empty()) << "completions run only through the poster";
    EXPECT_EQ(poster.RunAll(), 1u);
  }
  ASSERT_EQ(results.size(), 1u);
  ASSERT_TRUE(results[0].ok()) << results[0].status();
  EXPECT_EQ(results[0]->shard, "s0");
  EXPECT_EQ(results[0]->step, 100);
  EXPECT_EQ(results[0]->files.size(), 3u);

  auto shard = LoadShard(StepDir(root.path(), 100), "s0", &*results[0]);
  ASSERT_TRUE(shard.ok()) << shard.status();
  EXPECT_EQ(shard->params, before.params);
  for (const auto& [name, m] : before.moments) EXPECT_EQ(shard->moments.at(name), ToBf16(m)) << name;
}

TEST(AsyncCheckpointWriterTest, ReportsFailuresAndDrainsOnDestruction) {
  TempDir root;
  WriteBytes(root.Sub("not-a-dir"), "x");  // a file where the checkpoint root should be
  const ShardData d = MakeShardData(kSpecs, 80);
  std::mutex mu;
  std::vector<std::pair<std::string, Status>> done;
  auto record = [&](std::string shard) {
    return [&, shard](Result<ShardManifest> r) {
      std::lock_guard<std::mutex> lock(mu);
      done.emplace_back(shard, r.status());
    };
  };
  {
    AsyncCheckpointWriter bad(root.Sub("not-a-dir"));
    ASSERT_TRUE(bad.Submit(Request("s0", 1, d), record("bad")).ok());
    AsyncCheckpointWriter good(root.path());
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(good.Submit(Request("s" + std::to_string(i), 2, d), record("good")).ok());
    // Invalid requests are refused synchronously, without a callback.
    ShardWriteRequest invalid = Request("s/9", 2, d);
    EXPECT_EQ(good.Submit(invalid, record("invalid")).code(), StatusCode::kInvalidArgument);
  }  // destructors finish the queued writes
  ASSERT_EQ(done.size(), 4u);
  int good_ok = 0;
  for (const auto& [who, status] : done) {
    if (who == "bad") {
      EXPECT_FALSE(status.ok());
      EXPECT_THAT(status.message(), HasSubstr("not-a-dir"));
    } else {
      EXPECT_EQ(who, "good");
      good_ok += status.ok();
    }
  }
  EXPECT_EQ(good_ok, 3);
  auto listing = ListShards(StepDir(root.path(), 2));
  ASSERT_TRUE(listing.ok());
  EXPECT_EQ(listing->complete, (std::vector<std::string>{"s0", "s1", "s2"}));
}

// ---- Merging across layouts

// Every tensor of a small MoE model, with per-expert names, and which pipeline stage / expert it belongs to.
TensorSet FullModel() {
  TensorSet all;
  uint32_t seed = 200;
  auto add = [&](const std::string& name, std::vector<int64_t> shape) {
    all[name] = testing_util::RandomTensor(std::move(shape), seed++);
  };
  add("model.embed_tokens.weight", {32, 8});
  add("lm_head.weight", {32, 8});
  add("model.norm.weight", {8});
  for (int l = 0; l < 4; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    add(p + "input_layernorm.weight", {8});
    add(p + "self_attn.o_proj.weight", {8, 8});
    add(p + "mlp.gate.weight", {6, 8});
    add(p + "mlp.gate.e_score_correction_bias", {6});
    for (int e = 0; e < 6; ++e) add(p + "mlp.experts." + std::to_string(e) + ".down_proj.weight", {8, 4});
  }
  return all;
}

int LayerOf(const std::string& name) {
  if (!name.starts_with("model.layers.")) return name == "model.embed_tokens.weight" ? 0 : 3;
  return std::stoi(name.substr(13));
}

int ExpertOf(const std::string& name) {
  const size_t p = name.find(".experts.");
  return p == std::string::npos ? -1 : std::stoi(name.substr(p + 9));
}

// Writes `all` (with moments) as shards chosen by `shard_of`, at `step`.
void WriteLayout(const std::string& root, const TensorSet& all, int64_t step,
                 const std::function<std::string(const std::string&)>& shard_of) {
  std::map<std::string, ShardData> shards;
  for (const auto& [name, t] : all) {
    ShardData& s = shards[shard_of(name)];
    s.params[name] = t;
    Tensor m = t;
    for (float& x : m.mutable_values<float>()) x *= 0.5f;
    s.moments[name + ".exp_avg"] = m;
    s.moments[name + ".exp_avg_sq"] = ToBf16(m);  // BF16 moments are stored as they are
  }
  for (const auto& [shard, data] : shards) {
    auto w = WriteShard(root, Request(shard, step, data));
    ASSERT_TRUE(w.ok()) << w.status();
  }
}

TEST(LoadMergedTest, ShardsOfDifferentLayoutsMergeToTheSameCheckpoint) {
  const TensorSet all = FullModel();
  TempDir pipeline, experts;
  // Layout A: 2 pipeline stages (layers 0-1 + embedding, layers 2-3 + norm + head).
  WriteLayout(pipeline.path(), all, 40, [](const std::string& n) { return LayerOf(n) < 2 ? "pp0" : "pp1"; });
  // Layout B: 1 stage, experts split over 3 EP ranks (expert e on rank e % 3, dense tensors on rank 0).
  WriteLayout(experts.path(), all, 40, [](const std::string& n) {
    const int e = ExpertOf(n);
    return "ep" + std::to_string(e < 0 ? 0 : e % 3);
  });

  auto a = LoadMerged(StepDir(pipeline.path(), 40));
  ASSERT_TRUE(a.ok()) << a.status();
  auto b = LoadMerged(StepDir(experts.path(), 40));
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(a->params, all);
  EXPECT_EQ(b->params, all);
  EXPECT_EQ(a->moments, b->moments);
  EXPECT_EQ(a->moments.size(), 2 * all.size());
  EXPECT_EQ(a->step, 40);
  EXPECT_EQ(a->optimizer_step, 40);
  EXPECT_EQ(a->states.size(), 2u);
  EXPECT_EQ(b->states.size(), 3u);
  EXPECT_EQ(b->manifests.size(), 3u);

  // Loading a subset by name (the committed shard list) works too.
  auto only = LoadMerged(StepDir(experts.path(), 40), {"ep1"});
  ASSERT_TRUE(only.ok()) << only.status();
  EXPECT_TRUE(only->params.count("model.layers.2.mlp.experts.4.down_proj.weight"));
  EXPECT_FALSE(only->params.count("model.layers.2.mlp.experts.3.down_proj.weight"));
  EXPECT_EQ(LoadMerged(StepDir(experts.path(), 40), {"ep7"}).status().code(), StatusCode::kNotFound);
}

TEST(LoadMergedTest, DuplicatesMustAgreeAndStepsMustMatch) {
  const TensorSet all = FullModel();
  {
    TempDir root;  // the embedding replicated on both stages, identically: fine
    WriteLayout(root.path(), all, 7, [](const std::string& n) { return LayerOf(n) < 2 ? "pp0" : "pp1"; });
    ShardData extra;
    extra.params["model.embed_tokens.weight"] = all.at("model.embed_tokens.weight");
    ASSERT_TRUE(WriteShard(root.path(), Request("pp1-copy", 7, extra)).ok());
    auto m = LoadMerged(StepDir(root.path(), 7));
    ASSERT_TRUE(m.ok()) << m.status();
    EXPECT_EQ(m->params, all);
  }
  {
    TempDir root;  // a replica that disagrees
    WriteLayout(root.path(), all, 7, [](const std::string& n) { return LayerOf(n) < 2 ? "pp0" : "pp1"; });
    ShardData extra;
    extra.params["model.embed_tokens.weight"] = testing_util::RandomTensor({32, 8}, 999);
    ASSERT_TRUE(WriteShard(root.path(), Request("zz", 7, extra)).ok());
    auto m = LoadMerged(StepDir(root.path(), 7));
    EXPECT_EQ(m.status().code(), StatusCode::kDataLoss);
    EXPECT_THAT(m.status().message(), HasSubstr("model.embed_tokens.weight"));
  }
  {
    TempDir root;  // a shard of another optimizer step in the same directory
    WriteLayout(root.path(), all, 7, [](const std::string& n) { return LayerOf(n) < 2 ? "pp0" : "pp1"; });
    ShardData extra;
    extra.params["x"] = testing_util::RandomTensor({2}, 1);
    ShardWriteRequest r = Request("zz", 7, extra);
    r.optimizer_step = 6;
    ASSERT_TRUE(WriteShard(root.path(), r).ok());
    auto m = LoadMerged(StepDir(root.path(), 7));
    EXPECT_EQ(m.status().code(), StatusCode::kDataLoss);
    EXPECT_THAT(m.status().message(), HasSubstr("optimizer step"));
  }
  {
    TempDir root;
    std::filesystem::create_directories(StepDir(root.path(), 1));
    EXPECT_EQ(LoadMerged(StepDir(root.path(), 1)).status().code(), StatusCode::kNotFound);
  }
}

}  // namespace
}  // namespace shoal::checkpoint
