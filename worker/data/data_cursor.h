// DataCursor: where a phase is in its data, as a global row index (DESIGN.md §5). It is the same for every
// data-parallel rank and independent of the DP size, so a checkpoint taken under one layout resumes exactly
// under another. Serialised as a small JSON object stored with the checkpoint manifest.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"

namespace shoal::data {

struct DataCursor {
  std::string source;  // the id of the source that issued it (content, seq_len, packing); others refuse it
  uint64_t seed = 0;   // shuffle / generation seed
  int64_t epoch = 0;   // epoch of the next row's first document (for display; `index` alone positions the stream)
  int64_t index = 0;   // global index of the next row (GRPO: of the next prompt)

  // {"source": "...", "seed": 1234, "epoch": 0, "index": 4096}
  std::string ToJson() const;
  static Result<DataCursor> FromJson(std::string_view json);
  friend bool operator==(const DataCursor&, const DataCursor&) = default;
};

}  // namespace shoal::data
