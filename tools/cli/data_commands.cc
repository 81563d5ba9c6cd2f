#include "tools/cli/data_commands.h"

#include <cstdio>

#include "worker/data/shards.h"
#include "worker/data/tokenizer.h"

namespace shoal::cli {

int DataPrepare(const DataPrepareOptions& o, bool json) {
  auto fail = [](const Status& s) {
    std::fprintf(stderr, "shoal: %s\n", s.ToString().c_str());
    return 1;
  };
  data::PrepareOptions options;
  if (o.format == "text") options.format = DataFormat::kText;
  else if (o.format == "jsonl") options.format = DataFormat::kJsonl;
  else return fail(InvalidArgumentError("--format must be text or jsonl, got '" + o.format + "'"));
  if (o.kind == "pretrain") options.kind = PhaseKind::kPretrain;
  else if (o.kind == "sft") options.kind = PhaseKind::kSft;
  else return fail(InvalidArgumentError("--kind must be pretrain or sft, got '" + o.kind + "'"));
  if (o.shard_tokens <= 0) return fail(InvalidArgumentError("--shard-tokens must be positive"));
  options.shard_tokens = o.shard_tokens;
  auto tokenizer = data::LoadTokenizer(o.tokenizer);
  if (!tokenizer.ok()) return fail(tokenizer.status());
  auto stats = data::PrepareShards(o.inputs, options, **tokenizer, o.out);
  if (!stats.ok()) return fail(stats.status());
  if (json) {
    std::printf("{\"documents\": %lld, \"tokens\": %lld, \"shards\": %lld, \"bytes\": %lld, \"out\": \"%s\"}\n",
                static_cast<long long>(stats->num_documents), static_cast<long long>(stats->num_tokens),
                static_cast<long long>(stats->num_shards), static_cast<long long>(stats->num_bytes), o.out.c_str());
  } else {
    std::printf("Wrote %lld documents, %lld tokens in %lld shard%s (%.1f MiB) to %s (tokenizer %s).\n",
                static_cast<long long>(stats->num_documents), static_cast<long long>(stats->num_tokens),
                static_cast<long long>(stats->num_shards), stats->num_shards == 1 ? "" : "s",
                stats->num_bytes / 1048576.0, o.out.c_str(), (*tokenizer)->name().c_str());
    std::printf("Use it with  data: {path: %s, format: shards}\n", o.out.c_str());
  }
  return 0;
}

}  // namespace shoal::cli
