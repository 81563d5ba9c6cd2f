// `shoal data prepare`: turn text or JSONL into token shards (with a document index) for `data: {path: DIR,
// format: shards}`.
#pragma once

#include <string>
#include <vector>

namespace shoal::cli {

struct DataPrepareOptions {
  std::vector<std::string> inputs;
  std::string out;
  std::string format = "text";      // text | jsonl
  std::string kind = "pretrain";    // pretrain ("text" documents) | sft ("prompt"/"response" samples)
  std::string tokenizer = "byte";   // byte | path to tokenizer.json (or its directory)
  int64_t shard_tokens = int64_t{1} << 26;
};

int DataPrepare(const DataPrepareOptions& options, bool json);

}  // namespace shoal::cli
