// AsyncCheckpointWriter: writes checkpoint shards on a background thread so the trainer keeps stepping.
//
//   Submit(request)   validates, copies every tensor (moments converted to BF16 while copying) and queues the
//                     copy; returns as soon as the copy is taken, so the arenas may change right after
//   background        WriteShard(copy) -> manifest, one shard at a time, in submission order
//   done(result)      the manifest (files, sizes, xxh3) or the error; the worker reports "shard written" to
//                     the coordinator, which commits the step once every shard has reported
//
// Completions run through the `post` function given to the constructor (e.g. one that posts onto the worker
// actor's strand, STYLE.md §3); without one they run on the writer thread.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "common/status.h"
#include "worker/checkpoint/checkpoint.h"

namespace shoal::checkpoint {

class AsyncCheckpointWriter {
 public:
  using DoneCallback = std::function<void(Result<ShardManifest>)>;
  using Poster = std::function<void(std::function<void()>)>;

  AsyncCheckpointWriter(std::string checkpoint_root, ShardWriteOptions options = {}, Poster post = nullptr);
  // Finishes every submitted write (their callbacks run), then joins the thread.
  ~AsyncCheckpointWriter();
  AsyncCheckpointWriter(const AsyncCheckpointWriter&) = delete;
  AsyncCheckpointWriter& operator=(const AsyncCheckpointWriter&) = delete;

  // InvalidArgument (from ValidateShardRequest) without queueing anything; otherwise `done` is called exactly
  // once, later. The request's tensors are no longer needed when this returns.
  Status Submit(const ShardWriteRequest& request, DoneCallback done);

  // Blocks until every write submitted so far has finished and its callback has been called (or posted).
  void WaitIdle();
  // Writes queued or in progress.
  int pending() const;
  // Bytes of tensor copies held for queued/in-progress writes (memory the snapshots cost).
  int64_t pending_bytes() const;

 private:
  struct Job;
  void Run();

  const std::string root_;
  const ShardWriteOptions options_;
  const Poster post_;
  mutable std::mutex mu_;
  std::condition_variable work_cv_;
  std::condition_variable idle_cv_;
  std::deque<std::unique_ptr<Job>> queue_;
  int in_flight_ = 0;  // queued + being written
  int64_t pending_bytes_ = 0;
  bool stop_ = false;
  std::thread thread_;  // last: starts after, and is joined before, everything above is destroyed
};

}  // namespace shoal::checkpoint
