#include "protocol/message.h"

#include <capnp/dynamic.h>
#include <kj/exception.h>

#include <cstring>

namespace shoal::protocol {
namespace {

uint32_t ReadLe32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 | static_cast<uint32_t>(p[2]) << 16 |
         static_cast<uint32_t>(p[3]) << 24;
}

capnp::ReaderOptions Options(const FrameLimits& limits) {
  capnp::ReaderOptions o;
  o.traversalLimitInWords = limits.traversal_limit_words;
  o.nestingLimit = limits.nesting_limit;
  return o;
}

// Reads every field reachable from the envelope (with the schema) so that whatever capnp checks lazily
// (text NUL terminators, list element sizes, struct sizes) is checked here, once, inside the catch.
void TouchAll(capnp::DynamicValue::Reader value, int depth) {
  if (depth > 64) KJ_FAIL_REQUIRE("message nested too deeply");
  switch (value.getType()) {
    case capnp::DynamicValue::TEXT:
      (void)value.as<capnp::Text>();
      break;
    case capnp::DynamicValue::DATA:
      (void)value.as<capnp::Data>();
      break;
    case capnp::DynamicValue::LIST:
      for (auto element : value.as<capnp::DynamicList>()) TouchAll(element, depth + 1);
      break;
    case capnp::DynamicValue::STRUCT: {
      auto s = value.as<capnp::DynamicStruct>();
      for (auto field : s.getSchema().getNonUnionFields()) TouchAll(s.get(field), depth + 1);
      KJ_IF_MAYBE(active, s.which()) { TouchAll(s.get(*active), depth + 1); }
      break;
    }
    default:
      break;
  }
}

}  // namespace

Result<size_t> SegmentTableBytes(const uint8_t first_word[8], const FrameLimits& limits) {
  uint64_t segment_count = static_cast<uint64_t>(ReadLe32(first_word)) + 1;
  if (segment_count > limits.max_segments) {
    return InvalidArgumentError("frame declares " + std::to_string(segment_count) + " segments (limit " +
                                std::to_string(limits.max_segments) + ")");
  }
  // 4 bytes for the count, 4 per segment, padded to a word.
  size_t bytes = 4 + 4 * segment_count;
  return (bytes + 7) / 8 * 8;
}

Result<size_t> FrameBytes(const uint8_t* table, size_t table_bytes, const FrameLimits& limits) {
  uint64_t segment_count = static_cast<uint64_t>(ReadLe32(table)) + 1;
  uint64_t words = 0;
  for (uint64_t i = 0; i < segment_count; ++i) {
    if (4 + 4 * (i + 1) > table_bytes) return InvalidArgumentError("truncated segment table");
    words += ReadLe32(table + 4 + 4 * i);
  }
  if (words == 0) return InvalidArgumentError("frame has no content");
  uint64_t total = table_bytes + words * 8;
  if (total > limits.max_message_bytes) {
    return ResourceExhaustedError("frame of " + std::to_string(total) + " bytes exceeds the limit of " +
                                  std::to_string(limits.max_message_bytes) + " bytes");
  }
  return static_cast<size_t>(total);
}

Message::Message(kj::Array<capnp::word> words, const FrameLimits& limits)
    : words_(kj::mv(words)), reader_(words_.asPtr(), Options(limits)), envelope_(reader_.getRoot<proto::Envelope>()) {}

Result<std::shared_ptr<const Message>> Message::Parse(kj::Array<capnp::word> words, const FrameLimits& limits) {
  std::shared_ptr<Message> msg;
  kj::Maybe<kj::Exception> failure = kj::runCatchingExceptions([&]() {
    msg.reset(new Message(kj::mv(words), limits));
    // Walk the whole message once: bounds, pointer validity and the traversal limit.
    (void)msg->reader_.getRoot<capnp::AnyPointer>().targetSize();
    // Reject trailing garbage after the declared segments: FlatArrayMessageReader tolerates it.
    if (msg->reader_.getEnd() != msg->words_.end()) {
      KJ_FAIL_REQUIRE("frame has bytes after its last segment");
    }
    TouchAll(capnp::DynamicStruct::Reader(msg->envelope_), 0);
  });
  KJ_IF_MAYBE(e, failure) {
    return InvalidArgumentError(std::string("malformed message: ") + e->getDescription().cStr());
  }
  return std::shared_ptr<const Message>(std::move(msg));
}

kj::Array<capnp::word> Serialize(capnp::MessageBuilder& builder) { return capnp::messageToFlatArray(builder); }

const char* EnvelopeKind(proto::Envelope::Reader env) {
  switch (env.which()) {
    case proto::Envelope::CHALLENGE: return "challenge";
    case proto::Envelope::AUTH_RESPONSE: return "authResponse";
    case proto::Envelope::AUTH_RESULT: return "authResult";
    case proto::Envelope::ERROR: return "error";
    case proto::Envelope::REGISTER_WORKER: return "registerWorker";
    case proto::Envelope::REGISTER_REPLY: return "registerReply";
    case proto::Envelope::HEARTBEAT: return "heartbeat";
    case proto::Envelope::HEARTBEAT_REPLY: return "heartbeatReply";
    case proto::Envelope::ASSIGNMENT: return "assignment";
    case proto::Envelope::ASSIGNMENT_ACK: return "assignmentAck";
    case proto::Envelope::STEP_REPORT: return "stepReport";
    case proto::Envelope::RELEASE: return "release";
    case proto::Envelope::DRAIN: return "drain";
    case proto::Envelope::DRAINED: return "drained";
    case proto::Envelope::SUBMIT: return "submit";
    case proto::Envelope::SUBMIT_REPLY: return "submitReply";
    case proto::Envelope::LIST_JOBS: return "listJobs";
    case proto::Envelope::LIST_JOBS_REPLY: return "listJobsReply";
    case proto::Envelope::JOB_STATUS: return "jobStatus";
    case proto::Envelope::JOB_STATUS_REPLY: return "jobStatusReply";
    case proto::Envelope::LIST_WORKERS: return "listWorkers";
    case proto::Envelope::LIST_WORKERS_REPLY: return "listWorkersReply";
    case proto::Envelope::DETACH: return "detach";
    case proto::Envelope::CANCEL: return "cancel";
    case proto::Envelope::ACK: return "ack";
    case proto::Envelope::CLUSTER_INFO: return "clusterInfo";
    case proto::Envelope::CLUSTER_INFO_REPLY: return "clusterInfoReply";
    case proto::Envelope::SHUTDOWN: return "shutdown";
    case proto::Envelope::CHECKPOINT_SHARD: return "checkpointShard";
    case proto::Envelope::LIST_CHECKPOINTS: return "listCheckpoints";
    case proto::Envelope::LIST_CHECKPOINTS_REPLY: return "listCheckpointsReply";
    case proto::Envelope::RANK_FAILED: return "rankFailed";
  }
  return "unknown";
}

}  // namespace shoal::protocol
