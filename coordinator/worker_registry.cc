#include "coordinator/worker_registry.h"

#include <capnp/message.h>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <sstream>

#include "common/ids.h"

namespace shoal::coordinator {
namespace {

std::string Str(capnp::Text::Reader t) { return std::string(t.cStr(), t.size()); }

std::string Seconds(Duration d) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1fs", std::chrono::duration<double>(d).count());
  return buf;
}

}  // namespace

std::string EventKeyPrefix(const std::string& scope) { return scope + "/"; }

void AppendEvent(const TypedTable<EventInfo>& events, WriteBatch& batch, EventInfo event) {
  if (event.time_ms == 0) event.time_ms = WallMillis();
  // Keyed by scope (the job, else the worker) then time, so one job's history is one prefix scan.
  char time[32];
  std::snprintf(time, sizeof(time), "%015lld-", static_cast<long long>(event.time_ms));
  std::string scope = !event.job_id.empty() ? event.job_id : "worker:" + event.worker_id;
  events.Put(batch, EventKeyPrefix(scope) + time + HexEncode(RandomBytes(4)), event);
}

WorkerRegistry::WorkerRegistry(boost::asio::io_context& io, StateStore* store, const Clock* clock,
                               HealthOptions options, WorkerDirectory* directory,
                               std::shared_ptr<HandlerRegistry> handlers)
    : Actor(io, "WorkerRegistry", std::move(handlers)),
      store_(store),
      clock_(clock),
      options_(options),
      directory_(directory),
      table_(store, Table::kWorkers, EncodeWorker, DecodeWorker),
      events_(store, Table::kEvents, EncodeEvent, DecodeEvent) {}

void WorkerRegistry::SetListeners(ClusterListener on_cluster, RegisterListener on_register) {
  on_cluster_ = std::move(on_cluster);
  on_register_ = std::move(on_register);
}

Status WorkerRegistry::Initialize() {
  ASSIGN_OR_RETURN(auto rows, table_.Scan());
  TimePoint now = clock_->Now();
  for (auto& [id, info] : rows) {
    Entry e;
    e.info = std::move(info);
    // Give everyone who was attached a full dead_after to reconnect to the new coordinator.
    e.last_seen = now - options_.suspect_after;
    if (e.info.state == WorkerState::ALIVE) {
      e.info.state = WorkerState::SUSPECT;
      e.info.reason = "coordinator restarted; waiting for the worker to reconnect";
    }
    by_name_[e.info.name] = id;
    workers_.emplace(id, std::move(e));
  }
  spdlog::info("WorkerRegistry: recovered {} workers", workers_.size());
  return Status::OK();
}

void WorkerRegistry::Start() {
  Post("WorkerRegistry.Start", [this] {
    NotifyCluster();
    ScheduleHealthCheck();
  });
}

void WorkerRegistry::ScheduleHealthCheck() {
  auto period = std::max<std::chrono::milliseconds>(std::chrono::milliseconds(20), options_.heartbeat_interval / 4);
  PostAfter("WorkerRegistry.CheckHealth", period, [this] {
    CheckHealth();
    ScheduleHealthCheck();
  });
}

void WorkerRegistry::CheckHealthNow() {
  Post("WorkerRegistry.CheckHealthNow", [this] { CheckHealth(); });
}

void WorkerRegistry::CheckHealth() {
  TimePoint now = clock_->Now();
  bool changed = false;
  for (auto& [id, e] : workers_) {
    Duration silent = now - e.last_seen;
    switch (e.info.state) {
      case WorkerState::ALIVE:
        if (silent > options_.suspect_after) {
          changed |= Transition(e, WorkerState::SUSPECT, "no heartbeat for " + Seconds(silent));
        }
        break;
      case WorkerState::SUSPECT:
      case WorkerState::DRAINING:
        if (silent > options_.dead_after) {
          changed |= Transition(e, WorkerState::DEAD, "no heartbeat for " + Seconds(silent));
        }
        break;
      default:
        break;
    }
  }
  if (changed) NotifyCluster();
}

bool WorkerRegistry::Transition(Entry& e, WorkerState to, std::string reason) {
  WorkerState from = e.info.state;
  if (from == to && e.info.reason == reason) return false;
  e.info.state = to;
  e.info.reason = std::move(reason);
  std::string message = std::string(WorkerStateName(from)) + " -> " + WorkerStateName(to) +
                        (e.info.reason.empty() ? "" : ": " + e.info.reason);
  auto log_level = to == WorkerState::DEAD ? spdlog::level::warn : spdlog::level::info;
  spdlog::log(log_level, "worker {} ({}) {}", e.info.name, e.info.worker_id, message);
  std::string kind = std::string("worker.") + WorkerStateName(to);
  for (auto& c : kind) c = static_cast<char>(tolower(c));
  Persist(e, kind, message);
  return true;
}

bool WorkerRegistry::Persist(const Entry& e, const std::string& event_kind, const std::string& event_message) {
  WriteBatch batch;
  table_.Put(batch, e.info.worker_id, e.info);
  if (!event_kind.empty()) AppendEvent(events_, batch, EventInfo{0, e.info.job_id, e.info.worker_id, event_kind, event_message});
  Status s = store_->Write(batch);
  if (!s.ok()) {
    spdlog::error("persisting worker {} failed: {}", e.info.name, s.ToString());
    return false;
  }
  return true;
}

void WorkerRegistry::NotifyCluster() {
  if (!on_cluster_) return;
  std::vector<WorkerInfo> snapshot;
  snapshot.reserve(workers_.size());
  for (const auto& [_, e] : workers_) snapshot.push_back(e.info);
  on_cluster_(std::move(snapshot));
}

WorkerRegistry::Entry* WorkerRegistry::Find(const std::string& id_or_name) {
  auto it = workers_.find(id_or_name);
  if (it != workers_.end()) return &it->second;
  auto n = by_name_.find(id_or_name);
  if (n != by_name_.end()) {
    auto w = workers_.find(n->second);
    if (w != workers_.end()) return &w->second;
  }
  return nullptr;
}

void WorkerRegistry::HandleRegister(protocol::ConnectionPtr conn, protocol::MessagePtr msg) {
  Post("WorkerRegistry.HandleRegister", [this, conn, msg] {
    auto req = msg->envelope().getRegisterWorker();
    std::string name = Str(req.getName());
    if (name.empty() || name.size() > 128) {
      conn->ReplyError(*msg, InvalidArgumentError("worker name must be 1..128 characters"));
      return;
    }
    Entry* e = Find(name);
    bool is_new = e == nullptr;
    if (is_new) {
      std::string id = NewId("w");
      Entry fresh;
      fresh.info.worker_id = id;
      fresh.info.name = name;
      fresh.info.registered_at_ms = WallMillis();
      by_name_[name] = id;
      e = &workers_.emplace(id, std::move(fresh)).first->second;
    } else if (e->connection_id != 0 && e->connection_id != conn->connection_id()) {
      // A second process with the same name, or a reconnect racing the old socket's close: the newest wins.
      if (auto old = directory_->Get(e->info.worker_id)) {
        old->Close(AbortedError("replaced by a newer registration of worker '" + name + "'"));
      }
      by_connection_.erase(e->connection_id);
    }
    WorkerInfo& w = e->info;
    w.host = Str(req.getHost());
    w.device = req.getDevice();
    w.device_index = req.getDeviceIndex();
    w.device_memory_bytes = req.getDeviceMemoryBytes();
    w.cores = req.getCores();
    w.data_address = Str(req.getDataAddress());
    w.pid = req.getPid();
    w.incarnation += 1;
    w.last_heartbeat_ms = WallMillis();
    WorkerState from = w.state;
    bool still_draining = from == WorkerState::DRAINING;  // a detach is not undone by reconnecting
    w.state = still_draining ? WorkerState::DRAINING : WorkerState::ALIVE;
    w.reason = still_draining ? "detach requested" : is_new ? "registered" : "re-registered";
    e->last_seen = clock_->Now();
    e->connection_id = conn->connection_id();
    by_connection_[conn->connection_id()] = w.worker_id;
    std::string message = is_new ? "registered from " + w.host
                                 : std::string("re-registered from ") + w.host + " (was " + WorkerStateName(from) + ")";
    if (!Persist(*e, "worker.registered", message)) {
      conn->ReplyError(*msg, UnavailableError("coordinator could not persist the registration; retry"));
      return;
    }
    directory_->Set(w.worker_id, conn);
    spdlog::info("worker {} ({}) {}, incarnation {}", w.name, w.worker_id, message, w.incarnation);

    capnp::MallocMessageBuilder b;
    auto reply = b.initRoot<proto::Envelope>().initRegisterReply();
    reply.setWorkerId(w.worker_id);
    reply.setIncarnation(w.incarnation);
    reply.setHeartbeatIntervalMs(static_cast<uint32_t>(options_.heartbeat_interval.count()));
    conn->Reply(*msg, b);
    if (still_draining) {
      capnp::MallocMessageBuilder drain;
      drain.initRoot<proto::Envelope>().initDrain().setReason("detach requested");
      conn->Send(drain);
    }

    if (on_register_) on_register_(w, Str(req.getCurrentJobId()), req.getCurrentEpoch());
    NotifyCluster();
  });
}

void WorkerRegistry::HandleHeartbeat(protocol::ConnectionPtr conn, protocol::MessagePtr msg) {
  Post("WorkerRegistry.HandleHeartbeat", [this, conn, msg] {
    auto hb = msg->envelope().getHeartbeat();
    auto it = workers_.find(Str(hb.getWorkerId()));
    bool known = it != workers_.end() && it->second.info.incarnation == hb.getIncarnation() &&
                 it->second.connection_id == conn->connection_id();
    if (known) {
      Entry& e = it->second;
      e.last_seen = clock_->Now();
      e.info.last_heartbeat_ms = WallMillis();
      if (e.info.state == WorkerState::SUSPECT) {
        Transition(e, WorkerState::ALIVE, "heartbeat resumed");
        NotifyCluster();
      }
    }
    capnp::MallocMessageBuilder b;
    b.initRoot<proto::Envelope>().initHeartbeatReply().setKnown(known);
    conn->Reply(*msg, b);
  });
}

void WorkerRegistry::HandleDrained(protocol::ConnectionPtr conn, protocol::MessagePtr msg) {
  Post("WorkerRegistry.HandleDrained", [this, conn, msg] {
    auto it = by_connection_.find(conn->connection_id());
    if (it == by_connection_.end()) return;
    auto w = workers_.find(it->second);
    if (w == workers_.end()) return;
    if (Transition(w->second, WorkerState::DETACHED, "detached cleanly")) NotifyCluster();
  });
}

void WorkerRegistry::HandleDetach(protocol::ConnectionPtr conn, protocol::MessagePtr msg) {
  Post("WorkerRegistry.HandleDetach", [this, conn, msg] {
    std::string target = Str(msg->envelope().getDetach().getWorker());
    Entry* e = Find(target);
    if (e == nullptr) {
      conn->ReplyError(*msg, NotFoundError("no worker named '" + target + "'; see `shoal workers`"));
      return;
    }
    WorkerState s = e->info.state;
    if (s == WorkerState::DETACHED || s == WorkerState::DEAD) {
      conn->ReplyError(*msg, FailedPreconditionError("worker '" + e->info.name + "' is already " +
                                                     WorkerStateName(s)));
      return;
    }
    if (s != WorkerState::DRAINING) {
      if (!Transition(*e, WorkerState::DRAINING, "detach requested")) {
        conn->ReplyError(*msg, UnavailableError("could not persist the detach; retry"));
        return;
      }
      NotifyCluster();
    }
    capnp::MallocMessageBuilder drain;
    drain.initRoot<proto::Envelope>().initDrain().setReason("detach requested by " + conn->peer_name());
    bool sent = directory_->Send(e->info.worker_id, drain);
    capnp::MallocMessageBuilder b;
    b.initRoot<proto::Envelope>().initAck().setMessage(
        sent ? "worker '" + e->info.name + "' is draining"
             : "worker '" + e->info.name + "' is not connected; it will be told to drain when it reconnects");
    conn->Reply(*msg, b);
  });
}

void WorkerRegistry::OnConnectionClosed(protocol::ConnectionPtr conn) {
  Post("WorkerRegistry.OnConnectionClosed", [this, conn] {
    auto it = by_connection_.find(conn->connection_id());
    if (it == by_connection_.end()) return;
    std::string id = it->second;
    by_connection_.erase(it);
    directory_->Remove(id, conn.get());
    auto w = workers_.find(id);
    if (w == workers_.end()) return;
    Entry& e = w->second;
    e.connection_id = 0;
    bool changed = false;
    if (e.info.state == WorkerState::DRAINING) {
      changed = Transition(e, WorkerState::DETACHED, "drained and disconnected");
    } else if (e.info.state == WorkerState::ALIVE) {
      changed = Transition(e, WorkerState::SUSPECT, "control connection lost");
    }
    if (changed) NotifyCluster();
  });
}

void WorkerRegistry::OnWorkerJobChanged(std::string worker_id, std::string job_id) {
  Post("WorkerRegistry.OnWorkerJobChanged", [this, worker_id = std::move(worker_id), job_id = std::move(job_id)] {
    auto it = workers_.find(worker_id);
    if (it != workers_.end()) it->second.info.job_id = job_id;
  });
}

void WorkerRegistry::HandleListWorkers(protocol::ConnectionPtr conn, protocol::MessagePtr msg) {
  Post("WorkerRegistry.HandleListWorkers", [this, conn, msg] {
    capnp::MallocMessageBuilder b;
    auto list = b.initRoot<proto::Envelope>().initListWorkersReply().initWorkers(static_cast<unsigned>(by_name_.size()));
    unsigned i = 0;
    for (const auto& [name, id] : by_name_) ToProto(workers_.at(id).info, list[i++]);  // sorted by name
    conn->Reply(*msg, b);
  });
}

std::string WorkerRegistry::DebugString() const {
  std::ostringstream os;
  os << "WorkerRegistry{" << workers_.size() << " workers:";
  for (const auto& [id, e] : workers_) os << " " << e.info.name << "=" << WorkerStateName(e.info.state);
  os << "}";
  return os.str();
}

}  // namespace shoal::coordinator
