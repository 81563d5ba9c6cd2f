// Tokenizers: text <-> token ids. The interface every data path uses, the built-in ByteTokenizer (bytes plus
// 16 special tokens, what the demo model is trained with) and LoadTokenizer, which picks one from a spec
// string ("byte" or a Hugging Face tokenizer.json, see bpe_tokenizer.h).
//
// ByteTokenizer ids: 0..15 are special tokens (0 <|bos|>, 1 <|eos|>, 2 <|pad|> so that bos/eos match the
// demo preset's bos_token_id = 0 / eos_token_id = 1), byte b is id 16 + b: 272 ids, which fits the dsv3-micro
// fixture (vocab 320) and the demo model (vocab 512).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"

namespace shoal::data {

// Names of the special tokens the data code relies on; a tokenizer may have others.
inline constexpr std::string_view kBosToken = "<|bos|>";
inline constexpr std::string_view kEosToken = "<|eos|>";
inline constexpr std::string_view kPadToken = "<|pad|>";
inline constexpr std::string_view kUserToken = "<|user|>";
inline constexpr std::string_view kAssistantToken = "<|assistant|>";

struct SpecialToken {
  std::string text;  // how it is spelled in text, e.g. "<|user|>"
  int32_t id = 0;
};

// Non-virtual interface; implementations override the Do* hooks.
class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Text -> ids. With allow_special, a special token spelled literally in the text ("<|user|>") becomes its id;
  // without, it is ordinary text (so user data can never forge a control token).
  std::vector<int32_t> Encode(std::string_view text, bool allow_special = false) const {
    return DoEncode(text, allow_special);
  }
  // Ids -> bytes. Special tokens are written as their text unless skip_special. Ids outside the vocabulary
  // are written as "<|unk:ID|>" (never silently dropped).
  std::string Decode(std::span<const int32_t> ids, bool skip_special = false) const {
    return DoDecode(ids, skip_special);
  }

  // One past the largest id the tokenizer can produce; the model's vocab_size must be >= this.
  virtual int64_t vocab_size() const = 0;
  // "byte", "hf-bpe:<file>": recorded in shard manifests so shards are not read with another tokenizer.
  virtual std::string name() const = 0;
  // A hash of everything that affects ids (vocabulary, merges, specials); equal fingerprints encode alike.
  virtual uint64_t fingerprint() const = 0;
  virtual const std::vector<SpecialToken>& special_tokens() const = 0;

  // The id of a special token by its text, e.g. "<|user|>".
  std::optional<int32_t> SpecialTokenId(std::string_view text) const;
  bool IsSpecial(int32_t id) const;
  int32_t bos_id() const { return bos_id_; }
  int32_t eos_id() const { return eos_id_; }
  int32_t pad_id() const { return pad_id_; }

 protected:
  Tokenizer(int32_t bos_id, int32_t eos_id, int32_t pad_id) : bos_id_(bos_id), eos_id_(eos_id), pad_id_(pad_id) {}
  virtual std::vector<int32_t> DoEncode(std::string_view text, bool allow_special) const = 0;
  virtual std::string DoDecode(std::span<const int32_t> ids, bool skip_special) const = 0;

 private:
  int32_t bos_id_;
  int32_t eos_id_;
  int32_t pad_id_;
};

// Splits text at literal occurrences of the given special tokens (longest match wins at a position).
// Calls on_text(piece) for the text between them and on_special(id) for each token, in order.
class SpecialTokenSplitter {
 public:
  explicit SpecialTokenSplitter(std::vector<SpecialToken> tokens);
  template <typename OnText, typename OnSpecial>
  void Split(std::string_view text, OnText&& on_text, OnSpecial&& on_special) const {
    size_t start = 0;
    size_t pos = 0;
    while (pos < text.size()) {
      std::optional<std::pair<size_t, int32_t>> m = MatchAt(text, pos);
      if (!m) {
        ++pos;
        continue;
      }
      if (pos > start) on_text(text.substr(start, pos - start));
      on_special(m->second);
      pos += m->first;
      start = pos;
    }
    if (start < text.size()) on_text(text.substr(start));
  }
  bool empty() const { return tokens_.empty(); }

 private:
  // (length, id) of the longest token starting at text[pos], if any.
  std::optional<std::pair<size_t, int32_t>> MatchAt(std::string_view text, size_t pos) const;
  std::vector<SpecialToken> tokens_;  // sorted by decreasing length
  bool first_byte_[256] = {};
};

class ByteTokenizer final : public Tokenizer {
 public:
  static constexpr int32_t kNumSpecial = 16;
  static constexpr int32_t kByteOffset = kNumSpecial;  // byte b is id kByteOffset + b

  ByteTokenizer();
  int64_t vocab_size() const override { return kByteOffset + 256; }
  std::string name() const override { return "byte"; }
  uint64_t fingerprint() const override;
  const std::vector<SpecialToken>& special_tokens() const override { return specials_; }

 private:
  std::vector<int32_t> DoEncode(std::string_view text, bool allow_special) const override;
  std::string DoDecode(std::span<const int32_t> ids, bool skip_special) const override;

  std::vector<SpecialToken> specials_;
  SpecialTokenSplitter splitter_;
};

// "byte" (or empty) -> ByteTokenizer; a path to a Hugging Face tokenizer.json (or a directory holding one)
// -> the byte-level BPE tokenizer of bpe_tokenizer.h.
Result<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& spec);

// FailedPrecondition unless the tokenizer's ids fit the model and its bos/eos agree with the model config.
Status CheckTokenizerFitsModel(const Tokenizer& tokenizer, int64_t model_vocab_size, int64_t model_bos_id,
                               int64_t model_eos_id);

}  // namespace shoal::data
