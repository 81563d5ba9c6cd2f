// The worker's control session with the coordinator: connect (with backoff), authenticate, register,
// heartbeat, receive assignments, acknowledge them, and drain on request.
//
// Session states (one line per transition):
//   DISCONNECTED --dial succeeded, registered-------------------------> REGISTERED
//   DISCONNECTED --dial failed------------------------------------------> DISCONNECTED (retry after backoff,
//                                                                           100 ms doubling to 5 s, jittered)
//   REGISTERED   --connection lost / heartbeat says unknown-------------> DISCONNECTED (re-register on reconnect)
//   REGISTERED   --Drain received, or SIGTERM--------------------------> DRAINING (stop work, send Drained)
//   DRAINING     --Drained sent (or no coordinator reachable)----------> EXITED
// Assignments carry the job's epoch: one older than the newest seen for that job is refused (a zombie
// coordinator message); the same epoch again is acknowledged again (re-sent after a reconnect).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "common/actor.h"
#include "protocol/auth.h"
#include "protocol/connection.h"
#include "worker/job_runner.h"

namespace shoal::worker {

struct WorkerIdentity {
  std::string name;
  std::string host;
  proto::DeviceKind device = proto::DeviceKind::CPU;
  int32_t device_index = 0;
  uint64_t device_memory_bytes = 0;
  uint32_t cores = 0;
  std::string data_address;
};

class ControlSession : public Actor {
 public:
  ControlSession(boost::asio::io_context& io, std::string coordinator_host, uint16_t coordinator_port,
                 protocol::Token token, WorkerIdentity identity, JobRunner* runner);

  void Start();
  // Stops work, tells the coordinator (if reachable within `grace`), then calls on_exit.
  void Drain(const std::string& reason);
  void SetExitCallback(std::function<void()> on_exit) { on_exit_ = std::move(on_exit); }

  // Sends a message to the coordinator if connected (thread-safe); returns whether it was sent.
  bool SendToCoordinator(capnp::MessageBuilder& envelope);

 private:
  void Connect();
  void ScheduleReconnect();
  void OnConnected(protocol::ConnectionPtr conn);
  void Register();
  void Heartbeat();
  void OnMessage(protocol::ConnectionPtr conn, protocol::MessagePtr msg);
  void OnAssignment(protocol::ConnectionPtr conn, protocol::MessagePtr msg);
  void OnRelease(protocol::MessagePtr msg);
  void OnClosed(protocol::ConnectionPtr conn, const Status& why);
  void Exit();

  std::string host_;
  uint16_t port_;
  protocol::Token token_;
  WorkerIdentity identity_;
  JobRunner* runner_;
  std::function<void()> on_exit_;

  protocol::ConnectionPtr conn_;
  std::mutex conn_mu_;  // guards conn_ for SendToCoordinator from other threads
  bool registered_ = false;
  bool draining_ = false;
  bool exited_ = false;
  std::string worker_id_;
  uint64_t incarnation_ = 0;
  std::chrono::milliseconds heartbeat_interval_{1000};
  std::chrono::milliseconds backoff_{100};
  uint64_t heartbeat_seq_ = 0;
  uint64_t session_generation_ = 0;  // bumps on every (re)connect; stale timers check it
  std::string current_job_;
  uint64_t current_epoch_ = 0;
  std::map<std::string, uint64_t> newest_epoch_;  // per job
};

}  // namespace shoal::worker
