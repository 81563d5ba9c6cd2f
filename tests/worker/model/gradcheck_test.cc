// Finite-difference checks of whole layers through the stage API: a dense (MLA + SwiGLU) block, an MLA block
// with q_proj (q_lora_rank 0), a MoE block with its router and balance loss, and the MTP module with the final
// norm, the shared head and the MTP layer's own embedding copy. For every trainable tensor and the stage input,
// a random direction d: (L(θ+εd) − L(θ−εd)) / 2ε must match ⟨∇L, d⟩. Routing must not change under the
// perturbations (checked), so the comparison is of a smooth function.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>

#include "tests/worker/model/test_util.h"
#include "worker/model/model.h"

namespace shoal::model {
namespace {

ModelConfig TinyConfig(bool q_lora) {
  ModelConfig c;
  c.vocab_size = 48;
  c.hidden_size = 32;
  c.intermediate_size = 40;
  c.moe_intermediate_size = 10;
  c.num_hidden_layers = 2;
  c.num_nextn_predict_layers = 1;
  c.num_attention_heads = 2;
  c.num_key_value_heads = 2;
  c.q_lora_rank = q_lora ? 16 : 0;
  c.kv_lora_rank = 12;
  c.qk_nope_head_dim = 8;
  c.qk_rope_head_dim = 4;
  c.v_head_dim = 6;
  c.n_routed_experts = 8;
  c.n_shared_experts = 1;
  c.num_experts_per_tok = 2;
  c.n_group = 4;
  c.topk_group = 2;
  c.routed_scaling_factor = 2.5;
  c.first_k_dense_replace = 1;
  c.max_position_embeddings = 64;
  return c;
}

std::vector<float> RandomVec(size_t n, uint64_t seed, float lo, float hi) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// Norm weights 1 + 0.1·U and biases 0.05·U, so that a norm that ignores its weight, or a bias used wrongly, shows.
void Randomise(Model& model, uint64_t seed) {
  model.InitRandom(seed, 0.15f);
  uint64_t s = seed * 7919;
  for (NamedTensor& t : model.Parameters()) {
    if (t.name.ends_with("norm.weight")) {
      std::vector<float> r = RandomVec(t.numel(), ++s, -0.1f, 0.1f);
      for (int64_t i = 0; i < t.numel(); ++i) t.data[i] = 1.0f + r[i];
    } else if (t.name.ends_with("e_score_correction_bias")) {
      std::vector<float> r = RandomVec(t.numel(), ++s, -0.05f, 0.05f);
      std::copy(r.begin(), r.end(), t.data);
    }
  }
}

// Every discrete routing decision of the last forward, per MoE layer: the routed set of each token and the plain
// top-K of the unbiased scores that the balance loss counts (f_i), both as sorted sets.
std::vector<std::vector<int32_t>> RoutingSignature(const Model& model) {
  std::vector<std::vector<int32_t>> sig;
  const int64_t E = model.config().n_routed_experts;
  for (const RoutingView& v : model.LastRouting()) {
    std::vector<int32_t> layer;
    for (int64_t n = 0; n < v.num_tokens; ++n) {
      std::vector<int32_t> routed(v.topk_idx + n * v.k, v.topk_idx + (n + 1) * v.k);
      std::sort(routed.begin(), routed.end());
      std::vector<int32_t> order(E);
      for (int64_t e = 0; e < E; ++e) order[e] = static_cast<int32_t>(e);
      const float* s = v.scores + n * E;
      std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return s[a] > s[b]; });
      std::vector<int32_t> plain(order.begin(), order.begin() + v.k);
      std::sort(plain.begin(), plain.end());
      layer.insert(layer.end(), routed.begin(), routed.end());
      layer.insert(layer.end(), plain.begin(), plain.end());
    }
    sig.push_back(std::move(layer));
  }
  return sig;
}

struct StageProblem {
  std::unique_ptr<Model> model;
  MicroBatch batch;
  testing_util::Rows rows;
  std::vector<int32_t> positions, segments;
  std::vector<float> hidden_in, r;  // input and the output weights of L = Σ r ⊙ out (no head)
  LossScales scales;

  // The stage's scalar loss in double, and the routing of the forward.
  double Loss(std::vector<std::vector<int32_t>>* routing) {
    const ModelOptions& o = model->options();
    const int64_t n = static_cast<int64_t>(batch.B) * batch.T * model->config().hidden_size;
    std::vector<float> out(o.has_head ? 0 : n);
    Status st = model->ForwardStage(batch, o.has_embedding ? nullptr : hidden_in.data(),
                                    o.has_head ? nullptr : out.data(), /*training=*/false);
    EXPECT_TRUE(st.ok()) << st;
    double loss = 0;
    if (o.has_head) {
      std::vector<float> din(n);
      auto l = model->BackwardStage(batch, scales, nullptr, din.data());  // gradients are discarded by the caller
      EXPECT_TRUE(l.ok()) << l.status();
      loss = scales.main * l->main_sum + scales.mtp * l->mtp_sum + scales.balance * l->balance;
    } else {
      for (int64_t i = 0; i < n; ++i) loss += static_cast<double>(r[i]) * out[i];
      for (const RoutingView& v : model->LastRouting()) loss += scales.balance * v.balance_loss;
    }
    if (routing) *routing = RoutingSignature(*model);
    return loss;
  }
};

StageProblem MakeStage(const ModelConfig& c, int64_t layer_begin, int64_t layer_end, bool has_head, uint64_t seed,
                       bool packed) {
  StageProblem p;
  ModelOptions o;
  o.layer_begin = layer_begin;
  o.layer_end = layer_end;
  o.has_embedding = false;
  o.has_head = has_head;
  o.max_batch = 2;
  o.max_seq = 8;
  o.balance_alpha = 1.0f;  // large, so that the balance loss's gradient weighs like the rest
  auto m = Model::Create(c, o);
  EXPECT_TRUE(m.ok()) << m.status();
  p.model = std::move(*m);
  Randomise(*p.model, seed);
  const int B = 2, T = 8;
  std::mt19937_64 rng(seed + 1);
  std::vector<int32_t> tokens(B * (T + 1));
  for (int32_t& t : tokens) t = static_cast<int32_t>(rng() % c.vocab_size);
  p.rows = testing_util::Rows::FromTokens(tokens, B, T);
  p.batch = p.rows.Batch();
  if (packed) {  // two packed samples in row 1: block-diagonal mask, positions restarting at 0
    for (int b = 0; b < B; ++b) {
      for (int t = 0; t < T; ++t) {
        const bool second = b == 1 && t >= 3;
        p.segments.push_back(second ? 2 : 1);
        p.positions.push_back(second ? t - 3 : t);
      }
    }
    p.batch.segment_ids = p.segments.data();
    p.batch.positions = p.positions.data();
  }
  const size_t n = static_cast<size_t>(B) * T * c.hidden_size;
  p.hidden_in = RandomVec(n, seed + 2, -1.f, 1.f);
  p.r = RandomVec(n, seed + 3, -1.f, 1.f);
  p.scales = has_head ? LossScales{0.7f, 0.45f, 1.0f} : LossScales{1.f, 1.f, 1.3f};
  return p;
}

struct Check {
  std::string name;
  double analytic, numeric;
};

// The directional derivatives of every trainable tensor and of the stage input; false when a perturbation changed
// a routing decision (the loss is then not smooth there and the seed is not usable).
bool RunChecks(StageProblem& p, float eps, std::vector<Check>* checks) {
  Model& model = *p.model;
  const bool head = model.options().has_head;
  const int64_t n_in = static_cast<int64_t>(p.hidden_in.size());
  model.ZeroGrad();
  std::vector<float> out(head ? 0 : n_in), dx_in(n_in);
  Status st = model.ForwardStage(p.batch, p.hidden_in.data(), head ? nullptr : out.data(), /*training=*/false);
  EXPECT_TRUE(st.ok()) << st;
  const std::vector<std::vector<int32_t>> routing0 = RoutingSignature(model);
  auto l = model.BackwardStage(p.batch, p.scales, head ? nullptr : p.r.data(), dx_in.data());
  EXPECT_TRUE(l.ok()) << l.status();
  std::vector<std::pair<std::string, std::vector<float>>> grads;
  for (const NamedTensor& g : model.Gradients()) grads.emplace_back(g.name, std::vector<float>(g.data, g.data + g.numel()));

  checks->clear();
  bool smooth = true;
  uint64_t seed = 100;
  auto directional = [&](const std::string& name, float* x, int64_t n, const float* g) {
    std::vector<float> d = RandomVec(static_cast<size_t>(n), ++seed, -1.f, 1.f);
    double analytic = 0;
    for (int64_t i = 0; i < n; ++i) analytic += static_cast<double>(g[i]) * d[i];
    std::vector<float> saved(x, x + n);
    std::vector<std::vector<int32_t>> rp, rm;
    for (int64_t i = 0; i < n; ++i) x[i] = saved[i] + eps * d[i];
    const double lp = p.Loss(&rp);
    for (int64_t i = 0; i < n; ++i) x[i] = saved[i] - eps * d[i];
    const double lm = p.Loss(&rm);
    std::copy(saved.begin(), saved.end(), x);
    smooth = smooth && rp == routing0 && rm == routing0;
    checks->push_back({name, analytic, (lp - lm) / (2.0 * eps)});
  };
  directional("(stage input)", p.hidden_in.data(), n_in, dx_in.data());
  std::vector<NamedTensor> params = model.Parameters();
  for (const auto& [name, g] : grads) {
    auto it = std::find_if(params.begin(), params.end(), [&](const NamedTensor& t) { return t.name == name; });
    EXPECT_NE(it, params.end()) << name;
    if (it != params.end()) directional(name, it->data, it->numel(), g.data());
  }

  return smooth;
}

// Finds a seed whose perturbations leave every routing decision in place (at most 20 tries), then compares: each
// |numeric − analytic| <= tol·max(|analytic|, floor), floor = 1e-2·the largest |analytic| (the finite-difference
// noise of an fp32 forward is about 1e-4 of it).
void GradCheck(const ModelConfig& c, int64_t layer_begin, int64_t layer_end, bool has_head, bool packed,
               uint64_t seed, float eps, double tol, const char* label) {
  std::vector<Check> checks;
  bool found = false;
  int tries = 0;
  for (; tries < 20 && !found; ++tries) {
    StageProblem p = MakeStage(c, layer_begin, layer_end, has_head, seed + 1000 * tries, packed);
    found = RunChecks(p, eps, &checks);
  }
  ASSERT_TRUE(found) << label << ": every seed tried had a routing decision within eps of flipping";
  double largest = 0;
  for (const Check& ch : checks) largest = std::max(largest, std::abs(ch.analytic));
  const double floor = 1e-2 * largest;
  double worst = 0;
  std::string worst_name;
  for (const Check& ch : checks) {
    const double rel = std::abs(ch.numeric - ch.analytic) / std::max(std::abs(ch.analytic), floor);
    if (std::getenv("GC_VERBOSE")) {
      std::printf("  %-60s %14.8f %14.8f %.2e\n", ch.name.c_str(), ch.analytic, ch.numeric, rel);
    }
    EXPECT_LE(rel, tol) << label << ": " << ch.name << " analytic " << ch.analytic << " numeric " << ch.numeric;
    if (rel > worst) {
      worst = rel;
      worst_name = ch.name;
    }
  }
  std::printf("[gradcheck] %s: %zu directional derivatives (seed try %d), worst relative error %.2e (%s)\n", label,
              checks.size(), tries, worst, worst_name.c_str());
}

const float kEps = std::getenv("GC_EPS") ? std::strtof(std::getenv("GC_EPS"), nullptr) : 4e-3f;
constexpr double kTol = 1e-2;

TEST(GradCheckTest, DenseBlockWithMla) {
  GradCheck(TinyConfig(/*q_lora=*/true), 0, 1, /*has_head=*/false, /*packed=*/true, 11, kEps, kTol,
            "layer 0 (MLA + dense SwiGLU, packed rows)");
}

TEST(GradCheckTest, MlaWithQProj) {
  GradCheck(TinyConfig(/*q_lora=*/false), 0, 1, /*has_head=*/false, /*packed=*/false, 12, kEps, kTol,
            "layer 0 with q_proj (q_lora_rank 0)");
}

TEST(GradCheckTest, MoeBlockWithRouter) {
  GradCheck(TinyConfig(/*q_lora=*/true), 1, 2, /*has_head=*/false, /*packed=*/true, 13, kEps, kTol,
            "layer 1 (MLA + MoE, router, balance loss)");
}

TEST(GradCheckTest, MtpModuleAndHead) {
  GradCheck(TinyConfig(/*q_lora=*/true), 2, 3, /*has_head=*/true, /*packed=*/false, 14, kEps, kTol,
            "model.norm + lm_head + MTP layer 2 (own embedding copy)");
}

}  // namespace
}  // namespace shoal::model
