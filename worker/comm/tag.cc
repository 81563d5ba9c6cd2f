#include "worker/comm/tag.h"

#include <cstdio>

namespace shoal::comm {
namespace {

constexpr int kPayloadBits = 64 - kEpochBits - kRankBits - kKindBits;  // 34
constexpr int kKindShift = kPayloadBits;
constexpr int kSrcShift = kKindShift + kKindBits;
constexpr int kEpochShift = kSrcShift + kRankBits;
static_assert(kUserTagBits + kP2pSeqBits == kPayloadBits);
static_assert(kGroupIdBits + kGroupSeqBits + kStepBits == kPayloadBits);

constexpr uint64_t Mask(int bits) { return (uint64_t{1} << bits) - 1; }

uint64_t Header(uint64_t epoch, int src, TagKind kind) {
  return ((epoch & Mask(kEpochBits)) << kEpochShift) | ((static_cast<uint64_t>(src) & Mask(kRankBits)) << kSrcShift) |
         (static_cast<uint64_t>(kind) << kKindShift);
}

}  // namespace

uint64_t EncodeTag(const P2pTag& t) {
  return Header(t.epoch, t.src, TagKind::kP2p) | ((uint64_t{t.user_tag} & Mask(kUserTagBits)) << kP2pSeqBits) |
         (uint64_t{t.seq} & Mask(kP2pSeqBits));
}

uint64_t EncodeTag(const CollectiveTag& t) {
  return Header(t.epoch, t.src, TagKind::kCollective) |
         ((uint64_t{t.group_id} & Mask(kGroupIdBits)) << (kGroupSeqBits + kStepBits)) |
         ((uint64_t{t.seq} & Mask(kGroupSeqBits)) << kStepBits) | (uint64_t{t.step} & Mask(kStepBits));
}

uint64_t ControlTag(uint64_t epoch, int src) { return Header(epoch, src, TagKind::kControl); }

uint64_t ControlMask() { return kFullMask & ~(Mask(kRankBits) << kSrcShift); }

uint64_t EpochMask() { return Mask(kEpochBits) << kEpochShift; }
uint64_t EpochBits(uint64_t epoch) { return (epoch & Mask(kEpochBits)) << kEpochShift; }

uint64_t CollectiveCallMask() {
  // Everything but the sender and the step.
  return kFullMask & ~(Mask(kRankBits) << kSrcShift) & ~Mask(kStepBits);
}

uint32_t TagEpoch(uint64_t tag) { return static_cast<uint32_t>((tag >> kEpochShift) & Mask(kEpochBits)); }
int TagSrc(uint64_t tag) { return static_cast<int>((tag >> kSrcShift) & Mask(kRankBits)); }
TagKind TagKindOf(uint64_t tag) { return static_cast<TagKind>((tag >> kKindShift) & Mask(kKindBits)); }

std::string DescribeTag(uint64_t tag) {
  char buf[128];
  if (TagKindOf(tag) == TagKind::kControl) {
    std::snprintf(buf, sizeof(buf), "epoch %u, rank %d -> control", TagEpoch(tag), TagSrc(tag));
  } else if (TagKindOf(tag) == TagKind::kP2p) {
    std::snprintf(buf, sizeof(buf), "epoch %u, rank %d -> p2p tag %llu #%llu", TagEpoch(tag), TagSrc(tag),
                  static_cast<unsigned long long>((tag >> kP2pSeqBits) & Mask(kUserTagBits)),
                  static_cast<unsigned long long>(tag & Mask(kP2pSeqBits)));
  } else {
    std::snprintf(buf, sizeof(buf), "epoch %u, rank %d -> group %llu call #%llu step %llu", TagEpoch(tag),
                  TagSrc(tag), static_cast<unsigned long long>((tag >> (kGroupSeqBits + kStepBits)) & Mask(kGroupIdBits)),
                  static_cast<unsigned long long>((tag >> kStepBits) & Mask(kGroupSeqBits)),
                  static_cast<unsigned long long>(tag & Mask(kStepBits)));
  }
  return buf;
}

}  // namespace shoal::comm
