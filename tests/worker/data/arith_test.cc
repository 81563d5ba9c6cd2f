// The built-in arith family: determinism as a pure function of (seed, index), the held-out split (eval
// problems never appear in training text), the SFT / RL forms, the exact-match reward and the unigram entropy.
#include "worker/data/arith.h"

#include <cmath>
#include <map>
#include <tuple>
#include <set>
#include <sstream>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/worker/data/test_util.h"
#include "worker/data/data_source.h"
#include "worker/data/reward.h"

namespace shoal::data {
namespace {

using ::testing::ElementsAre;

std::vector<std::string> Lines(const std::string& doc) {
  std::vector<std::string> out;
  std::stringstream ss(doc);
  for (std::string line; std::getline(ss, line);) out.push_back(line);
  return out;
}

TEST(ArithTest, ProblemsAreWrittenOutAndParsedBack) {
  ArithProblem p{37, 48, '+'};
  EXPECT_EQ(p.Line(), "37+48=85");
  EXPECT_EQ((ArithProblem{91, 17, '-'}).Line(), "91-17=74");
  EXPECT_EQ((ArithProblem{12, 7, '*'}).Line(), "12*7=84");
  EXPECT_EQ(ParseArithLine("37+48=85"), p);
  EXPECT_EQ(ParseArithLine("37+48="), p);
  EXPECT_FALSE(ParseArithLine("37+48=86").has_value());  // wrong answer
  EXPECT_FALSE(ParseArithLine("37/48=1").has_value());
  EXPECT_FALSE(ParseArithLine("37+48").has_value());
}

TEST(ArithTest, ItemsArePureFunctionsOfSeedAndIndex) {
  for (int64_t i : {0, 1, 17, 123456789}) {
    EXPECT_EQ(ArithDocumentAt(1234, ArithSplit::kTrain, i), ArithDocumentAt(1234, ArithSplit::kTrain, i));
    EXPECT_EQ(ArithProblemAt(1234, ArithSplit::kEval, i), ArithProblemAt(1234, ArithSplit::kEval, i));
  }
  // Order does not matter: reading 100 backwards gives what reading forwards gave.
  std::vector<std::string> fwd, bwd(100);
  for (int64_t i = 0; i < 100; ++i) fwd.push_back(ArithDocumentAt(5, ArithSplit::kTrain, i));
  for (int64_t i = 99; i >= 0; --i) bwd[i] = ArithDocumentAt(5, ArithSplit::kTrain, i);
  EXPECT_EQ(fwd, bwd);
  // Different seeds and indices give different data.
  int same = 0;
  for (int64_t i = 0; i < 100; ++i)
    same += ArithDocumentAt(5, ArithSplit::kTrain, i) == ArithDocumentAt(6, ArithSplit::kTrain, i);
  EXPECT_LT(same, 3);
  std::set<std::string> distinct(fwd.begin(), fwd.end());
  EXPECT_GT(distinct.size(), 95u);
}

TEST(ArithTest, DocumentsAreAFewCorrectLinesWithTheRightMix) {
  std::map<char, int> ops;
  int two_digit_operands = 0, operands = 0;
  for (int64_t i = 0; i < 2000; ++i) {
    std::string doc = ArithDocumentAt(42, ArithSplit::kTrain, i);
    ASSERT_EQ(doc.back(), '\n');
    std::vector<std::string> lines = Lines(doc);
    ASSERT_GE(lines.size(), 3u);
    ASSERT_LE(lines.size(), 8u);
    for (const std::string& line : lines) {
      std::optional<ArithProblem> p = ParseArithLine(line);
      ASSERT_TRUE(p.has_value()) << line;  // parses, and the answer is right
      ASSERT_GE(p->Value(), 0);
      ASSERT_TRUE(p->a >= 0 && p->a < 100 && p->b >= 0 && p->b < 100);
      ++ops[p->op];
      two_digit_operands += (p->a >= 10) + (p->op != '*' && p->b >= 10);
      operands += p->op == '*' ? 1 : 2;
    }
  }
  const double total = ops['+'] + ops['-'] + ops['*'];
  EXPECT_NEAR(ops['+'] / total, 0.45, 0.05);
  EXPECT_NEAR(ops['-'] / total, 0.35, 0.05);
  EXPECT_NEAR(ops['*'] / total, 0.20, 0.05);
  EXPECT_GT(static_cast<double>(two_digit_operands) / operands, 0.85);
}

TEST(ArithTest, EvalProblemsNeverAppearInTraining) {
  // Thousands of eval draws cover the held-out set; tens of thousands of training lines never touch it.
  std::set<std::tuple<char, int, int>> eval;
  auto key = [](const ArithProblem& p) {
    int x = p.a, y = p.b;
    if (p.op != '-' && x > y) std::swap(x, y);  // 48+37 is the same held-out problem as 37+48
    return std::make_tuple(p.op, x, y);
  };
  for (int64_t i = 0; i < 20000; ++i) {
    ArithProblem p = ArithProblemAt(1234, ArithSplit::kEval, i);
    ASSERT_EQ(SplitOf(p), ArithSplit::kEval);
    eval.insert(key(p));
  }
  EXPECT_GT(eval.size(), 800u);  // ~10% of ~11k distinct problems
  int64_t train_lines = 0;
  for (uint64_t seed : {1234ull, 99ull}) {
    for (int64_t i = 0; i < 8000; ++i) {
      for (const std::string& line : Lines(ArithDocumentAt(seed, ArithSplit::kTrain, i))) {
        std::optional<ArithProblem> p = ParseArithLine(line);
        ASSERT_TRUE(p.has_value());
        ASSERT_EQ(eval.count(key(*p)), 0u) << "eval problem in training text: " << line;
        ++train_lines;
      }
      ArithProblem q = ArithProblemAt(seed, ArithSplit::kTrain, i);  // SFT / RL training problems too
      ASSERT_EQ(eval.count(key(q)), 0u) << q.Line();
    }
  }
  EXPECT_GT(train_lines, 50000);
  // The split ignores the seed: it is a property of the problem.
  EXPECT_EQ(SplitOf(ArithProblem{37, 48, '+'}), SplitOf(ArithProblem{48, 37, '+'}));
}

TEST(ArithTest, SftSamplesAreChatPromptAndAnswer) {
  ByteTokenizer tok;
  auto store = MakeArithDocuments(tok, ArithForm::kSft, 7, ArithSplit::kTrain);
  EXPECT_FALSE(store->size().has_value());
  for (int64_t i = 0; i < 50; ++i) {
    auto d = store->Get(i);
    ASSERT_TRUE(d.ok()) << d.status();
    ArithProblem p = ArithProblemAt(7, ArithSplit::kTrain, i);
    std::vector<int32_t> prompt(d->tokens.begin(), d->tokens.begin() + d->prompt_len);
    std::vector<int32_t> response(d->tokens.begin() + d->prompt_len, d->tokens.end());
    EXPECT_EQ(tok.Decode(prompt), "<|user|>" + p.Question() + "<|assistant|>");
    EXPECT_EQ(tok.Decode(response), p.Answer() + "<|eos|>");
    EXPECT_EQ(prompt.front(), 3);
    EXPECT_EQ(prompt.back(), 4);
    EXPECT_EQ(response.back(), tok.eos_id());
  }
}

TEST(ArithTest, RlPromptsCarryTheExactAnswer) {
  ByteTokenizer tok;
  DataSpec spec;
  spec.builtin = "arith-rl";
  for (bool chat : {true, false}) {
    DataOptions o;
    o.seed = 3;
    o.chat_prompts = chat;
    auto src = OpenPromptSource(spec, tok, o);
    ASSERT_TRUE(src.ok()) << src.status();
    auto prompts = (*src)->Next((*src)->Start(), 20);
    ASSERT_TRUE(prompts.ok()) << prompts.status();
    for (size_t i = 0; i < prompts->size(); ++i) {
      const Prompt& p = (*prompts)[i];
      ArithProblem q = ArithProblemAt(3, ArithSplit::kTrain, static_cast<int64_t>(i));
      EXPECT_EQ(p.text, q.Question());
      EXPECT_EQ(p.answer, q.Answer());
      EXPECT_EQ(tok.Decode(p.tokens), chat ? "<|user|>" + q.Question() + "<|assistant|>" : q.Question());
      EXPECT_EQ(ExactMatchReward(p.answer + "<|eos|>", p.answer), 1.0);
    }
  }
  spec.builtin = "arith";
  EXPECT_EQ(OpenPromptSource(spec, tok, {}).status().code(), StatusCode::kInvalidArgument);
}

TEST(RewardTest, ExactMatchOnTheFirstNumberBeforeEos) {
  EXPECT_EQ(ExactMatchReward("85", "85"), 1.0);
  EXPECT_EQ(ExactMatchReward("85<|eos|>", "85"), 1.0);
  EXPECT_EQ(ExactMatchReward("85<|eos|>12", "85"), 1.0);  // after eos is ignored
  EXPECT_EQ(ExactMatchReward(" = 85\n", "85"), 1.0);
  EXPECT_EQ(ExactMatchReward("85 or 86", "85"), 1.0);
  EXPECT_EQ(ExactMatchReward("86 or 85", "85"), 0.0);  // the first number counts
  EXPECT_EQ(ExactMatchReward("8<|eos|>85", "85"), 0.0);
  EXPECT_EQ(ExactMatchReward("850", "85"), 0.0);
  EXPECT_EQ(ExactMatchReward("", "85"), 0.0);
  EXPECT_EQ(ExactMatchReward("-5", "-5"), 1.0);
  EXPECT_EQ(ExactMatchReward("-5", "5"), 0.0);
  ByteTokenizer tok;
  std::vector<int32_t> ids = tok.Encode("85");
  ids.push_back(tok.eos_id());
  std::vector<int32_t> tail = tok.Encode("99");
  ids.insert(ids.end(), tail.begin(), tail.end());
  EXPECT_EQ(ExactMatchReward(tok, ids, "85"), 1.0);
  EXPECT_EQ(ExactMatchReward(tok, ids, "8599"), 0.0);
  EXPECT_EQ(FirstNumber("x=-12y"), "-12");
}

TEST(ArithTest, UnigramEntropyIsBetweenOneNatAndLogVocab) {
  ByteTokenizer tok;
  DataSpec spec;
  spec.builtin = "arith";
  auto src = OpenDataSource(spec, PhaseKind::kPretrain, tok, {});
  ASSERT_TRUE(src.ok()) << src.status();
  auto h = MeasureUnigramEntropy(**src, 2048);
  ASSERT_TRUE(h.ok()) << h.status();
  std::printf("arith unigram entropy: %.4f nats/token over %d rows of 128\n", *h, 2048);
  EXPECT_GT(*h, 1.0);
  EXPECT_LT(*h, std::log(15.0) + 1e-9);  // only 15 symbols occur: digits, + - * = \n and eos
  EXPECT_LT(*h, std::log(static_cast<double>(tok.vocab_size())));
  const int64_t uniform[4] = {5, 5, 5, 5};
  EXPECT_NEAR(UnigramEntropyNats(uniform), std::log(4.0), 1e-12);
  const int64_t single[3] = {0, 9, 0};
  EXPECT_EQ(UnigramEntropyNats(single), 0.0);
}

}  // namespace
}  // namespace shoal::data
