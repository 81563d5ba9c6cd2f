#include "coordinator/placement.h"

#include <algorithm>
#include <map>
#include <tuple>

#include "common/check.h"

namespace shoal {
namespace {

std::string Str(int64_t v) { return std::to_string(v); }

bool WorkerLess(const WorkerInfo* a, const WorkerInfo* b) {
  return std::tie(a->host, a->name, a->worker_id) < std::tie(b->host, b->name, b->worker_id);
}

struct Eligibility {
  std::vector<const WorkerInfo*> preferred;  // eligible, requested device kind
  std::vector<const WorkerInfo*> fallback;   // eligible, other kind the job may use
  int dead = 0, unschedulable = 0, busy = 0, other_kind = 0;
  std::map<std::string, int> busy_jobs;
};

Eligibility Classify(const ClusterView& cluster, DeviceKind want) {
  Eligibility e;
  for (const WorkerInfo& w : cluster.workers) {
    if (!w.alive) {
      ++e.dead;
    } else if (!w.schedulable) {
      ++e.unschedulable;
    } else if (!w.busy_job.empty()) {
      ++e.busy;
      ++e.busy_jobs[w.busy_job];
    } else if (w.device == want) {
      e.preferred.push_back(&w);
    } else if (want == DeviceKind::kCpu) {
      e.fallback.push_back(&w);
    } else {
      ++e.other_kind;
    }
  }
  std::sort(e.preferred.begin(), e.preferred.end(), WorkerLess);
  std::sort(e.fallback.begin(), e.fallback.end(), WorkerLess);
  return e;
}

Status NotEnough(const JobSpec& spec, const ClusterView& cluster, const Eligibility& e) {
  const ParallelSpec& p = spec.parallel;
  std::string msg = "job " + spec.name + " needs " + Str(p.world_size()) + " workers (pipeline " +
                    Str(p.pipeline) + " x data " + Str(p.data) + ") for device " +
                    std::string(ToString(spec.resources.device)) + "; " +
                    Str(static_cast<int64_t>(e.preferred.size() + e.fallback.size())) + " usable of " +
                    Str(static_cast<int64_t>(cluster.workers.size())) + " known";
  std::vector<std::string> why;
  if (e.dead) why.push_back(Str(e.dead) + " not alive");
  if (e.unschedulable) why.push_back(Str(e.unschedulable) + " not schedulable");
  if (e.busy) {
    std::string jobs;
    for (const auto& [job, n] : e.busy_jobs) jobs += (jobs.empty() ? "" : ", ") + job;
    why.push_back(Str(e.busy) + " busy (" + jobs + ")");
  }
  if (e.other_kind) why.push_back(Str(e.other_kind) + " are cpu workers");
  if (!why.empty()) {
    msg += " (";
    for (size_t i = 0; i < why.size(); ++i) msg += (i ? ", " : "") + why[i];
    msg += ")";
  }
  msg += "; the job waits in PLACING until " + Str(p.world_size() - static_cast<int64_t>(e.preferred.size() +
                                                                                     e.fallback.size())) +
         " more attach";
  return UnavailableError(std::move(msg));
}

// Cuts the pool into `num_groups` chunks of `group_size` workers, whole hosts first (see the header).
std::vector<std::vector<const WorkerInfo*>> PackGroups(const std::vector<const WorkerInfo*>& pool, int num_groups,
                                                       int group_size) {
  std::map<std::string, std::vector<const WorkerInfo*>> by_host;  // each list in (name, id) order: pool is sorted
  for (const WorkerInfo* w : pool) by_host[w->host].push_back(w);
  struct Host {
    std::string name;
    std::vector<const WorkerInfo*> free;
  };
  std::vector<Host> hosts;
  for (auto& [name, workers] : by_host) hosts.push_back({name, std::move(workers)});

  std::vector<std::vector<const WorkerInfo*>> chunks;
  auto take = [](Host& h, size_t n, std::vector<const WorkerInfo*>& into) {
    into.insert(into.end(), h.free.begin(), h.free.begin() + n);
    h.free.erase(h.free.begin(), h.free.begin() + n);
  };
  // Whole groups: hosts that fit the most groups first, so the job spans as few hosts as it can.
  std::stable_sort(hosts.begin(), hosts.end(), [&](const Host& a, const Host& b) {
    return a.free.size() / group_size > b.free.size() / group_size;
  });
  for (Host& h : hosts) {
    while (static_cast<int>(chunks.size()) < num_groups && static_cast<int>(h.free.size()) >= group_size) {
      chunks.emplace_back();
      take(h, group_size, chunks.back());
    }
  }
  // Split groups: fullest remaining hosts first, consecutively.
  std::stable_sort(hosts.begin(), hosts.end(), [](const Host& a, const Host& b) {
    return a.free.size() != b.free.size() ? a.free.size() > b.free.size() : a.name < b.name;
  });
  std::vector<const WorkerInfo*> rest;
  for (Host& h : hosts) take(h, h.free.size(), rest);
  size_t next = 0;
  while (static_cast<int>(chunks.size()) < num_groups) {
    CHECK(next + group_size <= rest.size()) << "PackGroups: pool too small";
    chunks.emplace_back(rest.begin() + next, rest.begin() + next + group_size);
    next += group_size;
  }
  return chunks;
}

}  // namespace

std::vector<int> Placement::PipelineRanksOfStage(int stage) const {
  std::vector<int> out;
  for (int r = 0; r < pipeline; ++r) {
    std::vector<int> held = StagesOfPipelineRank(schedule, pipeline, r);
    if (std::find(held.begin(), held.end(), stage) != held.end()) out.push_back(r);
  }
  return out;
}

Result<Placement> Place(const ClusterView& cluster, const JobSpec& spec) {
  RETURN_IF_ERROR(ValidateJobSpec(spec));
  const ParallelSpec& p = spec.parallel;
  const ModelConfig& model = spec.model.config;
  const int needed = p.world_size();
  const int groups_per_rank = p.data / p.expert;

  Eligibility e = Classify(cluster, spec.resources.device);
  if (static_cast<int>(e.preferred.size() + e.fallback.size()) < needed) return NotEnough(spec, cluster, e);
  std::vector<const WorkerInfo*> pool = e.preferred;
  int fallback_used = 0;
  if (static_cast<int>(pool.size()) < needed) {
    fallback_used = needed - static_cast<int>(pool.size());
    pool.insert(pool.end(), e.fallback.begin(), e.fallback.begin() + fallback_used);
    std::sort(pool.begin(), pool.end(), WorkerLess);
  }

  Placement out;
  out.job_name = spec.name;
  out.pipeline = p.pipeline;
  out.data = p.data;
  out.expert = p.expert;
  out.schedule = p.schedule;
  out.num_main_layers = model.num_hidden_layers;
  out.n_routed_experts = model.n_routed_experts;
  out.experts_per_rank = model.n_routed_experts / p.expert;
  out.stages = SplitLayers(model, p.num_stages());
  out.ranks.resize(needed);

  std::vector<std::vector<const WorkerInfo*>> chunks = PackGroups(pool, p.pipeline * groups_per_rank, p.expert);
  int split_groups = 0;
  for (int pr = 0; pr < p.pipeline; ++pr) {
    std::vector<int> stages = StagesOfPipelineRank(p.schedule, p.pipeline, pr);
    for (int g = 0; g < groups_per_rank; ++g) {
      const std::vector<const WorkerInfo*>& chunk = chunks[pr * groups_per_rank + g];
      EpGroupPlacement group;
      group.pipeline_rank = pr;
      group.group_idx = g;
      for (int k = 0; k < p.expert; ++k) {
        const int dr = g * p.expert + k;
        const int idx = pr * p.data + dr;
        const WorkerInfo& w = *chunk[k];
        RankPlacement& rank = out.ranks[idx];
        rank.pipeline_rank = pr;
        rank.data_rank = dr;
        rank.ep_group = g;
        rank.ep_rank = k;
        rank.stages = stages;
        rank.expert_begin = k * out.experts_per_rank;
        rank.expert_end = (k + 1) * out.experts_per_rank;
        rank.worker_id = w.worker_id;
        rank.worker_name = w.name;
        rank.host = w.host;
        rank.device = w.device;
        group.members.push_back(idx);
        if (std::find(group.hosts.begin(), group.hosts.end(), w.host) == group.hosts.end())
          group.hosts.push_back(w.host);
      }
      group.expert_owner.resize(model.n_routed_experts);
      for (int64_t x = 0; x < model.n_routed_experts; ++x)
        group.expert_owner[x] = group.members[x / out.experts_per_rank];
      if (!group.single_host()) ++split_groups;
      out.ep_groups.push_back(std::move(group));
    }
  }
  if (split_groups > 0 && p.expert > 1)
    out.notes.push_back(Str(split_groups) + " of " + Str(static_cast<int64_t>(out.ep_groups.size())) +
                        " EP groups span several hosts (no host has " + Str(p.expert) + " free workers for them)");
  if (fallback_used > 0)
    out.notes.push_back(Str(fallback_used) + " ranks run on cuda workers: only " +
                        Str(static_cast<int64_t>(e.preferred.size())) + " cpu workers are free");
  return out;
}

std::string DescribePlacement(const Placement& pl) {
  std::string out = "job " + pl.job_name + ": " + Str(pl.world_size()) + " workers, pipeline " + Str(pl.pipeline) +
                    " x data " + Str(pl.data) + ", expert " + Str(pl.expert) + ", schedule " +
                    std::string(ToString(pl.schedule)) + ", " + Str(static_cast<int64_t>(pl.stages.size())) +
                    " stages, " + Str(pl.experts_per_rank) + " routed experts per worker\n";
  using Row = std::vector<std::string>;
  auto table = [&out](const std::vector<Row>& rows) {
    std::vector<size_t> width;
    for (const Row& r : rows)
      for (size_t c = 0; c < r.size(); ++c) {
        if (width.size() <= c) width.push_back(0);
        width[c] = std::max(width[c], r[c].size());
      }
    for (const Row& r : rows) {
      std::string line = " ";
      for (size_t c = 0; c < r.size(); ++c) {
        line += " " + r[c];
        if (c + 1 < r.size()) line += std::string(width[c] - r[c].size(), ' ');
      }
      out += line + "\n";
    }
  };
  auto range = [](int64_t b, int64_t e) { return e - b == 1 ? Str(b) : Str(b) + "-" + Str(e - 1); };

  std::vector<Row> stage_rows = {{"stage", "layers", "extras", "pipeline ranks"}};
  for (const StageLayout& s : pl.stages) {
    std::string extras;
    if (s.has_embedding) extras = "embedding";
    if (s.has_head) extras += std::string(extras.empty() ? "" : ", ") + "norm, head";
    std::string ranks;
    for (int r : pl.PipelineRanksOfStage(s.stage_idx)) ranks += (ranks.empty() ? "" : ",") + Str(r);
    const int64_t main_end = std::min(s.layer_end, pl.num_main_layers);
    const int64_t mtp_begin = std::max(s.layer_begin, pl.num_main_layers);
    std::string layers = s.layer_begin < main_end ? range(s.layer_begin, main_end) : "";
    if (mtp_begin < s.layer_end) layers += (layers.empty() ? "mtp " : " + mtp ") + range(mtp_begin, s.layer_end);
    stage_rows.push_back({Str(s.stage_idx), layers, extras.empty() ? "-" : extras, ranks});
  }
  table(stage_rows);

  std::vector<Row> rank_rows = {{"pp", "dp", "ep-group", "ep-rank", "stages", "experts", "worker", "host", "device"}};
  for (const RankPlacement& r : pl.ranks) {
    std::string stages;
    for (int s : r.stages) stages += (stages.empty() ? "" : ",") + Str(s);
    rank_rows.push_back({Str(r.pipeline_rank), Str(r.data_rank), Str(r.ep_group), Str(r.ep_rank), stages,
                         range(r.expert_begin, r.expert_end), r.worker_name + " (" + r.worker_id + ")", r.host,
                         std::string(ToString(r.device))});
  }
  table(rank_rows);
  for (const std::string& n : pl.notes) out += "  note: " + n + "\n";
  return out;
}

}  // namespace shoal
