// Data sources and cursors: exact resumption from a serialised cursor, data-parallel ranks that together read
// what one rank reads, the pre-training stream (documents flow across rows), epochs and shuffles of finite data,
// and the .txt / .jsonl readers.
#include "worker/data/data_source.h"

#include <set>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/worker/data/test_util.h"

namespace shoal::data {
namespace {

using ::testing::HasSubstr;

DataSpec Builtin(const std::string& name) {
  DataSpec s;
  s.builtin = name;
  return s;
}

std::unique_ptr<DataSource> Open(const DataSpec& spec, PhaseKind kind, const Tokenizer& tok, DataOptions o = {}) {
  auto src = OpenDataSource(spec, kind, tok, o);
  EXPECT_TRUE(src.ok()) << src.status();
  return src.ok() ? std::move(src).value() : nullptr;
}

// Documents of lengths 1..n tokens; document d is {1000·d, 1000·d + 1, ...} so every token says where it is from.
std::unique_ptr<DocumentStore> Numbered(int n, bool sft) {
  std::vector<Document> docs;
  for (int d = 0; d < n; ++d) {
    Document doc;
    for (int t = 0; t <= d % 7 + 1; ++t) doc.tokens.push_back(1000 * (d + 1) + t);
    doc.prompt_len = sft ? 1 : 0;
    docs.push_back(doc);
  }
  return std::make_unique<InMemoryDocuments>(std::move(docs), "numbered");
}

TEST(DataCursorTest, JsonRoundTrip) {
  DataCursor c{"builtin:arith/train|pretrain|seq_len=128", 18446744073709551615ull, 3, 4096};
  auto back = DataCursor::FromJson(c.ToJson());
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, c);
  EXPECT_EQ(DataCursor::FromJson("{\"source\": \"x\"}").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(DataCursor::FromJson("[1]").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(DataCursor::FromJson(R"({"source":"x","seed":1,"epoch":0,"index":-3})").status().code(),
            StatusCode::kInvalidArgument);
}

// Reads `steps` steps of `rows` rows, resuming from the serialised cursor after `resume_after` steps into a freshly
// opened source (a restarted worker).
std::vector<Batch> ReadSteps(const DataSpec& spec, PhaseKind kind, int steps, int rows, int resume_after) {
  ByteTokenizer tok;
  std::unique_ptr<DataSource> src = Open(spec, kind, tok);
  std::vector<Batch> out;
  DataCursor cursor = src->Start();
  for (int s = 0; s < steps; ++s) {
    if (s == resume_after) {
      std::string saved = cursor.ToJson();
      src = Open(spec, kind, tok);
      auto restored = DataCursor::FromJson(saved);
      EXPECT_TRUE(restored.ok());
      cursor = *restored;
    }
    auto b = src->Next(cursor, rows);
    EXPECT_TRUE(b.ok()) << b.status();
    out.push_back(*b);
    auto next = src->Advance(cursor, rows);
    EXPECT_TRUE(next.ok()) << next.status();
    cursor = *next;
  }
  EXPECT_EQ(cursor.index, steps * rows);
  return out;
}

TEST(DataSourceTest, ResumingFromASerialisedCursorIsExact) {
  for (auto [name, kind] : {std::pair{"arith", PhaseKind::kPretrain}, std::pair{"arith-sft", PhaseKind::kSft}}) {
    std::vector<Batch> straight = ReadSteps(Builtin(name), kind, 10, 4, /*resume_after=*/-1);
    std::vector<Batch> resumed = ReadSteps(Builtin(name), kind, 10, 4, /*resume_after=*/5);
    ASSERT_EQ(straight.size(), 10u);
    for (int s = 0; s < 10; ++s) EXPECT_EQ(straight[s], resumed[s]) << name << " step " << s;
    EXPECT_NE(straight[0].tokens, straight[1].tokens);
  }
}

TEST(DataSourceTest, DataParallelRanksTogetherReadWhatOneRankReads) {
  ByteTokenizer tok;
  for (auto [name, kind] : {std::pair{"arith", PhaseKind::kPretrain}, std::pair{"arith-sft", PhaseKind::kSft}}) {
    std::unique_ptr<DataSource> one = Open(Builtin(name), kind, tok);
    DataCursor c = one->Start();
    c.index = 24;  // some step in the middle
    auto whole = one->ReadStep(c, 8, 0, 1);
    ASSERT_TRUE(whole.ok()) << whole.status();
    for (int dp : {2, 4}) {
      for (int r = 0; r < dp; ++r) {
        std::unique_ptr<DataSource> rank = Open(Builtin(name), kind, tok);  // each rank its own process
        auto part = rank->ReadStep(c, 8, r, dp);
        ASSERT_TRUE(part.ok()) << part.status();
        EXPECT_EQ(*part, whole->Slice(r * (8 / dp), 8 / dp)) << name << " dp " << dp << " rank " << r;
      }
    }
    EXPECT_EQ(one->ReadStep(c, 8, 0, 3).status().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(one->ReadStep(c, 8, 2, 2).status().code(), StatusCode::kInvalidArgument);
  }
}

TEST(DataSourceTest, CursorsOfOtherDataAreRefused) {
  ByteTokenizer tok;
  std::unique_ptr<DataSource> a = Open(Builtin("arith"), PhaseKind::kPretrain, tok);
  DataOptions other_len;
  other_len.seq_len = 64;
  std::unique_ptr<DataSource> b = Open(Builtin("arith"), PhaseKind::kPretrain, tok, other_len);
  std::unique_ptr<DataSource> sft = Open(Builtin("arith-sft"), PhaseKind::kSft, tok);
  Status s = b->Next(a->Start(), 1).status();
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), HasSubstr("seq_len"));
  EXPECT_EQ(sft->Next(a->Start(), 1).status().code(), StatusCode::kFailedPrecondition);
  DataCursor reseeded = a->Start();
  reseeded.seed += 1;
  EXPECT_EQ(a->Next(reseeded, 1).status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(OpenDataSource(Builtin("arith-sft"), PhaseKind::kPretrain, tok, {}).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(OpenDataSource(Builtin("wiki"), PhaseKind::kPretrain, tok, {}).status().code(), StatusCode::kNotFound);
}

TEST(DataSourceTest, PretrainRowsAreTheDocumentStreamCutEverySTokens) {
  ByteTokenizer tok;
  DataOptions o;
  o.seq_len = 16;
  o.seed = 77;
  std::unique_ptr<DataSource> src = Open(Builtin("arith"), PhaseKind::kPretrain, tok, o);
  auto batch = src->ReadRows(0, 40);
  ASSERT_TRUE(batch.ok()) << batch.status();
  std::vector<int32_t> stream;
  for (int64_t i = 0; stream.size() < 40 * 16 + 1; ++i) {
    std::vector<int32_t> d = tok.Encode(ArithDocumentAt(77, ArithSplit::kTrain, i));
    d.push_back(tok.eos_id());  // documents separated by eos
    stream.insert(stream.end(), d.begin(), d.end());
  }
  for (int64_t r = 0; r < 40; ++r)
    for (int64_t t = 0; t <= 16; ++t) ASSERT_EQ(batch->tokens[r * 17 + t], stream[r * 16 + t]) << r << "," << t;
  // No cross-document masking: every slot is trained, eos included.
  EXPECT_EQ(batch->Stats().num_loss_tokens, 40 * 16);
  // Reading a middle row alone gives the same row.
  auto one = src->ReadRows(23, 1);
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(*one, batch->Slice(23, 1));
}

TEST(DataSourceTest, FiniteDataVisitsEveryDocumentOncePerEpochInANewOrder) {
  ByteTokenizer tok;
  DataOptions o;
  o.seq_len = 8;
  o.seed = 5;
  auto src = MakeSftSource(Numbered(50, /*sft=*/true), tok, o);
  ASSERT_TRUE(src.ok()) << src.status();
  // Rows hold samples in global order: collect the document of every sample start until two epochs are seen.
  std::vector<int32_t> seq;
  int64_t row = 0;
  for (; seq.size() < 100; ++row) {
    auto b = (*src)->ReadRows(row, 1);
    ASSERT_TRUE(b.ok()) << b.status();
    for (int64_t i = 0; i < 8; ++i)
      if (b->segment_ids[i] != 0 && b->positions[i] == 0) seq.push_back(b->tokens[i] / 1000 - 1);
  }
  std::vector<int32_t> epoch0(seq.begin(), seq.begin() + 50), epoch1(seq.begin() + 50, seq.begin() + 100);
  for (const auto& docs : {epoch0, epoch1}) {
    std::set<int32_t> distinct(docs.begin(), docs.end());
    EXPECT_EQ(distinct.size(), 50u);
  }
  EXPECT_NE(epoch0, epoch1);  // reshuffled
  std::vector<int32_t> identity(50);
  for (int i = 0; i < 50; ++i) identity[i] = i;
  EXPECT_NE(epoch0, identity);
  auto first_epoch = (*src)->EpochOfRow(0);
  auto last_epoch = (*src)->EpochOfRow(row - 1);
  ASSERT_TRUE(first_epoch.ok() && last_epoch.ok());
  EXPECT_EQ(*first_epoch, 0);
  EXPECT_EQ(*last_epoch, 1);
  auto c = (*src)->Advance((*src)->Start(), row - 1);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->epoch, 1);

  // Pre-training over the same documents: the stream of an epoch is each document exactly once.
  o.shuffle = false;
  auto pre = MakePretrainSource(Numbered(10, /*sft=*/false), tok, o);
  ASSERT_TRUE(pre.ok());
  auto rows = (*pre)->ReadRows(0, 20);
  ASSERT_TRUE(rows.ok());
  std::vector<int32_t> firsts;
  for (int64_t r = 0; r < 20; ++r)
    for (int64_t t = 0; t < 8; ++t) {
      int32_t tok_id = rows->tokens[r * 9 + t];
      if (tok_id % 1000 == 0) firsts.push_back(tok_id / 1000 - 1);
    }
  ASSERT_GE(firsts.size(), 20u);
  for (size_t i = 0; i < 20; ++i) EXPECT_EQ(firsts[i], static_cast<int32_t>(i % 10));
}

TEST(PermuteIndexTest, IsABijection) {
  for (uint64_t n : {1ull, 2ull, 3ull, 10ull, 64ull, 1000ull, 1025ull}) {
    for (uint64_t key : {0ull, 1ull, 0xdeadbeefull}) {
      std::vector<int> hits(n, 0);
      for (uint64_t i = 0; i < n; ++i) {
        uint64_t p = PermuteIndex(i, n, key);
        ASSERT_LT(p, n);
        ++hits[p];
      }
      for (int h : hits) ASSERT_EQ(h, 1);
    }
  }
  int moved = 0;
  for (uint64_t i = 0; i < 1000; ++i) moved += PermuteIndex(i, 1000, 9) != i;
  EXPECT_GT(moved, 900);
}

TEST(DataSourceTest, ReadsTextAndJsonlFiles) {
  testing::TempDir dir;
  testing::WriteText(dir.Sub("a.txt"), "first doc\nline two\n\n\nsecond doc\n");
  testing::WriteText(dir.Sub("b.txt"), "third\n");
  testing::WriteText(dir.Sub("ignored.md"), "not data\n");
  testing::WriteText(dir.Sub("sft.jsonl"),
                     "{\"prompt\": \"2+2=\", \"response\": \"4\"}\n\n{\"prompt\": \"3+3=\", \"response\": \"6\"}\n");
  testing::WriteText(dir.Sub("bad.jsonl"), "{\"prompt\": \"2+2=\"}\n");
  ByteTokenizer tok;
  DataOptions o;
  o.seq_len = 8;
  o.shuffle = false;
  DataSpec text;
  text.path = dir.path();
  text.format = DataFormat::kText;
  std::unique_ptr<DataSource> src = Open(text, PhaseKind::kPretrain, tok, o);
  ASSERT_NE(src, nullptr);
  auto rows = src->ReadRows(0, 6);
  ASSERT_TRUE(rows.ok());
  std::string stream;
  for (int64_t r = 0; r < 6; ++r) {
    std::vector<int32_t> ids(rows->tokens.begin() + r * 9, rows->tokens.begin() + r * 9 + 8);
    stream += tok.Decode(ids);
  }
  EXPECT_THAT(stream, ::testing::StartsWith("first doc\nline two\n<|eos|>second doc\n<|eos|>third\n<|eos|>first"));

  DataSpec sft;
  sft.path = dir.Sub("sft.jsonl");
  sft.format = DataFormat::kJsonl;
  o.seq_len = 16;
  std::unique_ptr<DataSource> s = Open(sft, PhaseKind::kSft, tok, o);
  ASSERT_NE(s, nullptr);
  auto b = s->ReadRows(0, 1);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(tok.Decode(b->tokens), "<|user|>2+2=<|assistant|>4<|eos|><|user|>3+3=<|assistant|>6<|eos|><|pad|>");
  EXPECT_EQ(b->Stats().num_loss_tokens, 4);  // "4", eos, "6", eos

  sft.path = dir.Sub("bad.jsonl");
  Status bad = OpenDataSource(sft, PhaseKind::kSft, tok, o).status();
  EXPECT_EQ(bad.code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.message(), HasSubstr("bad.jsonl:1: missing field \"response\""));
  EXPECT_EQ(OpenDataSource(text, PhaseKind::kSft, tok, o).status().code(), StatusCode::kInvalidArgument);

  DataSpec prompts;
  prompts.path = dir.Sub("p.jsonl");
  prompts.format = DataFormat::kJsonl;
  testing::WriteText(prompts.path, "{\"prompt\": \"2+2=\", \"answer\": 4}\n");
  auto ps = OpenPromptSource(prompts, tok, o);
  ASSERT_TRUE(ps.ok()) << ps.status();
  auto p = (*ps)->Next((*ps)->Start(), 3);
  ASSERT_TRUE(p.ok());
  ASSERT_EQ(p->size(), 3u);  // epochs repeat the single prompt
  EXPECT_EQ((*p)[2].answer, "4");
  EXPECT_EQ(tok.Decode((*p)[0].tokens), "<|user|>2+2=<|assistant|>");
}

}  // namespace
}  // namespace shoal::data
