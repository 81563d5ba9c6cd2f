// Real sockets on loopback: handshake, correlation, timeouts, and refusal of bad peers while others go on.
#include <capnp/message.h>
#include <gtest/gtest.h>

#include <atomic>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <thread>

#include "protocol/blocking_client.h"
#include "protocol/connection.h"

namespace shoal::protocol {
namespace {
using namespace std::chrono_literals;

Token MakeToken(uint8_t fill) { return Token{std::vector<uint8_t>(kTokenBytes, fill)}; }

// An echo-ish server: answers clusterInfo with clusterInfoReply naming the peer; ignores "listJobs" (so
// calls time out); counts opens and closes.
class TestServer {
 public:
  explicit TestServer(TransportOptions options = {}) {
    ConnectionHandlers h;
    h.on_open = [this](const ConnectionPtr& c) {
      opened++;
      last_peer_name = c->peer_name();
    };
    h.on_message = [this](const ConnectionPtr& c, MessagePtr m) {
      messages++;
      auto env = m->envelope();
      if (env.isClusterInfo()) {
        capnp::MallocMessageBuilder b;
        auto reply = b.initRoot<proto::Envelope>().initClusterInfoReply();
        reply.setClusterId("test-" + c->peer_name());
        c->Reply(*m, b);
      } else if (env.isCancel()) {
        c->ReplyError(*m, NotFoundError("no job '" + std::string(env.getCancel().getJob().cStr()) + "'"));
      }
    };
    h.on_close = [this](const ConnectionPtr&, const Status&) { closed++; };
    auto s = Listen(io_, "127.0.0.1", 0, MakeToken(0xab), options, h);
    EXPECT_TRUE(s.ok()) << s.status();
    server_ = std::move(*s);
    thread_ = std::thread([this] {
      auto guard = boost::asio::make_work_guard(io_);
      io_.run();
    });
  }
  ~TestServer() {
    server_->Stop();
    io_.stop();
    thread_.join();
  }
  std::string address() const { return "127.0.0.1:" + std::to_string(server_->port()); }
  uint16_t port() const { return server_->port(); }
  uint64_t refused() const { return server_->refused_count(); }

  std::atomic<int> opened{0}, closed{0}, messages{0};
  std::string last_peer_name;

 private:
  boost::asio::io_context io_;
  std::unique_ptr<Server> server_;
  std::thread thread_;
};

Result<std::string> AskClusterInfo(BlockingClient& client) {
  capnp::MallocMessageBuilder b;
  b.initRoot<proto::Envelope>().setClusterInfo();
  ASSIGN_OR_RETURN(auto reply, client.Call(b, 2000ms));
  if (!reply->envelope().isClusterInfoReply()) return InternalError("wrong reply kind");
  return std::string(reply->envelope().getClusterInfoReply().getClusterId().cStr());
}

// Retries until `pred` holds (the server runs on its own thread).
template <typename Pred>
bool Eventually(Pred pred) {
  for (int i = 0; i < 500; ++i) {
    if (pred()) return true;
    std::this_thread::sleep_for(10ms);
  }
  return pred();
}

TEST(TransportTest, AuthenticatedCallGetsItsReply) {
  TestServer server;
  auto client = BlockingClient::Connect(server.address(), MakeToken(0xab), proto::Role::CLI, "alice", 2000ms);
  ASSERT_TRUE(client.ok()) << client.status();
  auto info = AskClusterInfo(**client);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(*info, "test-alice");
  EXPECT_EQ(server.opened.load(), 1);
}

TEST(TransportTest, ErrorRepliesBecomeStatuses) {
  TestServer server;
  auto client = BlockingClient::Connect(server.address(), MakeToken(0xab), proto::Role::CLI, "c", 2000ms);
  ASSERT_TRUE(client.ok());
  capnp::MallocMessageBuilder b;
  b.initRoot<proto::Envelope>().initCancel().setJob("nope");
  auto reply = (*client)->Call(b, 2000ms);
  EXPECT_EQ(reply.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(reply.status().message(), "no job 'nope'");
}

TEST(TransportTest, UnansweredCallTimesOut) {
  TestServer server;
  auto client = BlockingClient::Connect(server.address(), MakeToken(0xab), proto::Role::CLI, "c", 2000ms);
  ASSERT_TRUE(client.ok());
  capnp::MallocMessageBuilder b;
  b.initRoot<proto::Envelope>().setListJobs();
  auto reply = (*client)->Call(b, 100ms);
  EXPECT_EQ(reply.status().code(), StatusCode::kDeadlineExceeded);
  // The connection is still usable afterwards.
  EXPECT_TRUE(AskClusterInfo(**client).ok());
}

TEST(TransportTest, WrongTokenIsRefusedAndOthersKeepWorking) {
  TestServer server;
  auto good = BlockingClient::Connect(server.address(), MakeToken(0xab), proto::Role::CLI, "good", 2000ms);
  ASSERT_TRUE(good.ok());
  auto bad = BlockingClient::Connect(server.address(), MakeToken(0xcd), proto::Role::WORKER, "mallory", 2000ms);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kUnauthenticated) << bad.status();
  EXPECT_NE(bad.status().message().find("token"), std::string::npos);
  EXPECT_TRUE(Eventually([&] { return server.refused() == 1; }));
  EXPECT_EQ(server.opened.load(), 1);  // mallory never opened
  EXPECT_TRUE(AskClusterInfo(**good).ok());
}

TEST(TransportTest, ClientRefusesAServerThatDoesNotKnowTheToken) {
  TestServer server;  // token 0xab
  auto client = BlockingClient::Connect(server.address(), MakeToken(0x11), proto::Role::CLI, "c", 2000ms);
  EXPECT_FALSE(client.ok());
}

// Sends raw bytes on a plain TCP socket, then reads until the server hangs up.
bool ServerHangsUpAfter(uint16_t port, const std::vector<uint8_t>& bytes) {
  boost::asio::io_context io;
  boost::asio::ip::tcp::socket sock(io);
  sock.connect({boost::asio::ip::make_address("127.0.0.1"), port});
  boost::system::error_code ec;
  boost::asio::write(sock, boost::asio::buffer(bytes), ec);
  std::vector<uint8_t> buf(65536);
  for (;;) {
    sock.read_some(boost::asio::buffer(buf), ec);
    if (ec) return ec == boost::asio::error::eof || ec == boost::asio::error::connection_reset;
  }
}

TEST(TransportTest, GarbageFrameIsRefusedAndOthersKeepWorking) {
  TestServer server;
  auto good = BlockingClient::Connect(server.address(), MakeToken(0xab), proto::Role::CLI, "good", 2000ms);
  ASSERT_TRUE(good.ok());
  std::vector<uint8_t> garbage = {0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00,   // 1 segment of 2 words
                                  0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,   // a far pointer to nowhere
                                  0xde, 0xad, 0xbe, 0xef, 0xde, 0xad, 0xbe, 0xef};
  EXPECT_TRUE(ServerHangsUpAfter(server.port(), garbage));
  EXPECT_TRUE(Eventually([&] { return server.refused() >= 1; }));
  EXPECT_TRUE(AskClusterInfo(**good).ok());
}

TEST(TransportTest, OversizedFrameIsRefusedBeforeItIsRead) {
  TestServer server;
  auto good = BlockingClient::Connect(server.address(), MakeToken(0xab), proto::Role::CLI, "good", 2000ms);
  ASSERT_TRUE(good.ok());
  // Declares one segment of 2^31 words (16 GiB): refused from the header alone.
  std::vector<uint8_t> header = {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x80};
  EXPECT_TRUE(ServerHangsUpAfter(server.port(), header));
  // And a frame just over the pre-auth limit (4 KiB) made of a valid segment table.
  std::vector<uint8_t> big = {0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x00, 0x00};  // 513 words
  big.resize(8 + 513 * 8, 0);
  EXPECT_TRUE(ServerHangsUpAfter(server.port(), big));
  EXPECT_TRUE(Eventually([&] { return server.refused() >= 2; }));
  EXPECT_TRUE(AskClusterInfo(**good).ok());
}

TEST(TransportTest, OversizedFrameAfterAuthenticationClosesOnlyThatPeer) {
  TransportOptions options;
  options.limits.max_message_bytes = 64 * 1024;
  TestServer server(options);
  auto good = BlockingClient::Connect(server.address(), MakeToken(0xab), proto::Role::CLI, "good", 2000ms);
  auto loud = BlockingClient::Connect(server.address(), MakeToken(0xab), proto::Role::CLI, "loud", 2000ms);
  ASSERT_TRUE(good.ok() && loud.ok());
  capnp::MallocMessageBuilder b;
  b.initRoot<proto::Envelope>().initSubmit().setSpecYaml(std::string(100 * 1024, 'x'));
  auto reply = (*loud)->Call(b, 2000ms);
  EXPECT_EQ(reply.status().code(), StatusCode::kUnavailable) << reply.status();
  EXPECT_TRUE(Eventually([&] { return server.refused() == 1; }));
  EXPECT_TRUE(AskClusterInfo(**good).ok());
}

TEST(TransportTest, SilentPeerIsDroppedAfterTheHandshakeTimeout) {
  TransportOptions options;
  options.handshake_timeout = 200ms;
  TestServer server(options);
  EXPECT_TRUE(ServerHangsUpAfter(server.port(), {}));
  EXPECT_TRUE(Eventually([&] { return server.refused() == 1; }));
}

TEST(TransportTest, ParseHostPort) {
  auto hp = ParseHostPort("127.0.0.1:7070");
  ASSERT_TRUE(hp.ok());
  EXPECT_EQ(hp->first, "127.0.0.1");
  EXPECT_EQ(hp->second, 7070);
  EXPECT_FALSE(ParseHostPort("localhost").ok());
  EXPECT_FALSE(ParseHostPort("h:99999").ok());
  EXPECT_FALSE(ParseHostPort(":1").ok());
}

}  // namespace
}  // namespace shoal::protocol
