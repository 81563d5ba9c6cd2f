// The control-plane transport: framed Cap'n Proto messages over Boost.Asio TCP, authenticated by an HMAC
// challenge-response over the cluster token, with request/reply correlation and per-call timeouts.
//
// Connection states (one line per transition):
//   HANDSHAKE --peer proved the token--------------------> OPEN      (on_open runs)
//   HANDSHAKE --bad proof / wrong frame / timeout---------> CLOSED    (logged; nothing else affected)
//   OPEN      --oversized or malformed frame, read error--> CLOSED    (pending calls fail Unavailable)
//   OPEN      --Close(status)----------------------------> CLOSED
// Every callback runs on the connection's own strand. Frames that fail validation never reach a handler.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "common/status.h"
#include "protocol/auth.h"
#include "protocol/message.h"

namespace boost::asio {
class io_context;
}

namespace shoal::protocol {

struct TransportOptions {
  FrameLimits limits;
  FrameLimits handshake_limits{4096, 4, 1024, 8};  // before authentication, frames must be tiny
  std::chrono::milliseconds handshake_timeout{5000};
  std::chrono::milliseconds default_call_timeout{10000};
};

class Connection;
using ConnectionPtr = std::shared_ptr<Connection>;

struct ConnectionHandlers {
  // Authenticated; the peer's role and name are known.
  std::function<void(const ConnectionPtr&)> on_open;
  // A message that is not a reply to one of our calls.
  std::function<void(const ConnectionPtr&, MessagePtr)> on_message;
  // Closed (by either side, or refused); runs exactly once, also for connections that never opened.
  std::function<void(const ConnectionPtr&, const Status&)> on_close;
};

using CallCallback = std::function<void(Result<MessagePtr>)>;

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  virtual ~Connection() = default;

  // Sends an envelope (the builder's root must be a proto::Envelope). Assigns `id` if it is 0.
  // Thread-safe; messages on one connection are delivered in order.
  virtual void Send(capnp::MessageBuilder& envelope) = 0;
  // Sends a request and calls `done` with the reply (an envelope whose replyTo is the request's id), or with
  // DeadlineExceeded after `timeout`, or Unavailable if the connection closes first. An `error` reply is
  // turned into its Status. `done` runs on the connection's strand.
  virtual void Call(capnp::MessageBuilder& envelope, std::chrono::milliseconds timeout, CallCallback done) = 0;
  // Replies to `request` (sets replyTo). `reply`'s root must be an Envelope.
  virtual void Reply(const Message& request, capnp::MessageBuilder& reply) = 0;
  // Replies to `request` with an error envelope.
  virtual void ReplyError(const Message& request, const Status& status) = 0;
  virtual void Close(const Status& reason) = 0;

  virtual bool is_open() const = 0;
  virtual proto::Role peer_role() const = 0;
  virtual const std::string& peer_name() const = 0;    // as the peer announced itself
  virtual const std::string& peer_address() const = 0; // "127.0.0.1:53122"
  virtual uint64_t connection_id() const = 0;           // unique in this process
};

class Server {
 public:
  virtual ~Server() = default;
  virtual uint16_t port() const = 0;
  virtual void Stop() = 0;
  // Counters for tests and metrics.
  virtual uint64_t refused_count() const = 0;
};

// Listens on host:port (port 0 = any). Accepted connections run the server side of the handshake; handlers
// fire per connection. The io_context must outlive the server and its connections.
Result<std::unique_ptr<Server>> Listen(boost::asio::io_context& io, const std::string& host, uint16_t port,
                                       Token token, TransportOptions options, ConnectionHandlers handlers);

// Connects and runs the client side of the handshake. `on_open` of `handlers` fires when authenticated;
// `connected` is called once with the open connection or the reason it failed.
void Dial(boost::asio::io_context& io, const std::string& host, uint16_t port, Token token, proto::Role role,
          std::string name, TransportOptions options, ConnectionHandlers handlers,
          std::function<void(Result<ConnectionPtr>)> connected);

// "host:port" -> (host, port).
Result<std::pair<std::string, uint16_t>> ParseHostPort(const std::string& address);

}  // namespace shoal::protocol
