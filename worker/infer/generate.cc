#include "worker/infer/generate.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "worker/model/inference.h"

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
  if (max_total > model.config().max_position_embeddings) {
    return InvalidArgumentError("Generate: " + std::to_string(max_total) + " tokens exceed max_position_embeddings " +
                                std::to_string(model.config().max_position_embeddings));
  }
  // MLA's compressed KV cache (latent + rope key per token and layer) with the absorbed attention.
  ASSIGN_OR_RETURN(auto decoder, model::Decoder::Create(model, B, max_total));
  const int V = static_cast<int>(model.config().vocab_size);
  std::vector<float> logits(static_cast<size_t>(B) * V);
  std::vector<int32_t> column(static_cast<size_t>(B));
  for (int t = 0; t < P; ++t) {
    for (int b = 0; b < B; ++b) column[b] = prompts[b][t];
    RETURN_IF_ERROR(decoder->Step(column.data(), B, logits.data()));
  }
  std::vector<Completion> out(static_cast<size_t>(B));
  for (int t = 0; t < options.max_new_tokens; ++t) {
    bool all_done = true;
    for (int b = 0; b < B; ++b) {
      int32_t next = out[b].finished ? options.eos_id
                                     : SampleToken(logits.data() + static_cast<size_t>(b) * V, V, options, rng);
      column[b] = next;
      if (!out[b].finished) {
        out[b].tokens.push_back(next);
        if (next == options.eos_id) out[b].finished = true;
      }
      all_done &= out[b].finished;
    }
    if (all_done || t + 1 == options.max_new_tokens) break;
    RETURN_IF_ERROR(decoder->Step(column.data(), B, logits.data()));
  }
  return out;
}

}  // namespace shoal::infer
