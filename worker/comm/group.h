// A group of ranks that runs collectives together (an EP group, the DP replicas of one stage, ...), and the
// pure helpers that split a buffer across its members.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"

namespace shoal::comm {

class Group {
 public:
  // `ranks` in group order: the order defines chunk ownership and the summation order of reductions
  // (element i of a sum is ((x_0 + x_1) + x_2) + ... over group members, so results are bitwise reproducible
  // and equal on every member). `id` tells concurrent collectives of different groups apart in tags; by default
  // a hash of `ranks`. Give explicit ids when two groups that share two or more members could collide.
  static Result<Group> Create(std::vector<int> ranks, std::optional<uint32_t> id = std::nullopt);

  const std::vector<int>& ranks() const { return ranks_; }
  int size() const { return static_cast<int>(ranks_.size()); }
  uint32_t id() const { return id_; }
  // Index of `rank` in the group, or -1.
  int IndexOf(int rank) const;
  // "group 1234 [0,2,4]".
  std::string DebugString() const;

 private:
  Group(std::vector<int> ranks, uint32_t id) : ranks_(std::move(ranks)), id_(id) {}
  std::vector<int> ranks_;
  uint32_t id_ = 0;
};

// Splits `total` items into `parts` contiguous chunks, the first total % parts one item larger.
std::vector<size_t> BalancedCounts(size_t total, int parts);
// Exclusive prefix sums: offsets[i] = counts[0] + ... + counts[i-1].
std::vector<size_t> ExclusiveOffsets(std::span<const size_t> counts);
size_t Sum(std::span<const size_t> counts);

}  // namespace shoal::comm
