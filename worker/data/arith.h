// The built-in "arith" data family, generated so the demo needs no download: arithmetic written out as text.
//   arith      pre-training documents of 3-8 lines such as "37+48=85\n91-17=74\n12*7=84\n", then eos
//   arith-sft  one problem per sample: prompt "<|user|>37+48=<|assistant|>", response "85<|eos|>"
//   arith-rl   prompts ("<|user|>37+48=<|assistant|>", or plain "37+48=") with the exact answer "85"
// Operands: + and - (80%) on 0..99 (a - b with a >= b), * (20%) of 0..99 by 0..9: what a tiny model can learn.
//
// Determinism: item i of (seed, split) is a pure function of (seed, split, i), so any cursor position can be
// regenerated. Held-out split: a problem belongs to train or eval by a seed-independent hash of the problem
// itself (operand order ignored for + and *, so "48+37" is held out together with "37+48"); ~10% are eval.
// Items of one split are drawn only from that split's problems, so eval problems never appear in training text.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "worker/data/documents.h"
#include "worker/data/tokenizer.h"

namespace shoal::data {

enum class ArithSplit { kTrain, kEval };
std::string_view ToString(ArithSplit split);  // "train" | "eval"

struct ArithProblem {
  int32_t a = 0;
  int32_t b = 0;
  char op = '+';  // '+', '-' or '*'

  int64_t Value() const;        // 85
  std::string Question() const;  // "37+48="
  std::string Answer() const;    // "85"
  std::string Line() const;      // "37+48=85"
  friend bool operator==(const ArithProblem&, const ArithProblem&) = default;
};

// Parses "37+48=85" (the answer is checked) or "37+48=" back into a problem; nullopt for anything else.
std::optional<ArithProblem> ParseArithLine(std::string_view line);

// Which split a problem is held in; independent of any seed.
ArithSplit SplitOf(const ArithProblem& problem);

// Problem i of (seed, split).
ArithProblem ArithProblemAt(uint64_t seed, ArithSplit split, int64_t index);
// Pre-training document i of (seed, split): 3-8 problem lines, each ending in "\n" (no eos; stores add it).
std::string ArithDocumentAt(uint64_t seed, ArithSplit split, int64_t index);

enum class ArithForm {
  kPretrain,  // "arith"
  kSft,       // "arith-sft"
};
// The unbounded generated store of arith (documents + eos) or arith-sft (chat samples) for one split.
std::unique_ptr<DocumentStore> MakeArithDocuments(const Tokenizer& tokenizer, ArithForm form, uint64_t seed,
                                                  ArithSplit split);

}  // namespace shoal::data
