// Token shards: `shoal data prepare` tokenises .txt/.jsonl inputs once into binary shards plus a manifest, and
// `data: {path: DIR, format: shards}` reads them back as a DocumentStore.
//
// DIR/manifest.json (written last, atomically; a directory without it is not a shard set):
//   {"format": "shoal-token-shards", "version": 1, "kind": "pretrain"|"sft",
//    "tokenizer": {"name", "vocab_size", "fingerprint", "bos_id", "eos_id"}, "token_bytes": 2|4,
//    "num_documents", "num_tokens", "inputs": [...],
//    "shards": [{"file": "shard-00000.bin", "num_documents", "num_tokens", "bytes", "xxh3": "<16 hex>"}]}
// DIR/shard-NNNNN.bin, little-endian:
//   header (48 bytes)  magic "SHOALTOK", u32 version = 1, u32 token_bytes (2: uint16 ids, 4: uint32 ids),
//                      u64 num_tokens, u64 num_documents, u64 flags (bit 0: prompt lengths present), u64 0
//   tokens             num_tokens ids, then zero padding to a multiple of 8 bytes
//   document index     u64 offsets[num_documents + 1] (token offsets; offsets[0] = 0, last = num_tokens)
//   prompt lengths     u32 [num_documents], only with flag bit 0 (SFT)
// Documents are stored whole (pre-training: text + eos; SFT: chat prompt + response + eos) and never split
// across shards. xxh3-64 covers each whole file; a mismatch is DataLoss.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "spec/job_spec.h"
#include "worker/data/documents.h"
#include "worker/data/tokenizer.h"

namespace shoal::data {
namespace internal {
struct TokenShard;  // one open, verified shard file (shards.cc)
}  // namespace internal

struct PrepareOptions {
  DataFormat format = DataFormat::kText;  // kText or kJsonl
  PhaseKind kind = PhaseKind::kPretrain;  // kPretrain: "text" documents; kSft: "prompt"/"response" samples
  int64_t shard_tokens = int64_t{1} << 26;  // tokens per shard at most (a larger document gets a shard alone)
};

struct PrepareStats {
  int64_t num_documents = 0;
  int64_t num_tokens = 0;
  int64_t num_shards = 0;
  int64_t num_bytes = 0;  // of the shard files
};

// Tokenises `inputs` (files, or directories whose *.txt / *.jsonl files are taken in name order) into shards
// under out_dir (created if needed) and writes out_dir/manifest.json.
Result<PrepareStats> PrepareShards(const std::vector<std::string>& inputs, const PrepareOptions& options,
                                   const Tokenizer& tokenizer, const std::string& out_dir);

class ShardDocuments final : public DocumentStore {
 public:
  // Reads the manifest, checks the tokenizer matches (FailedPrecondition otherwise), and reads every shard once to
  // verify its checksum and load its document index (DataLoss on any mismatch). Token ids are read on demand.
  static Result<std::unique_ptr<ShardDocuments>> Open(const std::string& dir, const Tokenizer& tokenizer);
  ~ShardDocuments() override;

  std::optional<int64_t> size() const override { return num_documents_; }
  Result<Document> Get(int64_t idx) const override;  // thread-safe (pread)
  Result<int64_t> Length(int64_t idx) const override;
  std::string id() const override { return id_; }
  bool sft() const { return sft_; }
  int64_t num_tokens() const { return num_tokens_; }

 private:
  ShardDocuments() = default;
  Result<std::pair<const internal::TokenShard*, int64_t>> Find(int64_t idx) const;

  std::string id_;
  bool sft_ = false;
  int64_t num_documents_ = 0;
  int64_t num_tokens_ = 0;
  std::vector<std::unique_ptr<internal::TokenShard>> shards_;
  std::vector<int64_t> first_doc_;  // [s] = global index of shard s's first document
};

// Re-reads DIR and checks every shard against the manifest; the first problem found, or OK.
Status VerifyShards(const std::string& dir, const Tokenizer& tokenizer);

}  // namespace shoal::data
