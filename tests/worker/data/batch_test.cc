// Packing rows by hand-built samples: SFT masks, segments, positions and truncation; the MTP alignment of
// reference/deepseek-v3.md §4.2; pre-training rows.
#include "worker/data/batch.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace shoal::data {
namespace {

using ::testing::ElementsAre;
using ::testing::ElementsAreArray;

template <typename T>
std::vector<T> RowOf(const std::vector<T>& v, int64_t row, int64_t width) {
  return std::vector<T>(v.begin() + row * width, v.begin() + (row + 1) * width);
}

constexpr int32_t kPad = 2;

TEST(SftPackingTest, MasksSegmentsAndPositionsOfTwoSamples) {
  // S = 10: a row holds 11 tokens. A = prompt {100,101} + response {102,103}; B = prompt {200} + {201,202}.
  Document a{{100, 101, 102, 103}, 2};
  Document b{{200, 201, 202}, 1};
  const Document* samples[] = {&a, &b};
  Batch batch = Batch::Allocate(2, 10, /*block_diagonal=*/true);
  FillSftRow(batch, 1, samples, kPad);  // row 1, so row offsets are exercised
  EXPECT_THAT(RowOf(batch.tokens, 1, 11), ElementsAre(100, 101, 102, 103, 200, 201, 202, kPad, kPad, kPad, kPad));
  EXPECT_THAT(RowOf(batch.inputs, 1, 10), ElementsAre(100, 101, 102, 103, 200, 201, 202, kPad, kPad, kPad));
  EXPECT_THAT(RowOf(batch.segment_ids, 1, 10), ElementsAre(1, 1, 1, 1, 2, 2, 2, 0, 0, 0));
  EXPECT_THAT(RowOf(batch.positions, 1, 10), ElementsAre(0, 1, 2, 3, 0, 1, 2, 0, 1, 2));
  // Loss only where the next token is a response token of the same sample: never a prompt token, never the
  // jump from A's last token to B's first, never padding.
  EXPECT_THAT(RowOf(batch.loss_mask, 1, 10), ElementsAre(0, 1, 1, 0, 1, 1, 0, 0, 0, 0));
  EXPECT_THAT(RowOf(batch.targets, 1, 10), ElementsAre(-1, 102, 103, -1, 201, 202, -1, -1, -1, -1));
  // MTP: slot i predicts x_{i+2} of the same sample when it is a response token.
  EXPECT_THAT(RowOf(batch.mtp_mask, 1, 10), ElementsAre(1, 1, 0, 0, 1, 0, 0, 0, 0, 0));
  EXPECT_THAT(RowOf(batch.mtp_targets, 1, 10), ElementsAre(102, 103, -1, -1, 202, -1, -1, -1, -1, -1));
  EXPECT_THAT(RowOf(batch.mtp_inputs, 1, 10), ElementsAre(101, 102, 103, 200, 201, 202, kPad, kPad, kPad, kPad));
  EXPECT_EQ(batch.row_samples[1], 2);
  EXPECT_EQ(batch.row_padding[1], 4);
  EXPECT_EQ(batch.row_truncated[1], 0);
  BatchStats s = batch.Stats();
  EXPECT_EQ(s.num_loss_tokens, 4);
  EXPECT_EQ(s.num_samples, 2);
  // Row 0 was never filled: no loss anywhere.
  EXPECT_THAT(RowOf(batch.loss_mask, 0, 10), ElementsAre(0, 0, 0, 0, 0, 0, 0, 0, 0, 0));
}

TEST(SftPackingTest, NoLossAcrossASampleBoundaryEvenIntoResponseTokens) {
  // B has no prompt: its first token is a response token, but A's last slot must still not predict it.
  Document a{{10, 11, 12}, 1};
  Document b{{20, 21}, 0};
  const Document* samples[] = {&a, &b};
  Batch batch = Batch::Allocate(1, 6, true);
  FillSftRow(batch, 0, samples, kPad);
  EXPECT_THAT(batch.tokens, ElementsAre(10, 11, 12, 20, 21, kPad, kPad));
  EXPECT_THAT(batch.loss_mask, ElementsAre(1, 1, 0, 1, 0, 0));
  EXPECT_THAT(batch.targets, ElementsAre(11, 12, -1, 21, -1, -1));
  EXPECT_THAT(batch.mtp_mask, ElementsAre(1, 0, 0, 0, 0, 0));
  EXPECT_THAT(batch.segment_ids, ElementsAre(1, 1, 1, 2, 2, 0));
  EXPECT_THAT(batch.positions, ElementsAre(0, 1, 2, 0, 1, 0));
}

TEST(SftPackingTest, ALongSampleIsTruncatedAndSaysSo) {
  Document c;
  for (int32_t t = 0; t < 15; ++t) c.tokens.push_back(300 + t);
  c.prompt_len = 3;
  const Document* samples[] = {&c};
  Batch batch = Batch::Allocate(1, 10, true);
  FillSftRow(batch, 0, samples, kPad);
  EXPECT_THAT(batch.tokens, ElementsAre(300, 301, 302, 303, 304, 305, 306, 307, 308, 309, 310));
  EXPECT_EQ(batch.row_truncated[0], 1);
  EXPECT_EQ(batch.row_padding[0], 0);
  EXPECT_THAT(batch.loss_mask, ElementsAre(0, 0, 1, 1, 1, 1, 1, 1, 1, 1));
  EXPECT_EQ(batch.targets[9], 310);  // the last token of the row is still a target
  EXPECT_THAT(batch.mtp_mask, ElementsAre(0, 1, 1, 1, 1, 1, 1, 1, 1, 0));  // last slot: no x_{S+1}
  EXPECT_EQ(batch.Stats().num_truncated, 1);
}

TEST(SftPackingTest, GreedyFitRule) {
  EXPECT_TRUE(SampleFitsRow(0, 50, 10));   // an empty row takes anything (truncating it)
  EXPECT_TRUE(SampleFitsRow(7, 4, 10));    // exactly fills 11 tokens
  EXPECT_FALSE(SampleFitsRow(7, 5, 10));
}

TEST(PretrainPackingTest, EveryTargetCountsAndMtpIsShiftedByTwo) {
  std::vector<int32_t> stream;
  for (int32_t t = 0; t < 9; ++t) stream.push_back(50 + t);  // S = 8
  Batch batch = Batch::Allocate(1, 8, /*block_diagonal=*/false);
  FillPretrainRow(batch, 0, stream, 2);
  EXPECT_FALSE(batch.block_diagonal);
  EXPECT_THAT(batch.inputs, ElementsAre(50, 51, 52, 53, 54, 55, 56, 57));
  EXPECT_THAT(batch.targets, ElementsAre(51, 52, 53, 54, 55, 56, 57, 58));
  EXPECT_THAT(batch.loss_mask, ElementsAre(1, 1, 1, 1, 1, 1, 1, 1));
  EXPECT_THAT(batch.mtp_inputs, ElementsAre(51, 52, 53, 54, 55, 56, 57, 58));
  EXPECT_THAT(batch.mtp_targets, ElementsAre(52, 53, 54, 55, 56, 57, 58, -1));
  EXPECT_THAT(batch.mtp_mask, ElementsAre(1, 1, 1, 1, 1, 1, 1, 0));
  EXPECT_THAT(batch.positions, ElementsAre(0, 1, 2, 3, 4, 5, 6, 7));
  EXPECT_THAT(batch.segment_ids, ElementsAre(0, 0, 0, 0, 0, 0, 0, 0));
  EXPECT_EQ(batch.Stats().num_samples, 2);
}

TEST(BatchTest, SliceIsTheRowsOfTheWhole) {
  Batch batch = Batch::Allocate(3, 4, true);
  Document a{{10, 11, 12}, 1}, b{{20, 21, 22, 23, 24, 25}, 2}, c{{30, 31}, 0};
  const Document* r0[] = {&a}; const Document* r1[] = {&b}; const Document* r2[] = {&c, &a};
  FillSftRow(batch, 0, r0, kPad);
  FillSftRow(batch, 1, r1, kPad);
  FillSftRow(batch, 2, r2, kPad);
  Batch tail = batch.Slice(1, 2);
  EXPECT_EQ(tail.num_rows, 2);
  EXPECT_THAT(tail.tokens, ElementsAreArray(std::vector<int32_t>(batch.tokens.begin() + 5, batch.tokens.end())));
  EXPECT_THAT(tail.loss_mask,
              ElementsAreArray(std::vector<uint8_t>(batch.loss_mask.begin() + 4, batch.loss_mask.end())));
  EXPECT_EQ(tail.Stats().num_truncated, 1);  // b (6 tokens) does not fit 5
  EXPECT_EQ(tail.Stats().num_samples, 3);
  Batch again = Batch::Allocate(2, 4, true);
  FillSftRow(again, 0, r1, kPad);
  FillSftRow(again, 1, r2, kPad);
  EXPECT_EQ(tail, again);
}

}  // namespace
}  // namespace shoal::data
