#include "worker/train/grpo.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <cmath>
#include <map>
#include <random>

#include "kernels/cpu/clip.h"
#include "worker/data/data_source.h"
#include "worker/data/reward.h"
#include "worker/data/tokenizer.h"
#include "worker/infer/generate.h"
#include "worker/model/model.h"
#include "worker/train/lr_schedule.h"
#include "worker/train/optimizer.h"

namespace shoal::train {
namespace {

using Clock = std::chrono::steady_clock;

// log softmax(logits)[target] for one row of logits.
double LogProb(const float* logits, int V, int32_t target) {
  float mx = logits[0];
  for (int v = 1; v < V; ++v) mx = std::max(mx, logits[v]);
  double sum = 0;
  for (int v = 0; v < V; ++v) sum += std::exp(static_cast<double>(logits[v] - mx));
  return static_cast<double>(logits[target] - mx) - std::log(sum);
}

// One group's rows: prompt + completion, padded to T; targets on the completion tokens only.
struct GroupRows {
  int B = 0, T = 0;
  std::vector<int32_t> inputs, targets;
  std::vector<int32_t> lengths;  // completion tokens per row (|o_i|)
};

GroupRows BuildRows(const std::vector<int32_t>& prompt, const std::vector<infer::Completion>& completions, int T,
                    int32_t pad_id) {
  GroupRows g;
  g.B = static_cast<int>(completions.size());
  g.T = T;
  g.inputs.assign(static_cast<size_t>(g.B) * T, pad_id);
  g.targets.assign(static_cast<size_t>(g.B) * T, -1);
  const int P = static_cast<int>(prompt.size());
  for (int b = 0; b < g.B; ++b) {
    std::vector<int32_t> seq = prompt;
    seq.insert(seq.end(), completions[b].tokens.begin(), completions[b].tokens.end());
    const int n = static_cast<int>(seq.size());
    int targets = 0;
    for (int t = 0; t < std::min(n, T); ++t) {
      g.inputs[static_cast<size_t>(b) * T + t] = seq[t];
      if (t + 1 < n && t + 1 >= P) {  // position t predicts completion token t+1
        g.targets[static_cast<size_t>(b) * T + t] = seq[t + 1];
        ++targets;
      }
    }
    g.lengths.push_back(targets);
  }
  return g;
}

// Per-token log-probabilities of the targets under `model` ([B,T], 0 where no target).
Status TargetLogProbs(model::Model& model, const GroupRows& g, std::vector<float>& logits, std::vector<double>& out) {
  const int V = static_cast<int>(model.config().vocab_size);
  logits.resize(static_cast<size_t>(g.B) * g.T * V);
  model::MicroBatch mb;
  mb.inputs = g.inputs.data();
  mb.B = g.B;
  mb.T = g.T;
  RETURN_IF_ERROR(model.Forward(mb, logits.data(), nullptr).status());
  out.assign(static_cast<size_t>(g.B) * g.T, 0.0);
  for (size_t i = 0; i < out.size(); ++i) {
    if (g.targets[i] >= 0) out[i] = LogProb(logits.data() + i * V, V, g.targets[i]);
  }
  return Status::OK();
}

}  // namespace

Status RunGrpo(GrpoContext& ctx, size_t phase_index, int64_t start_step, const std::optional<std::string>& cursor_json,
               AdamW& optimizer, const std::atomic<bool>& stop, const CheckpointFn& checkpoint) {
  const JobSpec& spec = ctx.config.spec;
  const PhaseSpec& phase = spec.phases[phase_index];
  model::Model& policy = ctx.model;
  const int G = static_cast<int>(phase.group_size);
  const int prompts_per_step = static_cast<int>(std::max<int64_t>(1, spec.train.global_batch / phase.group_size));
  if (G > policy.options().max_batch) {
    return InvalidArgumentError("phase " + phase.name + ": group_size " + std::to_string(G) +
                                " exceeds train.micro_batch " + std::to_string(policy.options().max_batch) +
                                " (one group is generated and trained as one micro-batch)");
  }
  const int T = static_cast<int>(spec.train.seq_len);
  const int V = static_cast<int>(policy.config().vocab_size);

  // The frozen reference: the policy as this phase starts (or as its checkpoint restored it).
  model::ModelOptions ref_options = policy.options();
  ASSIGN_OR_RETURN(auto reference, model::Model::Create(policy.config(), ref_options));
  {
    std::map<std::string, const float*> by_name;
    for (const auto& p : policy.Parameters()) by_name[p.name] = p.data;
    RETURN_IF_ERROR(reference->Load([&](const std::string& name, const std::vector<int64_t>&) -> const float* {
      auto it = by_name.find(name);
      return it == by_name.end() ? nullptr : it->second;
    }));
  }

  data::DataOptions options;
  options.seq_len = spec.train.seq_len;
  options.seed = spec.train.seed;
  options.chat_prompts = ctx.chat;  // the chat template only once an SFT phase has taught it
  ASSIGN_OR_RETURN(auto prompts, data::OpenPromptSource(phase.data, ctx.tokenizer, options));
  data::DataCursor cursor = prompts->Start();
  if (cursor_json) { ASSIGN_OR_RETURN(cursor, data::DataCursor::FromJson(*cursor_json)); }

  infer::SamplingOptions sampling;
  sampling.max_new_tokens = static_cast<int>(phase.max_new_tokens);
  sampling.temperature = static_cast<float>(phase.temperature);
  sampling.eos_id = ctx.tokenizer.eos_id();
  // The sampling RNG is a pure function of (seed, step), so a resumed run samples what the original did.
  const LrScheduleParams schedule = ScheduleOf(spec, phase_index);
  const double beta = phase.kl_beta;
  spdlog::info("phase '{}' (grpo): steps {}..{}, {} prompts x {} completions per step, reward {}, beta {}",
               phase.name, start_step + 1, phase.steps, prompts_per_step, G, phase.reward, beta);

  std::vector<float> logits;
  std::vector<double> logp_policy, logp_ref;
  for (int64_t step = start_step + 1; step <= phase.steps; ++step) {
    if (stop.load()) return CancelledError("stopped at step " + std::to_string(step) + " of phase " + phase.name);
    auto t0 = Clock::now();
    std::mt19937_64 rng(spec.train.seed * 1000003ULL + static_cast<uint64_t>(step) * 7919ULL + phase_index);
    ASSIGN_OR_RETURN(auto batch, prompts->Next(cursor, prompts_per_step));
    policy.ZeroGrad();
    policy.ZeroLoads();
    double reward_sum = 0, kl_sum = 0, nll_sum = 0;
    int64_t token_count = 0;
    int64_t generated = 0;
    for (const auto& prompt : batch) {
      std::vector<std::vector<int32_t>> rows(static_cast<size_t>(G), prompt.tokens);
      if (static_cast<int>(prompt.tokens.size()) + sampling.max_new_tokens > T) {
        return InvalidArgumentError("phase " + phase.name + ": prompt of " + std::to_string(prompt.tokens.size()) +
                                    " tokens + max_new_tokens exceed seq_len " + std::to_string(T));
      }
      ASSIGN_OR_RETURN(auto completions, infer::Generate(policy, rows, sampling, rng));
      std::vector<double> rewards;
      for (const auto& c : completions) {
        rewards.push_back(data::ExactMatchReward(ctx.tokenizer, c.tokens, prompt.answer));
        generated += static_cast<int64_t>(c.tokens.size());
      }
      double mean = 0, var = 0;
      for (double r : rewards) mean += r / G;
      for (double r : rewards) var += (r - mean) * (r - mean) / G;
      const double sd = std::sqrt(var);
      reward_sum += mean * G;

      const int rowT = static_cast<int>(prompt.tokens.size()) + sampling.max_new_tokens;
      GroupRows g = BuildRows(prompt.tokens, completions, rowT, ctx.tokenizer.pad_id());
      RETURN_IF_ERROR(TargetLogProbs(policy, g, logits, logp_policy));
      RETURN_IF_ERROR(TargetLogProbs(*reference, g, logits, logp_ref));
      // d(−J)/d(CE_t) for every completion token: (A_i − β(1 − π_ref/π_θ)) / (|o_i|·G·prompts).
      std::vector<float> weights(g.inputs.size(), 0.0f);
      for (int b = 0; b < g.B; ++b) {
        double advantage = (rewards[b] - mean) / (sd + 1e-4);
        if (g.lengths[b] == 0) continue;
        for (int t = 0; t < g.T; ++t) {
          size_t i = static_cast<size_t>(b) * g.T + t;
          if (g.targets[i] < 0) continue;
          double ratio = std::exp(logp_ref[i] - logp_policy[i]);
          kl_sum += ratio - (logp_ref[i] - logp_policy[i]) - 1.0;
          nll_sum -= logp_policy[i];
          ++token_count;
          weights[i] = static_cast<float>((advantage - beta * (1.0 - ratio)) /
                                          (static_cast<double>(g.lengths[b]) * G * prompts_per_step));
        }
      }
      model::MicroBatch mb;
      mb.inputs = g.inputs.data();
      mb.targets = g.targets.data();
      mb.target_weights = weights.data();
      mb.B = g.B;
      mb.T = g.T;
      model::LossScales scales;
      scales.main = 1.0f;
      scales.mtp = 0.0f;
      scales.balance = 0.0f;
      RETURN_IF_ERROR(policy.ForwardBackward(mb, scales).status());
    }
    double grad_norm = optimizer.ClipGradNorm(spec.train.grad_clip);
    double lr = LearningRate(schedule, step);
    optimizer.Step(lr);
    // No aux-loss-free bias update here: it would move the policy's routing away from the reference's with no
    // reward behind it (V3 also sets γ = 0 for the end of training).
    ASSIGN_OR_RETURN(cursor, prompts->Advance(cursor, prompts_per_step));

    double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    StepMetrics m;
    m.phase = phase.name;
    m.phase_index = static_cast<uint32_t>(phase_index);
    m.step = step;
    m.total_steps = phase.steps;
    m.loss = token_count ? nll_sum / static_cast<double>(token_count) : 0;  // −log π_θ of the sampled tokens
    m.kl = token_count ? kl_sum / static_cast<double>(token_count) : 0;
    m.grad_norm = grad_norm;
    m.lr = lr;
    m.tokens_per_s = static_cast<double>(generated) / seconds;
    m.reward = reward_sum / static_cast<double>(G * prompts_per_step);
    m.seconds = seconds;
    ctx.events->OnStep(m);
    bool done = step == phase.steps;
    if (done || (phase.checkpoint.every > 0 && step % phase.checkpoint.every == 0)) {
      RETURN_IF_ERROR(checkpoint(step, cursor.ToJson(), done));
    }
  }
  return Status::OK();
}

}  // namespace shoal::train
