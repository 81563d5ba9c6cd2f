// Checkpoint shards (DESIGN.md §5). For step S a worker writes, into <root>/step-<S>/:
//   model-<shard>.safetensors    its parameters under HF DeepSeek-V3 names, fp32 master weights (incl. the MoE
//                                e_score_correction_bias, which is a parameter tensor like any other)
//   optim-<shard>.safetensors    AdamW moments in BF16 as "<name>.exp_avg" / "<name>.exp_avg_sq", plus "step" (I64 [])
//   state-<shard>.json           step, phase, epoch, data cursor (opaque JSON), RNG state (opaque bytes), extras
//   manifest-<shard>.json        size and xxh3-64 of each of the three files; written last
// Every file is written under a temporary name, fsynced and renamed; the shard's old manifest is removed before
// anything else, so a crash at any point leaves no manifest and the shard reads as incomplete, never as complete
// with mixed contents. The coordinator commits the manifests of all shards of a step (one synced batch); a
// loader verifies sizes and checksums against the manifest (DataLoss naming the file on mismatch).
//
// Expert tensors have per-expert names and every tensor has its full HF name, so the shards of one step, written
// under any pipeline/expert layout, merge by name (LoadMerged) and load under another layout.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "worker/checkpoint/atomic_file.h"
#include "worker/checkpoint/tensor_set.h"

namespace shoal::checkpoint {

// What the trainer needs besides tensors to resume bit-identically.
struct TrainerState {
  int64_t step = 0;                        // the step this checkpoint was taken after
  std::string phase;                       // job phase name (pretrain, sft, grpo, ...)
  int64_t epoch = 0;                       // job epoch that wrote it (zombie fencing, DESIGN.md §6)
  std::string data_cursor_json = "null";   // opaque JSON from the data loader (global sample index, seed, ...)
  std::string rng_state;                   // opaque bytes (stored base64)
  std::map<std::string, std::string> extra_json;  // anything else, key -> JSON text

  friend bool operator==(const TrainerState&, const TrainerState&) = default;
};

struct ShardFileInfo {
  std::string name;  // relative to the step directory
  FileDigest digest;
  friend bool operator==(const ShardFileInfo&, const ShardFileInfo&) = default;
};

// What a worker reports as "shard written" and the coordinator commits.
struct ShardManifest {
  std::string shard;
  int64_t step = 0;
  std::string phase;
  int64_t epoch = 0;
  std::vector<ShardFileInfo> files;  // model, optim, state

  uint64_t total_bytes() const;
  std::string ToJson() const;
  // `where` names the source in errors (a path, "coordinator record", ...). DataLoss when malformed.
  static Result<ShardManifest> FromJson(std::string_view text, std::string_view where);
  friend bool operator==(const ShardManifest&, const ShardManifest&) = default;
};

// A shard to write, borrowed: every TensorRef must stay valid for the duration of WriteShard (the async writer
// copies them first).
struct ShardWriteRequest {
  std::string shard;            // [A-Za-z0-9_.-]+, unique within the step (e.g. "pp0-ep1", "stage2")
  TrainerState state;           // state.step picks the step directory
  int64_t optimizer_step = 0;   // AdamW's t (bias correction)
  TensorRefMap params;          // HF names, float dtypes, stored as given (fp32 master weights)
  TensorRefMap moments;         // "<param>.exp_avg" / "<param>.exp_avg_sq" of params above; stored BF16
};

// A loaded shard, owned.
struct CheckpointShard {
  ShardManifest manifest;
  TrainerState state;
  int64_t optimizer_step = 0;
  TensorSet params;   // as stored (F32)
  TensorSet moments;  // as stored (BF16)
};

// Test hook: called with a stage name ("model", "optim", "state", "manifest") after that file is in place.
// A non-OK return stops the write right there, as a crash would (nothing is cleaned up).
using WriteFaultHook = std::function<Status(std::string_view stage)>;

struct ShardWriteOptions {
  bool sync = true;
  WriteFaultHook fault_hook;
};

std::string StepDirName(int64_t step);                                // "step-<S>"
std::string StepDir(const std::string& checkpoint_root, int64_t step);  // "<root>/step-<S>"
std::string ModelFileName(std::string_view shard);                    // "model-<shard>.safetensors"
std::string OptimFileName(std::string_view shard);                    // "optim-<shard>.safetensors"
std::string StateFileName(std::string_view shard);                    // "state-<shard>.json"
std::string ManifestFileName(std::string_view shard);                 // "manifest-<shard>.json"

// InvalidArgument naming the problem: bad shard name, non-float params, moment names that do not end in
// .exp_avg/.exp_avg_sq of a parameter of this shard or whose shape differs from it, invalid JSON texts.
Status ValidateShardRequest(const ShardWriteRequest& request);

// Writes the shard into StepDir(checkpoint_root, request.state.step) and returns its manifest.
Result<ShardManifest> WriteShard(const std::string& checkpoint_root, const ShardWriteRequest& request,
                                 const ShardWriteOptions& options = {});

// Shards of a step directory that have a manifest (complete), sorted; and those with files but no manifest.
struct StepDirListing {
  std::vector<std::string> complete;
  std::vector<std::string> incomplete;
};
Result<StepDirListing> ListShards(const std::string& step_dir);

// Checks the size and xxh3 of every file of `manifest` in `step_dir`. DataLoss naming the file on mismatch.
Status VerifyShardFiles(const std::string& step_dir, const ShardManifest& manifest);

// Reads and verifies one shard. With `committed` (the manifest the coordinator committed), the on-disk
// manifest must match it too. NotFound when the shard has no manifest (never completely written).
Result<CheckpointShard> LoadShard(const std::string& step_dir, std::string_view shard,
                                  const ShardManifest* committed = nullptr);

// All shards of a step merged by name: what a job restores under a different layout, or exports.
struct MergedCheckpoint {
  int64_t step = 0;
  int64_t optimizer_step = 0;
  TensorSet params;
  TensorSet moments;
  std::map<std::string, TrainerState> states;  // by shard
  std::vector<ShardManifest> manifests;
};

// Merges `shards` (all complete shards of the directory when empty). FailedPrecondition when a shard is
// incomplete; DataLoss when a checksum fails, shards disagree on step or optimizer step, or two shards hold
// different values under one name (identical duplicates, e.g. a replicated embedding, are fine).
Result<MergedCheckpoint> LoadMerged(const std::string& step_dir, const std::vector<std::string>& shards = {});

}  // namespace shoal::checkpoint
