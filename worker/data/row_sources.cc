// The two row packers over a DocumentStore: the pre-training stream (documents flow across rows) and SFT
// (whole samples per row). Both see documents in "global order": global document j is document
// PermuteIndex(j mod N, N, key(seed, epoch)) of a finite store of N (epoch = j / N), or document j of an
// unbounded one.
#include <algorithm>

#include "worker/data/data_source.h"

namespace shoal::data {
namespace {

class DocOrder {
 public:
  DocOrder(std::optional<int64_t> size, uint64_t seed, bool shuffle) : size_(size), seed_(seed), shuffle_(shuffle) {}
  int64_t StoreIndex(int64_t j) const {
    if (!size_) return j;
    const int64_t within = j % *size_;
    if (!shuffle_) return within;
    return static_cast<int64_t>(
        PermuteIndex(static_cast<uint64_t>(within), static_cast<uint64_t>(*size_), Mix64(seed_ ^ Mix64(Epoch(j)))));
  }
  int64_t Epoch(int64_t j) const { return size_ ? j / *size_ : 0; }

 private:
  std::optional<int64_t> size_;
  uint64_t seed_;
  bool shuffle_;
};

// Fetches global documents, remembering the last one (consecutive rows keep touching it).
class DocReader {
 public:
  DocReader(const DocumentStore& store, const DocOrder& order) : store_(store), order_(order) {}
  Result<const Document*> Get(int64_t j) {
    if (j != cached_) {
      ASSIGN_OR_RETURN(doc_, store_.Get(order_.StoreIndex(j)));
      cached_ = j;
    }
    return &doc_;
  }
  Result<int64_t> Length(int64_t j) {
    if (j == cached_) return static_cast<int64_t>(doc_.tokens.size());
    return store_.Length(order_.StoreIndex(j));
  }

 private:
  const DocumentStore& store_;
  const DocOrder& order_;
  int64_t cached_ = -1;
  Document doc_;
};

std::string SourceId(const DocumentStore& store, std::string_view packing, const DataOptions& o) {
  return std::string(store.id()) + "|" + std::string(packing) + "|seq_len=" + std::to_string(o.seq_len) +
         (o.shuffle && store.size() ? "|shuffled" : "");
}

// Pre-training: row k is stream tokens [k·S, k·S + S + 1) (rows overlap by one token, so every adjacent pair of
// the stream is trained exactly once).
class PretrainRows final : public DataSource {
 public:
  PretrainRows(std::unique_ptr<DocumentStore> store, const Tokenizer& tokenizer, const DataOptions& o)
      : DataSource(tokenizer, o.seq_len, o.seed, SourceId(*store, "pretrain", o)),
        store_(std::move(store)),
        order_(store_->size(), o.seed, o.shuffle),
        reader_(*store_, order_) {}

  Result<Batch> ReadRows(int64_t first_row, int64_t num_rows) override {
    if (first_row < 0 || num_rows < 0) return InvalidArgumentError("ReadRows: negative row range");
    const int64_t S = seq_len();
    Batch batch = Batch::Allocate(num_rows, S, /*block_diagonal=*/false);
    std::vector<int32_t> row(static_cast<size_t>(S + 1));
    for (int64_t r = 0; r < num_rows; ++r) {
      const int64_t offset = (first_row + r) * S;
      ASSIGN_OR_RETURN(Located at, Locate(offset));
      int64_t j = at.doc;
      int64_t doc_start = at.doc_start;
      int64_t filled = 0;
      int32_t starts = 0;
      while (filled < S + 1) {
        ASSIGN_OR_RETURN(const Document* d, reader_.Get(j));
        const int64_t len = static_cast<int64_t>(d->tokens.size());
        const int64_t from = offset + filled - doc_start;  // first token of d not yet copied
        if (doc_start >= offset && doc_start < offset + S && len > 0) ++starts;
        const int64_t take = std::min(len - from, S + 1 - filled);
        std::copy_n(d->tokens.begin() + from, take, row.begin() + filled);
        filled += take;
        doc_start += len;
        ++j;
      }
      FillPretrainRow(batch, r, row, starts);
    }
    return batch;
  }

  Result<int64_t> EpochOfRow(int64_t row) override {
    ASSIGN_OR_RETURN(Located at, Locate(row * seq_len()));
    return order_.Epoch(at.doc);
  }

 private:
  static constexpr int64_t kStride = 64;  // documents between remembered stream offsets
  struct Located {
    int64_t doc;        // global document holding stream token `offset`
    int64_t doc_start;  // stream offset of its first token
  };

  Result<Located> Locate(int64_t offset) {
    while (checkpoints_.back() <= offset) {
      const int64_t first = static_cast<int64_t>(checkpoints_.size() - 1) * kStride;
      int64_t sum = 0;
      for (int64_t j = first; j < first + kStride; ++j) {
        ASSIGN_OR_RETURN(int64_t len, reader_.Length(j));
        sum += len;
      }
      if (sum == 0 && store_->size())  // a finite store repeats, so this holds for every later stride too
        return FailedPreconditionError(id() + ": " + std::to_string(kStride) + " documents in a row are empty");
      checkpoints_.push_back(checkpoints_.back() + sum);
    }
    auto it = std::upper_bound(checkpoints_.begin(), checkpoints_.end(), offset);
    const int64_t m = static_cast<int64_t>(it - checkpoints_.begin()) - 1;
    Located at{m * kStride, checkpoints_[m]};
    for (;;) {
      ASSIGN_OR_RETURN(int64_t len, reader_.Length(at.doc));
      if (at.doc_start + len > offset) return at;
      at.doc_start += len;
      ++at.doc;
    }
  }

  std::unique_ptr<DocumentStore> store_;
  DocOrder order_;
  DocReader reader_;
  std::vector<int64_t> checkpoints_{0};  // [m] = stream offset of global document m·kStride
};

// SFT: rows take whole samples greedily in global order (batch.h SampleFitsRow); row k holds samples
// [row_start_[k], row_start_[k+1]).
class SftRows final : public DataSource {
 public:
  SftRows(std::unique_ptr<DocumentStore> store, const Tokenizer& tokenizer, const DataOptions& o)
      : DataSource(tokenizer, o.seq_len, o.seed, SourceId(*store, "sft", o)),
        store_(std::move(store)),
        order_(store_->size(), o.seed, o.shuffle),
        reader_(*store_, order_) {}

  Result<Batch> ReadRows(int64_t first_row, int64_t num_rows) override {
    if (first_row < 0 || num_rows < 0) return InvalidArgumentError("ReadRows: negative row range");
    RETURN_IF_ERROR(PlanThrough(first_row + num_rows));
    Batch batch = Batch::Allocate(num_rows, seq_len(), /*block_diagonal=*/true);
    std::vector<Document> docs;
    std::vector<const Document*> ptrs;
    for (int64_t r = 0; r < num_rows; ++r) {
      const int64_t k = first_row + r;
      docs.clear();
      for (int64_t j = row_start_[k]; j < row_start_[k + 1]; ++j) {
        ASSIGN_OR_RETURN(const Document* d, reader_.Get(j));
        docs.push_back(*d);
      }
      ptrs.clear();
      for (const Document& d : docs) ptrs.push_back(&d);
      FillSftRow(batch, r, ptrs, tokenizer().pad_id());
    }
    return batch;
  }

  Result<int64_t> EpochOfRow(int64_t row) override {
    RETURN_IF_ERROR(PlanThrough(row + 1));
    return order_.Epoch(row_start_[row]);
  }

 private:
  // Extends row_start_ until rows [0, num_rows) are planned.
  Status PlanThrough(int64_t num_rows) {
    const int64_t width = seq_len() + 1;
    while (static_cast<int64_t>(row_start_.size()) <= num_rows) {
      int64_t j = row_start_.back();
      int64_t used = 0;
      while (used < width) {
        ASSIGN_OR_RETURN(int64_t len, reader_.Length(j));
        if (!SampleFitsRow(used, len, seq_len())) break;
        used += std::min(len, width - used);
        ++j;
      }
      row_start_.push_back(j);
    }
    return Status::OK();
  }

  std::unique_ptr<DocumentStore> store_;
  DocOrder order_;
  DocReader reader_;
  std::vector<int64_t> row_start_{0};
};

Status CheckStore(const DocumentStore& store, const DataOptions& o) {
  if (o.seq_len < 2) return InvalidArgumentError("seq_len must be >= 2, got " + std::to_string(o.seq_len));
  std::optional<int64_t> n = store.size();
  if (!n) return Status::OK();
  for (int64_t i = 0; i < *n; ++i) {
    ASSIGN_OR_RETURN(int64_t len, store.Length(i));
    if (len > 0) return Status::OK();
  }
  return InvalidArgumentError(store.id() + ": the data holds no tokens");
}

}  // namespace

Result<std::unique_ptr<DataSource>> MakePretrainSource(std::unique_ptr<DocumentStore> store,
                                                       const Tokenizer& tokenizer, const DataOptions& options) {
  RETURN_IF_ERROR(CheckStore(*store, options));
  return std::unique_ptr<DataSource>(std::make_unique<PretrainRows>(std::move(store), tokenizer, options));
}

Result<std::unique_ptr<DataSource>> MakeSftSource(std::unique_ptr<DocumentStore> store, const Tokenizer& tokenizer,
                                                  const DataOptions& options) {
  RETURN_IF_ERROR(CheckStore(*store, options));
  return std::unique_ptr<DataSource>(std::make_unique<SftRows>(std::move(store), tokenizer, options));
}

}  // namespace shoal::data
