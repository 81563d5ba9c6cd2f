#include "worker/data/batch.h"

#include <algorithm>

#include "common/check.h"

namespace shoal::data {

Batch Batch::Allocate(int64_t num_rows, int64_t seq_len, bool block_diagonal) {
  CHECK(num_rows >= 0 && seq_len >= 2) << "Batch::Allocate(" << num_rows << ", " << seq_len << ")";
  Batch b;
  b.num_rows = num_rows;
  b.seq_len = seq_len;
  b.block_diagonal = block_diagonal;
  const size_t slots = static_cast<size_t>(num_rows * seq_len);
  b.tokens.assign(static_cast<size_t>(num_rows * (seq_len + 1)), 0);
  b.inputs.assign(slots, 0);
  b.targets.assign(slots, -1);
  b.loss_mask.assign(slots, 0);
  b.mtp_inputs.assign(slots, 0);
  b.mtp_targets.assign(slots, -1);
  b.mtp_mask.assign(slots, 0);
  b.segment_ids.assign(slots, 0);
  b.positions.assign(slots, 0);
  b.row_samples.assign(static_cast<size_t>(num_rows), 0);
  b.row_truncated.assign(static_cast<size_t>(num_rows), 0);
  b.row_padding.assign(static_cast<size_t>(num_rows), 0);
  return b;
}

Batch Batch::Slice(int64_t first_row, int64_t count) const {
  CHECK(first_row >= 0 && count >= 0 && first_row + count <= num_rows)
      << "Slice(" << first_row << ", " << count << ") of " << num_rows << " rows";
  Batch b;
  b.num_rows = count;
  b.seq_len = seq_len;
  b.block_diagonal = block_diagonal;
  auto copy = [&](const auto& from, auto& to, int64_t width) {
    to.assign(from.begin() + first_row * width, from.begin() + (first_row + count) * width);
  };
  copy(tokens, b.tokens, seq_len + 1);
  copy(inputs, b.inputs, seq_len);
  copy(targets, b.targets, seq_len);
  copy(loss_mask, b.loss_mask, seq_len);
  copy(mtp_inputs, b.mtp_inputs, seq_len);
  copy(mtp_targets, b.mtp_targets, seq_len);
  copy(mtp_mask, b.mtp_mask, seq_len);
  copy(segment_ids, b.segment_ids, seq_len);
  copy(positions, b.positions, seq_len);
  copy(row_samples, b.row_samples, 1);
  copy(row_truncated, b.row_truncated, 1);
  copy(row_padding, b.row_padding, 1);
  return b;
}

BatchStats Batch::Stats() const {
  BatchStats s;
  for (int32_t v : row_samples) s.num_samples += v;
  for (int32_t v : row_truncated) s.num_truncated += v;
  for (int32_t v : row_padding) s.num_pad_tokens += v;
  for (uint8_t m : loss_mask) s.num_loss_tokens += m;
  return s;
}

void FillPretrainRow(Batch& batch, int64_t row, std::span<const int32_t> stream_tokens, int32_t num_doc_starts) {
  const int64_t S = batch.seq_len;
  CHECK(row >= 0 && row < batch.num_rows && static_cast<int64_t>(stream_tokens.size()) == S + 1)
      << "FillPretrainRow row " << row << " with " << stream_tokens.size() << " tokens, S=" << S;
  int32_t* x = batch.tokens.data() + row * (S + 1);
  std::copy(stream_tokens.begin(), stream_tokens.end(), x);
  const int64_t base = row * S;
  for (int64_t i = 0; i < S; ++i) {
    batch.inputs[base + i] = x[i];
    batch.targets[base + i] = x[i + 1];
    batch.loss_mask[base + i] = 1;
    batch.mtp_inputs[base + i] = x[i + 1];
    const bool has_mtp = i + 2 <= S;
    batch.mtp_targets[base + i] = has_mtp ? x[i + 2] : -1;
    batch.mtp_mask[base + i] = has_mtp ? 1 : 0;
    batch.segment_ids[base + i] = 0;
    batch.positions[base + i] = static_cast<int32_t>(i);
  }
  batch.row_samples[row] = num_doc_starts;
  batch.row_truncated[row] = 0;
  batch.row_padding[row] = 0;
}

void FillSftRow(Batch& batch, int64_t row, std::span<const Document* const> samples, int32_t pad_id) {
  const int64_t S = batch.seq_len;
  const int64_t width = S + 1;
  CHECK(row >= 0 && row < batch.num_rows) << "FillSftRow row " << row << " of " << batch.num_rows;
  // Per token of the row (S + 1 of them): segment, whether it is a trained (response) token, its position.
  std::vector<int32_t> seg(width, 0), pos(width, 0);
  std::vector<uint8_t> trained(width, 0);
  int32_t* x = batch.tokens.data() + row * width;
  int64_t used = 0;
  int32_t truncated = 0;
  for (size_t k = 0; k < samples.size(); ++k) {
    const Document& d = *samples[k];
    const int64_t len = static_cast<int64_t>(d.tokens.size());
    CHECK(k + 1 == samples.size() || used + len <= width) << "sample " << k << " of the row does not fit";
    const int64_t take = std::min(len, width - used);
    if (take < len) ++truncated;
    for (int64_t t = 0; t < take; ++t) {
      x[used + t] = d.tokens[t];
      seg[used + t] = static_cast<int32_t>(k + 1);
      pos[used + t] = static_cast<int32_t>(t);
      trained[used + t] = t >= d.prompt_len ? 1 : 0;
    }
    used += take;
  }
  for (int64_t t = used; t < width; ++t) {
    x[t] = pad_id;
    pos[t] = static_cast<int32_t>(t - used);
  }
  const int64_t base = row * S;
  for (int64_t i = 0; i < S; ++i) {
    const bool live = seg[i] != 0;
    const bool main = live && seg[i + 1] == seg[i] && trained[i + 1];
    const bool mtp = live && i + 2 <= S && seg[i + 2] == seg[i] && trained[i + 2];
    batch.inputs[base + i] = x[i];
    batch.targets[base + i] = main ? x[i + 1] : -1;
    batch.loss_mask[base + i] = main ? 1 : 0;
    batch.mtp_inputs[base + i] = x[i + 1];
    batch.mtp_targets[base + i] = mtp ? x[i + 2] : -1;
    batch.mtp_mask[base + i] = mtp ? 1 : 0;
    batch.segment_ids[base + i] = seg[i];
    batch.positions[base + i] = pos[i];
  }
  batch.row_samples[row] = static_cast<int32_t>(samples.size());
  batch.row_truncated[row] = truncated;
  batch.row_padding[row] = static_cast<int32_t>(width - used);
}

}  // namespace shoal::data
