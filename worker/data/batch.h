// Batch: the packed rows a training step consumes, and the pure row packers that fill it.
//
// Every row holds S + 1 tokens x_0..x_S (glossary: B rows, S = seq_len). Slot i (0 <= i < S) reads x_i and
//   main head:  predicts x_{i+1}   where loss_mask[i]
//   MTP depth 1 (reference/deepseek-v3.md §4.2): combines the main model's h_i with Emb(x_{i+1}) (mtp_inputs)
//               and predicts x_{i+2} where mtp_mask[i]; the last slot (i = S-1) never has an MTP target.
// Pre-training rows (§6.1): documents separated by eos flow across rows, no cross-document masking, every
// target counts, positions 0..S-1, one segment (block_diagonal = false: plain causal attention).
// SFT rows (§7.1): whole samples packed greedily, each its own segment 1, 2, ... (padding is segment 0); the
// attention mask is block-diagonal causal over segment_ids, positions restart at 0 in every sample, and a
// target counts only when it is a response token of the same sample as the slot (prompt tokens, padding and
// the jump into the next sample have no loss). The MTP mask applies the same rule to x_{i+2}. A sample longer
// than S + 1 tokens is truncated to the row (counted in row_truncated).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "worker/data/documents.h"

namespace shoal::data {

struct BatchStats {
  int64_t num_samples = 0;      // documents (pre-training: documents starting in these rows) / SFT samples
  int64_t num_truncated = 0;    // SFT samples cut to fit a row
  int64_t num_loss_tokens = 0;  // Σ loss_mask
  int64_t num_pad_tokens = 0;   // padding tokens among the S + 1 of each row
};

struct Batch {
  int64_t num_rows = 0;          // B
  int64_t seq_len = 0;           // S
  bool block_diagonal = false;   // attention must honour segment_ids (SFT); false: plain causal (pre-training)
  std::vector<int32_t> tokens;       // [B, S+1] x_0..x_S
  std::vector<int32_t> inputs;       // [B, S]   x_i (the model's input ids)
  std::vector<int32_t> targets;      // [B, S]   x_{i+1} where loss_mask, else -1 (cross_entropy's "ignored")
  std::vector<uint8_t> loss_mask;    // [B, S]
  std::vector<int32_t> mtp_inputs;   // [B, S]   x_{i+1}, always (the MTP module's embedding input)
  std::vector<int32_t> mtp_targets;  // [B, S]   x_{i+2} where mtp_mask, else -1
  std::vector<uint8_t> mtp_mask;     // [B, S]
  std::vector<int32_t> segment_ids;  // [B, S]   0 = padding, k = k-th sample of the row (pre-training: all 0)
  std::vector<int32_t> positions;    // [B, S]   RoPE positions
  std::vector<int32_t> row_samples;    // [B] documents/samples starting in the row
  std::vector<int32_t> row_truncated;  // [B] samples truncated in the row
  std::vector<int32_t> row_padding;    // [B] padding tokens in the row

  // A zero-filled batch of B rows.
  static Batch Allocate(int64_t num_rows, int64_t seq_len, bool block_diagonal);
  // Rows [first_row, first_row + num_rows) as their own batch (a micro-batch).
  Batch Slice(int64_t first_row, int64_t num_rows) const;
  BatchStats Stats() const;
  friend bool operator==(const Batch&, const Batch&) = default;
};

// Row `row` of a pre-training batch from S + 1 consecutive stream tokens; `num_doc_starts` documents begin in it.
void FillPretrainRow(Batch& batch, int64_t row, std::span<const int32_t> stream_tokens, int32_t num_doc_starts);

// Row `row` of an SFT batch from whole samples, in order, then `pad_id` padding. Only the last sample may be
// longer than the remaining room (it is truncated); the packer guarantees the rest fit.
void FillSftRow(Batch& batch, int64_t row, std::span<const Document* const> samples, int32_t pad_id);

// The greedy SFT packing rule the sources use: whether a sample of `sample_len` tokens joins a row that already
// holds `used` of its S + 1 tokens (an empty row takes any sample, truncating it if needed).
inline bool SampleFitsRow(int64_t used, int64_t sample_len, int64_t seq_len) {
  return used == 0 || used + sample_len <= seq_len + 1;
}

}  // namespace shoal::data
