#include "worker/dist/dist_layout.h"

#include <set>

#include <algorithm>
#include <numeric>

namespace shoal::dist {

schedule::ScheduleKind ToScheduleKind(PipelineSchedule schedule) {
  switch (schedule) {
    case PipelineSchedule::k1F1B: return schedule::ScheduleKind::k1F1B;
    case PipelineSchedule::kZB1P: return schedule::ScheduleKind::kZB1P;
    case PipelineSchedule::kDualPipe: return schedule::ScheduleKind::kDualPipe;
    case PipelineSchedule::kDualPipeV: return schedule::ScheduleKind::kDualPipeV;
  }
  return schedule::ScheduleKind::k1F1B;
}

bool DistLayout::holds_stage(int stage) const { return ChunkOfStage(stage) >= 0; }

int DistLayout::ChunkOfStage(int stage) const {
  for (size_t c = 0; c < chunks.size(); ++c) {
    if (chunks[c].stage_idx == stage) return static_cast<int>(c);
  }
  return -1;
}

namespace {

std::string Ranks(const std::vector<int>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
  return s + "]";
}

}  // namespace

std::string DistLayout::DebugString() const {
  std::string s = "rank " + std::to_string(rank) + " (pp " + std::to_string(pp_rank) + ", dp " +
                  std::to_string(dp_rank) + ", ep " + std::to_string(ep_group) + "." + std::to_string(ep_rank) +
                  ") of PP" + std::to_string(pp) + "xDP" + std::to_string(dp) + "xEP" + std::to_string(ep) + " " +
                  std::string(schedule::ToString(kind)) + ", " + std::to_string(num_micro_batches) +
                  " micro-batches; stages";
  for (const auto& c : chunks) {
    s += " " + std::to_string(c.stage_idx) + "[" + std::to_string(c.layer_begin) + "," + std::to_string(c.layer_end) +
         ")" + (c.has_embedding ? "+emb" : "") + (c.has_head ? "+head" : "");
  }
  s += "; experts [" + std::to_string(expert_begin) + "," + std::to_string(expert_end) + ")";
  s += "; replicas " + Ranks(replica_group) + ", expert group " + Ranks(expert_group);
  return s;
}

Result<DistLayout> MakeDistLayout(const JobSpec& spec, int pp_rank, int dp_rank) {
  RETURN_IF_ERROR(ValidateJobSpec(spec));
  const ParallelSpec& p = spec.parallel;
  if (pp_rank < 0 || pp_rank >= p.pipeline || dp_rank < 0 || dp_rank >= p.data) {
    return InvalidArgumentError("rank (pipeline " + std::to_string(pp_rank) + ", data " + std::to_string(dp_rank) +
                                ") is outside the job's layout of pipeline " + std::to_string(p.pipeline) +
                                " x data " + std::to_string(p.data));
  }
  DistLayout l;
  l.pp = p.pipeline;
  l.dp = p.data;
  l.ep = p.expert;
  l.kind = ToScheduleKind(p.schedule);
  l.num_micro_batches = static_cast<int>(spec.num_micro_batches());
  l.num_stages = p.num_stages();
  l.pp_rank = pp_rank;
  l.dp_rank = dp_rank;
  l.rank = JobRank(pp_rank, dp_rank, l.dp);
  l.ep_group = dp_rank / l.ep;
  l.ep_rank = dp_rank % l.ep;
  const int64_t experts = spec.model.config.n_routed_experts;
  l.expert_begin = experts * l.ep_rank / l.ep;
  l.expert_end = experts * (l.ep_rank + 1) / l.ep;
  if (l.num_stages > kMaxPipelineEdges) {
    return InvalidArgumentError("the pipeline has " + std::to_string(l.num_stages) + " stages; at most " +
                                std::to_string(kMaxPipelineEdges) + " are supported");
  }
  if (l.num_micro_batches >= kMaxMicroBatches) {
    return InvalidArgumentError(std::to_string(l.num_micro_batches) + " micro-batches per step; at most " +
                                std::to_string(kMaxMicroBatches - 1) + " are supported");
  }
  RETURN_IF_ERROR(schedule::CheckScheduleSettings(l.kind, l.pp, l.num_micro_batches));

  const std::vector<StageLayout> stages = SplitLayers(spec.model.config, l.num_stages);
  for (const auto& c : schedule::ChunksOfRank(l.kind, l.pp, l.num_micro_batches, pp_rank)) {
    l.chunks.push_back(stages[static_cast<size_t>(c.stage)]);
  }

  l.world.resize(static_cast<size_t>(l.pp * l.dp));
  std::iota(l.world.begin(), l.world.end(), 0);
  for (int d = 0; d < l.dp; ++d) l.dp_group.push_back(JobRank(pp_rank, d, l.dp));
  for (int k = 0; k < l.ep; ++k) l.ep_members.push_back(JobRank(pp_rank, l.ep_group * l.ep + k, l.dp));
  // Pipeline ranks holding this rank's stages (the same set for each of its chunks).
  std::vector<int> holders;
  for (int r = 0; r < l.pp; ++r) {
    for (const auto& c : schedule::ChunksOfRank(l.kind, l.pp, l.num_micro_batches, r)) {
      if (l.holds_stage(c.stage)) {
        holders.push_back(r);
        break;
      }
    }
  }
  for (int r : holders) {
    for (int d = 0; d < l.dp; ++d) {
      l.replica_group.push_back(JobRank(r, d, l.dp));
      if (d % l.ep == l.ep_rank) l.expert_group.push_back(JobRank(r, d, l.dp));
    }
  }
  std::sort(l.replica_group.begin(), l.replica_group.end());
  std::sort(l.expert_group.begin(), l.expert_group.end());

  // Explicit comm ids; identical member lists share one id (and so one call sequence).
  // Ranges: dp groups 0x100 + pipeline rank, replica groups 0x200 + their first pipeline rank, expert groups
  // 0x400.., EP groups 0x800.., the EP groups' second lane 0xC00.. (pipeline ranks < 256 by the stage limit).
  std::vector<std::pair<std::vector<int>, uint32_t>> known = {{l.world, kWorldGroupId}};
  auto id_of = [&](const std::vector<int>& members, uint32_t own) -> uint32_t {
    for (const auto& [m, id] : known) {
      if (m == members) return id;
    }
    known.emplace_back(members, own);
    return own;
  };
  l.dp_group_id = id_of(l.dp_group, 0x100u + static_cast<uint32_t>(pp_rank));
  l.replica_group_id = id_of(l.replica_group, 0x200u + static_cast<uint32_t>(holders.front()));
  l.expert_group_id =
      id_of(l.expert_group, 0x400u + static_cast<uint32_t>((holders.front() * l.ep + l.ep_rank) % 0x400));
  const uint32_t ep_index = static_cast<uint32_t>((pp_rank * (l.dp / l.ep) + l.ep_group) % 0x400);
  l.ep_group_id = id_of(l.ep_members, 0x800u + ep_index);
  l.ep_overlap_group_id = 0xC00u + ep_index;  // never shared: the second lane's own call sequence

  // The MTP layer's embedding copy lives on the last stage when that stage lacks the embedding.
  const bool has_copy = spec.model.config.num_nextn_predict_layers > 0 && l.num_stages > 1;
  const int last = l.num_stages - 1;
  if (has_copy && (l.holds_stage(0) || l.holds_stage(last))) {
    if (l.holds_stage(0) && l.holds_stage(last)) {
      l.mtp_pairing = DistLayout::MtpPairing::kLocal;
    } else {
      // 1f1b / zb1p: stage 0 on pipeline rank 0, the last stage on pipeline rank pp-1; pair equal data ranks.
      l.mtp_pairing = DistLayout::MtpPairing::kPeer;
      l.mtp_pair_rank = JobRank(l.holds_stage(0) ? l.pp - 1 : 0, dp_rank, l.dp);
    }
  }
  return l;
}

std::vector<int> AssignOwners(const std::vector<int64_t>& numel, int parts) {
  std::vector<int> owner(numel.size(), 0);
  if (parts <= 1) return owner;
  std::vector<size_t> order(numel.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return numel[a] > numel[b]; });
  std::vector<int64_t> load(static_cast<size_t>(parts), 0);
  for (size_t i : order) {
    size_t best = 0;
    for (size_t p = 1; p < load.size(); ++p) {
      if (load[p] < load[best]) best = p;
    }
    owner[i] = static_cast<int>(best);
    load[best] += numel[i];
  }
  return owner;
}

bool IsExpertTensor(const std::string& name) { return name.find(".mlp.experts.") != std::string::npos; }

uint32_t PipeTag(PipeTensor kind, int edge, int micro_batch) {
  return (static_cast<uint32_t>(kind) << 22) | (static_cast<uint32_t>(edge & 0xff) << 14) |
         static_cast<uint32_t>(micro_batch & 0x3fff);
}

std::vector<int> PeakInFlight(const schedule::RankSchedule& rank) {
  using schedule::OpType;
  std::vector<int> now(rank.chunks.size(), 0), peak(rank.chunks.size(), 0);
  for (const auto& op : rank.ops) {
    auto c = static_cast<size_t>(op.chunk);
    switch (op.type) {
      case OpType::kForward:
        peak[c] = std::max(peak[c], ++now[c]);
        break;
      case OpType::kForwardBackward:
        peak[c] = std::max(peak[c], ++now[c]);
        --now[static_cast<size_t>(op.bwd_chunk)];
        break;
      case OpType::kBackward:
      case OpType::kBackwardWeight:
        --now[c];
        break;
      default:
        break;
    }
  }
  return peak;
}

Status CheckNodeLimit(const JobSpec& spec, const DistLayout& layout, const std::map<int, std::string>& hosts,
                      int* max_hosts) {
  const int limit = spec.parallel.max_nodes_per_token;
  const ModelConfig& m = spec.model.config;
  if (limit <= 0 || m.n_routed_experts <= 0) return Status::OK();
  const int64_t E = m.n_routed_experts, G = m.n_group, per_rank = E / layout.ep;
  std::set<std::string> all_hosts;
  for (int64_t g = 0; g < G; ++g) {
    std::set<std::string> group_hosts;
    for (int64_t e = g * E / G; e < (g + 1) * E / G; ++e) {
      const int member = layout.ep_members[static_cast<size_t>(e / per_rank)];
      auto it = hosts.find(member);
      group_hosts.insert(it == hosts.end() ? "rank " + std::to_string(member) : it->second);
    }
    if (group_hosts.size() > 1) {
      std::string names;
      for (const auto& h : group_hosts) names += (names.empty() ? "" : ", ") + h;
      return InvalidArgumentError(
          "parallel.max_nodes_per_token: expert group " + std::to_string(g) + " (experts " +
          std::to_string(g * E / G) + ".." + std::to_string((g + 1) * E / G - 1) + ") spans hosts " + names +
          "; node-limited routing needs every one of the n_group = " + std::to_string(G) +
          " groups on one host (make n_group a multiple of the hosts per EP group)");
    }
    all_hosts.insert(*group_hosts.begin());
  }
  if (max_hosts) {
    *max_hosts = static_cast<int>(std::min<int64_t>(m.topk_group, static_cast<int64_t>(all_hosts.size())));
  }
  return Status::OK();
}

bool DispatchInFp8(const JobSpec& spec) {
  return spec.parallel.dispatch ? *spec.parallel.dispatch == Precision::kFp8 : spec.precision == Precision::kFp8;
}

bool CombineInBf16(const JobSpec& spec) {
  return spec.parallel.combine ? *spec.parallel.combine == Precision::kBf16 : spec.precision == Precision::kFp8;
}

}  // namespace shoal::dist
