#include "coordinator/http_server.h"

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/write.hpp>
#include <optional>

#include "protocol/connection.h"

namespace shoal::coordinator {
namespace asio = boost::asio;
using tcp = asio::ip::tcp;

namespace {

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, const HttpServer::Handler& handler)
      : socket_(std::move(socket)), timer_(socket_.get_executor()), handler_(handler) {}

  void Start() {
    auto self = shared_from_this();
    timer_.expires_after(std::chrono::seconds(5));
    timer_.async_wait([self](const boost::system::error_code& ec) {
      if (!ec) self->socket_.close();
    });
    asio::async_read_until(socket_, buf_, "\r\n\r\n", [self](const boost::system::error_code& ec, size_t) {
      if (ec) return self->timer_.cancel();
      self->Respond();
    });
  }

 private:
  void Respond() {
    std::istream is(&buf_);
    std::string method, target, version;
    is >> method >> target >> version;
    std::string status = "200 OK", type = "text/plain; charset=utf-8", body;
    if (method.empty() || target.empty() || target[0] != '/') {
      status = "400 Bad Request";
      body = "bad request\n";
    } else if (method != "GET") {
      status = "405 Method Not Allowed";
      body = "only GET\n";
    } else {
      auto q = target.find('?');
      auto out = handler_(target.substr(0, q), &type);
      if (out) {
        body = std::move(*out);
      } else {
        status = "404 Not Found";
        body = "not found\n";
      }
    }
    response_ = "HTTP/1.1 " + status + "\r\nContent-Type: " + type + "\r\nContent-Length: " +
                std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
    auto self = shared_from_this();
    asio::async_write(socket_, asio::buffer(response_), [self](const boost::system::error_code&, size_t) {
      boost::system::error_code ignored;
      self->socket_.shutdown(tcp::socket::shutdown_both, ignored);
      self->timer_.cancel();
    });
  }

  tcp::socket socket_;
  asio::steady_timer timer_;
  asio::streambuf buf_{8192};
  const HttpServer::Handler& handler_;
  std::string response_;
};

class HttpServerImpl final : public HttpServer {
 public:
  HttpServerImpl(asio::io_context& io, Handler handler) : acceptor_(io), handler_(std::move(handler)) {}

  Status Bind(const std::string& address) {
    ASSIGN_OR_RETURN(auto hp, protocol::ParseHostPort(address));
    boost::system::error_code ec;
    auto ip = asio::ip::make_address(hp.first == "localhost" ? "127.0.0.1" : hp.first, ec);
    if (ec) return InvalidArgumentError("--http " + address + ": not an IP address");
    tcp::endpoint ep(ip, hp.second);
    acceptor_.open(ep.protocol(), ec);
    if (!ec) acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) acceptor_.bind(ep, ec);
    if (!ec) acceptor_.listen(64, ec);
    if (ec) return UnavailableError("cannot serve HTTP on " + address + ": " + ec.message());
    port_ = acceptor_.local_endpoint().port();
    return Status::OK();
  }

  void Accept() {
    acceptor_.async_accept([this](const boost::system::error_code& ec, tcp::socket socket) {
      if (ec == asio::error::operation_aborted) return;
      if (!ec) std::make_shared<Session>(std::move(socket), handler_)->Start();
      if (acceptor_.is_open()) Accept();
    });
  }

  uint16_t port() const override { return port_; }
  void Stop() override {
    boost::system::error_code ignored;
    acceptor_.close(ignored);
  }

 private:
  tcp::acceptor acceptor_;
  Handler handler_;
  uint16_t port_ = 0;
};

}  // namespace

Result<std::unique_ptr<HttpServer>> HttpServer::Listen(asio::io_context& io, const std::string& address,
                                                       Handler handler) {
  auto server = std::make_unique<HttpServerImpl>(io, std::move(handler));
  RETURN_IF_ERROR(server->Bind(address));
  server->Accept();
  return std::unique_ptr<HttpServer>(std::move(server));
}

}  // namespace shoal::coordinator
