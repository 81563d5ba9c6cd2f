#include "protocol/blocking_client.h"

#include <boost/asio/io_context.hpp>
#include <deque>

namespace shoal::protocol {

struct BlockingClient::Impl {
  boost::asio::io_context io;
  std::deque<MessagePtr> inbox;
  Status closed;
  bool is_closed = false;
};

BlockingClient::BlockingClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

BlockingClient::~BlockingClient() {
  if (conn_) {
    conn_->Close(Status::OK());
    impl_->io.restart();
    impl_->io.run_for(std::chrono::milliseconds(200));
  }
}

Result<std::unique_ptr<BlockingClient>> BlockingClient::Connect(const std::string& address, const Token& token,
                                                                proto::Role role, const std::string& name,
                                                                std::chrono::milliseconds timeout,
                                                                TransportOptions options) {
  ASSIGN_OR_RETURN(auto host_port, ParseHostPort(address));
  auto impl = std::make_unique<Impl>();
  Impl* raw = impl.get();
  ConnectionHandlers handlers;
  handlers.on_message = [raw](const ConnectionPtr&, MessagePtr m) { raw->inbox.push_back(std::move(m)); };
  handlers.on_close = [raw](const ConnectionPtr&, const Status& s) {
    raw->is_closed = true;
    raw->closed = s.ok() ? UnavailableError("connection closed") : s;
  };
  std::optional<Result<ConnectionPtr>> result;
  options.handshake_timeout = timeout;
  Dial(raw->io, host_port.first, host_port.second, token, role, name, options, std::move(handlers),
       [&result](Result<ConnectionPtr> r) { result.emplace(std::move(r)); });
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!result.has_value() && std::chrono::steady_clock::now() < deadline) {
    raw->io.restart();
    raw->io.run_one_for(deadline - std::chrono::steady_clock::now());
  }
  if (!result.has_value()) {
    return DeadlineExceededError("no answer from the coordinator at " + address + " within " +
                                 std::to_string(timeout.count()) + " ms");
  }
  if (!result->ok()) return result->status();
  std::unique_ptr<BlockingClient> client(new BlockingClient(std::move(impl)));
  client->conn_ = **result;
  return client;
}

Result<MessagePtr> BlockingClient::Call(capnp::MessageBuilder& envelope, std::chrono::milliseconds timeout) {
  std::optional<Result<MessagePtr>> result;
  conn_->Call(envelope, timeout, [&result](Result<MessagePtr> r) { result.emplace(std::move(r)); });
  while (!result.has_value()) {
    impl_->io.restart();
    if (impl_->io.run_one() == 0) break;
  }
  if (!result.has_value()) return UnavailableError("connection closed before the reply arrived");
  return std::move(*result);
}

Result<MessagePtr> BlockingClient::Receive(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (impl_->inbox.empty() && !impl_->is_closed && std::chrono::steady_clock::now() < deadline) {
    impl_->io.restart();
    impl_->io.run_one_for(deadline - std::chrono::steady_clock::now());
  }
  if (!impl_->inbox.empty()) {
    auto m = impl_->inbox.front();
    impl_->inbox.pop_front();
    return m;
  }
  if (impl_->is_closed) return impl_->closed;
  return DeadlineExceededError("no message within " + std::to_string(timeout.count()) + " ms");
}

void BlockingClient::Send(capnp::MessageBuilder& envelope) {
  conn_->Send(envelope);
  impl_->io.restart();
  impl_->io.poll();
}

}  // namespace shoal::protocol
