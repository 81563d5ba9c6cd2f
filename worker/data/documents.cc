#include "worker/data/documents.h"

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/check.h"
#include "common/file_util.h"

namespace shoal::data {

Result<int64_t> DocumentStore::Length(int64_t idx) const {
  ASSIGN_OR_RETURN(Document d, Get(idx));
  return static_cast<int64_t>(d.tokens.size());
}

Result<Document> InMemoryDocuments::Get(int64_t idx) const {
  if (idx < 0 || idx >= static_cast<int64_t>(docs_.size()))
    return OutOfRangeError(id_ + ": document " + std::to_string(idx) + " of " + std::to_string(docs_.size()));
  return docs_[idx];
}

Result<int64_t> InMemoryDocuments::Length(int64_t idx) const {
  if (idx < 0 || idx >= static_cast<int64_t>(docs_.size()))
    return OutOfRangeError(id_ + ": document " + std::to_string(idx) + " of " + std::to_string(docs_.size()));
  return static_cast<int64_t>(docs_[idx].tokens.size());
}

uint64_t Mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

uint64_t PermuteIndex(uint64_t i, uint64_t n, uint64_t key) {
  CHECK(i < n) << "PermuteIndex(" << i << ", " << n << ")";
  if (n <= 1) return i;
  int bits = 1;
  while (bits < 64 && (uint64_t{1} << bits) < n) ++bits;
  const int half = (bits + 1) / 2;  // the domain 2^(2·half) is below 4n, so cycle walking takes < 4 rounds on average
  const uint64_t mask = (uint64_t{1} << half) - 1;
  uint64_t x = i;
  do {
    uint64_t left = x >> half, right = x & mask;
    for (uint64_t round = 0; round < 4; ++round) {
      uint64_t f = Mix64(right ^ Mix64(key + round)) & mask;
      uint64_t next_right = left ^ f;
      left = right;
      right = next_right;
    }
    x = (left << half) | right;
  } while (x >= n);
  return x;
}

std::vector<int32_t> EncodeChatPrompt(const Tokenizer& tokenizer, std::string_view prompt) {
  std::optional<int32_t> user = tokenizer.SpecialTokenId(kUserToken);
  std::optional<int32_t> assistant = tokenizer.SpecialTokenId(kAssistantToken);
  std::vector<int32_t> ids;
  if (user && assistant) ids.push_back(*user);
  std::vector<int32_t> body = tokenizer.Encode(prompt);
  ids.insert(ids.end(), body.begin(), body.end());
  if (user && assistant) ids.push_back(*assistant);
  return ids;
}

Document MakeSftSample(const Tokenizer& tokenizer, std::string_view prompt, std::string_view response) {
  Document d;
  d.tokens = EncodeChatPrompt(tokenizer, prompt);
  d.prompt_len = static_cast<int64_t>(d.tokens.size());
  std::vector<int32_t> body = tokenizer.Encode(response);
  d.tokens.insert(d.tokens.end(), body.begin(), body.end());
  d.tokens.push_back(tokenizer.eos_id());
  return d;
}

Document MakeTextDocument(const Tokenizer& tokenizer, std::string_view text) {
  Document d;
  d.tokens = tokenizer.Encode(text);
  d.tokens.push_back(tokenizer.eos_id());
  return d;
}

namespace {

Result<std::string> StringField(const nlohmann::json& j, const char* key, const std::string& where) {
  if (!j.contains(key)) return InvalidArgumentError(where + ": missing field \"" + std::string(key) + "\"");
  const nlohmann::json& v = j[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number_integer()) return std::to_string(v.get<int64_t>());  // {"answer": 85}
  return InvalidArgumentError(where + ": field \"" + std::string(key) + "\" must be a string, got " + v.type_name());
}

std::vector<std::string_view> Lines(std::string_view text) {
  std::vector<std::string_view> lines;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(start, end - start);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    lines.push_back(line);
    start = end + 1;
  }
  return lines;
}

}  // namespace

Result<std::vector<TextRecord>> ReadRecords(const std::string& path, bool jsonl, RecordKind kind) {
  ASSIGN_OR_RETURN(std::string content, ReadFile(path));
  std::vector<TextRecord> out;
  std::vector<std::string_view> lines = Lines(content);
  if (!jsonl) {
    if (kind != RecordKind::kText)
      return InvalidArgumentError(path + ": plain text holds only pre-training documents; SFT and GRPO data must "
                                         "be jsonl with \"prompt\"/\"response\" (or \"answer\") fields");
    std::string doc;
    for (std::string_view line : lines) {
      if (line.empty()) {
        if (!doc.empty()) out.push_back({std::move(doc), {}});
        doc.clear();
        continue;
      }
      doc.append(line);
      doc.push_back('\n');
    }
    if (!doc.empty()) out.push_back({std::move(doc), {}});
    return out;
  }
  for (size_t n = 0; n < lines.size(); ++n) {
    if (lines[n].find_first_not_of(" \t") == std::string_view::npos) continue;
    const std::string where = path + ":" + std::to_string(n + 1);
    nlohmann::json j = nlohmann::json::parse(lines[n], nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object())
      return InvalidArgumentError(where + ": expected one JSON object per line");
    TextRecord r;
    if (kind == RecordKind::kText) {
      ASSIGN_OR_RETURN(r.text, StringField(j, "text", where));
    } else {
      ASSIGN_OR_RETURN(r.text, StringField(j, "prompt", where));
      ASSIGN_OR_RETURN(r.response, StringField(j, kind == RecordKind::kSft ? "response" : "answer", where));
    }
    out.push_back(std::move(r));
  }
  return out;
}

Result<std::vector<std::string>> ListInputFiles(const std::string& path, std::string_view extension) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return NotFoundError(path + ": no such file or directory");
  if (!std::filesystem::is_directory(path, ec)) return std::vector<std::string>{path};
  std::vector<std::string> files;
  for (const auto& entry : std::filesystem::directory_iterator(path, ec)) {
    std::string name = entry.path().filename().string();
    if (entry.is_regular_file() && name.size() >= extension.size() && name.ends_with(extension))
      files.push_back(entry.path().string());
  }
  if (ec) return ErrnoToStatus(ec.value(), "list " + path);
  std::sort(files.begin(), files.end());
  if (files.empty())
    return NotFoundError(path + ": no *" + std::string(extension) + " files in this directory");
  return files;
}

}  // namespace shoal::data
