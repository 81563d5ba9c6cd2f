// Commands that run the model in the CLI process: `shoal generate`, `shoal eval`, and `shoal export` (which
// reads a job's committed checkpoint and writes a Hugging Face directory).
#pragma once

#include <string>

#include "tools/cli/client.h"

namespace shoal::cli {

struct GenerateOptions {
  std::string model_dir;
  std::string prompt;
  int max_new_tokens = 32;
  float temperature = 0.0f;
  int top_k = 0;
  uint64_t seed = 0;
  bool raw = false;  // no chat template even if the model was fine-tuned with one
  bool speculative = false;  // MTP speculative decoding (greedy)
};
int GenerateCommand(const GenerateOptions& options, bool json);

struct EvalOptions {
  std::string model_dir;
  std::string data = "arith";    // builtin name (arith, arith-sft) or a path (text/jsonl/shards)
  int batches = 8;
  int batch_size = 8;
  int seq_len = 0;               // 0: the training length recorded beside the checkpoint, else 128
  std::string tokens;            // "1,2,3": score exactly these ids instead of a data set
  std::string dump_logits;       // FILE.npy for --tokens
  int accuracy = 0;              // also generate answers for N held-out arithmetic problems
  uint64_t seed = 1234;
};
int EvalCommand(const EvalOptions& options, bool json);

struct ExportOptionsCli {
  std::string job;
  std::string checkpoint;        // id ("pretrain-000300"); default: the latest committed
  std::string out;
  std::string dtype = "bf16";    // bf16 | f32
  bool fp8 = false;
  bool no_mtp = false;
};
int ExportCommand(const GlobalOptions& g, const ExportOptionsCli& options);

}  // namespace shoal::cli
