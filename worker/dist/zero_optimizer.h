// ZeRO-1 across data-parallel replicas (DESIGN.md §3): gradients are summed over the ranks that hold the same
// tensors, the AdamW state (bf16 moments) is sharded over those ranks by WHOLE tensors, so every checkpoint entry
// keeps its Hugging Face name, and the updated parameters are gathered back onto every replica:
//
//   pack grads (owner-major) ─ReduceScatter(counts cut at tensor boundaries)─► my tensors' summed gradients
//   local Σ g² over my tensors ─AllGather(world, fp64)─► global norm ─► clip ─► AdamW on my tensors
//   pack my parameters ─AllGather(bucket group)─► every tensor's new values on every member
//
// A bucket is one reducing group with its tensor list: the replicated tensors over the replica group, and (EP > 1)
// the routed-expert tensors over the expert group. Owners come from AssignOwners over the bucket's canonical tensor
// order, which every member builds alike. Sums are the communicator's fixed group-order sums and the norm partials
// are added in rank order in fp64, so steps are bitwise reproducible and replicas stay bitwise identical.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "worker/comm/group.h"
#include "worker/dist/wait.h"
#include "worker/train/optimizer.h"

namespace shoal::comm {
class Communicator;
}

namespace shoal::dist {

// One trainable tensor of a bucket, in the bucket's canonical order.
struct ZeroTensor {
  std::string name;
  std::vector<int64_t> shape;
  float* param = nullptr;  // the model's fp32 master weights
  float* grad = nullptr;   // the model's gradient (summed into in place when the bucket has one member)
  int64_t numel = 0;
  bool decay = true;        // weight decay (matrices)
  bool in_norm = true;      // counts in the global gradient norm (false for the MTP layer's embedding copy)
};

struct ZeroBucketSpec {
  std::string name;                 // "replicated", "experts" (messages)
  std::vector<int> members;         // job ranks, group order
  uint32_t group_id = 0;
  std::vector<ZeroTensor> tensors;  // identical names, shapes and order on every member
};

class ZeroOptimizer {
 public:
  // `comm` may be null when every bucket has one member and the world is this rank alone.
  static Result<std::unique_ptr<ZeroOptimizer>> Create(comm::Communicator* comm, int rank, std::vector<int> world,
                                                      std::vector<ZeroBucketSpec> buckets, train::AdamWParams params,
                                                      WaitPolicy wait);
  ~ZeroOptimizer();

  struct StepResult {
    double grad_norm = 0;   // global, before clipping
    double comm_wait_s = 0; // blocked in the collectives
  };
  // Sums the gradients, clips to max_norm (<= 0: no clipping), updates the tensors this rank owns with learning
  // rate lr and gathers every tensor's new values. Every member of every bucket and every world rank must call it.
  Result<StepResult> Step(double lr, double max_norm);

  // A tensor this rank owns: its optimizer state lives here, and it is the one that writes it to checkpoints.
  struct Owned {
    const ZeroTensor* tensor = nullptr;
    kernels::bf16_t* exp_avg = nullptr;
    kernels::bf16_t* exp_avg_sq = nullptr;
  };
  std::vector<Owned> owned() const;
  int64_t step() const;
  void set_step(int64_t step);
  // Moments of owned tensor `name` (NotFound when this rank does not own it).
  Status LoadMoments(const std::string& name, const kernels::bf16_t* exp_avg, const kernels::bf16_t* exp_avg_sq,
                     int64_t numel);
  int64_t owned_elements() const;

 private:
  struct Bucket;
  ZeroOptimizer() = default;
  comm::Communicator* comm_ = nullptr;
  int rank_ = 0;
  std::unique_ptr<comm::Group> world_;
  std::vector<std::unique_ptr<Bucket>> buckets_;
  WaitPolicy wait_;
};

}  // namespace shoal::dist
