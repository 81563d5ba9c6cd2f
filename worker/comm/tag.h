// The 64-bit UCP tag of every data-plane message, and the masks that match it (pure; unit-tested).
//
//   63        48 47      36 35  34 33                                   0
//   +-----------+----------+------+-------------------------------------+
//   | epoch:16  | src:12   | kind | payload:34                          |
//   +-----------+----------+------+-------------------------------------+
//   kind kP2p:        payload = user tag:24 | per-(src, dst, user tag) sequence:10
//   kind kCollective: payload = group id:12 | per-group sequence:14 | step:8
//   kind kControl:    payload = 0 (communicator-to-communicator notices, e.g. "this rank cut the link")
//
// * epoch (the job epoch, low 16 bits) fences zombies: a receive always matches the full epoch field, so a
//   message sent in another epoch never matches; the communicator drains such messages.
// * src is the sender's rank: UCP tag matching is per worker, not per endpoint, so a receive from a given peer
//   must name the peer in the tag.
// * The p2p sequence counts sends (receives) per (peer, user tag) on each side, so a cancelled receive never
//   swallows the message meant for the next receive with the same tag: the orphan keeps its own sequence.
// * Collectives on one group are numbered in call order on every member (as MPI requires); the group id keeps
//   concurrent collectives of different groups with common members apart.
#pragma once

#include <cstdint>
#include <string>

namespace shoal::comm {

inline constexpr int kEpochBits = 16;
inline constexpr int kRankBits = 12;
inline constexpr int kKindBits = 2;
inline constexpr int kUserTagBits = 24;
inline constexpr int kP2pSeqBits = 10;
inline constexpr int kGroupIdBits = 12;
inline constexpr int kGroupSeqBits = 14;
inline constexpr int kStepBits = 8;

inline constexpr int kMaxRanks = 1 << kRankBits;               // 4096
inline constexpr uint32_t kMaxUserTag = (1u << kUserTagBits) - 1;
inline constexpr uint32_t kMaxGroupId = (1u << kGroupIdBits) - 1;
inline constexpr uint32_t kMaxStep = (1u << kStepBits) - 1;

enum class TagKind : uint32_t { kP2p = 0, kCollective = 1, kControl = 2 };

struct P2pTag {
  uint64_t epoch = 0;    // only the low kEpochBits travel
  int src = 0;
  uint32_t user_tag = 0;
  uint32_t seq = 0;      // wraps at 2^kP2pSeqBits
};

struct CollectiveTag {
  uint64_t epoch = 0;
  int src = 0;
  uint32_t group_id = 0;
  uint32_t seq = 0;      // wraps at 2^kGroupSeqBits
  uint32_t step = 0;
};

uint64_t EncodeTag(const P2pTag& t);
uint64_t EncodeTag(const CollectiveTag& t);

// A control notice from `src` in `epoch`.
uint64_t ControlTag(uint64_t epoch, int src);
// Matches the control notices of one epoch from any sender.
uint64_t ControlMask();

// Full mask: every field must match.
inline constexpr uint64_t kFullMask = ~uint64_t{0};
// Matches every message of one epoch (the fields above it).
uint64_t EpochMask();
uint64_t EpochBits(uint64_t epoch);
// Matches every message of one collective call (epoch, kind, group, seq), any sender and step.
uint64_t CollectiveCallMask();

// Field accessors for diagnostics and drains.
uint32_t TagEpoch(uint64_t tag);
int TagSrc(uint64_t tag);
TagKind TagKindOf(uint64_t tag);
// "epoch 3, rank 1 -> p2p tag 7 #2" / "epoch 3, rank 1 -> group 12 call #5 step 1".
std::string DescribeTag(uint64_t tag);

}  // namespace shoal::comm
