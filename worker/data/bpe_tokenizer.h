// Byte-level BPE from a Hugging Face tokenizer.json (GPT-2 / DeepSeek style): model.vocab, model.merges (either
// "a b" strings or ["a", "b"] pairs), added_tokens with their ids, and the GPT-2 byte-to-unicode mapping.
// Encoding: split out added tokens, pre-tokenize, map bytes to their unicode stand-ins, then merge adjacent
// pairs lowest rank first. Decoding maps the stand-ins back to bytes, so Decode(Encode(s)) == s for any bytes.
//
// The pre-tokenizer APPROXIMATES the Hugging Face regexes without a Unicode regex engine. It classifies by byte:
//   letter  = ASCII letters and EVERY non-ASCII byte (so accented Latin, CJK, emoji all count as letters; the
//             DeepSeek tokenizer would split CJK runs and \p{P}/\p{S} symbols out of them),
//   digit   = ASCII 0-9, split into groups of at most 3 when the tokenizer.json asks for \p{N}{1,3} (DeepSeek,
//             Llama 3), otherwise GPT-2 style (one run, may take a leading space),
//   space   = ' ', \t, \n, \v, \f, \r,
//   punct   = every other ASCII byte.
// Chunks: an optional single leading space + a letter run; digits as above; an optional leading space + a
// punctuation run (+ trailing newlines in the \p{N}{1,3} style, like DeepSeek's " ?[\p{P}\p{S}]+[\r\n]*");
// whitespace runs, leaving their last space to the following word ("\s+(?!\S)"). Not reproduced: GPT-2's
// contractions ('s 't 're ...: here "'" and "s" are separate chunks), Unicode letter/number classes,
// DeepSeek's punctuation-prefixed words, and ByteLevel's add_prefix_space (ignored). The ids are therefore close
// to, not always equal to, the reference tokenizer's; every text still round-trips exactly. Tokenise training
// and evaluation data with this same tokenizer (`shoal data prepare` records its fingerprint).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/status.h"
#include "worker/data/tokenizer.h"

namespace shoal::data {

struct PreTokenizerOptions {
  int digit_group = 0;  // 0: GPT-2 digit runs; k > 0: digits in groups of at most k, no leading space
};

// The chunks of `text` (views into it); concatenated they equal `text`.
std::vector<std::string_view> PreTokenize(std::string_view text, const PreTokenizerOptions& options);

// The GPT-2 byte -> unicode stand-in mapping, as UTF-8: printable Latin-1 bytes map to themselves, the rest to
// U+0100 + n. ByteToUnicode(' ') == "Ġ".
std::string ByteToUnicode(uint8_t byte);

class HfBpeTokenizer final : public Tokenizer {
 public:
  // `json_text` is a tokenizer.json; `source` names it in messages and in name(). Special-token roles come from
  // `config_json` (a tokenizer_config.json: bos_token / eos_token / pad_token, strings or {"content": ...}),
  // else from well-known names (<｜begin▁of▁sentence｜>, <|begin_of_text|>, <s>, <|endoftext|>, ...).
  // eos is required; bos and pad fall back to eos.
  static Result<std::unique_ptr<HfBpeTokenizer>> FromJson(std::string_view json_text, std::string_view source,
                                                          std::string_view config_json = {});

  int64_t vocab_size() const override { return vocab_size_; }
  std::string name() const override { return "hf-bpe:" + source_; }
  uint64_t fingerprint() const override { return fingerprint_; }
  const std::vector<SpecialToken>& special_tokens() const override { return specials_; }
  const PreTokenizerOptions& pre_tokenizer() const { return pre_; }
  // The vocabulary entry of an id (in stand-in form, e.g. "Ġthe"), "" when unknown.
  std::string_view TokenText(int32_t id) const;

 private:
  struct Merge {
    int32_t rank;
    int32_t merged_id;
  };
  HfBpeTokenizer(int32_t bos, int32_t eos, int32_t pad) : Tokenizer(bos, eos, pad) {}
  std::vector<int32_t> DoEncode(std::string_view text, bool allow_special) const override;
  std::string DoDecode(std::span<const int32_t> ids, bool skip_special) const override;
  void EncodeChunk(std::string_view chunk, std::vector<int32_t>& out) const;
  static uint64_t PairKey(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }

  std::string source_;
  int64_t vocab_size_ = 0;
  uint64_t fingerprint_ = 0;
  PreTokenizerOptions pre_;
  bool ignore_merges_ = false;                      // model.ignore_merges: a chunk that is a token is kept whole
  int32_t byte_ids_[256] = {};                      // the token of each single byte
  std::unordered_map<uint64_t, Merge> merges_;      // (left id, right id) -> rank and result
  std::unordered_map<std::string, int32_t> vocab_;  // stand-in text -> id
  std::vector<std::string> id_to_text_;             // id -> stand-in text ("" for holes)
  std::vector<int8_t> is_added_;                    // id -> decodes literally (an added token)
  std::vector<SpecialToken> specials_;              // added tokens with "special": true
  std::vector<SpecialToken> added_;                 // every added token (matched before pre-tokenizing)
  std::unique_ptr<SpecialTokenSplitter> special_splitter_;  // specials + plain added tokens
  std::unique_ptr<SpecialTokenSplitter> plain_splitter_;    // plain (non-special) added tokens only
};

// Reads `path` (a tokenizer.json) and, when present beside it, tokenizer_config.json.
Result<std::unique_ptr<HfBpeTokenizer>> LoadHfBpeTokenizer(const std::string& path);

}  // namespace shoal::data
