// GRPO (spec §7.3; DeepSeekMath's token-level form): for each prompt, sample a group of G completions from the
// current policy, score them with a rule-based reward, normalise the rewards within the group into advantages,
// and take a policy-gradient step with the k3 KL to a frozen reference model (the policy at the phase start).
// One policy update per rollout batch (μ = 1, as in DeepSeekMath), so the importance ratio is 1 and its clip
// is inactive; the gradient is Σ_t (−A_i + β(1 − π_ref/π_θ)) ∇(−log π_θ(o_t)) / (|o_i|·G·prompts).
#pragma once

#include <atomic>
#include <functional>
#include <optional>
#include <string>

#include "common/status.h"
#include "worker/train/trainer.h"

namespace shoal::data {
class Tokenizer;
}

namespace shoal::train {

class AdamW;

struct GrpoContext {
  const TrainerConfig& config;
  model::Model& model;
  const data::Tokenizer& tokenizer;
  TrainerEvents* events;
  bool chat = false;  // the policy was fine-tuned with the chat template (earlier SFT phase, or init_from one)
};

using CheckpointFn = std::function<Status(int64_t step, const std::string& cursor_json, bool phase_done)>;

Status RunGrpo(GrpoContext& ctx, size_t phase_index, int64_t start_step, const std::optional<std::string>& cursor_json,
               AdamW& optimizer, const std::atomic<bool>& stop, const CheckpointFn& checkpoint);

}  // namespace shoal::train
