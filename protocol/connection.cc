#include "protocol/connection.h"

#include <spdlog/spdlog.h>

#include <atomic>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <deque>
#include <map>

#include "common/ids.h"

namespace shoal::protocol {
namespace asio = boost::asio;
using tcp = asio::ip::tcp;

namespace {

std::atomic<uint64_t> g_next_connection_id{1};

std::string Endpoint(const tcp::socket& s) {
  boost::system::error_code ec;
  auto ep = s.remote_endpoint(ec);
  if (ec) return "?";
  return ep.address().to_string() + ":" + std::to_string(ep.port());
}

std::vector<uint8_t> ToVec(capnp::Data::Reader d) { return std::vector<uint8_t>(d.begin(), d.end()); }

class ConnectionImpl final : public Connection {
 public:
  enum class Side { kServer, kClient };
  enum class State { kHandshake, kOpen, kClosed };

  ConnectionImpl(asio::io_context& io, tcp::socket socket, Side side, Token token, TransportOptions options,
                 ConnectionHandlers handlers)
      : strand_(asio::make_strand(io)),
        socket_(std::move(socket)),
        handshake_timer_(strand_),
        side_(side),
        token_(std::move(token)),
        options_(options),
        handlers_(std::move(handlers)),
        id_(g_next_connection_id++) {
    address_ = Endpoint(socket_);
  }

  // Client side parameters.
  proto::Role my_role_ = proto::Role::CLI;
  std::string my_name_;
  std::function<void(Result<ConnectionPtr>)> connected_;
  std::function<void()> on_refused_;  // server: counts refusals

  void Start() {
    auto self = std::static_pointer_cast<ConnectionImpl>(shared_from_this());
    asio::dispatch(strand_, [self] {
      self->handshake_timer_.expires_after(self->options_.handshake_timeout);
      self->handshake_timer_.async_wait([self](const boost::system::error_code& ec) {
        if (!ec && self->state_ == State::kHandshake) {
          self->Refuse(DeadlineExceededError("handshake did not complete in time"));
        }
      });
      if (self->side_ == Side::kServer) {
        self->server_nonce_ = RandomBytes(kNonceBytes);
        capnp::MallocMessageBuilder b;
        auto env = b.initRoot<proto::Envelope>();
        auto ch = env.initChallenge();
        ch.setServerNonce(kj::arrayPtr(self->server_nonce_.data(), self->server_nonce_.size()));
        ch.setProtocolVersion(kProtocolVersion);
        self->EnqueueOnStrand(Serialize(b));
      }
      self->ReadHeader();
    });
  }

  void Send(capnp::MessageBuilder& builder) override {
    auto env = builder.getRoot<proto::Envelope>();
    if (env.getId() == 0) env.setId(next_id_++);
    auto frame = Serialize(builder);
    auto self = std::static_pointer_cast<ConnectionImpl>(shared_from_this());
    auto shared = std::make_shared<kj::Array<capnp::word>>(kj::mv(frame));
    asio::post(strand_, [self, shared] { self->EnqueueOnStrand(kj::mv(*shared)); });
  }

  void Call(capnp::MessageBuilder& builder, std::chrono::milliseconds timeout, CallCallback done) override {
    auto env = builder.getRoot<proto::Envelope>();
    uint64_t id = next_id_++;
    env.setId(id);
    auto shared = std::make_shared<kj::Array<capnp::word>>(Serialize(builder));
    auto self = std::static_pointer_cast<ConnectionImpl>(shared_from_this());
    asio::post(strand_, [self, shared, id, timeout, done = std::move(done)]() mutable {
      if (self->state_ != State::kOpen) {
        done(UnavailableError("connection to " + self->address_ + " is closed"));
        return;
      }
      auto timer = std::make_shared<asio::steady_timer>(self->strand_, timeout);
      self->pending_.emplace(id, Pending{std::move(done), timer});
      timer->async_wait([self, id, timeout](const boost::system::error_code& ec) {
        if (ec) return;
        auto it = self->pending_.find(id);
        if (it == self->pending_.end()) return;
        auto cb = std::move(it->second.done);
        self->pending_.erase(it);
        cb(DeadlineExceededError("no reply from " + self->address_ + " within " +
                                 std::to_string(timeout.count()) + " ms"));
      });
      self->EnqueueOnStrand(kj::mv(*shared));
    });
  }

  void Reply(const Message& request, capnp::MessageBuilder& reply) override {
    reply.getRoot<proto::Envelope>().setReplyTo(request.envelope().getId());
    Send(reply);
  }

  void ReplyError(const Message& request, const Status& status) override {
    capnp::MallocMessageBuilder b;
    auto env = b.initRoot<proto::Envelope>();
    auto err = env.initError();
    err.setCode(static_cast<int32_t>(status.code()));
    err.setMessage(status.message());
    Reply(request, b);
  }

  void Close(const Status& reason) override {
    auto self = std::static_pointer_cast<ConnectionImpl>(shared_from_this());
    asio::dispatch(strand_, [self, reason] { self->CloseOnStrand(reason); });
  }

  bool is_open() const override { return state_.load() == State::kOpen; }
  proto::Role peer_role() const override { return peer_role_; }
  const std::string& peer_name() const override { return peer_name_; }
  const std::string& peer_address() const override { return address_; }
  uint64_t connection_id() const override { return id_; }

 private:
  struct Pending {
    CallCallback done;
    std::shared_ptr<asio::steady_timer> timer;
  };

  const FrameLimits& limits() const {
    return state_ == State::kOpen ? options_.limits : options_.handshake_limits;
  }

  void ReadHeader() {
    auto self = std::static_pointer_cast<ConnectionImpl>(shared_from_this());
    asio::async_read(socket_, asio::buffer(header_, 8),
                     asio::bind_executor(strand_, [self](const boost::system::error_code& ec, size_t) {
                       if (ec) return self->OnReadError(ec);
                       self->OnHeader();
                     }));
  }

  void OnHeader() {
    auto table = SegmentTableBytes(header_, limits());
    if (!table.ok()) return Refuse(table.status());
    table_.assign(header_, header_ + 8);
    if (*table == 8) return OnTable();
    table_.resize(*table);
    auto self = std::static_pointer_cast<ConnectionImpl>(shared_from_this());
    asio::async_read(socket_, asio::buffer(table_.data() + 8, *table - 8),
                     asio::bind_executor(strand_, [self](const boost::system::error_code& ec, size_t) {
                       if (ec) return self->OnReadError(ec);
                       self->OnTable();
                     }));
  }

  void OnTable() {
    auto total = FrameBytes(table_.data(), table_.size(), limits());
    if (!total.ok()) return Refuse(total.status());
    frame_ = kj::heapArray<capnp::word>(*total / sizeof(capnp::word));
    std::memcpy(frame_.begin(), table_.data(), table_.size());
    size_t rest = *total - table_.size();
    auto self = std::static_pointer_cast<ConnectionImpl>(shared_from_this());
    asio::async_read(socket_,
                     asio::buffer(reinterpret_cast<uint8_t*>(frame_.begin()) + table_.size(), rest),
                     asio::bind_executor(strand_, [self](const boost::system::error_code& ec, size_t) {
                       if (ec) return self->OnReadError(ec);
                       self->OnFrame();
                     }));
  }

  void OnFrame() {
    auto msg = Message::Parse(kj::mv(frame_), limits());
    if (!msg.ok()) return Refuse(msg.status());
    if (state_ == State::kHandshake) {
      Status s = side_ == Side::kServer ? ServerHandshake(**msg) : ClientHandshake(**msg);
      if (!s.ok()) return Refuse(s);
    } else if (state_ == State::kOpen) {
      Dispatch(*msg);
    }
    if (state_ != State::kClosed) ReadHeader();
  }

  void Dispatch(const MessagePtr& msg) {
    auto env = msg->envelope();
    uint64_t reply_to = env.getReplyTo();
    if (reply_to != 0) {
      auto it = pending_.find(reply_to);
      if (it == pending_.end()) return;  // late reply to a call that timed out
      auto pending = std::move(it->second);
      pending_.erase(it);
      pending.timer->cancel();
      if (env.isError()) {
        auto err = env.getError();
        int code = err.getCode();
        if (code <= 0 || code > static_cast<int>(StatusCode::kUnauthenticated)) code = static_cast<int>(StatusCode::kUnknown);
        pending.done(Status(static_cast<StatusCode>(code), std::string(err.getMessage().cStr())));
      } else {
        pending.done(msg);
      }
      return;
    }
    if (handlers_.on_message) handlers_.on_message(shared_from_this(), msg);
  }

  Status ServerHandshake(const Message& msg) {
    auto env = msg.envelope();
    if (!env.isAuthResponse()) return UnauthenticatedError(std::string("expected authResponse, got ") + EnvelopeKind(env));
    auto resp = env.getAuthResponse();
    if (resp.getProtocolVersion() != kProtocolVersion) {
      return FailedPreconditionError("protocol version " + std::to_string(resp.getProtocolVersion()) +
                                     " is not supported (this coordinator speaks " +
                                     std::to_string(kProtocolVersion) + ")");
    }
    auto client_nonce = ToVec(resp.getClientNonce());
    if (client_nonce.size() != kNonceBytes) return UnauthenticatedError("bad client nonce");
    std::string name = resp.getName().cStr();
    auto expected = ClientMac(token_, server_nonce_, client_nonce, static_cast<uint32_t>(resp.getRole()), name);
    auto mac = resp.getMac();
    capnp::MallocMessageBuilder b;
    auto out = b.initRoot<proto::Envelope>();
    auto result = out.initAuthResult();
    if (!MacEquals(mac.begin(), mac.size(), expected)) {
      result.setOk(false);
      result.setMessage("authentication failed: wrong cluster token");
      EnqueueOnStrand(Serialize(b));
      return UnauthenticatedError("peer '" + name + "' failed the token challenge (wrong token)");
    }
    auto server_mac = ServerMac(token_, client_nonce, server_nonce_);
    result.setOk(true);
    result.setServerMac(kj::arrayPtr(server_mac.data(), server_mac.size()));
    EnqueueOnStrand(Serialize(b));
    peer_role_ = resp.getRole();
    peer_name_ = name;
    Open();
    return Status::OK();
  }

  Status ClientHandshake(const Message& msg) {
    auto env = msg.envelope();
    if (env.isChallenge()) {
      if (!server_nonce_.empty()) return UnauthenticatedError("second challenge");
      auto ch = env.getChallenge();
      server_nonce_ = ToVec(ch.getServerNonce());
      if (server_nonce_.size() != kNonceBytes) return UnauthenticatedError("bad server nonce");
      client_nonce_ = RandomBytes(kNonceBytes);
      auto mac = ClientMac(token_, server_nonce_, client_nonce_, static_cast<uint32_t>(my_role_), my_name_);
      capnp::MallocMessageBuilder b;
      auto out = b.initRoot<proto::Envelope>();
      auto resp = out.initAuthResponse();
      resp.setRole(my_role_);
      resp.setName(my_name_);
      resp.setClientNonce(kj::arrayPtr(client_nonce_.data(), client_nonce_.size()));
      resp.setMac(kj::arrayPtr(mac.data(), mac.size()));
      resp.setProtocolVersion(kProtocolVersion);
      EnqueueOnStrand(Serialize(b));
      return Status::OK();
    }
    if (env.isAuthResult() && !server_nonce_.empty()) {
      auto res = env.getAuthResult();
      if (!res.getOk()) {
        return UnauthenticatedError(std::string("coordinator refused us: ") + res.getMessage().cStr() +
                                    " (check --token-file / SHOAL_TOKEN_FILE)");
      }
      auto expected = ServerMac(token_, client_nonce_, server_nonce_);
      auto mac = res.getServerMac();
      if (!MacEquals(mac.begin(), mac.size(), expected)) {
        return UnauthenticatedError("the server did not prove it knows the cluster token");
      }
      peer_role_ = proto::Role::CLI;
      peer_name_ = "coordinator";
      Open();
      return Status::OK();
    }
    return UnauthenticatedError(std::string("unexpected ") + EnvelopeKind(env) + " during handshake");
  }

  void Open() {
    state_ = State::kOpen;
    handshake_timer_.cancel();
    auto self = shared_from_this();
    if (connected_) {
      auto cb = std::move(connected_);
      connected_ = nullptr;
      cb(self);
    }
    if (handlers_.on_open) handlers_.on_open(self);
  }

  void EnqueueOnStrand(kj::Array<capnp::word> frame) {
    if (state_ == State::kClosed) return;
    write_queue_.push_back(kj::mv(frame));
    if (write_queue_.size() == 1) WriteNext();
  }

  void WriteNext() {
    auto& front = write_queue_.front();
    auto self = std::static_pointer_cast<ConnectionImpl>(shared_from_this());
    asio::async_write(socket_, asio::buffer(front.begin(), front.size() * sizeof(capnp::word)),
                      asio::bind_executor(strand_, [self](const boost::system::error_code& ec, size_t) {
                        if (ec) return self->OnReadError(ec);
                        if (self->write_queue_.empty()) return;
                        self->write_queue_.pop_front();
                        if (!self->write_queue_.empty()) self->WriteNext();
                      }));
  }

  void OnReadError(const boost::system::error_code& ec) {
    if (state_ == State::kClosed) return;
    if (ec == asio::error::eof || ec == asio::error::connection_reset) {
      CloseOnStrand(UnavailableError("peer " + address_ + " closed the connection"));
    } else {
      CloseOnStrand(UnavailableError("connection to " + address_ + ": " + ec.message()));
    }
  }

  // A frame broke the rules: log it, drop the peer. Nothing else is affected.
  void Refuse(const Status& why) {
    if (state_ == State::kClosed) return;
    spdlog::warn("refusing connection {} from {} ({}): {}", id_, address_,
                 state_ == State::kHandshake ? "unauthenticated" : peer_name_, why.ToString());
    if (on_refused_) on_refused_();
    if (state_ == State::kHandshake && side_ == Side::kServer && !write_queue_.empty()) {
      // Let an AuthResult{ok=false} reach the peer before we hang up.
      CloseAfterFlush(why);
      return;
    }
    CloseOnStrand(why);
  }

  void CloseAfterFlush(const Status& why) {
    auto self = std::static_pointer_cast<ConnectionImpl>(shared_from_this());
    auto timer = std::make_shared<asio::steady_timer>(strand_, std::chrono::milliseconds(100));
    timer->async_wait([self, timer, why](const boost::system::error_code&) { self->CloseOnStrand(why); });
    state_ = State::kClosed;  // no more reads or handlers
    closed_status_ = why;
  }

  void CloseOnStrand(const Status& reason) {
    bool was_closed = state_ == State::kClosed && fired_close_;
    if (was_closed) return;
    state_ = State::kClosed;
    fired_close_ = true;
    boost::system::error_code ignored;
    socket_.shutdown(tcp::socket::shutdown_both, ignored);
    socket_.close(ignored);
    handshake_timer_.cancel();
    auto pending = std::move(pending_);
    pending_.clear();
    for (auto& [id, p] : pending) {
      p.timer->cancel();
      p.done(UnavailableError("connection to " + address_ + " closed: " + reason.message()));
    }
    auto self = shared_from_this();
    if (connected_) {
      auto cb = std::move(connected_);
      connected_ = nullptr;
      cb(reason.ok() ? UnavailableError("connection closed") : reason);
    }
    if (handlers_.on_close) handlers_.on_close(self, reason);
    handlers_ = {};  // break reference cycles through captured ConnectionPtrs
  }

  asio::strand<asio::io_context::executor_type> strand_;
  tcp::socket socket_;
  asio::steady_timer handshake_timer_;
  Side side_;
  Token token_;
  TransportOptions options_;
  ConnectionHandlers handlers_;
  uint64_t id_;
  std::string address_;
  std::atomic<State> state_{State::kHandshake};
  bool fired_close_ = false;
  Status closed_status_;
  std::atomic<uint64_t> next_id_{1};
  std::vector<uint8_t> server_nonce_, client_nonce_;
  proto::Role peer_role_ = proto::Role::CLI;
  std::string peer_name_;
  uint8_t header_[8];
  std::vector<uint8_t> table_;
  kj::Array<capnp::word> frame_;
  std::deque<kj::Array<capnp::word>> write_queue_;
  std::map<uint64_t, Pending> pending_;

};

class ServerImpl final : public Server, public std::enable_shared_from_this<ServerImpl> {
 public:
  ServerImpl(asio::io_context& io, Token token, TransportOptions options, ConnectionHandlers handlers)
      : io_(io), acceptor_(io), token_(std::move(token)), options_(options), handlers_(std::move(handlers)) {}

  Status Bind(const std::string& host, uint16_t port) {
    boost::system::error_code ec;
    auto address = asio::ip::make_address(host == "localhost" ? "127.0.0.1" : host, ec);
    if (ec) return InvalidArgumentError("cannot listen on '" + host + "': not an IP address");
    tcp::endpoint ep(address, port);
    acceptor_.open(ep.protocol(), ec);
    if (!ec) acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) acceptor_.bind(ep, ec);
    if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) {
      return UnavailableError("cannot listen on " + host + ":" + std::to_string(port) + ": " + ec.message());
    }
    port_ = acceptor_.local_endpoint().port();
    return Status::OK();
  }

  void Accept() {
    auto self = shared_from_this();
    acceptor_.async_accept([self](const boost::system::error_code& ec, tcp::socket socket) {
      if (ec) {
        if (ec == asio::error::operation_aborted) return;
        spdlog::warn("accept failed: {}", ec.message());
      } else {
        boost::system::error_code ignored;
        socket.set_option(tcp::no_delay(true), ignored);
        auto conn = std::make_shared<ConnectionImpl>(self->io_, std::move(socket), ConnectionImpl::Side::kServer,
                                                     self->token_, self->options_, self->handlers_);
        std::weak_ptr<ServerImpl> weak = self;
        conn->on_refused_ = [weak] {
          if (auto s = weak.lock()) s->refused_++;
        };
        conn->Start();
      }
      if (self->acceptor_.is_open()) self->Accept();
    });
  }

  uint16_t port() const override { return port_; }
  void Stop() override {
    boost::system::error_code ignored;
    acceptor_.close(ignored);
  }
  uint64_t refused_count() const override { return refused_.load(); }

 private:
  asio::io_context& io_;
  tcp::acceptor acceptor_;
  Token token_;
  TransportOptions options_;
  ConnectionHandlers handlers_;
  uint16_t port_ = 0;
  std::atomic<uint64_t> refused_{0};
};

// Keeps the shared ServerImpl alive behind the unique_ptr the caller owns.
class ServerHandle final : public Server {
 public:
  explicit ServerHandle(std::shared_ptr<ServerImpl> impl) : impl_(std::move(impl)) {}
  ~ServerHandle() override { impl_->Stop(); }
  uint16_t port() const override { return impl_->port(); }
  void Stop() override { impl_->Stop(); }
  uint64_t refused_count() const override { return impl_->refused_count(); }

 private:
  std::shared_ptr<ServerImpl> impl_;
};

}  // namespace

Result<std::unique_ptr<Server>> Listen(asio::io_context& io, const std::string& host, uint16_t port, Token token,
                                       TransportOptions options, ConnectionHandlers handlers) {
  auto impl = std::make_shared<ServerImpl>(io, std::move(token), options, std::move(handlers));
  RETURN_IF_ERROR(impl->Bind(host, port));
  impl->Accept();
  return std::unique_ptr<Server>(new ServerHandle(std::move(impl)));
}

void Dial(asio::io_context& io, const std::string& host, uint16_t port, Token token, proto::Role role,
          std::string name, TransportOptions options, ConnectionHandlers handlers,
          std::function<void(Result<ConnectionPtr>)> connected) {
  auto resolver = std::make_shared<tcp::resolver>(io);
  resolver->async_resolve(
      host, std::to_string(port),
      [&io, resolver, host, port, token = std::move(token), role, name = std::move(name), options,
       handlers = std::move(handlers), connected = std::move(connected)](
          const boost::system::error_code& ec, tcp::resolver::results_type results) mutable {
        if (ec) {
          connected(UnavailableError("cannot resolve " + host + ": " + ec.message()));
          return;
        }
        auto socket = std::make_shared<tcp::socket>(io);
        asio::async_connect(
            *socket, results,
            [&io, socket, host, port, token = std::move(token), role, name = std::move(name), options,
             handlers = std::move(handlers), connected = std::move(connected)](
                const boost::system::error_code& ec2, const tcp::endpoint&) mutable {
              if (ec2) {
                connected(UnavailableError("cannot connect to " + host + ":" + std::to_string(port) + ": " +
                                           ec2.message()));
                return;
              }
              boost::system::error_code ignored;
              socket->set_option(tcp::no_delay(true), ignored);
              auto conn = std::make_shared<ConnectionImpl>(io, std::move(*socket), ConnectionImpl::Side::kClient,
                                                           std::move(token), options, std::move(handlers));
              conn->my_role_ = role;
              conn->my_name_ = std::move(name);
              conn->connected_ = std::move(connected);
              conn->Start();
            });
      });
}

Result<std::pair<std::string, uint16_t>> ParseHostPort(const std::string& address) {
  auto colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == address.size()) {
    return InvalidArgumentError("address '" + address + "' is not HOST:PORT");
  }
  std::string host = address.substr(0, colon);
  std::string port_text = address.substr(colon + 1);
  char* end = nullptr;
  long port = std::strtol(port_text.c_str(), &end, 10);
  if (*end != '\0' || port < 0 || port > 65535) {
    return InvalidArgumentError("address '" + address + "': port must be 0..65535");
  }
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  return std::make_pair(host, static_cast<uint16_t>(port));
}

}  // namespace shoal::protocol
