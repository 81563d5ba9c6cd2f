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

// Picks the next token from one row of logits.
int32_t SampleToken(const float* logits, int vocab, const SamplingOptions& options, std::mt19937_64& rng);

}  // namespace shoal::infer
