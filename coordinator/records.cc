#include "coordinator/records.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/exception.h>

#include <cstring>

namespace shoal::coordinator {
namespace {

std::string Str(capnp::Text::Reader t) { return std::string(t.cStr(), t.size()); }

template <typename Proto, typename Info>
std::string Encode(const Info& info) {
  capnp::MallocMessageBuilder b;
  ToProto(info, b.initRoot<Proto>());
  auto words = capnp::messageToFlatArray(b);
  auto bytes = words.asBytes();
  return std::string(reinterpret_cast<const char*>(bytes.begin()), bytes.size());
}

template <typename Proto, typename Info>
Result<Info> Decode(std::string_view bytes, const char* what) {
  if (bytes.size() % sizeof(capnp::word) != 0) {
    return DataLossError(std::string(what) + " record has " + std::to_string(bytes.size()) +
                         " bytes, not a whole number of words");
  }
  auto words = kj::heapArray<capnp::word>(bytes.size() / sizeof(capnp::word));
  std::memcpy(words.begin(), bytes.data(), bytes.size());
  Info info;
  kj::Maybe<kj::Exception> failure = kj::runCatchingExceptions([&]() {
    capnp::FlatArrayMessageReader reader(words.asPtr());
    info = FromProto(reader.getRoot<Proto>());
  });
  KJ_IF_MAYBE(e, failure) {
    return DataLossError(std::string(what) + " record is corrupt: " + e->getDescription().cStr());
  }
  return info;
}

}  // namespace

const char* WorkerStateName(WorkerState s) {
  switch (s) {
    case WorkerState::ALIVE: return "ALIVE";
    case WorkerState::SUSPECT: return "SUSPECT";
    case WorkerState::DEAD: return "DEAD";
    case WorkerState::DRAINING: return "DRAINING";
    case WorkerState::DETACHED: return "DETACHED";
  }
  return "UNKNOWN";
}

const char* JobStateName(JobState s) {
  switch (s) {
    case JobState::PENDING: return "PENDING";
    case JobState::PLACING: return "PLACING";
    case JobState::RUNNING: return "RUNNING";
    case JobState::RECOVERING: return "RECOVERING";
    case JobState::SUCCEEDED: return "SUCCEEDED";
    case JobState::FAILED: return "FAILED";
    case JobState::CANCELLED: return "CANCELLED";
  }
  return "UNKNOWN";
}

bool IsTerminal(JobState s) {
  return s == JobState::SUCCEEDED || s == JobState::FAILED || s == JobState::CANCELLED;
}

bool PlacementInfo::AllAcked() const {
  for (const auto& r : ranks) {
    if (!r.acked) return false;
  }
  return !ranks.empty();
}

std::string JobInfo::CurrentPhaseName() const {
  return phase_index < phases.size() ? phases[phase_index].name : "";
}

void ToProto(const WorkerInfo& w, proto::WorkerRecord::Builder b) {
  b.setWorkerId(w.worker_id);
  b.setName(w.name);
  b.setHost(w.host);
  b.setDevice(w.device);
  b.setDeviceIndex(w.device_index);
  b.setDeviceMemoryBytes(w.device_memory_bytes);
  b.setCores(w.cores);
  b.setDataAddress(w.data_address);
  b.setState(w.state);
  b.setReason(w.reason);
  b.setRegisteredAtMs(w.registered_at_ms);
  b.setLastHeartbeatMs(w.last_heartbeat_ms);
  b.setIncarnation(w.incarnation);
  b.setJobId(w.job_id);
  b.setPid(w.pid);
}

WorkerInfo FromProto(proto::WorkerRecord::Reader r) {
  WorkerInfo w;
  w.worker_id = Str(r.getWorkerId());
  w.name = Str(r.getName());
  w.host = Str(r.getHost());
  w.device = r.getDevice();
  w.device_index = r.getDeviceIndex();
  w.device_memory_bytes = r.getDeviceMemoryBytes();
  w.cores = r.getCores();
  w.data_address = Str(r.getDataAddress());
  w.state = r.getState();
  w.reason = Str(r.getReason());
  w.registered_at_ms = r.getRegisteredAtMs();
  w.last_heartbeat_ms = r.getLastHeartbeatMs();
  w.incarnation = r.getIncarnation();
  w.job_id = Str(r.getJobId());
  w.pid = r.getPid();
  return w;
}

void ToProto(const RankInfo& r, proto::RankAssignment::Builder b) {
  b.setPpRank(r.pp_rank);
  b.setDpRank(r.dp_rank);
  b.setWorkerId(r.worker_id);
  b.setWorkerName(r.worker_name);
  b.setHost(r.host);
  auto stages = b.initStages(static_cast<unsigned>(r.stages.size()));
  for (size_t i = 0; i < r.stages.size(); ++i) stages.set(static_cast<unsigned>(i), r.stages[i]);
  b.setEpGroup(r.ep_group);
  b.setEpRank(r.ep_rank);
  b.setExpertBegin(r.expert_begin);
  b.setExpertEnd(r.expert_end);
  b.setAcked(r.acked);
  b.setDataAddress(r.data_address);
}

RankInfo FromProto(proto::RankAssignment::Reader r) {
  RankInfo out;
  out.pp_rank = r.getPpRank();
  out.dp_rank = r.getDpRank();
  out.worker_id = Str(r.getWorkerId());
  out.worker_name = Str(r.getWorkerName());
  out.host = Str(r.getHost());
  for (auto s : r.getStages()) out.stages.push_back(s);
  out.ep_group = r.getEpGroup();
  out.ep_rank = r.getEpRank();
  out.expert_begin = r.getExpertBegin();
  out.expert_end = r.getExpertEnd();
  out.acked = r.getAcked();
  out.data_address = Str(r.getDataAddress());
  return out;
}

void ToProto(const PlacementInfo& p, proto::PlacementRecord::Builder b) {
  b.setJobId(p.job_id);
  b.setEpoch(p.epoch);
  auto ranks = b.initRanks(static_cast<unsigned>(p.ranks.size()));
  for (size_t i = 0; i < p.ranks.size(); ++i) ToProto(p.ranks[i], ranks[static_cast<unsigned>(i)]);
  auto stages = b.initStages(static_cast<unsigned>(p.stages.size()));
  for (size_t i = 0; i < p.stages.size(); ++i) {
    auto s = stages[static_cast<unsigned>(i)];
    s.setStage(p.stages[i].stage);
    s.setLayerBegin(p.stages[i].layer_begin);
    s.setLayerEnd(p.stages[i].layer_end);
    s.setHasEmbedding(p.stages[i].has_embedding);
    s.setHasHead(p.stages[i].has_head);
  }
  b.setCreatedAtMs(p.created_at_ms);
  b.setDescription(p.description);
}

PlacementInfo FromProto(proto::PlacementRecord::Reader r) {
  PlacementInfo p;
  p.job_id = Str(r.getJobId());
  p.epoch = r.getEpoch();
  for (auto rank : r.getRanks()) p.ranks.push_back(FromProto(rank));
  for (auto s : r.getStages()) {
    p.stages.push_back(StageInfo{s.getStage(), s.getLayerBegin(), s.getLayerEnd(), s.getHasEmbedding(),
                                 s.getHasHead()});
  }
  p.created_at_ms = r.getCreatedAtMs();
  p.description = Str(r.getDescription());
  return p;
}

void ToProto(const JobInfo& j, proto::JobRecord::Builder b) {
  b.setJobId(j.job_id);
  b.setName(j.name);
  b.setSpecYaml(j.spec_yaml);
  b.setSpecFile(j.spec_file);
  b.setState(j.state);
  b.setReason(j.reason);
  b.setPhaseIndex(j.phase_index);
  b.setEpoch(j.epoch);
  b.setSubmittedAtMs(j.submitted_at_ms);
  b.setUpdatedAtMs(j.updated_at_ms);
  auto phases = b.initPhases(static_cast<unsigned>(j.phases.size()));
  for (size_t i = 0; i < j.phases.size(); ++i) {
    auto p = phases[static_cast<unsigned>(i)];
    p.setName(j.phases[i].name);
    p.setKind(j.phases[i].kind);
    p.setState(j.phases[i].state);
    p.setStep(j.phases[i].step);
    p.setTotalSteps(j.phases[i].total_steps);
  }
  b.setRestarts(j.restarts);
  b.setWorkersNeeded(j.workers_needed);
}

JobInfo FromProto(proto::JobRecord::Reader r) {
  JobInfo j;
  j.job_id = Str(r.getJobId());
  j.name = Str(r.getName());
  j.spec_yaml = Str(r.getSpecYaml());
  j.spec_file = Str(r.getSpecFile());
  j.state = r.getState();
  j.reason = Str(r.getReason());
  j.phase_index = r.getPhaseIndex();
  j.epoch = r.getEpoch();
  j.submitted_at_ms = r.getSubmittedAtMs();
  j.updated_at_ms = r.getUpdatedAtMs();
  for (auto p : r.getPhases()) {
    j.phases.push_back(PhaseInfo{Str(p.getName()), Str(p.getKind()), Str(p.getState()), p.getStep(),
                                 p.getTotalSteps()});
  }
  j.restarts = r.getRestarts();
  j.workers_needed = r.getWorkersNeeded();
  return j;
}

void ToProto(const EventInfo& e, proto::EventRecord::Builder b) {
  b.setTimeMs(e.time_ms);
  b.setJobId(e.job_id);
  b.setWorkerId(e.worker_id);
  b.setKind(e.kind);
  b.setMessage(e.message);
}

EventInfo FromProto(proto::EventRecord::Reader r) {
  return EventInfo{r.getTimeMs(), Str(r.getJobId()), Str(r.getWorkerId()), Str(r.getKind()), Str(r.getMessage())};
}

std::string CheckpointId(const std::string& phase, uint64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "-%06llu", static_cast<unsigned long long>(step));
  return phase + buf;
}

void ToProto(const CheckpointShardInfo& s, proto::CheckpointShard::Builder b) {
  b.setJobId(s.job_id);
  b.setEpoch(s.epoch);
  b.setPhase(s.phase);
  b.setPhaseIndex(s.phase_index);
  b.setStep(s.step);
  b.setPpRank(s.pp_rank);
  b.setDpRank(s.dp_rank);
  b.setDir(s.dir);
  auto files = b.initFiles(static_cast<unsigned>(s.files.size()));
  for (size_t i = 0; i < s.files.size(); ++i) {
    auto f = files[static_cast<unsigned>(i)];
    f.setName(s.files[i].name);
    f.setBytes(s.files[i].bytes);
    f.setXxh3(s.files[i].xxh3);
  }
  b.setCursor(s.cursor);
  b.setPhaseDone(s.phase_done);
}

CheckpointShardInfo FromProto(proto::CheckpointShard::Reader r) {
  CheckpointShardInfo s;
  s.job_id = Str(r.getJobId());
  s.epoch = r.getEpoch();
  s.phase = Str(r.getPhase());
  s.phase_index = r.getPhaseIndex();
  s.step = r.getStep();
  s.pp_rank = r.getPpRank();
  s.dp_rank = r.getDpRank();
  s.dir = Str(r.getDir());
  for (auto f : r.getFiles()) s.files.push_back(CheckpointFileInfo{Str(f.getName()), f.getBytes(), f.getXxh3()});
  s.cursor = Str(r.getCursor());
  s.phase_done = r.getPhaseDone();
  return s;
}

void ToProto(const CheckpointInfo& c, proto::CheckpointRecord::Builder b) {
  b.setJobId(c.job_id);
  b.setCheckpointId(c.checkpoint_id);
  b.setPhase(c.phase);
  b.setPhaseIndex(c.phase_index);
  b.setStep(c.step);
  b.setDir(c.dir);
  auto shards = b.initShards(static_cast<unsigned>(c.shards.size()));
  for (size_t i = 0; i < c.shards.size(); ++i) ToProto(c.shards[i], shards[static_cast<unsigned>(i)]);
  b.setCommittedAtMs(c.committed_at_ms);
  b.setEpoch(c.epoch);
  b.setPhaseDone(c.phase_done);
}

CheckpointInfo FromProto(proto::CheckpointRecord::Reader r) {
  CheckpointInfo c;
  c.job_id = Str(r.getJobId());
  c.checkpoint_id = Str(r.getCheckpointId());
  c.phase = Str(r.getPhase());
  c.phase_index = r.getPhaseIndex();
  c.step = r.getStep();
  c.dir = Str(r.getDir());
  for (auto s : r.getShards()) c.shards.push_back(FromProto(s));
  c.committed_at_ms = r.getCommittedAtMs();
  c.epoch = r.getEpoch();
  c.phase_done = r.getPhaseDone();
  return c;
}

void ToProto(const StepReportInfo& s, proto::StepReport::Builder b) {
  b.setJobId(s.job_id);
  b.setPhaseIndex(s.phase_index);
  b.setEpoch(s.epoch);
  b.setPhase(s.phase);
  b.setStep(s.step);
  b.setPpRank(s.pp_rank);
  b.setDpRank(s.dp_rank);
  b.setLoss(s.loss);
  auto m = b.initMetrics(static_cast<unsigned>(s.metrics.size()));
  for (size_t i = 0; i < s.metrics.size(); ++i) {
    m[static_cast<unsigned>(i)].setName(s.metrics[i].first);
    m[static_cast<unsigned>(i)].setValue(s.metrics[i].second);
  }
  b.setTimeMs(s.time_ms);
}

StepReportInfo FromProto(proto::StepReport::Reader r) {
  StepReportInfo s;
  s.job_id = Str(r.getJobId());
  s.phase_index = r.getPhaseIndex();
  s.epoch = r.getEpoch();
  s.phase = Str(r.getPhase());
  s.step = r.getStep();
  s.pp_rank = r.getPpRank();
  s.dp_rank = r.getDpRank();
  s.loss = r.getLoss();
  for (auto m : r.getMetrics()) s.metrics.emplace_back(Str(m.getName()), m.getValue());
  s.time_ms = r.getTimeMs();
  return s;
}

std::string EncodeWorker(const WorkerInfo& w) { return Encode<proto::WorkerRecord>(w); }
Result<WorkerInfo> DecodeWorker(std::string_view b) { return Decode<proto::WorkerRecord, WorkerInfo>(b, "worker"); }
std::string EncodeJob(const JobInfo& j) { return Encode<proto::JobRecord>(j); }
Result<JobInfo> DecodeJob(std::string_view b) { return Decode<proto::JobRecord, JobInfo>(b, "job"); }
std::string EncodePlacement(const PlacementInfo& p) { return Encode<proto::PlacementRecord>(p); }
Result<PlacementInfo> DecodePlacement(std::string_view b) {
  return Decode<proto::PlacementRecord, PlacementInfo>(b, "placement");
}
std::string EncodeEvent(const EventInfo& e) { return Encode<proto::EventRecord>(e); }
Result<EventInfo> DecodeEvent(std::string_view b) { return Decode<proto::EventRecord, EventInfo>(b, "event"); }

}  // namespace shoal::coordinator

namespace shoal::coordinator {
std::string EncodeCheckpoint(const CheckpointInfo& c) { return Encode<proto::CheckpointRecord>(c); }
Result<CheckpointInfo> DecodeCheckpoint(std::string_view b) {
  return Decode<proto::CheckpointRecord, CheckpointInfo>(b, "checkpoint");
}
std::string EncodeStepReport(const StepReportInfo& s) { return Encode<proto::StepReport>(s); }
Result<StepReportInfo> DecodeStepReport(std::string_view b) {
  return Decode<proto::StepReport, StepReportInfo>(b, "step report");
}
}  // namespace shoal::coordinator
