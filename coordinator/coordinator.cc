#include "coordinator/coordinator.h"

#include <capnp/message.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <sstream>

#include "common/file_util.h"
#include "coordinator/http_server.h"
#include "coordinator/job_manager.h"
#include "coordinator/placement_adapter.h"
#include "protocol/connection.h"
#include "storage/rocks_state_store.h"

namespace shoal::coordinator {

struct Coordinator::Impl {
  CoordinatorOptions options;
  boost::asio::io_context io;
  std::unique_ptr<StateStore> store;
  std::string cluster_id;
  std::shared_ptr<HandlerRegistry> handlers = std::make_shared<HandlerRegistry>();
  SteadyClock clock;
  WorkerDirectory directory;
  std::unique_ptr<WorkerRegistry> registry;
  std::unique_ptr<JobManager> jobs;
  std::unique_ptr<protocol::Server> server;
  std::unique_ptr<HttpServer> http;
  std::vector<std::thread> threads;
  std::mutex mu;
  std::condition_variable cv;
  bool shutdown = false;
  std::map<std::string, int> worker_counts, job_counts;  // under mu, for /metrics
  std::atomic<uint64_t> messages{0};

  void Route(const protocol::ConnectionPtr& conn, protocol::MessagePtr msg);
  std::string Metrics();
  void RequestShutdown() {
    std::lock_guard<std::mutex> lock(mu);
    shutdown = true;
    cv.notify_all();
  }
};

namespace {

bool NeedsRole(const protocol::ConnectionPtr& conn, const protocol::Message& msg, proto::Role role) {
  if (conn->peer_role() == role) return true;
  conn->ReplyError(msg, PermissionDeniedError(std::string(protocol::EnvelopeKind(msg.envelope())) +
                                              " is not allowed on a " +
                                              (conn->peer_role() == proto::Role::CLI ? "CLI" : "worker") +
                                              " connection"));
  return false;
}

}  // namespace

void Coordinator::Impl::Route(const protocol::ConnectionPtr& conn, protocol::MessagePtr msg) {
  messages++;
  using E = proto::Envelope;
  const auto kWorker = proto::Role::WORKER;
  const auto kCli = proto::Role::CLI;
  switch (msg->envelope().which()) {
    case E::REGISTER_WORKER:
      if (NeedsRole(conn, *msg, kWorker)) registry->HandleRegister(conn, msg);
      break;
    case E::HEARTBEAT:
      if (NeedsRole(conn, *msg, kWorker)) registry->HandleHeartbeat(conn, msg);
      break;
    case E::DRAINED:
      if (NeedsRole(conn, *msg, kWorker)) registry->HandleDrained(conn, msg);
      break;
    case E::ASSIGNMENT_ACK:
      if (NeedsRole(conn, *msg, kWorker)) jobs->HandleAssignmentAck(conn, msg);
      break;
    case E::STEP_REPORT:
      if (NeedsRole(conn, *msg, kWorker)) jobs->HandleStepReport(conn, msg);
      break;
    case E::CHECKPOINT_SHARD:
      if (NeedsRole(conn, *msg, kWorker)) jobs->HandleCheckpointShard(conn, msg);
      break;
    case E::RANK_FAILED:
      if (NeedsRole(conn, *msg, kWorker)) jobs->HandleRankFailed(conn, msg);
      break;
    case E::LIST_CHECKPOINTS:
      jobs->HandleListCheckpoints(conn, msg);
      break;
    case E::SUBMIT:
      if (NeedsRole(conn, *msg, kCli)) jobs->HandleSubmit(conn, msg);
      break;
    case E::LIST_JOBS:
      jobs->HandleListJobs(conn, msg);
      break;
    case E::JOB_STATUS:
      jobs->HandleJobStatus(conn, msg);
      break;
    case E::CANCEL:
      if (NeedsRole(conn, *msg, kCli)) jobs->HandleCancel(conn, msg);
      break;
    case E::DETACH:
      if (NeedsRole(conn, *msg, kCli)) registry->HandleDetach(conn, msg);
      break;
    case E::LIST_WORKERS:
      registry->HandleListWorkers(conn, msg);
      break;
    case E::CLUSTER_INFO: {
      capnp::MallocMessageBuilder b;
      auto info = b.initRoot<proto::Envelope>().initClusterInfoReply();
      info.setClusterId(cluster_id);
      info.setVersion("shoal 0.1.0");
      info.setPid(::getpid());
      std::lock_guard<std::mutex> lock(mu);
      int w = 0, j = 0;
      for (auto& [_, n] : worker_counts) w += n;
      for (auto& [_, n] : job_counts) j += n;
      info.setWorkers(static_cast<uint32_t>(w));
      info.setJobs(static_cast<uint32_t>(j));
      conn->Reply(*msg, b);
      break;
    }
    case E::SHUTDOWN: {
      if (!NeedsRole(conn, *msg, kCli)) break;
      spdlog::info("shutdown requested by {} ({})", conn->peer_name(), conn->peer_address());
      capnp::MallocMessageBuilder b;
      b.initRoot<proto::Envelope>().initAck().setMessage("coordinator shutting down");
      conn->Reply(*msg, b);
      RequestShutdown();
      break;
    }
    default:
      conn->ReplyError(*msg, UnimplementedError(std::string("the coordinator does not handle '") +
                                                protocol::EnvelopeKind(msg->envelope()) + "' messages"));
  }
}

std::string Coordinator::Impl::Metrics() {
  std::ostringstream os;
  {
    std::lock_guard<std::mutex> lock(mu);
    os << "# HELP shoal_workers Workers known to the coordinator, by state.\n# TYPE shoal_workers gauge\n";
    for (const char* s : {"ALIVE", "SUSPECT", "DEAD", "DRAINING", "DETACHED"}) {
      auto it = worker_counts.find(s);
      os << "shoal_workers{state=\"" << s << "\"} " << (it == worker_counts.end() ? 0 : it->second) << "\n";
    }
    os << "# HELP shoal_jobs Jobs, by state.\n# TYPE shoal_jobs gauge\n";
    for (const char* s : {"PENDING", "PLACING", "RUNNING", "RECOVERING", "SUCCEEDED", "FAILED", "CANCELLED"}) {
      auto it = job_counts.find(s);
      os << "shoal_jobs{state=\"" << s << "\"} " << (it == job_counts.end() ? 0 : it->second) << "\n";
    }
  }
  os << "# HELP shoal_messages_total Control messages received.\n# TYPE shoal_messages_total counter\n";
  os << "shoal_messages_total " << messages.load() << "\n";
  os << "# HELP shoal_handler_calls_total Actor handler invocations.\n# TYPE shoal_handler_calls_total counter\n";
  auto stats = handlers->Snapshot();
  for (const auto& h : stats) os << "shoal_handler_calls_total{handler=\"" << h.name << "\"} " << h.count << "\n";
  os << "# HELP shoal_handler_seconds_total Time spent in actor handlers.\n# TYPE shoal_handler_seconds_total counter\n";
  for (const auto& h : stats) {
    os << "shoal_handler_seconds_total{handler=\"" << h.name << "\"} " << static_cast<double>(h.total_ns) * 1e-9 << "\n";
  }
  os << "# HELP shoal_handler_max_seconds Longest single run of an actor handler.\n# TYPE shoal_handler_max_seconds gauge\n";
  for (const auto& h : stats) {
    os << "shoal_handler_max_seconds{handler=\"" << h.name << "\"} " << static_cast<double>(h.max_ns) * 1e-9 << "\n";
  }
  return os.str();
}

Coordinator::Coordinator(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Result<std::unique_ptr<Coordinator>> Coordinator::Start(CoordinatorOptions options) {
  if (options.state_dir.empty()) return InvalidArgumentError("--state-dir is required");
  RETURN_IF_ERROR(MakeDirs(options.state_dir, 0700));
  // Absolute, because workers are told checkpoint paths under it.
  options.state_dir = std::filesystem::absolute(options.state_dir).lexically_normal().string();
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  ASSIGN_OR_RETURN(auto token, protocol::LoadOrCreateToken(options.state_dir + "/token"));
  impl->cluster_id = protocol::ClusterIdFromToken(token);
  ASSIGN_OR_RETURN(impl->store, OpenRocksStateStore(options.state_dir + "/db", impl->cluster_id));

  Impl* raw = impl.get();
  impl->registry = std::make_unique<WorkerRegistry>(impl->io, impl->store.get(), &impl->clock, options.health,
                                                    &impl->directory, impl->handlers);
  impl->jobs = std::make_unique<JobManager>(impl->io, impl->store.get(), &impl->directory, MakePlacementPolicy(),
                                            JobManager::Options{10, 64, options.state_dir + "/checkpoints"},
                                            impl->handlers);
  impl->registry->SetListeners(
      [raw](std::vector<WorkerInfo> snapshot) {
        std::map<std::string, int> counts;
        for (const auto& w : snapshot) counts[WorkerStateName(w.state)]++;
        {
          std::lock_guard<std::mutex> lock(raw->mu);
          raw->worker_counts = std::move(counts);
        }
        raw->jobs->OnClusterChanged(std::move(snapshot));
      },
      [raw](const WorkerInfo& w, const std::string& job, uint64_t epoch) {
        raw->jobs->OnWorkerRegistered(w, job, epoch);
      });
  impl->jobs->SetWorkerJobListener([raw](const std::string& worker, const std::string& job) {
    raw->registry->OnWorkerJobChanged(worker, job);
  });
  impl->jobs->SetCountsListener([raw](std::map<std::string, int> counts) {
    std::lock_guard<std::mutex> lock(raw->mu);
    raw->job_counts = std::move(counts);
  });
  RETURN_IF_ERROR(impl->registry->Initialize());
  RETURN_IF_ERROR(impl->jobs->Initialize());

  protocol::ConnectionHandlers handlers;
  handlers.on_message = [raw](const protocol::ConnectionPtr& c, protocol::MessagePtr m) { raw->Route(c, std::move(m)); };
  handlers.on_close = [raw](const protocol::ConnectionPtr& c, const Status&) {
    if (c->peer_role() == proto::Role::WORKER) raw->registry->OnConnectionClosed(c);
  };
  ASSIGN_OR_RETURN(auto hp, protocol::ParseHostPort(options.listen));
  ASSIGN_OR_RETURN(impl->server, protocol::Listen(impl->io, hp.first, hp.second, token, protocol::TransportOptions{},
                                                  std::move(handlers)));
  if (!options.http.empty()) {
    ASSIGN_OR_RETURN(impl->http, HttpServer::Listen(impl->io, options.http,
                                                    [raw](const std::string& path, std::string* type)
                                                        -> std::optional<std::string> {
                                                      if (path == "/metrics") {
                                                        *type = "text/plain; version=0.0.4";
                                                        return raw->Metrics();
                                                      }
                                                      if (path == "/healthz") return std::string("ok\n");
                                                      return std::nullopt;
                                                    }));
  }
  std::string address = hp.first + ":" + std::to_string(impl->server->port());
  RETURN_IF_ERROR(WriteFileAtomic(options.state_dir + "/address", address + "\n", 0644));
  impl->registry->Start();
  for (int i = 0; i < std::max(1, options.io_threads); ++i) {
    impl->threads.emplace_back([raw] {
      auto guard = boost::asio::make_work_guard(raw->io);
      raw->io.run();
    });
  }
  spdlog::info("coordinator {} listening on {} (state in {}){}", impl->cluster_id, address, options.state_dir,
               impl->http ? ", metrics on http port " + std::to_string(impl->http->port()) : "");
  return std::unique_ptr<Coordinator>(new Coordinator(std::move(impl)));
}

Coordinator::~Coordinator() {
  impl_->server->Stop();
  if (impl_->http) impl_->http->Stop();
  impl_->io.stop();
  for (auto& t : impl_->threads) t.join();
}

void Coordinator::Wait() {
  std::unique_lock<std::mutex> lock(impl_->mu);
  impl_->cv.wait(lock, [&] { return impl_->shutdown; });
}

void Coordinator::Shutdown() { impl_->RequestShutdown(); }
uint16_t Coordinator::port() const { return impl_->server->port(); }
uint16_t Coordinator::http_port() const { return impl_->http ? impl_->http->port() : 0; }
const std::string& Coordinator::cluster_id() const { return impl_->cluster_id; }

}  // namespace shoal::coordinator
