// The layer split of spec/stage_layout.h: contiguous, complete, embedding first, head + MTP last, even.
#include "spec/stage_layout.h"

#include <gtest/gtest.h>

namespace shoal {
namespace {

std::vector<int64_t> Counts(const std::vector<StageLayout>& stages) {
  std::vector<int64_t> out;
  for (const StageLayout& s : stages) out.push_back(s.num_layers());
  return out;
}

void ExpectWellFormed(const ModelConfig& c, const std::vector<StageLayout>& stages) {
  ASSERT_FALSE(stages.empty());
  int64_t next = 0;
  for (size_t i = 0; i < stages.size(); ++i) {
    EXPECT_EQ(stages[i].stage_idx, static_cast<int>(i));
    EXPECT_EQ(stages[i].layer_begin, next) << "stage " << i;
    EXPECT_GE(stages[i].num_layers(), 1) << "stage " << i;
    EXPECT_EQ(stages[i].has_embedding, i == 0);
    EXPECT_EQ(stages[i].has_head, i + 1 == stages.size());
    next = stages[i].layer_end;
  }
  EXPECT_EQ(next, c.num_blocks());
  // All MTP layers sit on the last stage.
  EXPECT_LE(stages.back().layer_begin, c.num_hidden_layers);
}

TEST(StageLayoutTest, DemoSplits) {
  ModelConfig c = *ModelPreset("demo");  // 4 layers + 1 MTP
  EXPECT_EQ(MaxPipelineStages(c), 5);
  for (int s = 1; s <= 5; ++s) ExpectWellFormed(c, SplitLayers(c, s));
  EXPECT_EQ(Counts(SplitLayers(c, 1)), std::vector<int64_t>({5}));
  EXPECT_EQ(Counts(SplitLayers(c, 2)), std::vector<int64_t>({3, 2}));     // extra to stage 0 (no middle)
  EXPECT_EQ(Counts(SplitLayers(c, 3)), std::vector<int64_t>({2, 2, 1}));  // middle first, then stage 0
  EXPECT_EQ(Counts(SplitLayers(c, 4)), std::vector<int64_t>({1, 2, 1, 1}));
  EXPECT_EQ(Counts(SplitLayers(c, 5)), std::vector<int64_t>({1, 1, 1, 1, 1}));
}

TEST(StageLayoutTest, DeepSeekV3On16Stages) {
  ModelConfig c = *ModelPreset("deepseek-v3-671b");  // 61 + 1 blocks
  std::vector<StageLayout> stages = SplitLayers(c, 16);
  ExpectWellFormed(c, stages);
  EXPECT_EQ(stages[0].layer_begin, 0);
  EXPECT_EQ(stages[0].layer_end, 3);  // the three dense layers with the embedding
  for (int s = 1; s <= 14; ++s) EXPECT_EQ(stages[s].num_layers(), 4) << s;
  EXPECT_EQ(stages[15].layer_begin, 59);
  EXPECT_EQ(stages[15].layer_end, 62);  // layers 59, 60 and the MTP layer 61
}

TEST(StageLayoutTest, SeveralMtpLayersStayTogetherOnTheLastStage) {
  ModelConfig c = *ModelPreset("demo");
  c.num_nextn_predict_layers = 2;  // 6 blocks; the even split would leave 1 on the last stage
  EXPECT_EQ(MaxPipelineStages(c), 5);
  std::vector<StageLayout> stages = SplitLayers(c, 5);
  ExpectWellFormed(c, stages);
  EXPECT_EQ(Counts(stages), std::vector<int64_t>({1, 1, 1, 1, 2}));
  EXPECT_EQ(stages.back().layer_begin, 4);
  c.num_nextn_predict_layers = 0;
  EXPECT_EQ(MaxPipelineStages(c), 4);
  ExpectWellFormed(c, SplitLayers(c, 4));
}

}  // namespace
}  // namespace shoal
