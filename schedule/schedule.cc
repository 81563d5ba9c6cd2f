// The schedule vocabulary: names, the stage layout of each schedule kind, the settings rules and printing.
#include "schedule/schedule.h"


namespace shoal::schedule {

std::string_view ToString(ScheduleKind kind) {
  switch (kind) {
    case ScheduleKind::k1F1B: return "1f1b";
    case ScheduleKind::kZB1P: return "zb1p";
    case ScheduleKind::kDualPipe: return "dualpipe";
    case ScheduleKind::kDualPipeV: return "dualpipev";
  }
  return "?";
}

Result<ScheduleKind> ParseScheduleKind(std::string_view name) {
  for (ScheduleKind k : {ScheduleKind::k1F1B, ScheduleKind::kZB1P, ScheduleKind::kDualPipe, ScheduleKind::kDualPipeV}) {
    if (ToString(k) == name) return k;
  }
  return InvalidArgumentError("unknown pipeline schedule \"" + std::string(name) +
                              "\": expected 1f1b, zb1p, dualpipe or dualpipev");
}

std::string_view ToString(OpType type) {
  switch (type) {
    case OpType::kForward: return "F";
    case OpType::kBackwardInput: return "B";
    case OpType::kBackwardWeight: return "W";
    case OpType::kBackward: return "BW";
    case OpType::kForwardBackward: return "F&B";
    case OpType::kSendActivation: return "SEND_ACT";
    case OpType::kRecvActivation: return "RECV_ACT";
    case OpType::kSendGrad: return "SEND_GRAD";
    case OpType::kRecvGrad: return "RECV_GRAD";
  }
  return "?";
}

std::string ToString(const Op& op) {
  auto ref = [](std::string_view name, int stage, int mb) {
    return std::string(name) + "(s" + std::to_string(stage) + ",mb" + std::to_string(mb) + ")";
  };
  switch (op.type) {
    case OpType::kForwardBackward:
      return ref("F", op.stage, op.micro_batch) + "&" + ref("BW", op.bwd_stage, op.bwd_micro_batch);
    case OpType::kSendActivation:
    case OpType::kSendGrad:
      return ref(ToString(op.type), op.stage, op.micro_batch) + "->r" + std::to_string(op.peer);
    case OpType::kRecvActivation:
    case OpType::kRecvGrad:
      return ref(ToString(op.type), op.stage, op.micro_batch) + "<-r" + std::to_string(op.peer);
    default:
      return ref(ToString(op.type), op.stage, op.micro_batch);
  }
}

int NumStages(ScheduleKind kind, int pp) { return kind == ScheduleKind::kDualPipeV ? 2 * pp : pp; }

std::vector<ChunkInfo> ChunksOfRank(ScheduleKind kind, int pp, int num_micro_batches, int rank) {
  const int m = num_micro_batches;
  switch (kind) {
    case ScheduleKind::k1F1B:
    case ScheduleKind::kZB1P:
      return {ChunkInfo{rank, Direction::kDown, 0, m}};
    case ScheduleKind::kDualPipe:
      return {ChunkInfo{rank, Direction::kDown, 0, m / 2}, ChunkInfo{pp - 1 - rank, Direction::kUp, m / 2, m}};
    case ScheduleKind::kDualPipeV:
      return {ChunkInfo{rank, Direction::kDown, 0, m}, ChunkInfo{2 * pp - 1 - rank, Direction::kUp, 0, m}};
  }
  return {};
}

int RankOfStage(ScheduleKind kind, int pp, int num_micro_batches, int stage, int micro_batch) {
  switch (kind) {
    case ScheduleKind::k1F1B:
    case ScheduleKind::kZB1P:
      return stage;
    case ScheduleKind::kDualPipe:
      return micro_batch < num_micro_batches / 2 ? stage : pp - 1 - stage;
    case ScheduleKind::kDualPipeV:
      return stage < pp ? stage : 2 * pp - 1 - stage;
  }
  return -1;
}

Status CheckScheduleSettings(ScheduleKind kind, int pp, int num_micro_batches) {
  const std::string name(ToString(kind));
  const std::string pp_s = std::to_string(pp), m_s = std::to_string(num_micro_batches);
  if (pp < 1) return InvalidArgumentError(name + ": the pipeline needs at least 1 rank (got " + pp_s + ")");
  if (num_micro_batches < 1) {
    return InvalidArgumentError(name + ": a step needs at least 1 micro-batch (got " + m_s + ")");
  }
  if (kind == ScheduleKind::kDualPipe) {
    if (pp % 2 != 0) {
      return InvalidArgumentError("dualpipe needs an even number of pipeline ranks (got " + pp_s +
                                  "): its two directions pair rank r with rank PP-1-r");
    }
    if (num_micro_batches % 2 != 0) {
      return InvalidArgumentError("dualpipe needs an even number of micro-batches (got " + m_s +
                                  "): half run in each direction");
    }
  }
  if ((kind == ScheduleKind::kDualPipe || kind == ScheduleKind::kDualPipeV) && num_micro_batches < 2 * pp) {
    return InvalidArgumentError(name + " needs at least 2·PP = " + std::to_string(2 * pp) +
                                " micro-batches per step (got " + m_s + ")");
  }
  return Status::OK();
}

std::string ScheduleToString(const Schedule& schedule) {
  std::string out;
  for (size_t r = 0; r < schedule.ranks.size(); ++r) {
    out += "r" + std::to_string(r) + ":";
    for (const Op& op : schedule.ranks[r].ops) out += " " + ToString(op);
    out += "\n";
  }
  return out;
}

}  // namespace shoal::schedule
