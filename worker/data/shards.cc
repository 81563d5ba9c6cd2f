#include "worker/data/shards.h"

#include <fcntl.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/file_util.h"

namespace shoal::data {

static_assert(std::endian::native == std::endian::little, "token shards are little-endian");

namespace {

using json = nlohmann::json;

constexpr char kMagic[8] = {'S', 'H', 'O', 'A', 'L', 'T', 'O', 'K'};
constexpr uint32_t kVersion = 1;
constexpr uint64_t kFlagPromptLengths = 1;
constexpr char kManifestFormat[] = "shoal-token-shards";

struct Header {
  char magic[8];
  uint32_t version;
  uint32_t token_bytes;
  uint64_t num_tokens;
  uint64_t num_documents;
  uint64_t flags;
  uint64_t reserved;
};
static_assert(sizeof(Header) == 48);

uint64_t Align8(uint64_t n) { return (n + 7) & ~uint64_t{7}; }

std::string Hex(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

std::string ShardName(int64_t i) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "shard-%05lld.bin", static_cast<long long>(i));
  return buf;
}

// Owns a read-only file descriptor.
class ReadOnlyFile {
 public:
  ~ReadOnlyFile() {
    if (fd_ >= 0) ::close(fd_);
  }
  Status Open(const std::string& path) {
    path_ = path;
    fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) return ErrnoToStatus(errno, "open " + path);
    return Status::OK();
  }
  Status Read(uint64_t offset, void* out, size_t size) const {
    char* p = static_cast<char*>(out);
    while (size > 0) {
      ssize_t n = ::pread(fd_, p, size, static_cast<off_t>(offset));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return ErrnoToStatus(errno, "read " + path_);
      if (n == 0) return DataLossError(path_ + ": file ends early at byte " + std::to_string(offset));
      p += n;
      size -= static_cast<size_t>(n);
      offset += static_cast<uint64_t>(n);
    }
    return Status::OK();
  }
  Result<uint64_t> Size() const {
    off_t end = ::lseek(fd_, 0, SEEK_END);
    if (end < 0) return ErrnoToStatus(errno, "seek " + path_);
    return static_cast<uint64_t>(end);
  }
  Result<uint64_t> Hash(uint64_t size) const {
    XXH3_state_t* state = XXH3_createState();
    XXH3_64bits_reset(state);
    std::vector<char> buf(1 << 20);
    Status status;
    for (uint64_t off = 0; off < size && status.ok();) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), size - off));
      status = Read(off, buf.data(), n);
      XXH3_64bits_update(state, buf.data(), n);
      off += n;
    }
    uint64_t h = XXH3_64bits_digest(state);
    XXH3_freeState(state);
    if (!status.ok()) return status;
    return h;
  }

 private:
  std::string path_;
  int fd_ = -1;
};

// One shard being written.
struct ShardBuilder {
  std::vector<int32_t> tokens;
  std::vector<uint64_t> offsets{0};
  std::vector<uint32_t> prompt_lens;

  std::string Serialise(uint32_t token_bytes, bool sft) const {
    Header h{};
    std::memcpy(h.magic, kMagic, sizeof(kMagic));
    h.version = kVersion;
    h.token_bytes = token_bytes;
    h.num_tokens = tokens.size();
    h.num_documents = offsets.size() - 1;
    h.flags = sft ? kFlagPromptLengths : 0;
    std::string out(reinterpret_cast<const char*>(&h), sizeof(h));
    const size_t tokens_at = out.size();
    out.resize(Align8(tokens_at + tokens.size() * token_bytes), '\0');
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (token_bytes == 2) {
        uint16_t v = static_cast<uint16_t>(tokens[i]);
        std::memcpy(&out[tokens_at + 2 * i], &v, 2);
      } else {
        uint32_t v = static_cast<uint32_t>(tokens[i]);
        std::memcpy(&out[tokens_at + 4 * i], &v, 4);
      }
    }
    out.append(reinterpret_cast<const char*>(offsets.data()), offsets.size() * sizeof(uint64_t));
    if (sft) out.append(reinterpret_cast<const char*>(prompt_lens.data()), prompt_lens.size() * sizeof(uint32_t));
    return out;
  }
};

}  // namespace

namespace internal {
struct TokenShard {
  ReadOnlyFile file;
  uint32_t token_bytes = 2;
  std::vector<uint64_t> offsets;      // [num_documents + 1]
  std::vector<uint32_t> prompt_lens;  // [num_documents] (SFT)
};
}  // namespace internal

Result<PrepareStats> PrepareShards(const std::vector<std::string>& inputs, const PrepareOptions& options,
                                   const Tokenizer& tokenizer, const std::string& out_dir) {
  if (options.format != DataFormat::kText && options.format != DataFormat::kJsonl)
    return InvalidArgumentError("data prepare reads text or jsonl inputs, not " +
                                std::string(ToString(options.format)));
  if (options.kind == PhaseKind::kGrpo)
    return InvalidArgumentError("grpo prompts are read from jsonl directly; prepare shards for pretrain or sft");
  if (options.shard_tokens <= 0) return InvalidArgumentError("shard_tokens must be positive");
  if (inputs.empty()) return InvalidArgumentError("data prepare: no inputs");
  if (tokenizer.vocab_size() > (int64_t{1} << 32)) return InvalidArgumentError("vocabulary too large for shards");
  const bool jsonl = options.format == DataFormat::kJsonl;
  const bool sft = options.kind == PhaseKind::kSft;
  const uint32_t token_bytes = tokenizer.vocab_size() <= 65536 ? 2 : 4;
  RETURN_IF_ERROR(MakeDirs(out_dir));

  PrepareStats stats;
  json shard_list = json::array();
  ShardBuilder shard;
  auto flush = [&]() -> Status {
    if (shard.offsets.size() == 1) return Status::OK();
    const std::string name = ShardName(stats.num_shards);
    const std::string bytes = shard.Serialise(token_bytes, sft);
    RETURN_IF_ERROR(WriteFileAtomic((std::filesystem::path(out_dir) / name).string(), bytes));
    shard_list.push_back({{"file", name},
                          {"num_documents", shard.offsets.size() - 1},
                          {"num_tokens", shard.tokens.size()},
                          {"bytes", bytes.size()},
                          {"xxh3", Hex(XXH3_64bits(bytes.data(), bytes.size()))}});
    stats.num_shards += 1;
    stats.num_bytes += static_cast<int64_t>(bytes.size());
    shard = ShardBuilder();
    return Status::OK();
  };

  json input_list = json::array();
  for (const std::string& input : inputs) {
    ASSIGN_OR_RETURN(std::vector<std::string> files, ListInputFiles(input, jsonl ? ".jsonl" : ".txt"));
    for (const std::string& file : files) {
      input_list.push_back(file);
      ASSIGN_OR_RETURN(std::vector<TextRecord> records,
                       ReadRecords(file, jsonl, sft ? RecordKind::kSft : RecordKind::kText));
      for (const TextRecord& r : records) {
        Document d = sft ? MakeSftSample(tokenizer, r.text, r.response) : MakeTextDocument(tokenizer, r.text);
        if (!shard.tokens.empty() &&
            static_cast<int64_t>(shard.tokens.size() + d.tokens.size()) > options.shard_tokens)
          RETURN_IF_ERROR(flush());
        shard.tokens.insert(shard.tokens.end(), d.tokens.begin(), d.tokens.end());
        shard.offsets.push_back(shard.tokens.size());
        shard.prompt_lens.push_back(static_cast<uint32_t>(d.prompt_len));
        stats.num_documents += 1;
        stats.num_tokens += static_cast<int64_t>(d.tokens.size());
      }
    }
  }
  RETURN_IF_ERROR(flush());
  if (stats.num_documents == 0) return InvalidArgumentError("data prepare: the inputs hold no documents");

  json manifest = {{"format", kManifestFormat},
                   {"version", kVersion},
                   {"kind", sft ? "sft" : "pretrain"},
                   {"tokenizer",
                    {{"name", tokenizer.name()},
                     {"vocab_size", tokenizer.vocab_size()},
                     {"fingerprint", Hex(tokenizer.fingerprint())},
                     {"bos_id", tokenizer.bos_id()},
                     {"eos_id", tokenizer.eos_id()}}},
                   {"token_bytes", token_bytes},
                   {"num_documents", stats.num_documents},
                   {"num_tokens", stats.num_tokens},
                   {"inputs", input_list},
                   {"shards", shard_list}};
  const std::string manifest_path = (std::filesystem::path(out_dir) / "manifest.json").string();
  RETURN_IF_ERROR(WriteFileAtomic(manifest_path, manifest.dump(2) + "\n"));
  return stats;
}

ShardDocuments::~ShardDocuments() = default;

namespace {

// Opens one shard named by its manifest entry, verifying size, checksum, header and document index.
Result<std::unique_ptr<internal::TokenShard>> OpenShard(const std::string& dir, const json& entry,
                                                        uint32_t token_bytes, bool sft) {
  const std::string path = (std::filesystem::path(dir) / entry.at("file").get<std::string>()).string();
  const uint64_t bytes = entry.at("bytes").get<uint64_t>();
  auto shard = std::make_unique<internal::TokenShard>();
  RETURN_IF_ERROR(shard->file.Open(path));
  ASSIGN_OR_RETURN(uint64_t size, shard->file.Size());
  if (size != bytes)
    return DataLossError(path + ": " + std::to_string(size) + " bytes, the manifest says " + std::to_string(bytes) +
                         "; the shard is truncated or was replaced");
  ASSIGN_OR_RETURN(uint64_t hash, shard->file.Hash(size));
  if (Hex(hash) != entry.at("xxh3").get<std::string>())
    return DataLossError(path + ": xxh3 " + Hex(hash) + " but the manifest says " +
                         entry.at("xxh3").get<std::string>() + "; the shard is corrupt, re-run `shoal data prepare`");
  Header h{};
  if (size < sizeof(h)) return DataLossError(path + ": shorter than its header");
  RETURN_IF_ERROR(shard->file.Read(0, &h, sizeof(h)));
  const uint64_t num_docs = entry.at("num_documents").get<uint64_t>();
  const uint64_t num_tokens = entry.at("num_tokens").get<uint64_t>();
  const bool has_prompts = (h.flags & kFlagPromptLengths) != 0;
  const uint64_t index_at = Align8(sizeof(h) + num_tokens * token_bytes);
  const uint64_t expected = index_at + (num_docs + 1) * 8 + (has_prompts ? num_docs * 4 : 0);
  if (std::memcmp(h.magic, kMagic, sizeof(kMagic)) != 0 || h.version != kVersion || h.token_bytes != token_bytes ||
      h.num_tokens != num_tokens || h.num_documents != num_docs || has_prompts != sft || size != expected)
    return DataLossError(path + ": header does not match the manifest");
  shard->token_bytes = token_bytes;
  shard->offsets.resize(num_docs + 1);
  RETURN_IF_ERROR(shard->file.Read(index_at, shard->offsets.data(), (num_docs + 1) * 8));
  if (shard->offsets.front() != 0 || shard->offsets.back() != num_tokens ||
      !std::is_sorted(shard->offsets.begin(), shard->offsets.end()))
    return DataLossError(path + ": document index is inconsistent");
  if (has_prompts) {
    shard->prompt_lens.resize(num_docs);
    RETURN_IF_ERROR(shard->file.Read(index_at + (num_docs + 1) * 8, shard->prompt_lens.data(), num_docs * 4));
  }
  return shard;
}

}  // namespace

Result<std::unique_ptr<ShardDocuments>> ShardDocuments::Open(const std::string& dir, const Tokenizer& tokenizer) {
  const std::string manifest_path = (std::filesystem::path(dir) / "manifest.json").string();
  if (!FileExists(manifest_path))
    return NotFoundError(dir + ": no manifest.json; prepare the shards with `shoal data prepare`");
  ASSIGN_OR_RETURN(std::string text, ReadFile(manifest_path));
  json m = json::parse(text, nullptr, /*allow_exceptions=*/false);
  auto bad = [&](const std::string& what) { return DataLossError(manifest_path + ": " + what); };
  if (m.is_discarded() || !m.is_object() || m.value("format", "") != kManifestFormat)
    return bad("not a shoal token shard manifest");
  if (m.value("version", 0u) != kVersion)
    return UnimplementedError(manifest_path + ": manifest version " + m["version"].dump() + ", this build reads " +
                              std::to_string(kVersion));
  try {
    const json& tok = m.at("tokenizer");
    if (tok.at("fingerprint").get<std::string>() != Hex(tokenizer.fingerprint()))
      return FailedPreconditionError(dir + ": the shards were tokenised with " + tok.at("name").get<std::string>() +
                                     " but this job uses " + tokenizer.name() +
                                     "; re-run `shoal data prepare` with the job's tokenizer");
    std::unique_ptr<ShardDocuments> docs(new ShardDocuments());
    docs->sft_ = m.at("kind").get<std::string>() == "sft";
    docs->id_ = "shards:" + Hex(XXH3_64bits(text.data(), text.size()));  // content, not where it lies
    const uint32_t token_bytes = m.at("token_bytes").get<uint32_t>();
    for (const json& s : m.at("shards")) {
      ASSIGN_OR_RETURN(std::unique_ptr<internal::TokenShard> shard, OpenShard(dir, s, token_bytes, docs->sft_));
      const int64_t num_docs = static_cast<int64_t>(shard->offsets.size()) - 1;
      docs->first_doc_.push_back(docs->num_documents_);
      docs->num_documents_ += num_docs;
      docs->num_tokens_ += static_cast<int64_t>(shard->offsets.back());
      docs->shards_.push_back(std::move(shard));
    }
    if (docs->num_documents_ != m.at("num_documents").get<int64_t>() ||
        docs->num_tokens_ != m.at("num_tokens").get<int64_t>())
      return bad("totals do not match the shards");
    return docs;
  } catch (const json::exception& e) {
    return bad(std::string("malformed: ") + e.what());
  }
}

Result<std::pair<const internal::TokenShard*, int64_t>> ShardDocuments::Find(int64_t idx) const {
  if (idx < 0 || idx >= num_documents_)
    return OutOfRangeError(id_ + ": document " + std::to_string(idx) + " of " + std::to_string(num_documents_));
  auto it = std::upper_bound(first_doc_.begin(), first_doc_.end(), idx);
  const size_t s = static_cast<size_t>(it - first_doc_.begin()) - 1;
  return std::pair<const internal::TokenShard*, int64_t>(shards_[s].get(), idx - first_doc_[s]);
}

Result<int64_t> ShardDocuments::Length(int64_t idx) const {
  ASSIGN_OR_RETURN(auto found, Find(idx));
  const auto& [shard, local] = found;
  return static_cast<int64_t>(shard->offsets[local + 1] - shard->offsets[local]);
}

Result<Document> ShardDocuments::Get(int64_t idx) const {
  ASSIGN_OR_RETURN(auto found, Find(idx));
  const auto& [shard, local] = found;
  const uint64_t begin = shard->offsets[local];
  const uint64_t count = shard->offsets[local + 1] - begin;
  std::vector<char> raw(count * shard->token_bytes);
  RETURN_IF_ERROR(shard->file.Read(sizeof(Header) + begin * shard->token_bytes, raw.data(), raw.size()));
  Document d;
  d.tokens.resize(count);
  for (uint64_t i = 0; i < count; ++i) {
    if (shard->token_bytes == 2) {
      uint16_t v;
      std::memcpy(&v, &raw[2 * i], 2);
      d.tokens[i] = v;
    } else {
      uint32_t v;
      std::memcpy(&v, &raw[4 * i], 4);
      d.tokens[i] = static_cast<int32_t>(v);
    }
  }
  d.prompt_len = shard->prompt_lens.empty() ? 0 : shard->prompt_lens[local];
  return d;
}

Status VerifyShards(const std::string& dir, const Tokenizer& tokenizer) {
  return ShardDocuments::Open(dir, tokenizer).status();
}

}  // namespace shoal::data
