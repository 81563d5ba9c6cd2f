// Training-step throughput of the model on the CPU against this machine's own sgemm peak, measured in the same
// run (STYLE.md §16): model GEMM FLOP/s (fwd + bwd of every Linear, the router, the head and the attention core)
// divided by the FLOP/s of one large sgemm. Not a test; prints one line per configuration.
//   model_bench [preset=small] [batch=8] [seq=128] [steps=5] [precision=fp32]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/blas.h"
#include "spec/model_config.h"
#include "worker/model/model.h"

namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

double SgemmPeak() {
  const int64_t n = 2048;
  std::vector<float> a(n * n, 0.5f), b(n * n, 0.25f), c(n * n);
  shoal::kernels::cpu::sgemm(false, true, n, n, n, 1.f, a.data(), n, b.data(), n, 0.f, c.data(), n);
  double best = 1e30;
  for (int i = 0; i < 3; ++i) {
    auto t0 = Clock::now();
    shoal::kernels::cpu::sgemm(false, true, n, n, n, 1.f, a.data(), n, b.data(), n, 0.f, c.data(), n);
    best = std::min(best, Seconds(t0, Clock::now()));
  }
  return 2.0 * n * n * n / best;
}

// Multiply-add FLOPs of one training step (forward + backward = 3 × forward GEMM work).
double StepFlops(const shoal::ModelConfig& c, int64_t B, int64_t T) {
  const double N = static_cast<double>(B * T), H = c.hidden_size, nh = c.num_attention_heads;
  const double dqk = c.qk_head_dim(), dv = c.v_head_dim, dc = c.kv_lora_rank, dr = c.qk_rope_head_dim;
  const double dn = c.qk_nope_head_dim, dq = c.q_lora_rank;
  double mla = c.has_q_lora() ? H * dq + dq * nh * dqk : H * nh * dqk;
  mla += H * (dc + dr) + dc * nh * (dn + dv) + nh * dv * H;
  const double attn_core = 2.0 * B * T * T / 2.0 * nh * (dqk + dv) / N;  // per token, causal half
  const double dense = 3 * H * c.intermediate_size;
  const double moe = (c.num_experts_per_tok + c.n_shared_experts) * 3 * H * c.moe_intermediate_size +
                     H * c.n_routed_experts;
  double per_token = 0;
  for (int64_t l = 0; l < c.num_blocks(); ++l) per_token += mla + attn_core + (c.is_moe_layer(l) ? moe : dense);
  per_token += (1 + c.num_nextn_predict_layers) * H * c.vocab_size + c.num_nextn_predict_layers * 2 * H * H;
  return 3.0 * 2.0 * per_token * N;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string preset = argc > 1 ? argv[1] : "small";
  const int B = argc > 2 ? std::atoi(argv[2]) : 8, T = argc > 3 ? std::atoi(argv[3]) : 128;
  const int steps = argc > 4 ? std::atoi(argv[4]) : 5;
  const std::string prec = argc > 5 ? argv[5] : "fp32";
  auto config = shoal::ModelPreset(preset);
  if (!config.ok()) {
    std::fprintf(stderr, "%s\n", config.status().ToString().c_str());
    return 1;
  }
  shoal::model::ModelOptions o;
  o.max_batch = B;
  o.max_seq = T;
  o.precision = prec == "fp8" ? shoal::Precision::kFp8 : prec == "bf16" ? shoal::Precision::kBf16 : shoal::Precision::kFp32;
  auto model = shoal::model::Model::Create(*config, o);
  if (!model.ok()) {
    std::fprintf(stderr, "%s\n", model.status().ToString().c_str());
    return 1;
  }
  (*model)->InitRandom(1, 0.02f);
  std::mt19937 rng(7);
  std::vector<int32_t> tokens(static_cast<size_t>(B) * (T + 2));
  for (int32_t& t : tokens) t = static_cast<int32_t>(rng() % config->vocab_size);
  std::vector<int32_t> in, tg, min, mtg;
  for (int b = 0; b < B; ++b) {
    const int32_t* x = tokens.data() + static_cast<size_t>(b) * (T + 2);
    for (int i = 0; i < T; ++i) {
      in.push_back(x[i]);
      tg.push_back(x[i + 1]);
      min.push_back(x[i + 1]);
      mtg.push_back(x[i + 2]);
    }
  }
  shoal::model::MicroBatch mb{in.data(), tg.data(), min.data(), mtg.data(), nullptr, nullptr, B, T};
  const auto scales = shoal::model::MeanLossScales(B * T, B * T, 1, 0.3f);
  const double peak = SgemmPeak();
  (void)(*model)->ForwardBackward(mb, scales);  // warm-up
  double best = 1e30;
  for (int s = 0; s < steps; ++s) {
    auto t0 = Clock::now();
    auto l = (*model)->ForwardBackward(mb, scales);
    best = std::min(best, Seconds(t0, Clock::now()));
    if (!l.ok()) return 1;
  }
  const double flops = StepFlops(*config, B, T);
  std::printf("model_bench %s %s [%d x %d]: step %.1f ms, %.1f GFLOP/s of model GEMM work, sgemm peak %.1f GFLOP/s "
              "(2048^3), ratio %.1f%%\n",
              preset.c_str(), prec.c_str(), B, T, best * 1e3, flops / best / 1e9, peak / 1e9, 100 * flops / best / peak);
  return 0;
}
