// Internal to worker/comm: the progress thread that owns the UCP worker, its endpoints and every running
// operation. Callers talk to it through an inbox (Submit, Cancel, Connect) and ucp_worker_signal; nothing else
// touches UCX, so the worker runs in UCS_THREAD_MODE_SINGLE.
//
// Operation lifecycle (on the progress thread):
//   queued --Start--> running(phase k) --all transfers of phase k done--> running(phase k+1) ... --> done(OK)
//   running --transfer error | peer dead | Cancel | new epoch--> failing: receives cancelled, sends given
//           send_withdraw_grace to be consumed --> done(error)
//   failing --grace over, sends still out--> link to those peers broken (tcp: force close; shm: liveness
//           endpoint force-closed, send orphaned) --> done(error)
//
// Link lifecycle (one per peer address):
//   connected --UCX error callback (peer died) | broken by a failing op--> broken --next Connect--> replaced
#pragma once

#include <ucp/api/ucp.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "common/status.h"
#include "worker/comm/communicator.h"
#include "worker/comm/op.h"
#include "worker/comm/ucx_util.h"

namespace shoal::comm {

class Engine {
 public:
  static Result<std::unique_ptr<Engine>> Create(const CommunicatorOptions& options);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  const std::string& address_hex() const { return address_hex_; }

  // Runs on the progress thread; blocks the caller until it is done.
  Status Connect(uint64_t epoch, int rank, const std::map<int, std::string>& peers);
  // Hands an operation to the progress thread (its state->engine is set here).
  void Submit(std::unique_ptr<OpPlan> plan);
  // Asks the progress thread to end the operation; the caller holds state->mu.
  void RequestCancelLocked(const std::shared_ptr<OpState>& state);

  // Reduction scratch, reused across operations (no allocation on the step path once warm).
  std::vector<float> TakeScratch(size_t floats);

  Communicator::Stats stats() const;

 private:
  struct RunningOp;
  struct Xfer;
  // One per peer worker address; its endpoints and health.
  struct Link {
    Engine* engine = nullptr;
    std::string address;       // raw UCX worker address
    int rank = -1;             // the peer's rank in the current epoch
    ucp_ep_h data_ep = nullptr;
    ucp_ep_h live_ep = nullptr;  // shm: the PEER-mode tcp endpoint that reports the peer's death
    bool broken = false;
    std::string why;
    // tcp: the data endpoint is force-closed once the "cut" notice to the peer left, or at this time.
    bool close_pending = false;
    std::chrono::steady_clock::time_point close_by{};
    Xfer* notice = nullptr;  // the cut notice in flight (owned by orphans_)
  };
  // One tagged send or receive; UCX's user_data. Heap-allocated so that it can outlive its operation.
  struct Xfer {
    Engine* engine = nullptr;
    RunningOp* op = nullptr;   // null: orphaned, a drain, a notice or the control receive
    bool control = false;      // the standing receive of control notices
    size_t idx = 0;
    XferSpec spec;
    Link* link = nullptr;
    void* request = nullptr;
    bool posted = false;
    bool done = false;
    ucs_status_t status = UCS_OK;
    size_t length = 0;
    uint64_t sender_tag = 0;
    std::vector<std::byte> owned;  // drains receive into this
  };
  struct RunningOp {
    std::unique_ptr<OpPlan> plan;
    size_t phase = 0;
    bool phase_posted = false;
    std::vector<std::unique_ptr<Xfer>> xfers;  // the current phase; orphaned entries are null
    int outstanding = 0;                       // posted and not yet processed
    size_t received_bytes = 0;
    bool failing = false;
    bool finished = false;  // moved to finished_; stays valid until the end of the loop turn
    Status failure;
    std::chrono::steady_clock::time_point fail_time{};
  };
  struct ConnectRequest {
    uint64_t epoch = 0;
    int rank = -1;
    std::map<int, std::string> peers;
    Status result;
    bool done = false;
    std::mutex mu;
    std::condition_variable cv;
  };
  struct Command {
    enum Kind { kSubmit, kCancel, kConnect, kStop } kind = kSubmit;
    std::unique_ptr<OpPlan> plan;
    std::shared_ptr<OpState> state;
    ConnectRequest* connect = nullptr;
  };

  explicit Engine(const CommunicatorOptions& options);
  Status Init();

  // Progress thread.
  void Run();
  bool DrainInbox();
  void StartOp(std::unique_ptr<OpPlan> plan);
  void RunPhases(RunningOp* op);
  void PostXfer(RunningOp* op, size_t idx);
  bool ProcessCompleted();
  void OnXferDone(Xfer* x);
  void FailOp(RunningOp* op, Status status);
  void MaybeFinish(RunningOp* op);
  void FinishOp(RunningOp* op, Status status);
  void Orphan(RunningOp* op, Xfer* x);
  // Marks the link broken, fails what waits on it, and (notify) tells the peer with a control notice so that
  // it stops waiting for this rank too.
  void BreakLink(Link* link, const std::string& why, bool notify);
  void PostControlRecv();
  void OnControl(Xfer* x);
  void SendNotice(Link* link, const std::string& why);
  void ProcessBrokenLinks();
  void Housekeeping(std::chrono::steady_clock::time_point now);
  bool NeedsTimer() const;
  void Push(Command command);
  void DrainFilters();
  Status DoConnect(uint64_t epoch, int rank, const std::map<int, std::string>& peers);
  Result<Link*> LinkFor(const std::string& address, int rank);
  Status CreateEndpoints(Link* link);
  void CloseEndpoint(ucp_ep_h ep, bool force);
  void Shutdown();
  std::string PeerName(int rank) const;

  static void OnSendDone(void* request, ucs_status_t status, void* user_data);
  static void OnRecvDone(void* request, ucs_status_t status, const ucp_tag_recv_info_t* info, void* user_data);
  static void OnEndpointError(void* arg, ucp_ep_h ep, ucs_status_t status);

  const CommunicatorOptions options_;

  // Destruction order matters: the worker goes first (it may still call back into links and transfers), then
  // transfers and links, then the context. Members are destroyed bottom-up.
  UcpContextPtr context_;
  std::vector<std::unique_ptr<Link>> links_;                  // every link ever made, until destruction
  std::unordered_map<Xfer*, std::unique_ptr<Xfer>> orphans_;  // transfers no operation owns any more
  std::list<std::pair<void*, std::chrono::steady_clock::time_point>> closing_;  // endpoint closes in flight
  UcpWorkerPtr worker_;
  std::string address_hex_;
  int efd_ = -1;

  // Progress-thread state.
  uint64_t epoch_ = 0;
  int rank_ = -1;
  bool connected_ = false;
  std::map<int, Link*> by_rank_;  // this epoch's peers
  std::unordered_map<OpState*, std::unique_ptr<RunningOp>> running_;
  std::vector<std::unique_ptr<RunningOp>> finished_;  // deleted at the end of each loop turn
  bool stop_requested_ = false;
  bool shutting_down_ = false;
  std::vector<Xfer*> completed_;  // filled by UCX callbacks during progress
  std::vector<Link*> newly_broken_;
  std::vector<ucp_ep_h> failed_eps_;  // endpoints UCX reported failed, closed after the progress call
  std::vector<std::pair<uint64_t, uint64_t>> drain_filters_;  // (tag, mask)
  Xfer* control_recv_ = nullptr;  // the standing receive of this epoch's control notices (owned by orphans_)
  std::chrono::steady_clock::time_point last_housekeeping_{};

  // Inbox.
  std::mutex inbox_mu_;
  std::vector<Command> inbox_;
  std::atomic<bool> inbox_pending_{false};
  bool stopping_ = false;      // under inbox_mu_: no new operations
  bool worker_gone_ = false;   // under inbox_mu_: nothing may signal the worker any more

  std::mutex scratch_mu_;
  std::vector<std::vector<float>> scratch_pool_;

  mutable std::mutex stats_mu_;
  Communicator::Stats stats_;

  std::thread thread_;
};

}  // namespace shoal::comm
