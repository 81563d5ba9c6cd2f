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

Result<Completion> GenerateSpeculative(model::Model& model, const std::vector<int32_t>& prompt,
                                       const SamplingOptions& options, SpeculativeStats* stats) {
  if (options.temperature > 0.0f) {
    return InvalidArgumentError("speculative decoding is greedy only; drop --temperature or --speculative");
  }
  const int P = static_cast<int>(prompt.size());
  if (P == 0) return InvalidArgumentError("Generate: empty prompt");
  if (options.max_new_tokens <= 0) return Completion{};
  const int max_total = P + options.max_new_tokens;
  if (max_total > model.config().max_position_embeddings) {
    return InvalidArgumentError("Generate: " + std::to_string(max_total) + " tokens exceed max_position_embeddings " +
                                std::to_string(model.config().max_position_embeddings));
  }
  // One position more than the plain decoder: the draft under verification.
  ASSIGN_OR_RETURN(auto dec, model::Decoder::Create(model, 1, max_total + 1));
  if (!dec->has_mtp()) {
    return FailedPreconditionError("speculative decoding needs the model's MTP layer (num_nextn_predict_layers > 0 "
                                   "and its weights, e.g. an export without --no-mtp)");
  }
  SpeculativeStats local;
  SpeculativeStats& st = stats != nullptr ? *stats : local;
  st = SpeculativeStats{};
  const int64_t V = model.config().vocab_size, H = model.config().hidden_size;
  auto argmax = [V](const float* row) { return static_cast<int32_t>(std::max_element(row, row + V) - row); };
  Completion out;
  // Appends t; true when the completion is over.
  auto emit = [&](int32_t t) {
    out.tokens.push_back(t);
    if (t == options.eos_id) out.finished = true;
    return out.finished || static_cast<int>(out.tokens.size()) >= options.max_new_tokens;
  };

  // Prefill: the prompt in one pass, then the MTP layer over every prompt position (row j: h_j and x_{j+1}).
  std::vector<float> logits(static_cast<size_t>(P) * V), hidden(static_cast<size_t>(P) * H);
  RETURN_IF_ERROR(dec->Extend(prompt.data(), P, logits.data(), hidden.data()));
  ++st.main_passes;
  int32_t last = argmax(logits.data() + static_cast<size_t>(P - 1) * V);
  if (emit(last)) return out;
  std::vector<int32_t> next(prompt.begin() + 1, prompt.end());
  next.push_back(last);
  std::vector<float> mtp_logits(static_cast<size_t>(P) * V);
  RETURN_IF_ERROR(dec->MtpExtend(hidden.data(), next.data(), P, mtp_logits.data()));
  int32_t draft = argmax(mtp_logits.data() + static_cast<size_t>(P - 1) * V);

  std::vector<float> pair_logits(2 * static_cast<size_t>(V)), pair_hidden(2 * static_cast<size_t>(H));
  std::vector<float> draft_logits(2 * static_cast<size_t>(V));
  for (;;) {
    const int32_t pair[2] = {last, draft};
    RETURN_IF_ERROR(dec->Extend(pair, 2, pair_logits.data(), pair_hidden.data()));
    ++st.main_passes;
    ++st.drafted;
    const int32_t verified = argmax(pair_logits.data());
    if (verified == draft) {
      ++st.accepted;
      if (emit(draft)) break;
      const int32_t after = argmax(pair_logits.data() + V);
      if (emit(after)) break;
      const int32_t mtp_next[2] = {draft, after};
      RETURN_IF_ERROR(dec->MtpExtend(pair_hidden.data(), mtp_next, 2, draft_logits.data()));
      last = after;
      draft = argmax(draft_logits.data() + V);
    } else {
      dec->Truncate(dec->length() - 1);  // the rejected draft's position
      if (emit(verified)) break;
      RETURN_IF_ERROR(dec->MtpExtend(pair_hidden.data(), &verified, 1, draft_logits.data()));
      last = verified;
      draft = argmax(draft_logits.data());
    }
  }
  return out;
}

}  // namespace shoal::infer
