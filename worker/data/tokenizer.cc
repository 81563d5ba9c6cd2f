#include "worker/data/tokenizer.h"

#include <xxhash.h>

#include <algorithm>
#include <filesystem>

#include "worker/data/bpe_tokenizer.h"

namespace shoal::data {

std::optional<int32_t> Tokenizer::SpecialTokenId(std::string_view text) const {
  for (const SpecialToken& t : special_tokens())
    if (t.text == text) return t.id;
  return std::nullopt;
}

bool Tokenizer::IsSpecial(int32_t id) const {
  for (const SpecialToken& t : special_tokens())
    if (t.id == id) return true;
  return false;
}

SpecialTokenSplitter::SpecialTokenSplitter(std::vector<SpecialToken> tokens) : tokens_(std::move(tokens)) {
  std::erase_if(tokens_, [](const SpecialToken& t) { return t.text.empty(); });
  std::stable_sort(tokens_.begin(), tokens_.end(),
                   [](const SpecialToken& a, const SpecialToken& b) { return a.text.size() > b.text.size(); });
  for (const SpecialToken& t : tokens_) first_byte_[static_cast<unsigned char>(t.text[0])] = true;
}

std::optional<std::pair<size_t, int32_t>> SpecialTokenSplitter::MatchAt(std::string_view text, size_t pos) const {
  if (!first_byte_[static_cast<unsigned char>(text[pos])]) return std::nullopt;
  for (const SpecialToken& t : tokens_)  // longest first
    if (text.compare(pos, t.text.size(), t.text) == 0) return std::make_pair(t.text.size(), t.id);
  return std::nullopt;
}

namespace {

std::vector<SpecialToken> ByteSpecials() {
  // Order fixes the ids; append only (ids are baked into shards and checkpoints).
  const char* names[ByteTokenizer::kNumSpecial] = {
      "<|bos|>",       "<|eos|>",      "<|pad|>",       "<|user|>",        "<|assistant|>",   "<|system|>",
      "<|sep|>",       "<|fim_begin|>", "<|fim_hole|>", "<|fim_end|>",     "<|think|>",       "<|/think|>",
      "<|reserved_12|>", "<|reserved_13|>", "<|reserved_14|>", "<|reserved_15|>"};
  std::vector<SpecialToken> out;
  for (int32_t i = 0; i < ByteTokenizer::kNumSpecial; ++i) out.push_back({names[i], i});
  return out;
}

}  // namespace

ByteTokenizer::ByteTokenizer() : Tokenizer(0, 1, 2), specials_(ByteSpecials()), splitter_(specials_) {}

uint64_t ByteTokenizer::fingerprint() const {
  std::string desc = "byte:" + std::to_string(kByteOffset);
  for (const SpecialToken& t : specials_) desc += "|" + t.text;
  return XXH3_64bits(desc.data(), desc.size());
}

std::vector<int32_t> ByteTokenizer::DoEncode(std::string_view text, bool allow_special) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size());
  auto on_text = [&](std::string_view piece) {
    for (unsigned char c : piece) ids.push_back(kByteOffset + c);
  };
  if (allow_special) {
    splitter_.Split(text, on_text, [&](int32_t id) { ids.push_back(id); });
  } else {
    on_text(text);
  }
  return ids;
}

std::string ByteTokenizer::DoDecode(std::span<const int32_t> ids, bool skip_special) const {
  std::string out;
  out.reserve(ids.size());
  for (int32_t id : ids) {
    if (id >= kByteOffset && id < kByteOffset + 256) {
      out.push_back(static_cast<char>(id - kByteOffset));
    } else if (id >= 0 && id < kNumSpecial) {
      if (!skip_special) out += specials_[id].text;
    } else {
      out += "<|unk:" + std::to_string(id) + "|>";
    }
  }
  return out;
}

Result<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& spec) {
  if (spec.empty() || spec == "byte") return std::unique_ptr<Tokenizer>(std::make_unique<ByteTokenizer>());
  std::string path = spec;
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) path = (std::filesystem::path(path) / "tokenizer.json").string();
  ASSIGN_OR_RETURN(std::unique_ptr<HfBpeTokenizer> t, LoadHfBpeTokenizer(path));
  return std::unique_ptr<Tokenizer>(std::move(t));
}

Status CheckTokenizerFitsModel(const Tokenizer& tokenizer, int64_t model_vocab_size, int64_t model_bos_id,
                               int64_t model_eos_id) {
  std::string where = "tokenizer " + tokenizer.name();
  if (tokenizer.vocab_size() > model_vocab_size)
    return FailedPreconditionError(where + " produces ids up to " + std::to_string(tokenizer.vocab_size() - 1) +
                                   " but the model's vocab_size is " + std::to_string(model_vocab_size) +
                                   "; raise model.vocab_size to at least " + std::to_string(tokenizer.vocab_size()));
  if (tokenizer.bos_id() != model_bos_id || tokenizer.eos_id() != model_eos_id)
    return FailedPreconditionError(where + " has bos/eos " + std::to_string(tokenizer.bos_id()) + "/" +
                                   std::to_string(tokenizer.eos_id()) + " but the model config says " +
                                   std::to_string(model_bos_id) + "/" + std::to_string(model_eos_id) +
                                   "; set model.bos_token_id/eos_token_id to match the tokenizer");
  return Status::OK();
}

}  // namespace shoal::data
