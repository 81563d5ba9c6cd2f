// A Connection that records what is sent to it, for driving coordinator actors by hand in unit tests.
#pragma once

#include <capnp/message.h>
#include <capnp/serialize.h>

#include <mutex>
#include <vector>

#include "protocol/connection.h"

namespace shoal::testing {

class FakeConnection : public protocol::Connection {
 public:
  FakeConnection(proto::Role role, std::string name, uint64_t id) : role_(role), name_(std::move(name)), id_(id) {}

  void Send(capnp::MessageBuilder& envelope) override { Record(envelope); }
  void Call(capnp::MessageBuilder& envelope, std::chrono::milliseconds, protocol::CallCallback done) override {
    Record(envelope);
    done(UnavailableError("FakeConnection does not answer calls"));
  }
  void Reply(const protocol::Message& request, capnp::MessageBuilder& reply) override {
    reply.getRoot<proto::Envelope>().setReplyTo(request.envelope().getId());
    Record(reply);
  }
  void ReplyError(const protocol::Message& request, const Status& status) override {
    capnp::MallocMessageBuilder b;
    auto env = b.initRoot<proto::Envelope>();
    env.setReplyTo(request.envelope().getId());
    env.initError().setCode(static_cast<int32_t>(status.code()));
    env.getError().setMessage(status.message());
    Record(b);
  }
  void Close(const Status&) override { open_ = false; }
  bool is_open() const override { return open_; }
  proto::Role peer_role() const override { return role_; }
  const std::string& peer_name() const override { return name_; }
  const std::string& peer_address() const override { return name_; }
  uint64_t connection_id() const override { return id_; }

  std::vector<protocol::MessagePtr> TakeSent() {
    std::lock_guard<std::mutex> lock(mu_);
    return std::move(sent_);
  }

 private:
  void Record(capnp::MessageBuilder& b) {
    auto msg = protocol::Message::Parse(capnp::messageToFlatArray(b), protocol::FrameLimits{});
    std::lock_guard<std::mutex> lock(mu_);
    sent_.push_back(*msg);
  }
  proto::Role role_;
  std::string name_;
  uint64_t id_;
  bool open_ = true;
  std::mutex mu_;
  std::vector<protocol::MessagePtr> sent_;
};

// Builds a parsed request message.
template <typename Fill>
protocol::MessagePtr MakeMessage(uint64_t id, Fill fill) {
  capnp::MallocMessageBuilder b;
  auto env = b.initRoot<proto::Envelope>();
  env.setId(id);
  fill(env);
  return *protocol::Message::Parse(capnp::messageToFlatArray(b), protocol::FrameLimits{});
}

}  // namespace shoal::testing
