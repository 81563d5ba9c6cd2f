#include "worker/control_session.h"

#include <capnp/message.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <random>

namespace shoal::worker {
namespace {
std::string Str(capnp::Text::Reader t) { return std::string(t.cStr(), t.size()); }
constexpr std::chrono::milliseconds kMaxBackoff{5000};
constexpr std::chrono::milliseconds kCallTimeout{5000};
}  // namespace

ControlSession::ControlSession(boost::asio::io_context& io, std::string coordinator_host, uint16_t coordinator_port,
                               protocol::Token token, WorkerIdentity identity, JobRunner* runner)
    : Actor(io, "ControlSession"),
      host_(std::move(coordinator_host)),
      port_(coordinator_port),
      token_(std::move(token)),
      identity_(std::move(identity)),
      runner_(runner) {}

void ControlSession::Start() {
  Post("ControlSession.Start", [this] { Connect(); });
}

void ControlSession::Connect() {
  if (draining_ || exited_) return;
  uint64_t generation = ++session_generation_;
  protocol::ConnectionHandlers h;
  h.on_message = [this](const protocol::ConnectionPtr& c, protocol::MessagePtr m) {
    Post("ControlSession.OnMessage", [this, c, m] { OnMessage(c, m); });
  };
  h.on_close = [this](const protocol::ConnectionPtr& c, const Status& s) {
    Post("ControlSession.OnClosed", [this, c, s] { OnClosed(c, s); });
  };
  protocol::Dial(io(), host_, port_, token_, proto::Role::WORKER, identity_.name, protocol::TransportOptions{},
                 std::move(h), [this, generation](Result<protocol::ConnectionPtr> r) {
                   Post("ControlSession.OnDial", [this, generation, r = std::move(r)] {
                     if (generation != session_generation_) return;
                     if (!r.ok()) {
                       if (r.status().code() == StatusCode::kUnauthenticated) {
                         spdlog::error("{}", r.status().ToString());
                       } else {
                         spdlog::warn("cannot reach coordinator {}:{}: {}; retrying in {} ms", host_, port_,
                                      r.status().message(), backoff_.count());
                       }
                       if (draining_) return Exit();
                       return ScheduleReconnect();
                     }
                     OnConnected(*r);
                   });
                 });
}

void ControlSession::ScheduleReconnect() {
  static thread_local std::mt19937 rng(std::random_device{}());
  auto jitter = std::uniform_int_distribution<int>(0, static_cast<int>(backoff_.count() / 4))(rng);
  auto delay = backoff_ + std::chrono::milliseconds(jitter);
  backoff_ = std::min(kMaxBackoff, backoff_ * 2);
  PostAfter("ControlSession.Reconnect", delay, [this] { Connect(); });
}

void ControlSession::OnConnected(protocol::ConnectionPtr conn) {
  {
    std::lock_guard<std::mutex> lock(conn_mu_);
    conn_ = conn;
  }
  Register();
}

void ControlSession::Register() {
  capnp::MallocMessageBuilder b;
  auto reg = b.initRoot<proto::Envelope>().initRegisterWorker();
  reg.setName(identity_.name);
  reg.setHost(identity_.host);
  reg.setDevice(identity_.device);
  reg.setDeviceIndex(identity_.device_index);
  reg.setDeviceMemoryBytes(identity_.device_memory_bytes);
  reg.setCores(identity_.cores);
  reg.setDataAddress(identity_.data_address);
  reg.setPid(::getpid());
  reg.setCurrentJobId(current_job_);
  reg.setCurrentEpoch(current_epoch_);
  auto conn = conn_;
  conn->Call(b, kCallTimeout, [this, conn](Result<protocol::MessagePtr> r) {
    Post("ControlSession.OnRegistered", [this, conn, r = std::move(r)] {
      if (conn != conn_) return;
      if (!r.ok() || !(*r)->envelope().isRegisterReply()) {
        spdlog::warn("registration failed: {}", r.ok() ? "unexpected reply" : r.status().ToString());
        conn->Close(UnavailableError("registration failed"));
        return;
      }
      auto reply = (*r)->envelope().getRegisterReply();
      worker_id_ = Str(reply.getWorkerId());
      incarnation_ = reply.getIncarnation();
      heartbeat_interval_ = std::chrono::milliseconds(std::max<uint32_t>(10, reply.getHeartbeatIntervalMs()));
      registered_ = true;
      backoff_ = std::chrono::milliseconds(100);
      spdlog::info("registered with coordinator {}:{} as {} ({}), incarnation {}", host_, port_, identity_.name,
                   worker_id_, incarnation_);
      Heartbeat();
    });
  });
}

void ControlSession::Heartbeat() {
  if (!registered_ || exited_) return;
  auto conn = conn_;
  capnp::MallocMessageBuilder b;
  auto hb = b.initRoot<proto::Envelope>().initHeartbeat();
  hb.setWorkerId(worker_id_);
  hb.setIncarnation(incarnation_);
  hb.setSeq(++heartbeat_seq_);
  hb.setJobId(current_job_);
  hb.setEpoch(current_epoch_);
  hb.setBusy(!current_job_.empty());
  conn->Call(b, kCallTimeout, [this, conn](Result<protocol::MessagePtr> r) {
    Post("ControlSession.OnHeartbeatReply", [this, conn, r = std::move(r)] {
      if (conn != conn_ || !r.ok()) return;  // a lost connection is handled by OnClosed
      if ((*r)->envelope().isHeartbeatReply() && !(*r)->envelope().getHeartbeatReply().getKnown()) {
        spdlog::warn("coordinator does not know this registration any more; re-registering");
        registered_ = false;
        Register();
      }
    });
  });
  uint64_t generation = session_generation_;
  PostAfter("ControlSession.Heartbeat", heartbeat_interval_, [this, generation] {
    if (generation == session_generation_) Heartbeat();
  });
}

void ControlSession::OnMessage(protocol::ConnectionPtr conn, protocol::MessagePtr msg) {
  if (conn != conn_) return;
  auto env = msg->envelope();
  switch (env.which()) {
    case proto::Envelope::ASSIGNMENT:
      OnAssignment(conn, msg);
      break;
    case proto::Envelope::RELEASE:
      OnRelease(msg);
      break;
    case proto::Envelope::DRAIN:
      Drain(Str(env.getDrain().getReason()));
      break;
    default:
      spdlog::warn("ignoring unexpected '{}' from the coordinator", protocol::EnvelopeKind(env));
  }
}

void ControlSession::OnAssignment(protocol::ConnectionPtr conn, protocol::MessagePtr msg) {
  auto a = msg->envelope().getAssignment();
  std::string job = Str(a.getJobId());
  uint64_t epoch = a.getEpoch();
  capnp::MallocMessageBuilder b;
  auto ack = b.initRoot<proto::Envelope>().initAssignmentAck();
  ack.setJobId(job);
  ack.setEpoch(epoch);
  auto& newest = newest_epoch_[job];
  if (draining_) {
    ack.setAccepted(false);
    ack.setMessage("worker is draining");
  } else if (epoch < newest) {
    ack.setAccepted(false);
    ack.setMessage("stale epoch " + std::to_string(epoch) + " < " + std::to_string(newest));
    spdlog::warn("refusing assignment of job {} at stale epoch {} (newest {})", job, epoch, newest);
  } else {
    if (!current_job_.empty() && current_job_ != job) runner_->Stop(current_job_, "assigned to another job");
    bool fresh = epoch > newest || current_job_ != job;
    newest = epoch;
    current_job_ = job;
    current_epoch_ = epoch;
    if (fresh) {
      auto self = a.getSelf();
      spdlog::info("assigned to job {} ({}) epoch {}: pipeline rank {}, data rank {}, experts [{}, {})",
                   Str(a.getJobName()), job, epoch, self.getPpRank(), self.getDpRank(), self.getExpertBegin(),
                   self.getExpertEnd());
      runner_->Start(msg);
    }
    ack.setAccepted(true);
  }
  conn->Send(b);
}

void ControlSession::OnRelease(protocol::MessagePtr msg) {
  auto rel = msg->envelope().getRelease();
  std::string job = Str(rel.getJobId());
  if (job != current_job_) return;
  if (rel.getEpoch() < current_epoch_) return;  // an old epoch's release must not stop newer work
  spdlog::info("released from job {}: {}", job, Str(rel.getReason()));
  runner_->Stop(job, Str(rel.getReason()));
  current_job_.clear();
  current_epoch_ = 0;
}

void ControlSession::Drain(const std::string& reason) {
  Post("ControlSession.Drain", [this, reason] {
    if (draining_) return;
    draining_ = true;
    spdlog::info("draining: {}", reason);
    if (!current_job_.empty()) runner_->Stop(current_job_, "draining: " + reason);
    current_job_.clear();
    auto conn = conn_;
    if (!conn || !conn->is_open() || !registered_) return Exit();
    capnp::MallocMessageBuilder b;
    b.initRoot<proto::Envelope>().initDrained().setWorkerId(worker_id_);
    conn->Send(b);
    // Give the frame a moment to leave, then close and exit.
    PostAfter("ControlSession.DrainDone", std::chrono::milliseconds(100), [this] { Exit(); });
  });
}

void ControlSession::OnClosed(protocol::ConnectionPtr conn, const Status& why) {
  if (conn != conn_) return;
  {
    std::lock_guard<std::mutex> lock(conn_mu_);
    conn_.reset();
  }
  registered_ = false;
  ++session_generation_;
  if (draining_ || exited_) return Exit();
  spdlog::warn("lost the coordinator: {}; reconnecting", why.message());
  ScheduleReconnect();
}

void ControlSession::Exit() {
  if (exited_) return;
  exited_ = true;
  ++session_generation_;
  protocol::ConnectionPtr conn;
  {
    std::lock_guard<std::mutex> lock(conn_mu_);
    conn = std::move(conn_);
  }
  if (conn) conn->Close(Status::OK());
  if (on_exit_) on_exit_();
}

bool ControlSession::SendToCoordinator(capnp::MessageBuilder& envelope) {
  std::lock_guard<std::mutex> lock(conn_mu_);
  if (!conn_ || !conn_->is_open()) return false;
  conn_->Send(envelope);
  return true;
}

}  // namespace shoal::worker
