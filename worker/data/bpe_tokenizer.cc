#include "worker/data/bpe_tokenizer.h"

#include <xxhash.h>

#include <climits>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/file_util.h"

namespace shoal::data {
namespace {

using json = nlohmann::json;

enum class ByteClass { kLetter, kDigit, kSpace, kPunct };

ByteClass Classify(unsigned char c) {
  if (c >= 0x80 || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return ByteClass::kLetter;
  if (c >= '0' && c <= '9') return ByteClass::kDigit;
  if (c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r') return ByteClass::kSpace;
  return ByteClass::kPunct;
}

void AppendUtf8(uint32_t cp, std::string& out) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// Decodes one code point at s[i] (valid UTF-8 expected); returns its length, or 1 with cp = the raw byte when
// the sequence is malformed.
size_t NextCodePoint(std::string_view s, size_t i, uint32_t& cp) {
  auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char c = b(i);
  size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
  if (len == 0 || i + len > s.size()) {
    cp = c;
    return 1;
  }
  cp = len == 1 ? c : len == 2 ? (c & 0x1F) : len == 3 ? (c & 0x0F) : (c & 0x07);
  for (size_t k = 1; k < len; ++k) {
    if ((b(i + k) & 0xC0) != 0x80) {
      cp = c;
      return 1;
    }
    cp = (cp << 6) | (b(i + k) & 0x3F);
  }
  return len;
}

// The GPT-2 table: byte -> code point.
struct ByteMap {
  uint32_t byte_to_cp[256];
  int16_t cp_to_byte[512];
  ByteMap() {
    for (int16_t& v : cp_to_byte) v = -1;
    uint32_t n = 0;
    for (int b = 0; b < 256; ++b) {
      bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      byte_to_cp[b] = printable ? static_cast<uint32_t>(b) : 256 + n++;
      cp_to_byte[byte_to_cp[b]] = static_cast<int16_t>(b);
    }
  }
};

const ByteMap& Bytes() {
  static const ByteMap kMap;
  return kMap;
}

std::string StandIn(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) AppendUtf8(Bytes().byte_to_cp[c], out);
  return out;
}

bool AnyStringContains(const json& j, std::string_view needle) {
  if (j.is_string()) return j.get_ref<const std::string&>().find(needle) != std::string::npos;
  if (j.is_object() || j.is_array())
    for (const json& v : j)
      if (AnyStringContains(v, needle)) return true;
  return false;
}

// tokenizer_config.json spells a role as "text" or {"content": "text", ...}.
std::string RoleText(const json& config, const char* key) {
  if (!config.is_object() || !config.contains(key)) return "";
  const json& v = config[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  return "";
}

}  // namespace

std::string ByteToUnicode(uint8_t byte) {
  std::string out;
  AppendUtf8(Bytes().byte_to_cp[byte], out);
  return out;
}

std::vector<std::string_view> PreTokenize(std::string_view text, const PreTokenizerOptions& options) {
  std::vector<std::string_view> out;
  const size_t n = text.size();
  auto cls = [&](size_t i) { return Classify(static_cast<unsigned char>(text[i])); };
  auto takes_prefix_space = [&](ByteClass c) {
    return c == ByteClass::kLetter || c == ByteClass::kPunct || (c == ByteClass::kDigit && options.digit_group == 0);
  };
  // One word starting at s (text[s] is the prefix space when `prefixed`); returns its end.
  auto emit_word = [&](size_t s, bool prefixed) {
    size_t p = s + (prefixed ? 1 : 0);
    ByteClass c = cls(p);
    if (c == ByteClass::kDigit && options.digit_group > 0) {
      size_t end = p;
      while (end < n && end - p < static_cast<size_t>(options.digit_group) && cls(end) == ByteClass::kDigit) ++end;
      p = end;
    } else {
      while (p < n && cls(p) == c) ++p;
      if (c == ByteClass::kPunct && options.digit_group > 0)
        while (p < n && (text[p] == '\n' || text[p] == '\r')) ++p;
    }
    out.push_back(text.substr(s, p - s));
    return p;
  };
  size_t i = 0;
  while (i < n) {
    if (cls(i) != ByteClass::kSpace) {
      i = emit_word(i, false);
      continue;
    }
    size_t j = i;
    while (j < n && cls(j) == ByteClass::kSpace) ++j;
    if (j < n && text[j - 1] == ' ' && takes_prefix_space(cls(j))) {
      if (j - 1 > i) out.push_back(text.substr(i, j - 1 - i));
      i = emit_word(j - 1, true);
    } else {
      out.push_back(text.substr(i, j - i));
      i = j;
    }
  }
  return out;
}

namespace {

struct AddedToken {
  std::string content;
  int32_t id;
  bool special;
};

// The parts of a tokenizer.json the tokenizer is built from.
struct ParsedTokenizer {
  std::unordered_map<std::string, int32_t> vocab;
  std::vector<AddedToken> added;
  std::vector<std::pair<std::string, std::string>> merges;  // by rank
  int64_t max_id = -1;
};

Status ParseVocab(const json& model, const std::string& where, ParsedTokenizer& out) {
  if (!model.contains("vocab") || !model["vocab"].is_object())
    return InvalidArgumentError(where + ": model.vocab must be an object {token: id}");
  for (const auto& [text, id] : model["vocab"].items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX)
      return InvalidArgumentError(where + ": model.vocab[\"" + text + "\"] must be a non-negative integer id");
    out.vocab.emplace(text, id.get<int32_t>());
    out.max_id = std::max<int64_t>(out.max_id, id.get<int64_t>());
  }
  return Status::OK();
}

Status ParseAddedTokens(const json& j, const std::string& where, ParsedTokenizer& out) {
  if (!j.contains("added_tokens") || !j["added_tokens"].is_array()) return Status::OK();
  for (const json& t : j["added_tokens"]) {
    if (!t.is_object() || !t.contains("id") || !t["id"].is_number_integer() || !t.contains("content") ||
        !t["content"].is_string() || t["id"].get<int64_t>() < 0 || t["id"].get<int64_t>() > INT32_MAX)
      return InvalidArgumentError(where + ": added_tokens entries need an integer \"id\" and a string \"content\"");
    out.added.push_back({t["content"].get<std::string>(), t["id"].get<int32_t>(), t.value("special", false)});
    out.max_id = std::max<int64_t>(out.max_id, t["id"].get<int64_t>());
  }
  return Status::OK();
}

Status ParseMerges(const json& model, const std::string& where, ParsedTokenizer& out) {
  const json merges = model.contains("merges") ? model["merges"] : json::array();
  if (!merges.is_array()) return InvalidArgumentError(where + ": model.merges must be an array");
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const json& m = merges[rank];
    const std::string at = where + ": model.merges[" + std::to_string(rank) + "]";
    if (m.is_string()) {
      const std::string& s = m.get_ref<const std::string&>();
      size_t sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
        return InvalidArgumentError(at + " = \"" + s + "\" is not \"left right\"");
      out.merges.emplace_back(s.substr(0, sp), s.substr(sp + 1));
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      out.merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
    } else {
      return InvalidArgumentError(at + " must be \"left right\" or [\"left\", \"right\"]");
    }
    const auto& [left, right] = out.merges.back();
    if (!out.vocab.contains(left) || !out.vocab.contains(right) || !out.vocab.contains(left + right))
      return InvalidArgumentError(at + " (\"" + left + "\", \"" + right + "\") names a token missing from model.vocab");
  }
  return Status::OK();
}

struct Roles {
  int32_t bos, eos, pad;
};

// bos/eos/pad from tokenizer_config.json, else from well-known token names; bos and pad fall back to eos.
Result<Roles> ResolveRoles(const ParsedTokenizer& p, std::string_view config_json, const std::string& where) {
  auto lookup = [&](const std::string& text) -> std::optional<int32_t> {
    for (const AddedToken& a : p.added)
      if (a.content == text) return a.id;
    auto it = p.vocab.find(text);
    if (it != p.vocab.end()) return it->second;
    return std::nullopt;
  };
  json config = config_json.empty() ? json() : json::parse(config_json, nullptr, false);
  auto role = [&](const char* key, std::initializer_list<const char*> known) -> std::optional<int32_t> {
    std::string configured = RoleText(config, key);
    if (!configured.empty()) return lookup(configured);
    for (const char* k : known)
      if (auto id = lookup(k)) return id;
    return std::nullopt;
  };
  std::optional<int32_t> eos =
      role("eos_token", {"<｜end▁of▁sentence｜>", "<|end_of_text|>", "</s>", "<|eos|>", "<|endoftext|>"});
  if (!eos)
    return InvalidArgumentError(where + ": cannot tell which token ends a document; put a tokenizer_config.json "
                                        "with \"eos_token\" beside it");
  std::optional<int32_t> bos =
      role("bos_token", {"<｜begin▁of▁sentence｜>", "<|begin_of_text|>", "<s>", "<|bos|>", "<|endoftext|>"});
  std::optional<int32_t> pad = role("pad_token", {"<｜▁pad▁｜>", "<pad>", "<|pad|>"});
  return Roles{bos.value_or(*eos), *eos, pad.value_or(*eos)};
}

}  // namespace

Result<std::unique_ptr<HfBpeTokenizer>> HfBpeTokenizer::FromJson(std::string_view json_text, std::string_view source,
                                                                 std::string_view config_json) {
  const std::string where(source);
  json j = json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object())
    return InvalidArgumentError(where + ": not valid JSON; expected a Hugging Face tokenizer.json");
  if (!j.contains("model") || !j["model"].is_object())
    return InvalidArgumentError(where + ": no \"model\" object; expected a Hugging Face tokenizer.json");
  const json& model = j["model"];
  if (model.contains("type") && model["type"] != "BPE")
    return UnimplementedError(where + ": model.type is " + model["type"].dump() +
                              "; only byte-level BPE tokenizers are supported");
  ParsedTokenizer p;
  RETURN_IF_ERROR(ParseVocab(model, where, p));
  RETURN_IF_ERROR(ParseAddedTokens(j, where, p));
  RETURN_IF_ERROR(ParseMerges(model, where, p));
  ASSIGN_OR_RETURN(Roles roles, ResolveRoles(p, config_json, where));

  std::unique_ptr<HfBpeTokenizer> t(new HfBpeTokenizer(roles.bos, roles.eos, roles.pad));
  t->source_ = where;
  t->vocab_size_ = p.max_id + 1;
  t->id_to_text_.assign(static_cast<size_t>(t->vocab_size_), std::string());
  t->is_added_.assign(static_cast<size_t>(t->vocab_size_), 0);
  for (const auto& [text, id] : p.vocab) t->id_to_text_[id] = text;
  std::vector<SpecialToken> plain;
  for (const AddedToken& a : p.added) {
    t->id_to_text_[a.id] = a.content;
    t->is_added_[a.id] = 1;
    t->added_.push_back({a.content, a.id});
    (a.special ? t->specials_ : plain).push_back({a.content, a.id});
  }
  t->special_splitter_ = std::make_unique<SpecialTokenSplitter>(t->added_);
  t->plain_splitter_ = std::make_unique<SpecialTokenSplitter>(std::move(plain));
  for (int b = 0; b < 256; ++b) {
    auto it = p.vocab.find(ByteToUnicode(static_cast<uint8_t>(b)));
    if (it == p.vocab.end())
      return InvalidArgumentError(where + ": byte " + std::to_string(b) +
                                  " has no token; only byte-level BPE (GPT-2 byte-to-unicode) is supported");
    t->byte_ids_[b] = it->second;
  }
  for (size_t rank = 0; rank < p.merges.size(); ++rank) {
    const auto& [left, right] = p.merges[rank];
    t->merges_.try_emplace(PairKey(p.vocab.at(left), p.vocab.at(right)),
                           Merge{static_cast<int32_t>(rank), p.vocab.at(left + right)});
  }
  t->vocab_ = std::move(p.vocab);
  t->ignore_merges_ = model.value("ignore_merges", false);
  if (j.contains("pre_tokenizer") && AnyStringContains(j["pre_tokenizer"], "\\p{N}{1,3}")) t->pre_.digit_group = 3;
  uint64_t role_ids[3] = {static_cast<uint64_t>(roles.bos), static_cast<uint64_t>(roles.eos),
                          static_cast<uint64_t>(roles.pad)};
  t->fingerprint_ = XXH3_64bits_withSeed(json_text.data(), json_text.size(), XXH3_64bits(role_ids, sizeof(role_ids)));
  return t;
}

std::string_view HfBpeTokenizer::TokenText(int32_t id) const {
  if (id < 0 || id >= vocab_size_) return {};
  return id_to_text_[id];
}

void HfBpeTokenizer::EncodeChunk(std::string_view chunk, std::vector<int32_t>& out) const {
  if (ignore_merges_) {
    auto it = vocab_.find(StandIn(chunk));
    if (it != vocab_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  std::vector<int32_t> sym;
  sym.reserve(chunk.size());
  for (unsigned char c : chunk) sym.push_back(byte_ids_[c]);
  std::vector<int32_t> next;
  // Repeatedly merge every occurrence (left to right) of the lowest-ranked adjacent pair: the same result as
  // Hugging Face's priority queue. Quadratic in the chunk length, and chunks are words.
  while (sym.size() > 1) {
    int32_t best_rank = INT32_MAX;
    int32_t left = 0, right = 0, merged = 0;
    for (size_t i = 0; i + 1 < sym.size(); ++i) {
      auto it = merges_.find(PairKey(sym[i], sym[i + 1]));
      if (it != merges_.end() && it->second.rank < best_rank) {
        best_rank = it->second.rank;
        left = sym[i];
        right = sym[i + 1];
        merged = it->second.merged_id;
      }
    }
    if (best_rank == INT32_MAX) break;
    next.clear();
    for (size_t i = 0; i < sym.size();) {
      if (i + 1 < sym.size() && sym[i] == left && sym[i + 1] == right) {
        next.push_back(merged);
        i += 2;
      } else {
        next.push_back(sym[i++]);
      }
    }
    sym.swap(next);
  }
  out.insert(out.end(), sym.begin(), sym.end());
}

std::vector<int32_t> HfBpeTokenizer::DoEncode(std::string_view text, bool allow_special) const {
  std::vector<int32_t> ids;
  auto on_text = [&](std::string_view piece) {
    for (std::string_view chunk : PreTokenize(piece, pre_)) EncodeChunk(chunk, ids);
  };
  const SpecialTokenSplitter& splitter = allow_special ? *special_splitter_ : *plain_splitter_;
  if (splitter.empty()) {
    on_text(text);
  } else {
    splitter.Split(text, on_text, [&](int32_t id) { ids.push_back(id); });
  }
  return ids;
}

std::string HfBpeTokenizer::DoDecode(std::span<const int32_t> ids, bool skip_special) const {
  std::string out;
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size_ || (id_to_text_[id].empty() && !is_added_[id])) {
      out += "<|unk:" + std::to_string(id) + "|>";
      continue;
    }
    const std::string& text = id_to_text_[id];
    if (is_added_[id]) {
      if (!(skip_special && IsSpecial(id))) out += text;
      continue;
    }
    for (size_t i = 0; i < text.size();) {
      uint32_t cp = 0;
      size_t len = NextCodePoint(text, i, cp);
      int16_t b = cp < 512 ? Bytes().cp_to_byte[cp] : int16_t{-1};
      if (b >= 0 && len == (cp < 0x80 ? 1u : 2u)) {
        out.push_back(static_cast<char>(b));
      } else {
        out.append(text, i, len);  // not a stand-in: keep as written
      }
      i += len;
    }
  }
  return out;
}

Result<std::unique_ptr<HfBpeTokenizer>> LoadHfBpeTokenizer(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  std::string config;
  std::filesystem::path config_path = std::filesystem::path(path).parent_path() / "tokenizer_config.json";
  if (FileExists(config_path.string())) {
    ASSIGN_OR_RETURN(config, ReadFile(config_path.string()));
  }
  return HfBpeTokenizer::FromJson(text, path, config);
}

}  // namespace shoal::data
