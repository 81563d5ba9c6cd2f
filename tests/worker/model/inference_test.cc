// Incremental decoding with the compressed KV cache and absorbed MLA (§2.5) reproduces the training forward's
// logits at every position (Appendix B.1), on the golden fixture and on a random model with larger weights.
#include "worker/model/inference.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <random>

#include "tests/worker/model/test_util.h"
#include "worker/infer/generate.h"
#include "worker/model/model.h"

namespace shoal::model {
namespace {

// Steps through tokens [B, T] and compares each step's logits with the full forward's.
double CompareWithForward(Model& model, const std::vector<int32_t>& tokens, int B, int T) {
  const int64_t V = model.config().vocab_size;
  std::vector<float> full(static_cast<size_t>(B) * T * V);
  MicroBatch mb{.inputs = tokens.data(), .B = B, .T = T};
  auto l = model.Forward(mb, full.data(), nullptr);
  EXPECT_TRUE(l.ok()) << l.status();
  auto decoder = Decoder::Create(model, B, T);
  EXPECT_TRUE(decoder.ok()) << decoder.status();
  if (!decoder.ok()) return 1e9;
  std::vector<int32_t> step(B);
  std::vector<float> logits(static_cast<size_t>(B) * V);
  double worst = 0;
  for (int t = 0; t < T; ++t) {
    for (int b = 0; b < B; ++b) step[b] = tokens[b * T + t];
    Status st = (*decoder)->Step(step.data(), B, logits.data());
    EXPECT_TRUE(st.ok()) << st;
    for (int b = 0; b < B; ++b) {
      worst = std::max(worst, testing_util::MaxAbsDiff(logits.data() + b * V, full.data() + (b * T + t) * V, V));
    }
  }
  EXPECT_EQ((*decoder)->length(), T);
  EXPECT_EQ((*decoder)->Step(step.data(), B, logits.data()).code(), StatusCode::kFailedPrecondition);  // full
  (*decoder)->Reset();
  EXPECT_TRUE((*decoder)->Step(step.data(), 1, logits.data()).ok());
  return worst;
}

TEST(DecoderTest, MatchesTheForwardOnTheFixture) {
  if (testing_util::FixtureDir().empty()) GTEST_SKIP() << "dsv3-micro fixture not found";
  auto f = testing_util::LoadFixture();
  ASSERT_TRUE(f.ok()) << f.status();
  auto model = Model::Create(f->config(), {.max_batch = f->B, .max_seq = f->S});
  ASSERT_TRUE(model.ok());
  ASSERT_TRUE((*model)->Load(testing_util::LookupIn(f->checkpoint.tensors)).ok());
  const double worst = CompareWithForward(**model, f->rows().inputs, f->B, f->S);
  std::printf("[decoder] fixture: incremental absorbed-MLA logits vs forward, max|diff| %.3g\n", worst);
  EXPECT_LE(worst, 1e-5);
}

TEST(DecoderTest, MatchesTheForwardOnARandomModel) {
  auto c = ModelPreset("demo");
  ASSERT_TRUE(c.ok());
  const int B = 3, T = 24;
  auto model = Model::Create(*c, {.max_batch = B, .max_seq = T});
  ASSERT_TRUE(model.ok());
  (*model)->InitRandom(21, 0.08f);
  std::mt19937_64 rng(22);
  std::vector<int32_t> tokens(B * T);
  for (int32_t& t : tokens) t = static_cast<int32_t>(rng() % c->vocab_size);
  std::vector<float> probe(static_cast<size_t>(B) * T * c->vocab_size);
  MicroBatch mb{.inputs = tokens.data(), .B = B, .T = T};
  ASSERT_TRUE((*model)->Forward(mb, probe.data(), nullptr).ok());
  const double scale = testing_util::MaxAbs(probe.data(), static_cast<int64_t>(probe.size()));
  const double worst = CompareWithForward(**model, tokens, B, T);
  std::printf("[decoder] demo, std 0.08: max|diff| %.3g (max|logit| %.3g)\n", worst, scale);
  EXPECT_LE(worst, 1e-5 * std::max(1.0, scale));
}

// Greedy generation: every generated token is the argmax of the full forward over prompt + generated text, and
// sampling is reproducible by seed.
TEST(DecoderTest, GenerateGreedyAndSampled) {
  auto c = ModelPreset("demo");
  ASSERT_TRUE(c.ok());
  const int B = 2, P = 5, G = 7, T = P + G;
  auto model = Model::Create(*c, {.max_batch = B, .max_seq = T});
  ASSERT_TRUE(model.ok());
  (*model)->InitRandom(31, 0.1f);
  std::vector<int32_t> prompt = {1, 2, 3, 4, 5, 9, 8, 7, 6, 5};
  auto d = Decoder::Create(**model, B, T);
  ASSERT_TRUE(d.ok());
  std::vector<int32_t> out(B * G);
  ASSERT_TRUE(Generate(**d, prompt.data(), B, P, G, /*temperature=*/0.f, /*seed=*/0, out.data()).ok());
  std::vector<int32_t> full(B * T);
  for (int b = 0; b < B; ++b) {
    for (int t = 0; t < P; ++t) full[b * T + t] = prompt[b * P + t];
    for (int t = 0; t < G; ++t) full[b * T + P + t] = out[b * G + t];
  }
  const int64_t V = c->vocab_size;
  std::vector<float> logits(static_cast<size_t>(B) * T * V);
  MicroBatch mb{.inputs = full.data(), .B = B, .T = T};
  ASSERT_TRUE((*model)->Forward(mb, logits.data(), nullptr).ok());
  for (int b = 0; b < B; ++b) {
    for (int t = P - 1; t < T - 1; ++t) {
      const float* row = logits.data() + (static_cast<int64_t>(b) * T + t) * V;
      EXPECT_EQ(std::max_element(row, row + V) - row, full[b * T + t + 1]) << "row " << b << " position " << t;
    }
  }
  std::vector<int32_t> s1(B * G), s2(B * G), s3(B * G);
  ASSERT_TRUE(Generate(**d, prompt.data(), B, P, G, 1.f, 7, s1.data()).ok());
  ASSERT_TRUE(Generate(**d, prompt.data(), B, P, G, 1.f, 7, s2.data()).ok());
  ASSERT_TRUE(Generate(**d, prompt.data(), B, P, G, 1.f, 8, s3.data()).ok());
  EXPECT_EQ(s1, s2);
  EXPECT_NE(s1, s3);
  for (int32_t t : s1) EXPECT_TRUE(t >= 0 && t < V);
  // The last new token is sampled, not stepped: P + G + 1 - 1 positions fit, one more does not.
  std::vector<int32_t> longer(B * (G + 2));
  EXPECT_TRUE(Generate(**d, prompt.data(), B, P, G + 1, 0.f, 0, longer.data()).ok());
  EXPECT_EQ(Generate(**d, prompt.data(), B, P, G + 2, 0.f, 0, longer.data()).code(), StatusCode::kInvalidArgument);
}

// One sequence in multi-token passes (Extend, chunked past 16 rows, with a Truncate in between) gives the
// forward's logits, and the MTP layer over the decoder's hidden states gives the forward's MTP logits.
TEST(DecoderTest, ExtendTruncateAndMtpMatchTheForward) {
  auto c = ModelPreset("demo");
  ASSERT_TRUE(c.ok());
  const int T = 24;
  auto model = Model::Create(*c, {.max_batch = 1, .max_seq = T});
  ASSERT_TRUE(model.ok());
  (*model)->InitRandom(31, 0.08f);
  std::mt19937_64 rng(32);
  std::vector<int32_t> tokens(T + 1);
  for (int32_t& t : tokens) t = static_cast<int32_t>(rng() % c->vocab_size);
  const int64_t V = c->vocab_size, H = c->hidden_size;
  std::vector<float> full(static_cast<size_t>(T) * V), full_mtp(static_cast<size_t>(T) * V);
  MicroBatch mb{.inputs = tokens.data(), .mtp_inputs = tokens.data() + 1, .B = 1, .T = T};
  ASSERT_TRUE((*model)->Forward(mb, full.data(), full_mtp.data()).ok());
  const double scale = testing_util::MaxAbs(full.data(), static_cast<int64_t>(full.size()));

  auto dec = Decoder::Create(**model, 1, T);
  ASSERT_TRUE(dec.ok()) << dec.status();
  ASSERT_TRUE((*dec)->has_mtp());
  std::vector<float> logits(static_cast<size_t>(T) * V), hidden(static_cast<size_t>(T) * H);
  // 5 tokens, cut back to 3 (a rejected draft), then the other 21 in one pass (two chunks).
  ASSERT_TRUE((*dec)->Extend(tokens.data(), 5, logits.data(), hidden.data()).ok());
  (*dec)->Truncate(3);
  EXPECT_EQ((*dec)->length(), 3);
  ASSERT_TRUE((*dec)->Extend(tokens.data() + 3, T - 3, logits.data() + 3 * V, hidden.data() + 3 * H).ok());
  EXPECT_EQ((*dec)->length(), T);
  const double worst = testing_util::MaxAbsDiff(logits.data(), full.data(), T * V);
  std::vector<float> mtp(static_cast<size_t>(T) * V);
  ASSERT_TRUE((*dec)->MtpExtend(hidden.data(), tokens.data() + 1, T, mtp.data()).ok());
  const double worst_mtp = testing_util::MaxAbsDiff(mtp.data(), full_mtp.data(), T * V);
  std::printf("[decoder] Extend vs forward max|diff| %.3g, MTP %.3g (max|logit| %.3g)\n", worst, worst_mtp, scale);
  EXPECT_LE(worst, 1e-5 * std::max(1.0, scale));
  EXPECT_LE(worst_mtp, 1e-5 * std::max(1.0, scale));
  EXPECT_EQ((*dec)->Extend(tokens.data(), 1, logits.data()).code(), StatusCode::kFailedPrecondition);  // full
}

// Speculative decoding gives the greedy completion, whatever the MTP layer drafts (here: a random one).
TEST(DecoderTest, SpeculativeDecodingGivesTheGreedyCompletion) {
  auto c = ModelPreset("demo");
  ASSERT_TRUE(c.ok());
  auto model = Model::Create(*c, {.max_batch = 1, .max_seq = 64});
  ASSERT_TRUE(model.ok());
  (*model)->InitRandom(41, 0.08f);
  const std::vector<int32_t> prompt = {16, 65, 66, 67, 60, 70, 71};
  infer::SamplingOptions o;
  o.max_new_tokens = 40;
  o.eos_id = -1;  // never stops early
  std::mt19937_64 rng(0);
  auto greedy = infer::Generate(**model, {prompt}, o, rng);
  ASSERT_TRUE(greedy.ok()) << greedy.status();
  infer::SpeculativeStats stats;
  auto spec = infer::GenerateSpeculative(**model, prompt, o, &stats);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->tokens, (*greedy)[0].tokens);
  EXPECT_EQ(stats.main_passes, 1 + stats.drafted);
  EXPECT_EQ(static_cast<int64_t>(spec->tokens.size()), 1 + stats.drafted + stats.accepted);
  std::printf("[speculative] random demo model: %lld of %lld drafts accepted\n",
              static_cast<long long>(stats.accepted), static_cast<long long>(stats.drafted));
  o.temperature = 1.0f;
  EXPECT_EQ(infer::GenerateSpeculative(**model, prompt, o, &stats).status().code(), StatusCode::kInvalidArgument);
}

TEST(DecoderTest, NeedsTheWholeModel) {
  auto c = ModelPreset("demo");
  ASSERT_TRUE(c.ok());
  auto stage = Model::Create(*c, {.layer_end = 2, .has_head = false, .max_batch = 1, .max_seq = 4});
  ASSERT_TRUE(stage.ok()) << stage.status();
  EXPECT_EQ(Decoder::Create(**stage, 1, 4).status().code(), StatusCode::kFailedPrecondition);
  auto model = Model::Create(*c, {.max_batch = 1, .max_seq = 4});
  ASSERT_TRUE(model.ok());
  auto d = Decoder::Create(**model, 2, 4);
  ASSERT_TRUE(d.ok());
  std::vector<float> logits(2 * c->vocab_size);
  const int32_t bad[2] = {0, static_cast<int32_t>(c->vocab_size)};
  EXPECT_EQ((*d)->Step(bad, 2, logits.data()).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*d)->Step(bad, 3, logits.data()).code(), StatusCode::kInvalidArgument);
  // Per token and layer the cache holds d_c + d_R floats (§2.5).
  EXPECT_EQ((*d)->cache_bytes(), 4 * c->num_hidden_layers * 2 * 4 * (c->kv_lora_rank + c->qk_rope_head_dim));
}

}  // namespace
}  // namespace shoal::model
