// Incremental decoding for generation (GRPO rollouts, `shoal generate`): MLA's compressed KV cache and the
// absorbed attention of reference/deepseek-v3.md §2.5. Per layer and token the cache holds only the normalised
// latent c^KV (d_c) and the rotated rope key k^R (d_R); a query is projected into latent space with W^UK
// (q̂ = W^UKᵀ q^C), attends over the cached latents, and W^UV maps the result back to d_v per head. Equal to the
// naive training form up to fp32 rounding (Appendix B.1; tested against Model::Forward).
//
// The B sequences advance in lockstep, one token each per Step (prefill a prompt by stepping through it). The
// main model only (the MTP layers are not used), fp32 weights read from the Model it was created from; the
// model must hold everything (embedding, head, every main layer, every expert) and outlive the decoder.
#pragma once

#include <cstdint>
#include <memory>
#include <random>
#include <vector>

#include "common/status.h"
#include "worker/model/model.h"

namespace shoal::model {

class Decoder {
 public:
  static Result<std::unique_ptr<Decoder>> Create(Model& model, int64_t max_batch, int64_t max_len);
  ~Decoder();

  // Appends tokens[B] (at position length() of every sequence) and writes the next-token logits [B, V].
  // FailedPrecondition when the cache is full, InvalidArgument for B > max_batch, a changed B, or a bad token.
  Status Step(const int32_t* tokens, int B, float* logits);
  // Empties the cache (a new batch of sequences may use another B).
  void Reset();
  int64_t length() const { return len_; }
  int64_t max_len() const { return max_len_; }
  int64_t vocab_size() const { return c_.vocab_size; }
  int64_t cache_bytes() const;

 private:
  struct Layer;
  Decoder(Model& model, int64_t max_batch, int64_t max_len);
  void Attention(Layer& l, float* out, const float* xn, int B);
  void Ffn(Layer& l, float* out, const float* u, int B);
  void Mlp(const float* gate_up_w, const float* down_w, int64_t inter, float* out, const float* u, int rows,
           bool accumulate, float scale);

  Model& model_;
  const ModelConfig& c_;
  int64_t max_batch_, max_len_;
  int64_t len_ = 0;
  int batch_ = 0;
  std::vector<std::unique_ptr<Layer>> layers_;
  const float *embed_ = nullptr, *final_norm_ = nullptr, *head_ = nullptr;
  std::vector<float> cache_;  // [L][max_batch][max_len][d_c + d_R]
  std::vector<float> rope_;   // [P, d_R/2, 2]
  int64_t rope_positions_ = 0;
  // Scratch, sized at Create.
  std::vector<float> x_, xn_, tmp_, q_a_, q_, kv_a_, qhat_, scores_, ohat_, o_, gate_up_, m_, logits_, router_, topw_;
  std::vector<float> rstd_;
  std::vector<int32_t> topk_, pos_;
};

// tokens[b] = a sample of softmax(logits[b] / temperature) (argmax for temperature <= 0; ties: lowest id).
void SampleTokens(int32_t* tokens, const float* logits, int B, int64_t V, float temperature, std::mt19937_64& rng);

// Resets the decoder, prefills prompts [B, P] and generates out [B, num_new] (the decoder must have room for
// P + num_new - 1 tokens; InvalidArgument otherwise). Sampling is reproducible by seed.
Status Generate(Decoder& decoder, const int32_t* prompts, int B, int P, int num_new, float temperature,
                uint64_t seed, int32_t* out);

}  // namespace shoal::model
