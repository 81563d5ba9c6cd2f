// WorkerRegistry: every worker that ever attached, its liveness, and its control connection.
//
// Worker states (persisted on every transition; heartbeats themselves are not written):
//   (new)          --RegisterWorker---------------------------> ALIVE
//   ALIVE          --no heartbeat for suspect_after-----------> SUSPECT
//   ALIVE          --control connection closed----------------> SUSPECT
//   SUSPECT        --heartbeat or re-register-----------------> ALIVE
//   SUSPECT        --no heartbeat for dead_after--------------> DEAD       (job manager re-places its jobs)
//   DEAD           --re-register (new incarnation)------------> ALIVE
//   ALIVE|SUSPECT  --detach (CLI)-----------------------------> DRAINING   (Drain sent to the worker)
//   DRAINING       --Drained, or connection closed------------> DETACHED
//   DRAINING       --no heartbeat for dead_after--------------> DEAD
//   DETACHED       --re-register------------------------------> ALIVE
// After a coordinator restart, Initialize() gives every ALIVE/SUSPECT worker a fresh dead_after to reconnect.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/actor.h"
#include "common/clock.h"
#include "coordinator/records.h"
#include "coordinator/worker_directory.h"
#include "protocol/connection.h"
#include "storage/state_store.h"
#include "storage/typed_table.h"

namespace shoal::coordinator {

struct HealthOptions {
  std::chrono::milliseconds heartbeat_interval{1000};  // told to workers at registration
  std::chrono::milliseconds suspect_after{3000};
  std::chrono::milliseconds dead_after{6000};
};

class WorkerRegistry : public Actor {
 public:
  // Called on the registry's strand after any state change, with every worker (the job manager posts it on).
  using ClusterListener = std::function<void(std::vector<WorkerInfo> snapshot)>;
  // Called after a (re-)registration: (worker, the job and epoch the worker says it runs).
  using RegisterListener = std::function<void(const WorkerInfo&, const std::string& job_id, uint64_t epoch)>;

  WorkerRegistry(boost::asio::io_context& io, StateStore* store, const Clock* clock, HealthOptions options,
                 WorkerDirectory* directory, std::shared_ptr<HandlerRegistry> handlers);

  void SetListeners(ClusterListener on_cluster, RegisterListener on_register);

  // Loads persisted workers. Call once, before serving.
  Status Initialize();
  // Starts the periodic health check.
  void Start();

  void HandleRegister(protocol::ConnectionPtr conn, protocol::MessagePtr msg);
  void HandleHeartbeat(protocol::ConnectionPtr conn, protocol::MessagePtr msg);
  void HandleDrained(protocol::ConnectionPtr conn, protocol::MessagePtr msg);
  // CLI detach: replies with an ack or an error.
  void HandleDetach(protocol::ConnectionPtr conn, protocol::MessagePtr msg);
  void OnConnectionClosed(protocol::ConnectionPtr conn);
  // From the job manager: which job a worker serves (shown in listings).
  void OnWorkerJobChanged(std::string worker_id, std::string job_id);

  void HandleListWorkers(protocol::ConnectionPtr conn, protocol::MessagePtr msg);

  // Runs one health pass now (tests drive it with a FakeClock).
  void CheckHealthNow();

  std::string DebugString() const;  // call on the strand

 private:
  struct Entry {
    WorkerInfo info;
    TimePoint last_seen;       // monotonic time of the last heartbeat / registration
    uint64_t connection_id = 0;  // 0 when not connected
  };

  void CheckHealth();
  void ScheduleHealthCheck();
  // Persists `e` with its new state; logs and records an event. Returns false if the write failed.
  bool Transition(Entry& e, WorkerState to, std::string reason);
  bool Persist(const Entry& e, const std::string& event_kind, const std::string& event_message);
  void NotifyCluster();
  Entry* Find(const std::string& id_or_name);

  StateStore* store_;
  const Clock* clock_;
  HealthOptions options_;
  WorkerDirectory* directory_;
  TypedTable<WorkerInfo> table_;
  TypedTable<EventInfo> events_;
  std::map<std::string, Entry> workers_;            // by worker_id
  std::map<std::string, std::string> by_name_;      // name -> worker_id
  std::map<uint64_t, std::string> by_connection_;   // connection_id -> worker_id
  ClusterListener on_cluster_;
  RegisterListener on_register_;
};

// Event rows are keyed "<scope>/<zero-padded ms>-<random>": scope is the job id, or "worker:<id>" for worker
// events, so a job's history is one prefix scan in time order.
std::string EventKeyPrefix(const std::string& scope);
// Appends an event row.
void AppendEvent(const TypedTable<EventInfo>& events, WriteBatch& batch, EventInfo event);

}  // namespace shoal::coordinator
