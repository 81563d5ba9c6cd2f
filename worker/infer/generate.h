// Autoregressive generation with a Model: greedy or sampled (temperature, top-k), batched over rows that share
// a prompt length (a GRPO group, or one prompt). Used by `shoal generate`, `shoal eval --accuracy` and GRPO
// rollouts.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "common/status.h"
#include "worker/model/model.h"

namespace shoal::infer {

struct SamplingOptions {
  int max_new_tokens = 32;
  float temperature = 0.0f;  // 0: greedy
  int top_k = 0;             // 0: the whole vocabulary
  int32_t eos_id = 1;        // generation of a row stops after it emits this token
};

struct Completion {
  std::vector<int32_t> tokens;  // generated tokens, eos included when emitted
  bool finished = false;        // emitted eos
};

// Generates a completion for every row of `prompts` (all the same length), decoding with MLA's compressed KV
// cache (worker/model/inference.h); any model that holds every layer works, whatever its activation arena.
Result<std::vector<Completion>> Generate(model::Model& model, const std::vector<std::vector<int32_t>>& prompts,
                                         const SamplingOptions& options, std::mt19937_64& rng);

// MTP speculative decoding (reference/deepseek-v3.md §4: the MTP module reused for speculation), greedy, one
// prompt. Each main pass takes two tokens: the last accepted one and the MTP layer's draft of the token after
// it; when the main model's prediction after the first equals the draft, the draft is accepted and the pass
// also yields the token after the draft (two tokens per pass), else the draft's cache entry is dropped and the
// main model's own prediction is taken. The output is the greedy completion (up to fp32 rounding of the
// two-row passes); the stats say how well the MTP layer drafts. FailedPrecondition without an MTP layer,
// InvalidArgument for sampling (temperature > 0).
struct SpeculativeStats {
  int64_t main_passes = 0;  // main-model forward passes, the prompt's included
  int64_t drafted = 0;      // drafts verified
  int64_t accepted = 0;     // drafts the main model agreed with
  double acceptance() const { return drafted > 0 ? static_cast<double>(accepted) / static_cast<double>(drafted) : 0; }
};
Result<Completion> GenerateSpeculative(model::Model& model, const std::vector<int32_t>& prompt,
                                       const SamplingOptions& options, SpeculativeStats* stats);

// Picks the next token from one row of logits.
int32_t SampleToken(const float* logits, int vocab, const SamplingOptions& options, std::mt19937_64& rng);

}  // namespace shoal::infer
