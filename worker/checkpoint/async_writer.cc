#include "worker/checkpoint/async_writer.h"

namespace shoal::checkpoint {

// An owned snapshot of a ShardWriteRequest.
struct AsyncCheckpointWriter::Job {
  std::string shard;
  TrainerState state;
  int64_t optimizer_step = 0;
  TensorSet params;
  TensorSet moments;  // already BF16
  int64_t bytes = 0;
  DoneCallback done;

  ShardWriteRequest AsRequest() const {
    return {shard, state, optimizer_step, RefsOf(params), RefsOf(moments)};
  }
};

AsyncCheckpointWriter::AsyncCheckpointWriter(std::string checkpoint_root, ShardWriteOptions options, Poster post)
    : root_(std::move(checkpoint_root)), options_(std::move(options)), post_(std::move(post)),
      thread_([this] { Run(); }) {}

AsyncCheckpointWriter::~AsyncCheckpointWriter() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  thread_.join();
}

Status AsyncCheckpointWriter::Submit(const ShardWriteRequest& request, DoneCallback done) {
  RETURN_IF_ERROR(ValidateShardRequest(request));
  auto job = std::make_unique<Job>();
  job->shard = request.shard;
  job->state = request.state;
  job->optimizer_step = request.optimizer_step;
  for (const auto& [name, ref] : request.params) {
    auto it = job->params.emplace(name, Tensor::Copy(ref)).first;
    job->bytes += it->second.nbytes();
  }
  for (const auto& [name, ref] : request.moments) {
    Tensor t;
    if (ref.dtype == DType::kBF16) {
      t = Tensor::Copy(ref);
    } else {
      ASSIGN_OR_RETURN(t, ConvertFloat(ref, DType::kBF16, name));
    }
    job->bytes += t.nbytes();
    job->moments.emplace(name, std::move(t));
  }
  job->done = std::move(done);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_) return FailedPreconditionError("checkpoint writer is shutting down; shard " + request.shard + " not written");
    pending_bytes_ += job->bytes;
    ++in_flight_;
    queue_.push_back(std::move(job));
  }
  work_cv_.notify_one();
  return Status::OK();
}

void AsyncCheckpointWriter::Run() {
  for (;;) {
    std::unique_ptr<Job> job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      work_cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stop_ and nothing left
      job = std::move(queue_.front());
      queue_.pop_front();
    }
    Result<ShardManifest> result = WriteShard(root_, job->AsRequest(), options_);
    DoneCallback done = std::move(job->done);
    const int64_t bytes = job->bytes;
    job.reset();  // free the snapshot before reporting
    if (done) {
      if (post_) {
        post_([done = std::move(done), result = std::move(result)]() mutable { done(std::move(result)); });
      } else {
        done(std::move(result));
      }
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      pending_bytes_ -= bytes;
      --in_flight_;
    }
    idle_cv_.notify_all();
  }
}

void AsyncCheckpointWriter::WaitIdle() {
  std::unique_lock<std::mutex> lock(mu_);
  idle_cv_.wait(lock, [&] { return in_flight_ == 0; });
}

int AsyncCheckpointWriter::pending() const {
  std::lock_guard<std::mutex> lock(mu_);
  return in_flight_;
}

int64_t AsyncCheckpointWriter::pending_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return pending_bytes_;
}

}  // namespace shoal::checkpoint
