// Small, careful file helpers: whole-file read, atomic write (temp + fsync + rename + dir fsync), modes.
#pragma once

#include <string>

#include "common/status.h"

namespace shoal {

Result<std::string> ReadFile(const std::string& path);
// Writes `data` to `path` atomically with the given mode: a crash leaves either the old or the new file.
Status WriteFileAtomic(const std::string& path, const std::string& data, int mode = 0644);
Status MakeDirs(const std::string& path, int mode = 0755);
bool FileExists(const std::string& path);

}  // namespace shoal
