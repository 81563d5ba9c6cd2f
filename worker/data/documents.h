// Documents: the tokenised units the packers cut into rows, and the stores that hold them (generated, in memory,
// token shards). A pre-training document ends with eos; an SFT sample is prompt + response + eos with the prompt
// length recorded (those tokens get no loss). Also the chat template shared by SFT and GRPO prompts, the
// seeded index permutation used for per-epoch shuffles, and reading .txt / .jsonl files.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "worker/data/tokenizer.h"

namespace shoal::data {

struct Document {
  std::vector<int32_t> tokens;
  int64_t prompt_len = 0;  // SFT: tokens[0, prompt_len) are the prompt (no loss); pre-training: 0
  friend bool operator==(const Document&, const Document&) = default;
};

// An indexed collection of documents. Get must be a pure function of the index (same index, same document),
// which is what makes cursors exact. Not thread-safe unless an implementation says so.
class DocumentStore {
 public:
  virtual ~DocumentStore() = default;
  // Number of documents; nullopt for an unbounded generated store (every index >= 0 exists).
  virtual std::optional<int64_t> size() const = 0;
  virtual Result<Document> Get(int64_t idx) const = 0;
  // tokens.size() of document idx; stores that know it without building the document override this.
  virtual Result<int64_t> Length(int64_t idx) const;
  // Names the content ("builtin:arith/train/seed=1234", "shards:<xxh3>"): a cursor taken on one store is refused
  // by another.
  virtual std::string id() const = 0;
};

class InMemoryDocuments final : public DocumentStore {
 public:
  InMemoryDocuments(std::vector<Document> docs, std::string id) : docs_(std::move(docs)), id_(std::move(id)) {}
  std::optional<int64_t> size() const override { return static_cast<int64_t>(docs_.size()); }
  Result<Document> Get(int64_t idx) const override;
  Result<int64_t> Length(int64_t idx) const override;
  std::string id() const override { return id_; }

 private:
  std::vector<Document> docs_;
  std::string id_;
};

// A bijection of [0, n) keyed by `key` (a 4-round Feistel network with cycle walking): the document order of
// one epoch without materialising it. PermuteIndex(i, n, key) for i in [0, n) hits every value once.
uint64_t PermuteIndex(uint64_t i, uint64_t n, uint64_t key);
// SplitMix64 finaliser: the one mixing function the data code hashes seeds and indices with.
uint64_t Mix64(uint64_t x);

// The chat template: "<|user|>" prompt "<|assistant|>" when the tokenizer has both specials, else the bare prompt.
std::vector<int32_t> EncodeChatPrompt(const Tokenizer& tokenizer, std::string_view prompt);
// One SFT sample: EncodeChatPrompt(prompt) as the prompt, then response + eos as the trained tokens.
Document MakeSftSample(const Tokenizer& tokenizer, std::string_view prompt, std::string_view response);
// One pre-training document: text + eos.
Document MakeTextDocument(const Tokenizer& tokenizer, std::string_view text);

// What a file's records are read as.
enum class RecordKind {
  kText,      // pre-training text: .txt blocks, or jsonl field "text"
  kSft,       // jsonl fields "prompt" and "response"
  kPrompts,   // jsonl fields "prompt" and "answer" (GRPO)
};

struct TextRecord {
  std::string text;      // kText: the document; otherwise the prompt
  std::string response;  // kSft: the response; kPrompts: the answer
};

// Records of one .txt file (documents are blocks of non-empty lines separated by empty lines; each keeps its
// lines joined by "\n" plus a final "\n") or one .jsonl file (one JSON object per non-empty line). Errors name
// "file:line".
Result<std::vector<TextRecord>> ReadRecords(const std::string& path, bool jsonl, RecordKind kind);
// `path` itself if it is a file, else the files directly in it ending in `extension` (".txt"/".jsonl"), sorted.
Result<std::vector<std::string>> ListInputFiles(const std::string& path, std::string_view extension);

}  // namespace shoal::data
