// A synchronous control-plane client for the CLI and tests: connect + authenticate, then request/reply
// calls that block the calling thread. Runs its own io_context; not thread-safe.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "common/status.h"
#include "protocol/auth.h"
#include "protocol/connection.h"

namespace shoal::protocol {

class BlockingClient {
 public:
  static Result<std::unique_ptr<BlockingClient>> Connect(const std::string& address, const Token& token,
                                                         proto::Role role, const std::string& name,
                                                         std::chrono::milliseconds timeout,
                                                         TransportOptions options = {});
  ~BlockingClient();

  // Sends the envelope and waits for its reply (or an error Status: the reply's error, DeadlineExceeded,
  // Unavailable).
  Result<MessagePtr> Call(capnp::MessageBuilder& envelope, std::chrono::milliseconds timeout);
  // Waits for the next unsolicited message (not a reply), e.g. pushed by the coordinator.
  Result<MessagePtr> Receive(std::chrono::milliseconds timeout);
  void Send(capnp::MessageBuilder& envelope);
  Connection& connection() { return *conn_; }

 private:
  struct Impl;
  explicit BlockingClient(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  ConnectionPtr conn_;
};

}  // namespace shoal::protocol
