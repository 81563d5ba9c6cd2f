// Helpers shared by the storage tests: a temporary directory, and a whole-store dump for comparisons.
#pragma once

#include <stdlib.h>

#include <filesystem>
#include <map>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "storage/state_store.h"

namespace shoal {

// Readable gtest output for our enums (found by argument-dependent lookup).
inline void PrintTo(StatusCode code, std::ostream* os) { *os << StatusCodeName(code); }
inline void PrintTo(Table table, std::ostream* os) { *os << TableName(table); }

}  // namespace shoal

namespace shoal::testing_util {

// A fresh directory under $TMPDIR (or /tmp), removed with everything in it when this goes out of scope.
class TempDir {
 public:
  TempDir() {
    const char* base = getenv("TMPDIR");
    std::string tmpl = std::string(base != nullptr && *base != '\0' ? base : "/tmp") + "/shoal-storage-XXXXXX";
    if (mkdtemp(tmpl.data()) == nullptr) ADD_FAILURE() << "mkdtemp " << tmpl << " failed";
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  std::string Sub(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

using Rows = std::vector<std::pair<std::string, std::string>>;

// Every table's rows, for comparing two stores (or one store before and after something).
inline std::map<Table, Rows> DumpAll(const StateStore& store) {
  std::map<Table, Rows> out;
  for (Table t : kAllTables) {
    auto rows = store.Scan(t);
    EXPECT_TRUE(rows.ok()) << TableName(t) << ": " << rows.status();
    if (rows.ok()) out[t] = std::move(rows).value();
  }
  return out;
}

}  // namespace shoal::testing_util
