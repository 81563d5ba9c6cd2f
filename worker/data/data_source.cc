#include "worker/data/data_source.h"

#include <xxhash.h>

#include <cmath>

#include "worker/data/shards.h"

namespace shoal::data {

Status DataSource::CheckCursor(const DataCursor& cursor) const {
  if (cursor.source != id_ || cursor.seed != seed_)
    return FailedPreconditionError("data cursor is for \"" + cursor.source + "\" (seed " +
                                   std::to_string(cursor.seed) + ") but this phase reads \"" + id_ + "\" (seed " +
                                   std::to_string(seed_) +
                                   "); the phase's data, seq_len or seed changed since the checkpoint");
  if (cursor.index < 0) return InvalidArgumentError("data cursor index " + std::to_string(cursor.index) + " < 0");
  return Status::OK();
}

Result<Batch> DataSource::Next(const DataCursor& cursor, int64_t num_rows) {
  RETURN_IF_ERROR(CheckCursor(cursor));
  return ReadRows(cursor.index, num_rows);
}

Result<Batch> DataSource::ReadStep(const DataCursor& cursor, int64_t global_batch, int dp_rank, int dp_size) {
  RETURN_IF_ERROR(CheckCursor(cursor));
  if (dp_size <= 0 || dp_rank < 0 || dp_rank >= dp_size || global_batch <= 0 || global_batch % dp_size != 0)
    return InvalidArgumentError("ReadStep: rank " + std::to_string(dp_rank) + " of " + std::to_string(dp_size) +
                                " with global_batch " + std::to_string(global_batch) +
                                "; global_batch must be a positive multiple of the data-parallel size");
  const int64_t per_rank = global_batch / dp_size;
  return ReadRows(cursor.index + dp_rank * per_rank, per_rank);
}

Result<DataCursor> DataSource::Advance(const DataCursor& cursor, int64_t num_rows) {
  RETURN_IF_ERROR(CheckCursor(cursor));
  DataCursor next = cursor;
  next.index += num_rows;
  ASSIGN_OR_RETURN(next.epoch, EpochOfRow(next.index));
  return next;
}

Result<std::vector<Prompt>> PromptSource::Next(const DataCursor& cursor, int64_t count) {
  if (cursor.source != id_ || cursor.seed != seed_)
    return FailedPreconditionError("data cursor is for \"" + cursor.source + "\" but this phase reads \"" + id_ +
                                   "\" (seed " + std::to_string(seed_) + ")");
  std::vector<Prompt> out;
  for (int64_t i = 0; i < count; ++i) {
    ASSIGN_OR_RETURN(Prompt p, At(cursor.index + i));
    out.push_back(std::move(p));
  }
  return out;
}

Result<DataCursor> PromptSource::Advance(const DataCursor& cursor, int64_t count) const {
  if (cursor.source != id_ || cursor.seed != seed_)
    return FailedPreconditionError("data cursor is for \"" + cursor.source + "\" but this phase reads \"" + id_ + "\"");
  DataCursor next = cursor;
  next.index += count;
  next.epoch = EpochOf(next.index);
  return next;
}

namespace {

class ArithPrompts final : public PromptSource {
 public:
  ArithPrompts(const Tokenizer& tokenizer, const DataOptions& o)
      : PromptSource(o.seed, std::string("builtin:arith-rl/") + std::string(ToString(o.split)) +
                                 (o.chat_prompts ? "/chat/" : "/plain/") + tokenizer.name()),
        tokenizer_(tokenizer),
        split_(o.split),
        chat_(o.chat_prompts) {}
  Result<Prompt> At(int64_t index) override {
    if (index < 0) return OutOfRangeError("arith-rl: negative prompt index");
    ArithProblem p = ArithProblemAt(seed(), split_, index);
    Prompt out;
    out.text = p.Question();
    out.answer = p.Answer();
    out.tokens = chat_ ? EncodeChatPrompt(tokenizer_, out.text) : tokenizer_.Encode(out.text);
    return out;
  }
  int64_t EpochOf(int64_t) const override { return 0; }

 private:
  const Tokenizer& tokenizer_;
  ArithSplit split_;
  bool chat_;
};

class ListPrompts final : public PromptSource {
 public:
  ListPrompts(std::vector<TextRecord> records, const Tokenizer& tokenizer, const DataOptions& o, std::string id)
      : PromptSource(o.seed, std::move(id)), records_(std::move(records)), tokenizer_(tokenizer), shuffle_(o.shuffle) {}
  Result<Prompt> At(int64_t index) override {
    if (index < 0) return OutOfRangeError("prompts: negative index");
    const int64_t n = static_cast<int64_t>(records_.size());
    int64_t i = index % n;
    if (shuffle_)
      i = static_cast<int64_t>(PermuteIndex(i, n, Mix64(seed() ^ Mix64(static_cast<uint64_t>(EpochOf(index))))));
    const TextRecord& r = records_[i];
    return Prompt{EncodeChatPrompt(tokenizer_, r.text), r.text, r.response};
  }
  int64_t EpochOf(int64_t index) const override { return index / static_cast<int64_t>(records_.size()); }

 private:
  std::vector<TextRecord> records_;
  const Tokenizer& tokenizer_;
  bool shuffle_;
};

bool IsJsonl(const DataSpec& spec) { return spec.format == DataFormat::kJsonl; }

Result<std::vector<TextRecord>> ReadAllRecords(const DataSpec& spec, RecordKind kind) {
  ASSIGN_OR_RETURN(std::vector<std::string> files, ListInputFiles(spec.path, IsJsonl(spec) ? ".jsonl" : ".txt"));
  std::vector<TextRecord> all;
  for (const std::string& f : files) {
    ASSIGN_OR_RETURN(std::vector<TextRecord> records, ReadRecords(f, IsJsonl(spec), kind));
    for (TextRecord& r : records) all.push_back(std::move(r));
  }
  if (all.empty()) return InvalidArgumentError(spec.path + ": no records");
  return all;
}

// The documents of .txt/.jsonl inputs, tokenised now; the id hashes the tokens so edited files are noticed.
Result<std::unique_ptr<DocumentStore>> TokenizeFiles(const DataSpec& spec, PhaseKind kind, const Tokenizer& tokenizer) {
  const RecordKind record_kind = kind == PhaseKind::kSft ? RecordKind::kSft : RecordKind::kText;
  ASSIGN_OR_RETURN(std::vector<TextRecord> records, ReadAllRecords(spec, record_kind));
  std::vector<Document> docs;
  docs.reserve(records.size());
  XXH3_state_t* state = XXH3_createState();
  XXH3_64bits_reset(state);
  for (const TextRecord& r : records) {
    docs.push_back(record_kind == RecordKind::kSft ? MakeSftSample(tokenizer, r.text, r.response)
                                                   : MakeTextDocument(tokenizer, r.text));
    const Document& d = docs.back();
    XXH3_64bits_update(state, d.tokens.data(), d.tokens.size() * sizeof(int32_t));
    XXH3_64bits_update(state, &d.prompt_len, sizeof(d.prompt_len));
  }
  const uint64_t hash = XXH3_64bits_digest(state);
  XXH3_freeState(state);
  char hex[17];
  std::snprintf(hex, sizeof(hex), "%016llx", static_cast<unsigned long long>(hash));
  return std::unique_ptr<DocumentStore>(std::make_unique<InMemoryDocuments>(
      std::move(docs), "files:" + std::string(ToString(spec.format)) + "/" + hex));  // content, not where it lies
}

Status CheckBuiltinKind(const DataSpec& spec, PhaseKind kind) {
  for (const BuiltinDataset& b : BuiltinDatasets()) {
    if (b.name != spec.builtin) continue;
    if (b.kind == kind) return Status::OK();
    return InvalidArgumentError("builtin data set \"" + spec.builtin + "\" feeds " + std::string(ToString(b.kind)) +
                                " phases, not " + std::string(ToString(kind)));
  }
  return NotFoundError("no builtin data set \"" + spec.builtin + "\"; choose arith, arith-sft or arith-rl");
}

}  // namespace

Result<std::unique_ptr<DataSource>> OpenDataSource(const DataSpec& spec, PhaseKind kind, const Tokenizer& tokenizer,
                                                   const DataOptions& options) {
  if (kind == PhaseKind::kGrpo)
    return InvalidArgumentError("grpo phases read prompts: use OpenPromptSource, not OpenDataSource");
  std::unique_ptr<DocumentStore> store;
  if (spec.is_builtin()) {
    RETURN_IF_ERROR(CheckBuiltinKind(spec, kind));
    store = MakeArithDocuments(tokenizer, kind == PhaseKind::kSft ? ArithForm::kSft : ArithForm::kPretrain,
                               options.seed, options.split);
  } else if (spec.format == DataFormat::kShards) {
    ASSIGN_OR_RETURN(std::unique_ptr<ShardDocuments> shards, ShardDocuments::Open(spec.path, tokenizer));
    if (shards->sft() != (kind == PhaseKind::kSft))
      return InvalidArgumentError(spec.path + ": the shards were prepared for " +
                                  (shards->sft() ? "sft" : "pretrain") + " phases, not " +
                                  std::string(ToString(kind)) + "; re-run `shoal data prepare` with the right kind");
    store = std::move(shards);
  } else {
    ASSIGN_OR_RETURN(store, TokenizeFiles(spec, kind, tokenizer));
  }
  if (kind == PhaseKind::kSft) return MakeSftSource(std::move(store), tokenizer, options);
  return MakePretrainSource(std::move(store), tokenizer, options);
}

Result<std::unique_ptr<PromptSource>> OpenPromptSource(const DataSpec& spec, const Tokenizer& tokenizer,
                                                       const DataOptions& options) {
  if (spec.is_builtin()) {
    RETURN_IF_ERROR(CheckBuiltinKind(spec, PhaseKind::kGrpo));
    return std::unique_ptr<PromptSource>(std::make_unique<ArithPrompts>(tokenizer, options));
  }
  if (spec.format != DataFormat::kJsonl)
    return InvalidArgumentError(spec.path + ": grpo prompts are read from jsonl ({\"prompt\": ..., \"answer\": ...} "
                                            "per line); set format: jsonl");
  ASSIGN_OR_RETURN(std::vector<TextRecord> records, ReadAllRecords(spec, RecordKind::kPrompts));
  std::string id = "files:" + spec.path + "/prompts/" + std::to_string(records.size()) + "/" + tokenizer.name();
  return std::unique_ptr<PromptSource>(std::make_unique<ListPrompts>(std::move(records), tokenizer, options, id));
}

double UnigramEntropyNats(std::span<const int64_t> counts) {
  double total = 0;
  for (int64_t c : counts) total += static_cast<double>(c);
  if (total <= 0) return 0;
  double h = 0;
  for (int64_t c : counts)
    if (c > 0) {
      const double p = static_cast<double>(c) / total;
      h -= p * std::log(p);
    }
  return h;
}

Result<double> MeasureUnigramEntropy(DataSource& source, int64_t num_rows) {
  std::vector<int64_t> counts(static_cast<size_t>(source.tokenizer().vocab_size()), 0);
  constexpr int64_t kChunk = 256;
  for (int64_t first = 0; first < num_rows; first += kChunk) {
    ASSIGN_OR_RETURN(Batch b, source.ReadRows(first, std::min(kChunk, num_rows - first)));
    for (size_t i = 0; i < b.targets.size(); ++i) {
      if (!b.loss_mask[i]) continue;
      const int32_t t = b.targets[i];
      if (t < 0 || t >= static_cast<int32_t>(counts.size()))
        return InternalError("token id " + std::to_string(t) + " outside the tokenizer's vocabulary");
      ++counts[t];
    }
  }
  return UnigramEntropyNats(counts);
}

}  // namespace shoal::data
