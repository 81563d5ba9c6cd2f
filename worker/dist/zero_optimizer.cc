#include "worker/dist/zero_optimizer.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>
#include <span>

#include "kernels/cpu/clip.h"
#include "worker/comm/communicator.h"
#include "worker/dist/dist_layout.h"

namespace shoal::dist {

struct ZeroOptimizer::Bucket {
  ZeroBucketSpec spec;
  std::optional<comm::Group> group;  // when the bucket has more than one member
  int my_index = 0;
  std::vector<int> owner;            // per tensor: index into spec.members
  std::vector<size_t> offset;        // per tensor: where it sits in the packed (owner-major) buffer
  std::vector<size_t> counts;        // elements per member
  std::vector<size_t> mine;          // tensors owned here, in packed order
  size_t my_offset = 0;
  std::vector<float> packed;         // every tensor (gradients in, parameters back)
  std::vector<float> shard;          // this member's part (summed gradients, then its new parameters)
  std::unique_ptr<train::AdamW> adam;

  bool shared() const { return group.has_value(); }
};

ZeroOptimizer::~ZeroOptimizer() = default;

Result<std::unique_ptr<ZeroOptimizer>> ZeroOptimizer::Create(comm::Communicator* comm, int rank,
                                                             std::vector<int> world,
                                                             std::vector<ZeroBucketSpec> buckets,
                                                             train::AdamWParams params, WaitPolicy wait) {
  std::unique_ptr<ZeroOptimizer> z(new ZeroOptimizer());
  z->comm_ = comm;
  z->rank_ = rank;
  z->wait_ = wait;
  if (world.size() > 1) {
    if (comm == nullptr) return FailedPreconditionError("ZeroOptimizer: a multi-rank job needs a communicator");
    ASSIGN_OR_RETURN(comm::Group g, comm::Group::Create(std::move(world), kWorldGroupId));
    z->world_ = std::make_unique<comm::Group>(std::move(g));
  }
  for (auto& spec : buckets) {
    auto b = std::make_unique<Bucket>();
    b->spec = std::move(spec);
    const auto& members = b->spec.members;
    auto it = std::find(members.begin(), members.end(), rank);
    if (it == members.end()) {
      return InvalidArgumentError("ZeroOptimizer: rank " + std::to_string(rank) + " is not a member of bucket " +
                                  b->spec.name);
    }
    b->my_index = static_cast<int>(it - members.begin());
    const int parts = static_cast<int>(members.size());
    if (parts > 1) {
      if (comm == nullptr) return FailedPreconditionError("ZeroOptimizer: a shared bucket needs a communicator");
      ASSIGN_OR_RETURN(comm::Group g, comm::Group::Create(members, b->spec.group_id));
      b->group = std::move(g);
    }
    const auto& tensors = b->spec.tensors;
    std::vector<int64_t> numel;
    for (const auto& t : tensors) numel.push_back(t.numel);
    b->owner = AssignOwners(numel, parts);
    b->counts.assign(static_cast<size_t>(parts), 0);
    b->offset.assign(tensors.size(), 0);
    size_t at = 0;
    for (int p = 0; p < parts; ++p) {
      for (size_t i = 0; i < tensors.size(); ++i) {
        if (b->owner[i] != p) continue;
        b->offset[i] = at;
        at += static_cast<size_t>(tensors[i].numel);
        b->counts[static_cast<size_t>(p)] += static_cast<size_t>(tensors[i].numel);
        if (p == b->my_index) b->mine.push_back(i);
      }
      if (p < b->my_index) b->my_offset += b->counts[static_cast<size_t>(p)];
    }
    std::vector<train::OptimizedTensor> opt;
    if (b->shared()) {
      b->packed.assign(at, 0.0f);
      b->shard.assign(b->counts[static_cast<size_t>(b->my_index)], 0.0f);
    }
    for (size_t i : b->mine) {
      const ZeroTensor& t = tensors[i];
      train::OptimizedTensor o;
      o.name = t.name;
      o.param = t.param;
      o.grad = b->shared() ? b->shard.data() + (b->offset[i] - b->my_offset) : t.grad;
      o.numel = t.numel;
      o.decay = t.decay;
      opt.push_back(std::move(o));
    }
    b->adam = std::make_unique<train::AdamW>(std::move(opt), params);
    z->buckets_.push_back(std::move(b));
  }
  return z;
}

Result<ZeroOptimizer::StepResult> ZeroOptimizer::Step(double lr, double max_norm) {
  StepResult result;
  // 1. Sum the gradients: every bucket's reduce-scatter in flight at once.
  std::vector<comm::CommHandle> handles;
  for (auto& b : buckets_) {
    if (!b->shared()) continue;
    for (size_t i = 0; i < b->spec.tensors.size(); ++i) {
      const ZeroTensor& t = b->spec.tensors[i];
      std::memcpy(b->packed.data() + b->offset[i], t.grad, sizeof(float) * static_cast<size_t>(t.numel));
    }
    handles.push_back(comm_->ReduceScatter(*b->group, b->packed, b->shard, b->counts));
  }
  for (auto& h : handles) RETURN_IF_ERROR(WaitFor(h, wait_, &result.comm_wait_s));
  handles.clear();

  // 2. The global norm: Σ g² over the tensors each rank owns, added in rank order in fp64.
  std::vector<float*> bufs;
  std::vector<int64_t> sizes;
  std::vector<float*> norm_bufs;
  std::vector<int64_t> norm_sizes;
  for (auto& b : buckets_) {
    const auto& adam_tensors = b->adam->tensors();
    for (size_t k = 0; k < b->mine.size(); ++k) {
      float* g = const_cast<float*>(adam_tensors[k].grad);
      bufs.push_back(g);
      sizes.push_back(adam_tensors[k].numel);
      if (b->spec.tensors[b->mine[k]].in_norm) {
        norm_bufs.push_back(g);
        norm_sizes.push_back(adam_tensors[k].numel);
      }
    }
  }
  const double local = norm_bufs.empty() ? 0.0
                                         : std::pow(kernels::global_norm(norm_bufs.data(), norm_sizes.data(),
                                                                         static_cast<int>(norm_bufs.size())),
                                                    2.0);
  double total = local;
  if (world_) {
    std::vector<double> all(static_cast<size_t>(world_->size()), 0.0);
    comm::CommHandle h = comm_->AllGather(*world_, std::as_bytes(std::span<const double>(&local, 1)),
                                          std::as_writable_bytes(std::span<double>(all)));
    RETURN_IF_ERROR(WaitFor(h, wait_, &result.comm_wait_s));
    total = 0;
    for (double v : all) total += v;
  }
  result.grad_norm = std::sqrt(total);
  if (max_norm > 0 && !bufs.empty()) {
    kernels::scale_buffers(bufs.data(), sizes.data(), static_cast<int>(bufs.size()),
                           kernels::clip_scale(result.grad_norm, static_cast<float>(max_norm)));
  }

  // 3. AdamW on the owned tensors, then every member's new parameters to everyone.
  for (auto& b : buckets_) b->adam->Step(lr);
  for (auto& b : buckets_) {
    if (!b->shared()) continue;
    for (size_t i : b->mine) {
      const ZeroTensor& t = b->spec.tensors[i];
      std::memcpy(b->shard.data() + (b->offset[i] - b->my_offset), t.param, sizeof(float) * static_cast<size_t>(t.numel));
    }
    std::vector<size_t> bytes(b->counts.size());
    for (size_t p = 0; p < bytes.size(); ++p) bytes[p] = b->counts[p] * sizeof(float);
    handles.push_back(comm_->AllGather(*b->group, std::as_bytes(std::span<const float>(b->shard)),
                                       std::as_writable_bytes(std::span<float>(b->packed)), bytes));
  }
  size_t hi = 0;
  for (auto& b : buckets_) {
    if (!b->shared()) continue;
    RETURN_IF_ERROR(WaitFor(handles[hi++], wait_, &result.comm_wait_s));
    for (size_t i = 0; i < b->spec.tensors.size(); ++i) {
      if (b->owner[i] == b->my_index) continue;
      const ZeroTensor& t = b->spec.tensors[i];
      std::memcpy(t.param, b->packed.data() + b->offset[i], sizeof(float) * static_cast<size_t>(t.numel));
    }
  }
  return result;
}

std::vector<ZeroOptimizer::Owned> ZeroOptimizer::owned() const {
  std::vector<Owned> out;
  for (const auto& b : buckets_) {
    for (size_t k = 0; k < b->mine.size(); ++k) {
      out.push_back(Owned{&b->spec.tensors[b->mine[k]], b->adam->exp_avg(k), b->adam->exp_avg_sq(k)});
    }
  }
  return out;
}

int64_t ZeroOptimizer::step() const { return buckets_.empty() ? 0 : buckets_.front()->adam->step(); }

void ZeroOptimizer::set_step(int64_t step) {
  for (auto& b : buckets_) b->adam->set_step(step);
}

Status ZeroOptimizer::LoadMoments(const std::string& name, const kernels::bf16_t* exp_avg,
                                  const kernels::bf16_t* exp_avg_sq, int64_t numel) {
  for (auto& b : buckets_) {
    for (const auto& t : b->adam->tensors()) {
      if (t.name == name) return b->adam->LoadMoments(name, exp_avg, exp_avg_sq, numel);
    }
  }
  return NotFoundError("this rank does not own the optimizer state of " + name);
}

int64_t ZeroOptimizer::owned_elements() const {
  int64_t n = 0;
  for (const auto& b : buckets_) {
    for (const auto& t : b->adam->tensors()) n += t.numel;
  }
  return n;
}

}  // namespace shoal::dist
