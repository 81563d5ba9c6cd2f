// ByteTokenizer: the special ids the demo model relies on, exact round trips, the allow_special flag, and the
// model-compatibility check.
#include "worker/data/tokenizer.h"

#include <random>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/worker/data/test_util.h"

namespace shoal::data {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(ByteTokenizerTest, SpecialIdsMatchTheDemoPreset) {
  ByteTokenizer t;
  EXPECT_EQ(t.bos_id(), 0);  // demo preset: bos_token_id = 0
  EXPECT_EQ(t.eos_id(), 1);  // eos_token_id = 1
  EXPECT_EQ(t.pad_id(), 2);
  EXPECT_EQ(t.SpecialTokenId("<|bos|>"), 0);
  EXPECT_EQ(t.SpecialTokenId("<|eos|>"), 1);
  EXPECT_EQ(t.SpecialTokenId("<|pad|>"), 2);
  EXPECT_EQ(t.SpecialTokenId("<|user|>"), 3);
  EXPECT_EQ(t.SpecialTokenId("<|assistant|>"), 4);
  EXPECT_TRUE(t.SpecialTokenId("<|fim_begin|>").has_value());
  EXPECT_TRUE(t.SpecialTokenId("<|fim_hole|>").has_value());
  EXPECT_TRUE(t.SpecialTokenId("<|fim_end|>").has_value());
  EXPECT_FALSE(t.SpecialTokenId("<|nope|>").has_value());
  EXPECT_EQ(t.special_tokens().size(), 16u);
  EXPECT_EQ(t.vocab_size(), 272);
  EXPECT_LE(t.vocab_size(), 320);  // the dsv3-micro fixture's vocabulary
}

TEST(ByteTokenizerTest, BytesAreSixteenPlusTheByte) {
  ByteTokenizer t;
  EXPECT_THAT(t.Encode("A\n"), ElementsAre(16 + 'A', 16 + '\n'));
  EXPECT_THAT(t.Encode(std::string("\0\xff", 2)), ElementsAre(16, 16 + 255));
}

TEST(ByteTokenizerTest, ArbitraryBytesRoundTrip) {
  ByteTokenizer t;
  std::mt19937 rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    std::string s(rng() % 64, '\0');
    for (char& c : s) c = static_cast<char>(rng() & 0xFF);
    std::vector<int32_t> ids = t.Encode(s);
    ASSERT_EQ(ids.size(), s.size());
    for (int32_t id : ids) ASSERT_TRUE(id >= 16 && id < 272);
    EXPECT_EQ(t.Decode(ids), s);
  }
  const std::string utf8 = "naïve café — 数学 🙂";
  EXPECT_EQ(t.Decode(t.Encode(utf8)), utf8);
}

TEST(ByteTokenizerTest, LiteralSpecialTokensNeedTheFlag) {
  ByteTokenizer t;
  const std::string text = "<|user|>2+2=<|assistant|>4<|eos|>";
  std::vector<int32_t> with = t.Encode(text, /*allow_special=*/true);
  EXPECT_THAT(with, ElementsAre(3, 16 + '2', 16 + '+', 16 + '2', 16 + '=', 4, 16 + '4', 1));
  std::vector<int32_t> without = t.Encode(text);
  EXPECT_EQ(without.size(), text.size());  // user text cannot forge control tokens
  for (int32_t id : without) EXPECT_GE(id, 16);
  EXPECT_EQ(t.Decode(with), text);
  EXPECT_EQ(t.Decode(without), text);
  EXPECT_EQ(t.Decode(with, /*skip_special=*/true), "2+2=4");
  // A partial special is text.
  EXPECT_EQ(t.Encode("<|user", true).size(), 6u);
}

TEST(ByteTokenizerTest, UnknownIdsAreVisibleInDecode) {
  ByteTokenizer t;
  std::vector<int32_t> ids = {16 + 'a', 999, -1};
  EXPECT_EQ(t.Decode(ids), "a<|unk:999|><|unk:-1|>");
}

TEST(ByteTokenizerTest, LoadTokenizerByName) {
  auto t = LoadTokenizer("byte");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ((*t)->name(), "byte");
  EXPECT_EQ((*t)->fingerprint(), ByteTokenizer().fingerprint());
  auto missing = LoadTokenizer("/nonexistent/tokenizer.json");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
}

TEST(ByteTokenizerTest, ModelCompatibility) {
  ByteTokenizer t;
  EXPECT_TRUE(CheckTokenizerFitsModel(t, 512, 0, 1).ok());
  EXPECT_TRUE(CheckTokenizerFitsModel(t, 272, 0, 1).ok());
  Status small = CheckTokenizerFitsModel(t, 256, 0, 1);
  EXPECT_EQ(small.code(), StatusCode::kFailedPrecondition);
  EXPECT_THAT(small.message(), HasSubstr("at least 272"));
  EXPECT_EQ(CheckTokenizerFitsModel(t, 512, 1, 2).code(), StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace shoal::data
