#include "worker/checkpoint/atomic_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

namespace shoal::checkpoint {

namespace {

constexpr size_t kBufferBytes = 4 << 20;

std::string ParentDir(const std::string& path) {
  std::string dir = std::filesystem::path(path).parent_path().string();
  return dir.empty() ? "." : dir;
}

}  // namespace

std::string Xxh3Hex(uint64_t h) {
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

bool ParseXxh3Hex(std::string_view text, uint64_t* out) {
  if (text.size() != 16) return false;
  uint64_t v = 0;
  for (char c : text) {
    int d;
    if (c >= '0' && c <= '9') d = c - '0';
    else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
    else return false;
    v = (v << 4) | static_cast<uint64_t>(d);
  }
  *out = v;
  return true;
}

uint64_t Xxh3Of(const void* data, size_t size) { return XXH3_64bits(data, size); }

struct AtomicFileWriter::HashState {
  XXH3_state_t* state = XXH3_createState();
  HashState() { XXH3_64bits_reset(state); }
  ~HashState() { XXH3_freeState(state); }
};

AtomicFileWriter::AtomicFileWriter(std::string path, std::string tmp_path, int fd, bool sync)
    : path_(std::move(path)), tmp_path_(std::move(tmp_path)), fd_(fd), sync_(sync),
      hash_(std::make_unique<HashState>()) {
  buffer_.reserve(kBufferBytes);
}

Result<std::unique_ptr<AtomicFileWriter>> AtomicFileWriter::Create(const std::string& path, bool sync) {
  static std::atomic<uint64_t> counter{0};
  const std::filesystem::path p(path);
  const std::string tmp = (p.parent_path() / ("." + p.filename().string() + ".tmp-" + std::to_string(::getpid()) +
                                              "-" + std::to_string(counter.fetch_add(1))))
                              .string();
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoToStatus(errno, "create " + tmp + " (temporary file for " + path + ")");
  return std::unique_ptr<AtomicFileWriter>(new AtomicFileWriter(path, tmp, fd, sync));
}

AtomicFileWriter::~AtomicFileWriter() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(tmp_path_.c_str());
}

Status AtomicFileWriter::WriteAll(const char* data, size_t size) {
  size_t off = 0;
  while (off < size) {
    const ssize_t n = ::write(fd_, data + off, size - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoToStatus(errno, "write " + tmp_path_ + " (for " + path_ + ")");
    }
    off += static_cast<size_t>(n);
  }
  return Status::OK();
}

Status AtomicFileWriter::Flush() {
  RETURN_IF_ERROR(WriteAll(buffer_.data(), buffer_.size()));
  buffer_.clear();
  return Status::OK();
}

Status AtomicFileWriter::Append(const void* data, size_t size) {
  if (fd_ < 0 || committed_) return FailedPreconditionError("append to " + path_ + " after Commit()");
  XXH3_64bits_update(hash_->state, data, size);
  bytes_ += size;
  const char* p = static_cast<const char*>(data);
  if (buffer_.size() + size > kBufferBytes) {
    RETURN_IF_ERROR(Flush());
    if (size >= kBufferBytes) return WriteAll(p, size);  // large tensors go straight to the file
  }
  buffer_.append(p, size);
  return Status::OK();
}

Result<FileDigest> AtomicFileWriter::Commit() {
  if (fd_ < 0 || committed_) return FailedPreconditionError("Commit() of " + path_ + " called twice");
  RETURN_IF_ERROR(Flush());
  if (sync_ && ::fsync(fd_) != 0) return ErrnoToStatus(errno, "fsync " + tmp_path_ + " (for " + path_ + ")");
  if (::close(fd_) != 0) {
    fd_ = -1;
    return ErrnoToStatus(errno, "close " + tmp_path_ + " (for " + path_ + ")");
  }
  fd_ = -1;
  if (::rename(tmp_path_.c_str(), path_.c_str()) != 0) {
    return ErrnoToStatus(errno, "rename " + tmp_path_ + " -> " + path_);
  }
  committed_ = true;
  if (sync_) RETURN_IF_ERROR(SyncDirectory(ParentDir(path_)));
  return FileDigest{bytes_, XXH3_64bits_digest(hash_->state)};
}

Result<FileDigest> WriteFileAtomically(const std::string& path, std::string_view data, bool sync) {
  ASSIGN_OR_RETURN(auto writer, AtomicFileWriter::Create(path, sync));
  RETURN_IF_ERROR(writer->Append(data));
  return writer->Commit();
}

Status SyncDirectory(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoToStatus(errno, "open directory " + dir + " to fsync it");
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) return ErrnoToStatus(err, "fsync directory " + dir);
  return Status::OK();
}

Result<std::shared_ptr<const MappedFile>> MappedFile::Open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoToStatus(errno, "open " + path);
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return ErrnoToStatus(err, "stat " + path);
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return InvalidArgumentError(path + " is not a regular file");
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  const uint8_t* data = nullptr;
  if (size > 0) {
    void* m = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      return ErrnoToStatus(err, "mmap " + path);
    }
    data = static_cast<const uint8_t*>(m);
  }
  ::close(fd);  // the mapping keeps the file alive
  return std::shared_ptr<const MappedFile>(new MappedFile(path, data, size));
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(const_cast<uint8_t*>(data_), size_);
}

}  // namespace shoal::checkpoint
