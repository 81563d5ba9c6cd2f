// Token shards: prepare + read round trip (the rows equal reading the inputs directly), shard splitting,
// checksum / size corruption detected as DataLoss, and a tokenizer mismatch refused.
#include "worker/data/shards.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/file_util.h"
#include "tests/worker/data/test_util.h"
#include "worker/data/bpe_tokenizer.h"
#include "worker/data/data_source.h"

namespace shoal::data {
namespace {

using ::testing::HasSubstr;

class ShardsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string jsonl, text;
    for (int i = 0; i < 300; ++i) {
      ArithProblem p = ArithProblemAt(9, ArithSplit::kTrain, i);
      jsonl += "{\"prompt\": \"" + p.Question() + "\", \"response\": \"" + p.Answer() + "\"}\n";
      text += ArithDocumentAt(9, ArithSplit::kTrain, i) + "\n";
    }
    testing::WriteText(dir_.Sub("sft.jsonl"), jsonl);
    testing::WriteText(dir_.Sub("docs.txt"), text);
  }
  Result<PrepareStats> Prepare(PhaseKind kind, int64_t shard_tokens, const std::string& out) {
    PrepareOptions o;
    o.format = kind == PhaseKind::kSft ? DataFormat::kJsonl : DataFormat::kText;
    o.kind = kind;
    o.shard_tokens = shard_tokens;
    return PrepareShards({dir_.Sub(kind == PhaseKind::kSft ? "sft.jsonl" : "docs.txt")}, o, tok_, out);
  }
  testing::TempDir dir_;
  ByteTokenizer tok_;
};

TEST_F(ShardsTest, RoundTripMatchesReadingTheInputsDirectly) {
  for (PhaseKind kind : {PhaseKind::kPretrain, PhaseKind::kSft}) {
    const std::string out = dir_.Sub(kind == PhaseKind::kSft ? "sft-shards" : "pre-shards");
    auto stats = Prepare(kind, 2000, out);
    ASSERT_TRUE(stats.ok()) << stats.status();
    EXPECT_EQ(stats->num_documents, 300);
    EXPECT_GT(stats->num_shards, 1);  // split by shard_tokens
    auto store = ShardDocuments::Open(out, tok_);
    ASSERT_TRUE(store.ok()) << store.status();
    EXPECT_EQ((*store)->size(), 300);
    EXPECT_EQ((*store)->num_tokens(), stats->num_tokens);
    EXPECT_EQ((*store)->sft(), kind == PhaseKind::kSft);
    for (int64_t i : {0, 1, 150, 299}) {
      auto d = (*store)->Get(i);
      ASSERT_TRUE(d.ok()) << d.status();
      ArithProblem p = ArithProblemAt(9, ArithSplit::kTrain, i);
      Document want = kind == PhaseKind::kSft ? MakeSftSample(tok_, p.Question(), p.Answer())
                                               : MakeTextDocument(tok_, ArithDocumentAt(9, ArithSplit::kTrain, i));
      EXPECT_EQ(*d, want) << i;
    }
    EXPECT_EQ((*store)->Get(300).status().code(), StatusCode::kOutOfRange);

    // The data source over shards yields the same rows as over the jsonl/text files.
    DataOptions o;
    o.seq_len = 32;
    DataSpec shards{.builtin = "", .path = out, .format = DataFormat::kShards};
    DataSpec direct{.builtin = "",
                    .path = dir_.Sub(kind == PhaseKind::kSft ? "sft.jsonl" : "docs.txt"),
                    .format = kind == PhaseKind::kSft ? DataFormat::kJsonl : DataFormat::kText};
    auto a = OpenDataSource(shards, kind, tok_, o);
    auto b = OpenDataSource(direct, kind, tok_, o);
    ASSERT_TRUE(a.ok()) << a.status();
    ASSERT_TRUE(b.ok()) << b.status();
    auto ra = (*a)->ReadRows(0, 64);
    auto rb = (*b)->ReadRows(0, 64);
    ASSERT_TRUE(ra.ok() && rb.ok());
    EXPECT_EQ(*ra, *rb);
    PhaseKind other = kind == PhaseKind::kSft ? PhaseKind::kPretrain : PhaseKind::kSft;
    EXPECT_EQ(OpenDataSource(shards, other, tok_, o).status().code(), StatusCode::kInvalidArgument);
  }
}

TEST_F(ShardsTest, CorruptionIsDataLoss) {
  const std::string out = dir_.Sub("shards");
  auto stats = Prepare(PhaseKind::kPretrain, 3000, out);
  ASSERT_TRUE(stats.ok()) << stats.status();
  const std::string shard = out + "/shard-00001.bin";
  ASSERT_TRUE(FileExists(shard));
  auto original = ReadFile(shard);
  ASSERT_TRUE(original.ok());
  ASSERT_TRUE(VerifyShards(out, tok_).ok());

  std::string flipped = *original;
  flipped[flipped.size() / 2] ^= 0x01;  // one bit in the token area
  testing::WriteText(shard, flipped);
  Status s = VerifyShards(out, tok_);
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), HasSubstr("shard-00001.bin"));
  EXPECT_THAT(s.message(), HasSubstr("xxh3"));
  DataSpec spec{.builtin = "", .path = out, .format = DataFormat::kShards};
  EXPECT_EQ(OpenDataSource(spec, PhaseKind::kPretrain, tok_, {}).status().code(), StatusCode::kDataLoss);

  testing::WriteText(shard, original->substr(0, original->size() - 8));  // truncated
  EXPECT_EQ(VerifyShards(out, tok_).code(), StatusCode::kDataLoss);

  testing::WriteText(shard, *original);
  EXPECT_TRUE(VerifyShards(out, tok_).ok());
  std::filesystem::remove(shard);
  EXPECT_EQ(VerifyShards(out, tok_).code(), StatusCode::kNotFound);
}

TEST_F(ShardsTest, ManifestRecordsCountsAndTheTokenizer) {
  const std::string out = dir_.Sub("m");
  auto stats = Prepare(PhaseKind::kPretrain, 1 << 20, out);
  ASSERT_TRUE(stats.ok());
  auto text = ReadFile(out + "/manifest.json");
  ASSERT_TRUE(text.ok());
  nlohmann::json m = nlohmann::json::parse(*text);
  EXPECT_EQ(m["format"], "shoal-token-shards");
  EXPECT_EQ(m["kind"], "pretrain");
  EXPECT_EQ(m["token_bytes"], 2);  // 272 ids fit uint16
  EXPECT_EQ(m["num_documents"], 300);
  EXPECT_EQ(m["num_tokens"], stats->num_tokens);
  EXPECT_EQ(m["shards"].size(), 1u);
  EXPECT_EQ(m["shards"][0]["xxh3"].get<std::string>().size(), 16u);
  EXPECT_EQ(m["tokenizer"]["name"], "byte");
  EXPECT_EQ(m["tokenizer"]["eos_id"], 1);

  // Shards made with one tokenizer are refused under another.
  using json = nlohmann::json;
  json tj = {{"model", {{"type", "BPE"}, {"vocab", json::object()}, {"merges", json::array()}}},
             {"added_tokens", json::array({{{"id", 256}, {"content", "<|endoftext|>"}, {"special", true}}})}};
  for (int b = 0; b < 256; ++b) tj["model"]["vocab"][ByteToUnicode(static_cast<uint8_t>(b))] = b;
  auto bpe = HfBpeTokenizer::FromJson(tj.dump(), "t.json");
  ASSERT_TRUE(bpe.ok()) << bpe.status();
  Status s = ShardDocuments::Open(out, **bpe).status();
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), HasSubstr("re-run `shoal data prepare`"));
  EXPECT_EQ(ShardDocuments::Open(dir_.Sub("nothing-here"), tok_).status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace shoal::data
