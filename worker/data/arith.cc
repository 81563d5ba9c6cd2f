#include "worker/data/arith.h"

#include <charconv>

namespace shoal::data {
namespace {

// Counter-based stream: (seed, stream, index) -> a fresh SplitMix64 sequence; no state outlives one item.
class ItemRng {
 public:
  ItemRng(uint64_t seed, uint64_t stream, int64_t index)
      : state_(Mix64(seed ^ Mix64(stream ^ Mix64(static_cast<uint64_t>(index))))) {}
  uint64_t Next() { return Mix64(state_ += 0x9E3779B97F4A7C15ull); }
  int32_t Below(int32_t n) { return static_cast<int32_t>(Next() % static_cast<uint64_t>(n)); }

 private:
  uint64_t state_;
};

constexpr uint64_t kProblemStream = 0x70726f626c656dull;  // "problem"
constexpr uint64_t kDocumentStream = 0x646f63756d656eull;  // "documen"
constexpr uint64_t kSplitSalt = 0x61726974682d7631ull;     // "arith-v1": changing it reshuffles the held-out set
constexpr int kEvalPerMille = 100;

ArithProblem DrawAny(ItemRng& rng) {
  ArithProblem p;
  int32_t kind = rng.Below(100);
  p.a = rng.Below(100);
  if (kind < 45) {
    p.op = '+';
    p.b = rng.Below(100);
  } else if (kind < 80) {
    p.op = '-';
    p.b = rng.Below(100);
    if (p.a < p.b) std::swap(p.a, p.b);
  } else {
    p.op = '*';
    p.b = rng.Below(10);
  }
  return p;
}

ArithProblem Draw(ItemRng& rng, ArithSplit split) {
  for (;;) {  // rejection: ~1.1 draws for train, ~10 for eval
    ArithProblem p = DrawAny(rng);
    if (SplitOf(p) == split) return p;
  }
}

class ArithDocuments final : public DocumentStore {
 public:
  ArithDocuments(const Tokenizer& tokenizer, ArithForm form, uint64_t seed, ArithSplit split)
      : tokenizer_(tokenizer), form_(form), seed_(seed), split_(split) {}
  std::optional<int64_t> size() const override { return std::nullopt; }
  Result<Document> Get(int64_t idx) const override {
    if (idx < 0) return OutOfRangeError("arith: negative document index " + std::to_string(idx));
    if (form_ == ArithForm::kPretrain) return MakeTextDocument(tokenizer_, ArithDocumentAt(seed_, split_, idx));
    ArithProblem p = ArithProblemAt(seed_, split_, idx);
    return MakeSftSample(tokenizer_, p.Question(), p.Answer());
  }
  std::string id() const override {
    return std::string(form_ == ArithForm::kPretrain ? "builtin:arith/" : "builtin:arith-sft/") +
           std::string(ToString(split_)) + "/seed=" + std::to_string(seed_) + "/" + tokenizer_.name();
  }

 private:
  const Tokenizer& tokenizer_;
  ArithForm form_;
  uint64_t seed_;
  ArithSplit split_;
};

}  // namespace

std::string_view ToString(ArithSplit split) { return split == ArithSplit::kTrain ? "train" : "eval"; }

int64_t ArithProblem::Value() const {
  switch (op) {
    case '+': return int64_t{a} + b;
    case '-': return int64_t{a} - b;
    default: return int64_t{a} * b;
  }
}

std::string ArithProblem::Question() const { return std::to_string(a) + op + std::to_string(b) + "="; }
std::string ArithProblem::Answer() const { return std::to_string(Value()); }
std::string ArithProblem::Line() const { return Question() + Answer(); }

std::optional<ArithProblem> ParseArithLine(std::string_view line) {
  auto number = [&](size_t& pos, int64_t& out) {
    size_t start = pos;
    if (pos < line.size() && line[pos] == '-') ++pos;
    while (pos < line.size() && line[pos] >= '0' && line[pos] <= '9') ++pos;
    if (pos == start || (line[start] == '-' && pos == start + 1)) return false;
    return std::from_chars(line.data() + start, line.data() + pos, out).ec == std::errc();
  };
  size_t pos = 0;
  int64_t a = 0, b = 0, c = 0;
  if (!number(pos, a) || pos >= line.size()) return std::nullopt;
  char op = line[pos++];
  if (op != '+' && op != '-' && op != '*') return std::nullopt;
  if (!number(pos, b) || pos >= line.size() || line[pos++] != '=') return std::nullopt;
  ArithProblem p{static_cast<int32_t>(a), static_cast<int32_t>(b), op};
  if (pos == line.size()) return p;
  if (!number(pos, c) || pos != line.size() || c != p.Value()) return std::nullopt;
  return p;
}

ArithSplit SplitOf(const ArithProblem& p) {
  int64_t x = p.a, y = p.b;
  if (p.op != '-' && x > y) std::swap(x, y);
  uint64_t op_code = p.op == '+' ? 1 : p.op == '-' ? 2 : 3;
  uint64_t key = (op_code << 48) | (static_cast<uint64_t>(x & 0xFFFFFF) << 24) | static_cast<uint64_t>(y & 0xFFFFFF);
  return Mix64(key ^ kSplitSalt) % 1000 < kEvalPerMille ? ArithSplit::kEval : ArithSplit::kTrain;
}

ArithProblem ArithProblemAt(uint64_t seed, ArithSplit split, int64_t index) {
  ItemRng rng(seed, kProblemStream, index);
  return Draw(rng, split);
}

std::string ArithDocumentAt(uint64_t seed, ArithSplit split, int64_t index) {
  ItemRng rng(seed, kDocumentStream, index);
  int32_t num_lines = 3 + rng.Below(6);
  std::string doc;
  for (int32_t l = 0; l < num_lines; ++l) {
    doc += Draw(rng, split).Line();
    doc.push_back('\n');
  }
  return doc;
}

std::unique_ptr<DocumentStore> MakeArithDocuments(const Tokenizer& tokenizer, ArithForm form, uint64_t seed,
                                                  ArithSplit split) {
  return std::make_unique<ArithDocuments>(tokenizer, form, seed, split);
}

}  // namespace shoal::data
