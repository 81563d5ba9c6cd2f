#include "coordinator/placement_adapter.h"

#include "coordinator/placement.h"

namespace shoal::coordinator {

PlacementPolicy MakePlacementPolicy() {
  return [](const std::vector<WorkerInfo>& free_workers, const JobSpec& spec) -> Result<PlacementInfo> {
    ClusterView view;
    for (const auto& w : free_workers) {
      shoal::WorkerInfo c;
      c.worker_id = w.worker_id;
      c.name = w.name;
      c.host = w.host;
      c.device = w.device == proto::DeviceKind::CUDA ? shoal::DeviceKind::kCuda : shoal::DeviceKind::kCpu;
      c.device_memory_bytes = w.device_memory_bytes;
      c.cores = static_cast<int>(w.cores);
      c.alive = w.state == WorkerState::ALIVE;
      c.schedulable = true;
      view.workers.push_back(std::move(c));
    }
    ASSIGN_OR_RETURN(Placement p, Place(view, spec));
    PlacementInfo out;
    for (const auto& r : p.ranks) {
      RankInfo rank;
      rank.pp_rank = static_cast<uint32_t>(r.pipeline_rank);
      rank.dp_rank = static_cast<uint32_t>(r.data_rank);
      rank.worker_id = r.worker_id;
      rank.worker_name = r.worker_name;
      rank.host = r.host;
      for (int s : r.stages) rank.stages.push_back(static_cast<uint32_t>(s));
      rank.ep_group = static_cast<uint32_t>(r.ep_group);
      rank.ep_rank = static_cast<uint32_t>(r.ep_rank);
      rank.expert_begin = static_cast<uint32_t>(r.expert_begin);
      rank.expert_end = static_cast<uint32_t>(r.expert_end);
      out.ranks.push_back(std::move(rank));
    }
    for (const auto& s : p.stages) {
      out.stages.push_back(StageInfo{static_cast<uint32_t>(s.stage_idx), static_cast<uint32_t>(s.layer_begin),
                                     static_cast<uint32_t>(s.layer_end), s.has_embedding, s.has_head});
    }
    out.description = DescribePlacement(p);
    return out;
  };
}

}  // namespace shoal::coordinator
