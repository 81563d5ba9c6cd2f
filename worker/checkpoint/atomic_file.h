// Crash-safe file output for checkpoints: AtomicFileWriter writes under a temporary name in the target's
// directory, hashes (xxh3-64) while it writes, and on Commit() fsyncs, renames onto the final name and fsyncs
// the directory. A crash or an error at any point leaves either the old file or none, never a partial one
// under the final name. Also the readers' side: whole-file digests and read-only mappings.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "common/status.h"

namespace shoal::checkpoint {

// Size and xxh3-64 of a file's bytes: what shard manifests record.
struct FileDigest {
  uint64_t bytes = 0;
  uint64_t xxh3 = 0;
  friend bool operator==(const FileDigest&, const FileDigest&) = default;
};

std::string Xxh3Hex(uint64_t h);  // 16 lowercase hex digits
bool ParseXxh3Hex(std::string_view text, uint64_t* out);
uint64_t Xxh3Of(const void* data, size_t size);

class AtomicFileWriter {
 public:
  // Creates "<dir>/.<name>.tmp-<pid>-<n>" next to `path`. sync=false skips the fsyncs (tests, scratch output).
  static Result<std::unique_ptr<AtomicFileWriter>> Create(const std::string& path, bool sync = true);
  ~AtomicFileWriter();  // not committed: closes and removes the temporary file
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  Status Append(const void* data, size_t size);
  Status Append(std::string_view data) { return Append(data.data(), data.size()); }
  // Flush, fsync, rename onto the final path, fsync the directory. Returns what was written.
  Result<FileDigest> Commit();

  const std::string& path() const { return path_; }
  uint64_t bytes_written() const { return bytes_; }

 private:
  AtomicFileWriter(std::string path, std::string tmp_path, int fd, bool sync);
  Status Flush();
  Status WriteAll(const char* data, size_t size);

  std::string path_;
  std::string tmp_path_;
  int fd_ = -1;
  bool sync_ = true;
  bool committed_ = false;
  uint64_t bytes_ = 0;
  std::string buffer_;
  struct HashState;
  std::unique_ptr<HashState> hash_;
};

// Writes `data` to `path` atomically; the digest of what was written.
Result<FileDigest> WriteFileAtomically(const std::string& path, std::string_view data, bool sync = true);

// fsync a directory so renames inside it survive a crash.
Status SyncDirectory(const std::string& dir);

// A read-only mapping of a whole file (empty files map to an empty view).
class MappedFile {
 public:
  static Result<std::shared_ptr<const MappedFile>> Open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::string& path() const { return path_; }
  const uint8_t* data() const { return data_; }
  uint64_t size() const { return size_; }
  FileDigest Digest() const { return {size_, Xxh3Of(data_, size_)}; }

 private:
  MappedFile(std::string path, const uint8_t* data, uint64_t size) : path_(std::move(path)), data_(data), size_(size) {}
  std::string path_;
  const uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
};

}  // namespace shoal::checkpoint
