// The safetensors container (deepseek-v3.md §9.3): 8-byte little-endian header length N, a JSON header
// {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {"format": "pt", ...}} padded with
// spaces so the data starts 8-byte aligned, then the raw little-endian row-major data, tensors back to back.
//
// The reader maps the file and checks everything before handing out a view: header length, JSON, dtypes,
// shapes, offsets in bounds, no overlap and no gap (the data section is exactly covered, as the reference
// implementation requires), byte count = numel·dtype size. Problems are DataLoss naming the file and tensor.
// The writer streams tensors in a deterministic order (larger dtypes first so every tensor is naturally
// aligned, then by name) through an AtomicFileWriter.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "worker/checkpoint/atomic_file.h"
#include "worker/checkpoint/tensor_set.h"

namespace shoal::checkpoint {

// The reference implementation's limit; a larger header means a corrupt length field.
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100'000'000;

struct SafetensorsEntry {
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // offsets into the data section
  uint64_t end = 0;
};

class SafetensorsFile {
 public:
  // Maps and validates `path`.
  static Result<SafetensorsFile> Open(const std::string& path);
  // Validates an existing mapping (e.g. one already hashed for a checksum check).
  static Result<SafetensorsFile> FromMapping(std::shared_ptr<const MappedFile> file);

  const std::string& path() const { return file_->path(); }
  uint64_t file_size() const { return file_->size(); }
  const MappedFile& mapping() const { return *file_; }
  // "__metadata__" (string values only, as the format requires); "format" is "pt" for files we write.
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::map<std::string, SafetensorsEntry, std::less<>>& entries() const { return entries_; }
  std::vector<std::string> names() const;  // sorted
  bool Contains(std::string_view name) const { return entries_.count(name) != 0; }

  // A view into the mapping, valid while this object (or a copy) lives. NotFound naming the file.
  Result<TensorRef> Get(std::string_view name) const;
  // An owned copy.
  Result<Tensor> Read(std::string_view name) const;
  // Every element as f32: F32/BF16/F16 converted; an F8_E4M3 tensor whose "<name>_scale_inv" sibling is in this
  // file is dequantised with 128×128 blocks (§9.4), otherwise decoded without a scale.
  Result<std::vector<float>> ReadF32(std::string_view name) const;
  // Owned copies of every tensor, as stored.
  Result<TensorSet> ReadAll() const;

 private:
  SafetensorsFile() = default;
  std::shared_ptr<const MappedFile> file_;
  uint64_t data_start_ = 0;
  std::map<std::string, std::string> metadata_;
  std::map<std::string, SafetensorsEntry, std::less<>> entries_;
};

struct SafetensorsWriteOptions {
  // Extra "__metadata__" entries; "format": "pt" is always written (transformers rejects other values).
  std::map<std::string, std::string> metadata;
  bool sync = true;  // fsync file and directory (off only for scratch output)
};

// Writes `tensors` to `path` atomically (temp name + fsync + rename). InvalidArgument for an empty name, a
// null data pointer or a bad shape. Returns the file's size and xxh3.
Result<FileDigest> WriteSafetensors(const std::string& path, const TensorRefMap& tensors,
                                    const SafetensorsWriteOptions& options = {});
Result<FileDigest> WriteSafetensors(const std::string& path, const TensorSet& tensors,
                                    const SafetensorsWriteOptions& options = {});

// The header bytes (length prefix + padded JSON) WriteSafetensors would produce, and the order of the data.
// Exposed for tests and for size estimates.
std::string SafetensorsHeader(const TensorRefMap& tensors, const std::map<std::string, std::string>& metadata,
                              std::vector<std::string>* data_order = nullptr);

}  // namespace shoal::checkpoint
