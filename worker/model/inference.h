// Incremental decoding for generation (GRPO rollouts, `shoal generate`): MLA's compressed KV cache and the
// absorbed attention of reference/deepseek-v3.md §2.5. Per layer and token the cache holds only the normalised
// latent c^KV (d_c) and the rotated rope key k^R (d_R); a query is projected into latent space with W^UK
// (q̂ = W^UKᵀ q^C), attends over the cached latents, and W^UV maps the result back to d_v per head. Equal to the
// naive training form up to fp32 rounding (Appendix B.1; tested against Model::Forward).
//
// The B sequences advance in lockstep, one token each per Step (prefill a prompt by stepping through it). One
// sequence (B = 1) can also take several consecutive tokens in one call (Extend: a prompt, or a speculative
// draft to verify) and be cut back (Truncate: a rejected draft). fp32 weights read from the Model it was
// created from; the model must hold everything (embedding, head, every main layer, every expert) and outlive
// the decoder.
//
// MTP (§4): when the model holds the MTP layer, MtpExtend runs it for one sequence with its own compressed
// cache: row j takes the main model's final-normed hidden state at position j and the token at j+1, and
// predicts the token at j+2, the draft of speculative decoding (infer::GenerateSpeculative).
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
  // normed_hidden [B, H] (optional): the final-normed hidden state (the MTP layer's input).
  Status Step(const int32_t* tokens, int B, float* logits, float* normed_hidden = nullptr);
  // One sequence (B = 1): appends tokens[n] at positions length() .. length()+n-1 and writes logits [n, V] (and
  // normed_hidden [n, H] when given), each row attending to every position up to its own.
  Status Extend(const int32_t* tokens, int n, float* logits, float* normed_hidden = nullptr);
  // Forgets every position >= len (len <= length()); the MTP cache is cut back with MtpTruncate.
  void Truncate(int64_t len);
  // Empties the caches (a new batch of sequences may use another B).
  void Reset();

  // The MTP layer (one sequence): rows i = 0..n-1 are positions mtp_length()+i; row i takes normed_hidden[i]
  // (Step/Extend's, at that position) and next_tokens[i] (the token at the following position) and writes the
  // MTP head's logits [n, V] (the prediction two positions ahead). FailedPrecondition without an MTP layer.
  bool has_mtp() const { return mtp_ != nullptr; }
  Status MtpExtend(const float* normed_hidden, const int32_t* next_tokens, int n, float* logits);
  void MtpTruncate(int64_t len);
  int64_t mtp_length() const { return mtp_len_; }
  int64_t length() const { return len_; }
  int64_t max_len() const { return max_len_; }
  int64_t vocab_size() const { return c_.vocab_size; }
  int64_t cache_bytes() const;

 private:
  struct Layer;
  Decoder(Model& model, int64_t max_batch, int64_t max_len);
  // The rows set up in seq_/pos_ (at most rows_ of them) through the main layers (x_ holds the embeddings).
  void MainRows(int n, float* logits, float* normed_hidden);
  // One decoder layer over n rows of x_ (in place), attending through l.cache.
  void LayerRows(Layer& l, int n);
  void Attention(Layer& l, float* out, const float* xn, int B);
  void Ffn(Layer& l, float* out, const float* u, int B);
  Status CheckTokens(const int32_t* tokens, int n) const;
  void Mlp(const float* gate_up_w, const float* down_w, int64_t inter, float* out, const float* u, int rows,
           bool accumulate, float scale);

  Model& model_;
  const ModelConfig& c_;
  int64_t max_batch_, max_len_;
  int64_t rows_ = 0;  // scratch rows: max(max_batch, kExtendChunk)
  int64_t len_ = 0;
  int batch_ = 0;
  // MTP (null without one): its decoder layer, norms, projection and cache [max_len][d_c + d_R].
  std::unique_ptr<Layer> mtp_;
  const float *mtp_enorm_ = nullptr, *mtp_hnorm_ = nullptr, *mtp_eh_proj_ = nullptr, *mtp_shared_norm_ = nullptr;
  std::vector<float> mtp_cache_, cat_;
  int64_t mtp_len_ = 0;
  std::vector<std::unique_ptr<Layer>> layers_;
  const float *embed_ = nullptr, *final_norm_ = nullptr, *head_ = nullptr;
  std::vector<float> cache_;  // [L][max_batch][max_len][d_c + d_R]
  std::vector<float> rope_;   // [P, d_R/2, 2]
  int64_t rope_positions_ = 0;
  // Scratch, sized at Create.
  std::vector<float> x_, xn_, tmp_, q_a_, q_, kv_a_, qhat_, scores_, ohat_, o_, gate_up_, m_, logits_, router_, topw_;
  std::vector<float> rstd_;
  std::vector<int32_t> topk_, pos_, seq_;  // per row: position and sequence (cache row)
};

// tokens[b] = a sample of softmax(logits[b] / temperature) (argmax for temperature <= 0; ties: lowest id).
void SampleTokens(int32_t* tokens, const float* logits, int B, int64_t V, float temperature, std::mt19937_64& rng);

// Resets the decoder, prefills prompts [B, P] and generates out [B, num_new] (the decoder must have room for
// P + num_new - 1 tokens; InvalidArgument otherwise). Sampling is reproducible by seed.
Status Generate(Decoder& decoder, const int32_t* prompts, int B, int P, int num_new, float temperature,
                uint64_t seed, int32_t* out);

}  // namespace shoal::model
