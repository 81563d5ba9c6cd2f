// Data sources: what a phase's training loop reads. A DataSource turns a DocumentStore into one global stream
// of packed rows (pre-training or SFT, see batch.h); a PromptSource yields GRPO prompts with their answers.
//
// The stream is addressed by global row index, so reading is exact and independent of the data-parallel size:
// the step at cursor c consumes rows [c.index, c.index + global_batch), and data-parallel rank r of D reads
// rows [c.index + r·n, c.index + (r+1)·n) with n = global_batch / D (micro-batches are slices of those).
// Finite stores (files, shards) are repeated epoch after epoch, each in its own seeded document order;
// generated stores (builtin arith) are unbounded. Sources keep caches and are not thread-safe.
//
//   spec data                    | pretrain               | sft                          | grpo (PromptSource)
//   {builtin: arith}             | generated documents    | -                            | -
//   {builtin: arith-sft}         | -                      | generated chat samples       | -
//   {builtin: arith-rl}          | -                      | -                            | generated prompts
//   {path, format: text}         | .txt blocks            | -                            | -
//   {path, format: jsonl}        | "text"                 | "prompt"/"response"          | "prompt"/"answer"
//   {path, format: shards}       | prepared shards        | prepared shards              | -
// .txt / .jsonl inputs are tokenised in memory when opened; for large corpora prepare shards (shards.h).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "spec/job_spec.h"
#include "worker/data/arith.h"
#include "worker/data/batch.h"
#include "worker/data/data_cursor.h"
#include "worker/data/documents.h"
#include "worker/data/tokenizer.h"

namespace shoal::data {

class DataSource {
 public:
  virtual ~DataSource() = default;

  // Rows [first_row, first_row + num_rows) of the global stream, as one batch.
  virtual Result<Batch> ReadRows(int64_t first_row, int64_t num_rows) = 0;
  // The epoch a row's first token comes from (0 for generated data).
  virtual Result<int64_t> EpochOfRow(int64_t row) = 0;

  const Tokenizer& tokenizer() const { return tokenizer_; }
  int64_t seq_len() const { return seq_len_; }
  uint64_t seed() const { return seed_; }
  // Names content, packing and seq_len; cursors carry it.
  const std::string& id() const { return id_; }

  // The cursor at the start of the stream.
  DataCursor Start() const { return DataCursor{id_, seed_, 0, 0}; }
  // num_rows rows at the cursor. FailedPrecondition if the cursor was issued by another source (other data,
  // seq_len or seed).
  Result<Batch> Next(const DataCursor& cursor, int64_t num_rows);
  // The rows data-parallel rank `dp_rank` of `dp_size` reads for the step at `cursor`.
  Result<Batch> ReadStep(const DataCursor& cursor, int64_t global_batch, int dp_rank, int dp_size);
  // The cursor num_rows rows later (epoch updated).
  Result<DataCursor> Advance(const DataCursor& cursor, int64_t num_rows);

 protected:
  DataSource(const Tokenizer& tokenizer, int64_t seq_len, uint64_t seed, std::string id)
      : tokenizer_(tokenizer), seq_len_(seq_len), seed_(seed), id_(std::move(id)) {}
  Status CheckCursor(const DataCursor& cursor) const;

 private:
  const Tokenizer& tokenizer_;
  int64_t seq_len_;
  uint64_t seed_;
  std::string id_;
};

// A GRPO prompt: what the policy is asked, and the reference the reward compares against.
struct Prompt {
  std::vector<int32_t> tokens;  // the encoded prompt (chat template applied when chat)
  std::string text;             // the prompt as written ("37+48=")
  std::string answer;           // the exact expected answer ("85")
  friend bool operator==(const Prompt&, const Prompt&) = default;
};

class PromptSource {
 public:
  virtual ~PromptSource() = default;
  // Prompt `index` of the global stream.
  virtual Result<Prompt> At(int64_t index) = 0;
  virtual int64_t EpochOf(int64_t index) const = 0;

  const std::string& id() const { return id_; }
  uint64_t seed() const { return seed_; }
  DataCursor Start() const { return DataCursor{id_, seed_, 0, 0}; }
  Result<std::vector<Prompt>> Next(const DataCursor& cursor, int64_t count);
  Result<DataCursor> Advance(const DataCursor& cursor, int64_t count) const;

 protected:
  PromptSource(uint64_t seed, std::string id) : seed_(seed), id_(std::move(id)) {}

 private:
  uint64_t seed_;
  std::string id_;
};

struct DataOptions {
  int64_t seq_len = 128;                // S (rows hold S + 1 tokens)
  uint64_t seed = 1234;                 // generation and shuffle seed (the job's train.seed)
  bool shuffle = true;                  // finite data: a new seeded document order every epoch
  ArithSplit split = ArithSplit::kTrain;  // builtin arith*: train, or the held-out eval problems
  bool chat_prompts = true;             // arith-rl: "<|user|>37+48=<|assistant|>" (after SFT) or plain "37+48="
};

// The row source of a pretrain or sft phase. The tokenizer must outlive the source.
Result<std::unique_ptr<DataSource>> OpenDataSource(const DataSpec& spec, PhaseKind kind, const Tokenizer& tokenizer,
                                                   const DataOptions& options);
// The prompt source of a grpo phase. The tokenizer must outlive the source.
Result<std::unique_ptr<PromptSource>> OpenPromptSource(const DataSpec& spec, const Tokenizer& tokenizer,
                                                       const DataOptions& options);

// Building blocks (OpenDataSource uses them): rows over any store. InvalidArgument for seq_len < 2 or a finite
// store without tokens.
Result<std::unique_ptr<DataSource>> MakePretrainSource(std::unique_ptr<DocumentStore> store,
                                                       const Tokenizer& tokenizer, const DataOptions& options);
Result<std::unique_ptr<DataSource>> MakeSftSource(std::unique_ptr<DocumentStore> store, const Tokenizer& tokenizer,
                                                  const DataOptions& options);

// −Σ p·ln p (nats/token) of a histogram.
double UnigramEntropyNats(std::span<const int64_t> counts);
// The unigram entropy of the trained targets (where loss_mask) of rows [0, num_rows): the loss of a model that
// predicts every token from its overall frequency alone, which the training loss should fall well below.
Result<double> MeasureUnigramEntropy(DataSource& source, int64_t num_rows);

}  // namespace shoal::data
