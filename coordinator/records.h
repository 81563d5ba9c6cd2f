// The coordinator's durable facts as value structs, and their Cap'n Proto encodings (RocksDB values and
// CLI replies use the same structs from protocol/shoal.capnp, so schema evolution comes for free).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "protocol/shoal.capnp.h"

namespace shoal::coordinator {

using WorkerState = proto::WorkerState;
using JobState = proto::JobState;

const char* WorkerStateName(WorkerState s);  // "ALIVE", ...
const char* JobStateName(JobState s);        // "RUNNING", ...
bool IsTerminal(JobState s);

struct WorkerInfo {
  std::string worker_id;
  std::string name;
  std::string host;
  proto::DeviceKind device = proto::DeviceKind::CPU;
  int32_t device_index = 0;
  uint64_t device_memory_bytes = 0;
  uint32_t cores = 0;
  std::string data_address;
  WorkerState state = WorkerState::ALIVE;
  std::string reason;
  int64_t registered_at_ms = 0;
  int64_t last_heartbeat_ms = 0;
  uint64_t incarnation = 0;
  std::string job_id;
  int64_t pid = 0;
};

struct RankInfo {
  uint32_t pp_rank = 0;
  uint32_t dp_rank = 0;
  std::string worker_id;
  std::string worker_name;
  std::string host;
  std::vector<uint32_t> stages;
  uint32_t ep_group = 0;
  uint32_t ep_rank = 0;
  uint32_t expert_begin = 0;
  uint32_t expert_end = 0;
  bool acked = false;
  std::string data_address;
};

struct StageInfo {
  uint32_t stage = 0;
  uint32_t layer_begin = 0;
  uint32_t layer_end = 0;
  bool has_embedding = false;
  bool has_head = false;
};

struct PlacementInfo {
  std::string job_id;
  uint64_t epoch = 0;
  std::vector<RankInfo> ranks;
  std::vector<StageInfo> stages;
  int64_t created_at_ms = 0;
  std::string description;

  bool AllAcked() const;
};

struct PhaseInfo {
  std::string name;
  std::string kind;
  std::string state = "pending";  // pending | running | done
  uint64_t step = 0;
  uint64_t total_steps = 0;
};

struct JobInfo {
  std::string job_id;
  std::string name;
  std::string spec_yaml;
  std::string spec_file;
  JobState state = JobState::PENDING;
  std::string reason;
  uint32_t phase_index = 0;
  uint64_t epoch = 0;
  int64_t submitted_at_ms = 0;
  int64_t updated_at_ms = 0;
  std::vector<PhaseInfo> phases;
  uint32_t restarts = 0;
  uint32_t workers_needed = 0;

  std::string CurrentPhaseName() const;
};

struct StepReportInfo {
  std::string job_id;
  uint32_t phase_index = 0;
  uint64_t epoch = 0;
  std::string phase;
  uint64_t step = 0;
  uint32_t pp_rank = 0;
  uint32_t dp_rank = 0;
  double loss = 0;
  std::vector<std::pair<std::string, double>> metrics;
  int64_t time_ms = 0;
};

struct CheckpointFileInfo {
  std::string name;
  uint64_t bytes = 0;
  uint64_t xxh3 = 0;
};

struct CheckpointShardInfo {
  std::string job_id;
  uint64_t epoch = 0;
  std::string phase;
  uint32_t phase_index = 0;
  uint64_t step = 0;
  uint32_t pp_rank = 0;
  uint32_t dp_rank = 0;
  std::string dir;
  std::vector<CheckpointFileInfo> files;
  std::string cursor;
  bool phase_done = false;
};

struct CheckpointInfo {
  std::string job_id;
  std::string checkpoint_id;  // "<phase>-<step, 6 digits>"
  std::string phase;
  uint32_t phase_index = 0;
  uint64_t step = 0;
  std::string dir;
  std::vector<CheckpointShardInfo> shards;
  int64_t committed_at_ms = 0;
  uint64_t epoch = 0;
  bool phase_done = false;
};

std::string CheckpointId(const std::string& phase, uint64_t step);

struct EventInfo {
  int64_t time_ms = 0;
  std::string job_id;
  std::string worker_id;
  std::string kind;
  std::string message;
};

// Builder/reader conversions (used for RocksDB values and replies).
void ToProto(const WorkerInfo& w, proto::WorkerRecord::Builder b);
WorkerInfo FromProto(proto::WorkerRecord::Reader r);
void ToProto(const RankInfo& r, proto::RankAssignment::Builder b);
RankInfo FromProto(proto::RankAssignment::Reader r);
void ToProto(const PlacementInfo& p, proto::PlacementRecord::Builder b);
PlacementInfo FromProto(proto::PlacementRecord::Reader r);
void ToProto(const JobInfo& j, proto::JobRecord::Builder b);
JobInfo FromProto(proto::JobRecord::Reader r);
void ToProto(const EventInfo& e, proto::EventRecord::Builder b);
EventInfo FromProto(proto::EventRecord::Reader r);

void ToProto(const CheckpointShardInfo& s, proto::CheckpointShard::Builder b);
CheckpointShardInfo FromProto(proto::CheckpointShard::Reader r);
void ToProto(const CheckpointInfo& c, proto::CheckpointRecord::Builder b);
CheckpointInfo FromProto(proto::CheckpointRecord::Reader r);
void ToProto(const StepReportInfo& s, proto::StepReport::Builder b);
StepReportInfo FromProto(proto::StepReport::Reader r);

// Bytes codecs for storage::TypedTable. Decode failures are DataLoss.
std::string EncodeWorker(const WorkerInfo& w);
Result<WorkerInfo> DecodeWorker(std::string_view bytes);
std::string EncodeJob(const JobInfo& j);
Result<JobInfo> DecodeJob(std::string_view bytes);
std::string EncodePlacement(const PlacementInfo& p);
Result<PlacementInfo> DecodePlacement(std::string_view bytes);
std::string EncodeEvent(const EventInfo& e);
Result<EventInfo> DecodeEvent(std::string_view bytes);
std::string EncodeCheckpoint(const CheckpointInfo& c);
Result<CheckpointInfo> DecodeCheckpoint(std::string_view bytes);
std::string EncodeStepReport(const StepReportInfo& s);
Result<StepReportInfo> DecodeStepReport(std::string_view bytes);

}  // namespace shoal::coordinator
