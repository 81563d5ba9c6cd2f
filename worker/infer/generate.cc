#include "worker/infer/generate.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace shoal::infer {

int32_t SampleToken(const float* logits, int vocab, const SamplingOptions& options, std::mt19937_64& rng) {
  if (options.temperature <= 0.0f) {
    return static_cast<int32_t>(std::max_element(logits, logits + vocab) - logits);
  }
  std::vector<int32_t> idx(static_cast<size_t>(vocab));
  std::iota(idx.begin(), idx.end(), 0);
  int k = options.top_k > 0 ? std::min(options.top_k, vocab) : vocab;
  if (k < vocab) {
    std::partial_sort(idx.begin(), idx.begin() + k, idx.end(),
                      [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
    idx.resize(static_cast<size_t>(k));
  }
  float mx = -INFINITY;
  for (int32_t i : idx) mx = std::max(mx, logits[i]);
  std::vector<double> p(idx.size());
  double sum = 0;
  for (size_t j = 0; j < idx.size(); ++j) {
    p[j] = std::exp((logits[idx[j]] - mx) / options.temperature);
    sum += p[j];
  }
  double u = std::uniform_real_distribution<double>(0.0, sum)(rng);
  for (size_t j = 0; j < idx.size(); ++j) {
    u -= p[j];
    if (u <= 0) return idx[j];
  }
  return idx.back();
}

Result<std::vector<Completion>> Generate(model::Model& model, const std::vector<std::vector<int32_t>>& prompts,
                                         const SamplingOptions& options, std::mt19937_64& rng) {
  if (prompts.empty()) return std::vector<Completion>{};
  const int B = static_cast<int>(prompts.size());
  const int P = static_cast<int>(prompts[0].size());
  for (const auto& p : prompts) {
    if (static_cast<int>(p.size()) != P) return InvalidArgumentError("Generate: prompts of one call must have one length");
  }
  if (P == 0) return InvalidArgumentError("Generate: empty prompt");
  const int max_total = P + options.max_new_tokens;
  if (B > model.options().max_batch || max_total > model.options().max_seq) {
    return InvalidArgumentError("Generate: " + std::to_string(B) + " rows of " + std::to_string(max_total) +
                                " tokens do not fit the model's activation arena [" +
                                std::to_string(model.options().max_batch) + ", " +
                                std::to_string(model.options().max_seq) + "]");
  }
  const int V = static_cast<int>(model.config().vocab_size);
  std::vector<Completion> out(static_cast<size_t>(B));
  std::vector<std::vector<int32_t>> seqs = prompts;
  std::vector<float> logits;
  std::vector<int32_t> flat;
  // Recomputes the whole prefix each token: simple and exact; prompts here are short (arithmetic, GRPO).
  for (int t = 0; t < options.max_new_tokens; ++t) {
    const int T = P + t;
    flat.assign(static_cast<size_t>(B) * T, 0);
    for (int b = 0; b < B; ++b) std::copy(seqs[b].begin(), seqs[b].end(), flat.begin() + static_cast<size_t>(b) * T);
    logits.resize(static_cast<size_t>(B) * T * V);
    model::MicroBatch mb;
    mb.inputs = flat.data();
    mb.B = B;
    mb.T = T;
    RETURN_IF_ERROR(model.Forward(mb, logits.data(), nullptr).status());
    bool all_done = true;
    for (int b = 0; b < B; ++b) {
      int32_t next = out[b].finished
                         ? options.eos_id
                         : SampleToken(logits.data() + (static_cast<size_t>(b) * T + T - 1) * V, V, options, rng);
      seqs[b].push_back(next);
      if (!out[b].finished) {
        out[b].tokens.push_back(next);
        if (next == options.eos_id) out[b].finished = true;
      }
      all_done &= out[b].finished;
    }
    if (all_done) break;
  }
  return out;
}

}  // namespace shoal::infer
