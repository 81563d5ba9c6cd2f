#include "common/check.h"

#include <cstdio>
#include <cstdlib>

namespace shoal::internal {

CheckFailure::CheckFailure(const char* file, int line, const char* condition) {
  stream_ << file << ":" << line << ": CHECK failed: " << condition << " ";
}

CheckFailure::~CheckFailure() {
  std::fprintf(stderr, "FATAL: %s\n", stream_.str().c_str());
  std::fflush(stderr);
  std::abort();
}

}  // namespace shoal::internal
