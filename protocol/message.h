// One received control message: a word-aligned copy of the frame and a validated Cap'n Proto reader over
// it. Validation (bounds, pointers, traversal and nesting limits) happens once, when the frame arrives, so
// code that reads a Message afterwards cannot trip over a malformed pointer.
#pragma once

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/array.h>

#include <memory>

#include "common/status.h"
#include "protocol/shoal.capnp.h"

namespace shoal::protocol {

struct FrameLimits {
  size_t max_message_bytes = 16u << 20;   // whole frame, segment table included
  size_t max_segments = 64;
  uint64_t traversal_limit_words = 4u << 20;
  int nesting_limit = 32;
};

class Message {
 public:
  // Validates the frame (which must be exactly one serialized message). Never throws.
  static Result<std::shared_ptr<const Message>> Parse(kj::Array<capnp::word> words, const FrameLimits& limits);

  proto::Envelope::Reader envelope() const { return envelope_; }
  size_t size_bytes() const { return words_.size() * sizeof(capnp::word); }

 private:
  Message(kj::Array<capnp::word> words, const FrameLimits& limits);
  kj::Array<capnp::word> words_;
  capnp::FlatArrayMessageReader reader_;
  proto::Envelope::Reader envelope_;
};
using MessagePtr = std::shared_ptr<const Message>;

// Standard stream framing: the first 8 bytes give the segment count and the first segment's size. Returns
// the number of bytes of the whole segment table (>= 8), or an error if the frame is impossible.
Result<size_t> SegmentTableBytes(const uint8_t first_word[8], const FrameLimits& limits);
// Given the complete segment table, the total frame size in bytes (table + segments), checked against limits.
Result<size_t> FrameBytes(const uint8_t* table, size_t table_bytes, const FrameLimits& limits);

// Serialises a builder whose root is an Envelope into one frame.
kj::Array<capnp::word> Serialize(capnp::MessageBuilder& builder);

// The union member of an envelope, for logs ("heartbeat", "submit", ...).
const char* EnvelopeKind(proto::Envelope::Reader env);

}  // namespace shoal::protocol
