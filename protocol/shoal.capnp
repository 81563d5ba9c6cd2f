# shoal control-plane messages: every frame on a control connection is one Envelope (standard Cap'n Proto
# stream framing), and every durable record in the coordinator's RocksDB is one of the *Record structs.
# Evolve by adding fields at the end with new ordinals; never renumber.
@0xb41ee36e24371045;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("shoal::proto");

# ---------------------------------------------------------------- handshake
# server -> client: Challenge; client -> server: AuthResponse; server -> client: AuthResult.
# mac = HMAC-SHA256(token, "shoal-auth-v1 client" || serverNonce || clientNonce || role || name)
# serverMac = HMAC-SHA256(token, "shoal-auth-v1 server" || clientNonce || serverNonce)
# so the token never crosses the wire and both sides prove they know it.

enum Role {
  cli @0;
  worker @1;
}

struct Challenge {
  serverNonce @0 :Data;     # 32 random bytes
  protocolVersion @1 :UInt32;
}

struct AuthResponse {
  role @0 :Role;
  name @1 :Text;
  clientNonce @2 :Data;     # 32 random bytes
  mac @3 :Data;
  protocolVersion @4 :UInt32;
}

struct AuthResult {
  ok @0 :Bool;
  serverMac @1 :Data;
  message @2 :Text;
}

# ---------------------------------------------------------------- shared value types

enum WorkerState {
  alive @0;
  suspect @1;      # missed its heartbeat deadline once
  dead @2;         # missed it for the dead timeout; its stages must be restarted
  draining @3;     # detach requested: finishing, then exits
  detached @4;     # left the cluster cleanly
}

enum DeviceKind {
  cpu @0;
  cuda @1;
}

enum JobState {
  pending @0;
  placing @1;
  running @2;
  recovering @3;
  succeeded @4;
  failed @5;
  cancelled @6;
}

struct Status {
  code @0 :Int32;           # shoal::StatusCode
  message @1 :Text;
}

struct WorkerRecord {
  workerId @0 :Text;
  name @1 :Text;
  host @2 :Text;
  device @3 :DeviceKind;
  deviceIndex @4 :Int32;
  deviceMemoryBytes @5 :UInt64;
  cores @6 :UInt32;
  dataAddress @7 :Text;     # data-plane (UCX) address, opaque to the coordinator
  state @8 :WorkerState;
  reason @9 :Text;          # why it is in its state ("heartbeat missed for 6.1s", "detach requested")
  registeredAtMs @10 :Int64;
  lastHeartbeatMs @11 :Int64;
  incarnation @12 :UInt64;  # bumped at every (re-)registration
  jobId @13 :Text;          # job it is assigned to, or empty
  pid @14 :Int64;
}

struct RankAssignment {
  ppRank @0 :UInt32;
  dpRank @1 :UInt32;
  workerId @2 :Text;
  workerName @3 :Text;
  host @4 :Text;
  stages @5 :List(UInt32);  # pipeline stages held (two with dualpipe)
  epGroup @6 :UInt32;
  epRank @7 :UInt32;
  expertBegin @8 :UInt32;   # routed experts [expertBegin, expertEnd) of every MoE layer it holds
  expertEnd @9 :UInt32;
  acked @10 :Bool;          # the worker acknowledged this assignment at the placement's epoch
  dataAddress @11 :Text;
}

struct StageLayers {
  stage @0 :UInt32;
  layerBegin @1 :UInt32;    # [layerBegin, layerEnd) of the L main layers (+ MTP layers after L)
  layerEnd @2 :UInt32;
  hasEmbedding @3 :Bool;
  hasHead @4 :Bool;
}

struct PlacementRecord {
  jobId @0 :Text;
  epoch @1 :UInt64;
  ranks @2 :List(RankAssignment);
  stages @3 :List(StageLayers);
  createdAtMs @4 :Int64;
  description @5 :Text;     # human table
}

struct PhaseProgress {
  name @0 :Text;
  kind @1 :Text;
  state @2 :Text;           # pending | running | done
  step @3 :UInt64;
  totalSteps @4 :UInt64;
}

struct JobRecord {
  jobId @0 :Text;
  name @1 :Text;
  specYaml @2 :Text;        # canonical YAML of the validated spec
  specFile @3 :Text;        # file name it was submitted from
  state @4 :JobState;
  reason @5 :Text;          # why it is in its state (PLACING: "needs 4 workers, 2 available")
  phaseIndex @6 :UInt32;
  epoch @7 :UInt64;         # bumped at every (re-)placement; fences zombies
  submittedAtMs @8 :Int64;
  updatedAtMs @9 :Int64;
  phases @10 :List(PhaseProgress);
  restarts @11 :UInt32;
  workersNeeded @12 :UInt32;
}

struct Metric {
  name @0 :Text;
  value @1 :Float64;
}

struct StepReport {
  jobId @0 :Text;
  epoch @1 :UInt64;
  phase @2 :Text;
  step @3 :UInt64;          # optimizer step within the phase, 1-based
  ppRank @4 :UInt32;
  dpRank @5 :UInt32;
  loss @6 :Float64;
  metrics @7 :List(Metric); # mtp_loss, balance_loss, grad_norm, lr, tokens_per_s, expert_imbalance, ...
  timeMs @8 :Int64;
  phaseIndex @9 :UInt32;
}

struct CheckpointFile {
  name @0 :Text;            # relative to the checkpoint directory
  bytes @1 :UInt64;
  xxh3 @2 :UInt64;
}

# worker -> coordinator: one shard of a checkpoint is durable on disk.
struct CheckpointShard {
  jobId @0 :Text;
  epoch @1 :UInt64;
  phase @2 :Text;
  phaseIndex @3 :UInt32;
  step @4 :UInt64;
  ppRank @5 :UInt32;
  dpRank @6 :UInt32;
  dir @7 :Text;             # the checkpoint directory (shared by every shard of the step)
  files @8 :List(CheckpointFile);
  cursor @9 :Text;          # the data cursor after this step (JSON), for exact resumption
  phaseDone @10 :Bool;      # the final checkpoint of its phase
}

# A committed checkpoint: every shard of (phase, step) reported. Only these are ever restored.
struct CheckpointRecord {
  jobId @0 :Text;
  checkpointId @1 :Text;    # "<phase>-<step, 6 digits>"
  phase @2 :Text;
  phaseIndex @3 :UInt32;
  step @4 :UInt64;
  dir @5 :Text;
  shards @6 :List(CheckpointShard);
  committedAtMs @7 :Int64;
  epoch @8 :UInt64;
  phaseDone @9 :Bool;
}

struct ListCheckpointsReply {
  checkpoints @0 :List(CheckpointRecord);
}

# worker -> coordinator: the job's work on this rank has ended with an error it cannot recover from alone.
struct RankFailed {
  jobId @0 :Text;
  epoch @1 :UInt64;
  message @2 :Text;
  code @3 :Int32;           # shoal::StatusCode of the failure: some are worth a restart, some are not
}

struct EventRecord {
  timeMs @0 :Int64;
  jobId @1 :Text;
  workerId @2 :Text;
  kind @3 :Text;            # "worker.dead", "job.placed", ...
  message @4 :Text;
}

# ---------------------------------------------------------------- worker <-> coordinator

struct RegisterWorker {
  name @0 :Text;
  host @1 :Text;
  device @2 :DeviceKind;
  deviceIndex @3 :Int32;
  deviceMemoryBytes @4 :UInt64;
  cores @5 :UInt32;
  dataAddress @6 :Text;
  pid @7 :Int64;
  currentJobId @8 :Text;    # what it runs now (after a coordinator restart), or empty
  currentEpoch @9 :UInt64;
}

struct RegisterReply {
  workerId @0 :Text;
  incarnation @1 :UInt64;
  heartbeatIntervalMs @2 :UInt32;
}

struct Heartbeat {
  workerId @0 :Text;
  incarnation @1 :UInt64;
  seq @2 :UInt64;
  jobId @3 :Text;
  epoch @4 :UInt64;
  busy @5 :Bool;
}

struct HeartbeatReply {
  known @0 :Bool;           # false: the coordinator does not know this worker: re-register
}

struct Assignment {
  jobId @0 :Text;
  jobName @1 :Text;
  epoch @2 :UInt64;
  specYaml @3 :Text;
  self @4 :RankAssignment;
  peers @5 :List(RankAssignment);
  stages @6 :List(StageLayers);
  phaseIndex @7 :UInt32;
  checkpointRoot @8 :Text;  # where this job's checkpoints go: <root>/<phase>-<step>/
  restore @9 :CheckpointRecord;  # resume from here when hasRestore
  hasRestore @10 :Bool;
}

struct AssignmentAck {
  jobId @0 :Text;
  epoch @1 :UInt64;
  accepted @2 :Bool;
  message @3 :Text;         # why refused ("stale epoch 3 < 4")
}

struct Release {              # coordinator -> worker: stop work on this job (cancel, finish)
  jobId @0 :Text;
  epoch @1 :UInt64;
  reason @2 :Text;
}

struct Drain {                # coordinator -> worker: finish and exit (detach)
  reason @0 :Text;
}

struct Drained {              # worker -> coordinator: about to exit
  workerId @0 :Text;
}

# ---------------------------------------------------------------- CLI <-> coordinator

struct SubmitRequest {
  specYaml @0 :Text;
  specFile @1 :Text;
}

struct JobRef {
  job @0 :Text;             # id or name
}

struct WorkerRef {
  worker @0 :Text;          # id or name
}

struct ListJobsReply {
  jobs @0 :List(JobRecord);
}

struct ListWorkersReply {
  workers @0 :List(WorkerRecord);
}

struct CurvePoint {
  phaseIndex @0 :UInt32;
  step @1 :UInt64;
  loss @2 :Float64;
}

struct JobStatusReply {
  job @0 :JobRecord;
  placement @1 :PlacementRecord;
  hasPlacement @2 :Bool;
  recentSteps @3 :List(StepReport);
  events @4 :List(EventRecord);
  curve @5 :List(CurvePoint);  # the loss curve of every phase, downsampled to at most 64 points a phase
}

struct Ack {
  message @0 :Text;
}

struct ClusterInfoReply {
  clusterId @0 :Text;
  version @1 :Text;
  pid @2 :Int64;
  workers @3 :UInt32;
  jobs @4 :UInt32;
}

# ---------------------------------------------------------------- the frame

struct Envelope {
  id @0 :UInt64;            # sender-assigned, unique per connection direction; 0 = none
  replyTo @1 :UInt64;       # id of the request this answers; 0 = not a reply
  union {
    challenge @2 :Challenge;
    authResponse @3 :AuthResponse;
    authResult @4 :AuthResult;
    error @5 :Status;       # a failed request's reply

    registerWorker @6 :RegisterWorker;
    registerReply @7 :RegisterReply;
    heartbeat @8 :Heartbeat;
    heartbeatReply @9 :HeartbeatReply;
    assignment @10 :Assignment;
    assignmentAck @11 :AssignmentAck;
    stepReport @12 :StepReport;
    release @13 :Release;
    drain @14 :Drain;
    drained @15 :Drained;

    submit @16 :SubmitRequest;
    submitReply @17 :JobRecord;
    listJobs @18 :Void;
    listJobsReply @19 :ListJobsReply;
    jobStatus @20 :JobRef;
    jobStatusReply @21 :JobStatusReply;
    listWorkers @22 :Void;
    listWorkersReply @23 :ListWorkersReply;
    detach @24 :WorkerRef;
    cancel @25 :JobRef;
    ack @26 :Ack;
    clusterInfo @27 :Void;
    clusterInfoReply @28 :ClusterInfoReply;
    shutdown @29 :Void;     # CLI -> coordinator (shoal down)
    checkpointShard @30 :CheckpointShard;
    listCheckpoints @31 :JobRef;
    listCheckpointsReply @32 :ListCheckpointsReply;
    rankFailed @33 :RankFailed;
  }
}
