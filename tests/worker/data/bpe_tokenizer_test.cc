// Byte-level BPE from a synthetic tokenizer.json written here: known merge results (rank order, digit groups),
// both merge spellings, added/special tokens, exact round trips of arbitrary bytes, the pre-tokenizer, and
// load errors.
#include "worker/data/bpe_tokenizer.h"

#include <random>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/worker/data/test_util.h"

namespace shoal::data {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using json = nlohmann::json;

// ids: byte b -> b; then he=256 lo=257 hel=258 Ġw=259 or=260 Ġwor=261 34=262 12=263 123=264 45=265;
// added: <|endoftext|>=300 (special), <|user|>=301, <|assistant|>=302 (special), [PLAIN]=303 (not special).
constexpr int32_t kHe = 256, kLo = 257, kHel = 258, kSpW = 259, kOr = 260, kSpWor = 261, k34 = 262, k12 = 263,
                  k123 = 264, k45 = 265;
const std::vector<std::pair<std::string, std::string>> kMerges = {
    {"h", "e"}, {"l", "o"}, {"he", "l"}, {"Ġ", "w"}, {"o", "r"}, {"Ġw", "or"}, {"3", "4"}, {"1", "2"}, {"12", "3"},
    {"4", "5"}};

std::string TokenizerJson(bool array_merges, bool deepseek_digits, std::optional<int> drop_byte = std::nullopt) {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b)
    if (b != drop_byte) vocab[ByteToUnicode(static_cast<uint8_t>(b))] = b;
  int32_t next = 256;
  json merges = json::array();
  for (const auto& [l, r] : kMerges) {
    vocab[l + r] = next++;
    if (array_merges) {
      merges.push_back(json::array({l, r}));
    } else {
      merges.push_back(l + " " + r);
    }
  }
  json pre = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}};
  if (deepseek_digits) {
    pre = {{"type", "Sequence"},
           {"pretokenizers",
            json::array({{{"type", "Split"}, {"pattern", {{"Regex", "\\p{N}{1,3}"}}}, {"behavior", "Isolated"}},
                         {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}})}};
  }
  json j = {{"version", "1.0"},
            {"added_tokens", json::array({{{"id", 300}, {"content", "<|endoftext|>"}, {"special", true}},
                                          {{"id", 301}, {"content", "<|user|>"}, {"special", true}},
                                          {{"id", 302}, {"content", "<|assistant|>"}, {"special", true}},
                                          {{"id", 303}, {"content", "[PLAIN]"}, {"special", false}}})},
            {"pre_tokenizer", pre},
            {"decoder", {{"type", "ByteLevel"}}},
            {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}}}};
  return j.dump();
}

std::unique_ptr<HfBpeTokenizer> Make(bool array_merges = false, bool deepseek_digits = true) {
  auto t = HfBpeTokenizer::FromJson(TokenizerJson(array_merges, deepseek_digits), "test.json");
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? std::move(t).value() : nullptr;
}

TEST(ByteToUnicodeTest, Gpt2Table) {
  EXPECT_EQ(ByteToUnicode(' '), "Ġ");
  EXPECT_EQ(ByteToUnicode('\n'), "Ċ");
  EXPECT_EQ(ByteToUnicode('a'), "a");
  EXPECT_EQ(ByteToUnicode(0xFF), "ÿ");
  EXPECT_EQ(ByteToUnicode(0x00), "Ā");
}

TEST(BpeTokenizerTest, MergesApplyLowestRankFirst) {
  auto t = Make();
  ASSERT_NE(t, nullptr);
  EXPECT_THAT(t->Encode("hello"), ElementsAre(kHel, kLo));
  EXPECT_THAT(t->Encode("hello world"), ElementsAre(kHel, kLo, kSpWor, 'l', 'd'));
  EXPECT_EQ(t->TokenText(kSpWor), "Ġwor");
  EXPECT_EQ(t->vocab_size(), 304);
}

TEST(BpeTokenizerTest, ArrayMergesEncodeTheSame) {
  auto a = Make(/*array_merges=*/false), b = Make(/*array_merges=*/true);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  for (std::string s : {"hello world", "12345 hellohello", "or wor world"}) EXPECT_EQ(a->Encode(s), b->Encode(s)) << s;
  EXPECT_EQ(a->fingerprint() == b->fingerprint(), false);  // different files, different fingerprints
}

TEST(BpeTokenizerTest, DigitsSplitInGroupsOfThreeWhenAsked) {
  auto deepseek = Make(false, /*deepseek_digits=*/true);
  auto gpt2 = Make(false, /*deepseek_digits=*/false);
  ASSERT_NE(deepseek, nullptr);
  ASSERT_NE(gpt2, nullptr);
  EXPECT_EQ(deepseek->pre_tokenizer().digit_group, 3);
  EXPECT_EQ(gpt2->pre_tokenizer().digit_group, 0);
  // "123" | "45" vs one run where (3,4) has the lowest rank.
  EXPECT_THAT(deepseek->Encode("12345"), ElementsAre(k123, k45));
  EXPECT_THAT(gpt2->Encode("12345"), ElementsAre(k12, k34, '5'));
}

TEST(BpeTokenizerTest, AddedTokens) {
  auto t = Make();
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->eos_id(), 300);
  EXPECT_EQ(t->bos_id(), 300);  // <|endoftext|> serves both, as in GPT-2
  EXPECT_EQ(t->pad_id(), 300);
  EXPECT_EQ(t->SpecialTokenId("<|user|>"), 301);
  EXPECT_FALSE(t->SpecialTokenId("[PLAIN]").has_value());  // added but not special
  EXPECT_THAT(t->Encode("<|user|>he<|assistant|>", /*allow_special=*/true), ElementsAre(301, kHe, 302));
  std::vector<int32_t> plain = t->Encode("<|user|>he");
  EXPECT_EQ(std::count(plain.begin(), plain.end(), 301), 0);
  EXPECT_EQ(t->Decode(plain), "<|user|>he");
  // Non-special added tokens are always matched.
  EXPECT_THAT(t->Encode("he[PLAIN]he"), ElementsAre(kHe, 303, kHe));
  std::vector<int32_t> ids = {301, kHe, 303, 300};
  EXPECT_EQ(t->Decode(ids), "<|user|>he[PLAIN]<|endoftext|>");
  EXPECT_EQ(t->Decode(ids, /*skip_special=*/true), "he[PLAIN]");
}

TEST(BpeTokenizerTest, ArbitraryBytesRoundTrip) {
  for (bool deepseek : {true, false}) {
    auto t = Make(false, deepseek);
    ASSERT_NE(t, nullptr);
    std::mt19937 rng(11);
    const std::string alphabet = "hello wor 12345\n\t!?,.'";
    for (int trial = 0; trial < 300; ++trial) {
      std::string s(rng() % 80, '\0');
      for (char& c : s) c = trial % 2 ? static_cast<char>(rng() & 0xFF) : alphabet[rng() % alphabet.size()];
      std::vector<int32_t> ids = t->Encode(s);
      for (int32_t id : ids) ASSERT_TRUE(id >= 0 && id < 300) << id;
      ASSERT_EQ(t->Decode(ids), s);
    }
    for (std::string s : {"naïve café — 数学 🙂", "  leading and trailing  ", "\r\n\r\nx", "a\xff\xfe b"})
      EXPECT_EQ(t->Decode(t->Encode(s)), s);
  }
}

TEST(PreTokenizeTest, Chunks) {
  const std::string text = "Hello, world!  12345\n\nfoo";
  auto strs = [](std::vector<std::string_view> v) { return std::vector<std::string>(v.begin(), v.end()); };
  EXPECT_THAT(strs(PreTokenize(text, {.digit_group = 3})),
              ElementsAre("Hello", ",", " world", "!", "  ", "123", "45", "\n\n", "foo"));
  EXPECT_THAT(strs(PreTokenize(text, {.digit_group = 0})),
              ElementsAre("Hello", ",", " world", "!", " ", " 12345", "\n\n", "foo"));
  EXPECT_THAT(strs(PreTokenize("x.\n\ny", {.digit_group = 3})), ElementsAre("x", ".\n\n", "y"));
  std::mt19937 rng(3);
  for (int trial = 0; trial < 200; ++trial) {
    std::string s(rng() % 50, '\0');
    for (char& c : s) c = " \nab1,\xc3\xa9"[rng() % 8];
    std::string joined;
    for (std::string_view piece : PreTokenize(s, {.digit_group = trial % 2 ? 3 : 0})) {
      ASSERT_FALSE(piece.empty());
      joined += piece;
    }
    EXPECT_EQ(joined, s);
  }
}

TEST(BpeTokenizerTest, LoadsFromADirectoryWithTokenizerConfig) {
  testing::TempDir dir;
  testing::WriteText(dir.Sub("tokenizer.json"), TokenizerJson(false, true));
  testing::WriteText(dir.Sub("tokenizer_config.json"),
                     R"({"bos_token": "<|user|>", "eos_token": {"content": "<|endoftext|>"}})");
  auto t = LoadTokenizer(dir.path());
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ((*t)->bos_id(), 301);
  EXPECT_EQ((*t)->eos_id(), 300);
  EXPECT_THAT((*t)->name(), HasSubstr("tokenizer.json"));
}

TEST(BpeTokenizerTest, RejectsWhatItCannotEncode) {
  auto not_json = HfBpeTokenizer::FromJson("{oops", "t.json");
  EXPECT_EQ(not_json.status().code(), StatusCode::kInvalidArgument);
  auto missing_byte = HfBpeTokenizer::FromJson(TokenizerJson(false, true, /*drop_byte=*/7), "t.json");
  EXPECT_EQ(missing_byte.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(missing_byte.status().message(), HasSubstr("byte 7"));
  json j = json::parse(TokenizerJson(false, true));
  j["model"]["merges"].push_back("zz qq");
  auto bad_merge = HfBpeTokenizer::FromJson(j.dump(), "t.json");
  EXPECT_EQ(bad_merge.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(bad_merge.status().message(), HasSubstr("merges[10]"));
  j = json::parse(TokenizerJson(false, true));
  j["model"]["type"] = "WordPiece";
  EXPECT_EQ(HfBpeTokenizer::FromJson(j.dump(), "t.json").status().code(), StatusCode::kUnimplemented);
  j = json::parse(TokenizerJson(false, true));
  j["added_tokens"] = json::array();
  auto no_eos = HfBpeTokenizer::FromJson(j.dump(), "t.json");
  EXPECT_EQ(no_eos.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(no_eos.status().message(), HasSubstr("eos_token"));
}

}  // namespace
}  // namespace shoal::data
