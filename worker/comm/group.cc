#include "worker/comm/group.h"

#include <set>

#include "worker/comm/tag.h"

namespace shoal::comm {

Result<Group> Group::Create(std::vector<int> ranks, std::optional<uint32_t> id) {
  if (ranks.empty()) return InvalidArgumentError("comm group: no ranks; a group needs at least one member");
  std::set<int> seen;
  for (int r : ranks) {
    if (r < 0 || r >= kMaxRanks) {
      return InvalidArgumentError("comm group: rank " + std::to_string(r) + " is outside [0, " +
                                  std::to_string(kMaxRanks) + ")");
    }
    if (!seen.insert(r).second) {
      return InvalidArgumentError("comm group: rank " + std::to_string(r) + " appears twice");
    }
  }
  uint32_t gid;
  if (id) {
    if (*id > kMaxGroupId) {
      return InvalidArgumentError("comm group: id " + std::to_string(*id) + " exceeds " + std::to_string(kMaxGroupId));
    }
    gid = *id;
  } else {
    uint64_t h = 1469598103934665603ull;  // FNV-1a over the member list
    for (int r : ranks) {
      for (int b = 0; b < 4; ++b) {
        h ^= static_cast<uint64_t>((static_cast<uint32_t>(r) >> (8 * b)) & 0xff);
        h *= 1099511628211ull;
      }
    }
    gid = static_cast<uint32_t>((h ^ (h >> 32)) % (kMaxGroupId + 1));
  }
  return Group(std::move(ranks), gid);
}

int Group::IndexOf(int rank) const {
  for (size_t i = 0; i < ranks_.size(); ++i) {
    if (ranks_[i] == rank) return static_cast<int>(i);
  }
  return -1;
}

std::string Group::DebugString() const {
  std::string s = "group " + std::to_string(id_) + " [";
  for (size_t i = 0; i < ranks_.size(); ++i) s += (i ? "," : "") + std::to_string(ranks_[i]);
  return s + "]";
}

std::vector<size_t> BalancedCounts(size_t total, int parts) {
  std::vector<size_t> counts(static_cast<size_t>(parts), parts > 0 ? total / static_cast<size_t>(parts) : 0);
  for (size_t i = 0; parts > 0 && i < total % static_cast<size_t>(parts); ++i) counts[i] += 1;
  return counts;
}

std::vector<size_t> ExclusiveOffsets(std::span<const size_t> counts) {
  std::vector<size_t> offsets(counts.size());
  size_t at = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    offsets[i] = at;
    at += counts[i];
  }
  return offsets;
}

size_t Sum(std::span<const size_t> counts) {
  size_t s = 0;
  for (size_t c : counts) s += c;
  return s;
}

}  // namespace shoal::comm
