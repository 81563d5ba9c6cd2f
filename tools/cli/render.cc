#include "tools/cli/render.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <optional>
#include <cstdio>
#include <sstream>
#include <vector>

#include "common/clock.h"
#include "coordinator/records.h"

namespace shoal::cli {
namespace {

using nlohmann::ordered_json;
using coordinator::JobStateName;
using coordinator::WorkerStateName;

std::string Str(capnp::Text::Reader t) { return std::string(t.cStr(), t.size()); }

const char* DeviceName(proto::DeviceKind d) { return d == proto::DeviceKind::CUDA ? "cuda" : "cpu"; }

// A left-aligned table; the last column may be long.
class Table {
 public:
  explicit Table(std::vector<std::string> header) { rows_.push_back(std::move(header)); }
  void Add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  std::string Render() const {
    std::vector<size_t> width(rows_[0].size(), 0);
    for (const auto& r : rows_) {
      for (size_t i = 0; i + 1 < r.size(); ++i) width[i] = std::max(width[i], r[i].size());
    }
    std::ostringstream os;
    for (const auto& r : rows_) {
      std::string line;
      for (size_t i = 0; i < r.size(); ++i) {
        line += r[i];
        if (i + 1 < r.size()) line += std::string(width[i] - r[i].size() + 2, ' ');
      }
      while (!line.empty() && line.back() == ' ') line.pop_back();
      os << line << "\n";
    }
    return os.str();
  }

 private:
  std::vector<std::vector<std::string>> rows_;
};

ordered_json PhaseJson(proto::PhaseProgress::Reader p) {
  return ordered_json{{"name", Str(p.getName())}, {"kind", Str(p.getKind())}, {"state", Str(p.getState())},
                      {"step", p.getStep()}, {"total_steps", p.getTotalSteps()}};
}

std::string PhaseOf(proto::JobRecord::Reader j) {
  auto phases = j.getPhases();
  return j.getPhaseIndex() < phases.size() ? Str(phases[j.getPhaseIndex()].getName()) : "";
}

std::string Experts(proto::RankAssignment::Reader r) {
  return "[" + std::to_string(r.getExpertBegin()) + "," + std::to_string(r.getExpertEnd()) + ")";
}

std::string Stages(proto::RankAssignment::Reader r) {
  std::string s;
  for (auto st : r.getStages()) s += (s.empty() ? "" : ",") + std::to_string(st);
  return s;
}

}  // namespace

std::string Ago(int64_t then_ms, int64_t now_ms) {
  if (then_ms <= 0) return "-";
  double s = std::max<int64_t>(0, now_ms - then_ms) / 1000.0;
  char buf[32];
  if (s < 60) std::snprintf(buf, sizeof(buf), "%.1fs", s);
  else if (s < 3600) std::snprintf(buf, sizeof(buf), "%dm%02ds", static_cast<int>(s / 60), static_cast<int>(s) % 60);
  else if (s < 86400) std::snprintf(buf, sizeof(buf), "%dh%02dm", static_cast<int>(s / 3600), static_cast<int>(s / 60) % 60);
  else std::snprintf(buf, sizeof(buf), "%dd", static_cast<int>(s / 86400));
  return buf;
}

std::string WorkersJson(proto::ListWorkersReply::Reader reply) {
  ordered_json out = ordered_json::array();
  for (auto w : reply.getWorkers()) {
    out.push_back(ordered_json{{"name", Str(w.getName())},
                               {"id", Str(w.getWorkerId())},
                               {"host", Str(w.getHost())},
                               {"device", DeviceName(w.getDevice())},
                               {"device_index", w.getDeviceIndex()},
                               {"state", WorkerStateName(w.getState())},
                               {"reason", Str(w.getReason())},
                               {"job", Str(w.getJobId())},
                               {"cores", w.getCores()},
                               {"memory_bytes", w.getDeviceMemoryBytes()},
                               {"pid", w.getPid()},
                               {"incarnation", w.getIncarnation()},
                               {"last_heartbeat_ms", w.getLastHeartbeatMs()}});
  }
  return out.dump(2) + "\n";
}

std::string WorkersTable(proto::ListWorkersReply::Reader reply) {
  if (reply.getWorkers().size() == 0) return "No workers attached. Start some with `shoal up` or `shoal-worker`.\n";
  int64_t now = WallMillis();
  Table t({"NAME", "STATE", "HOST", "DEVICE", "CORES", "JOB", "LAST SEEN", "REASON"});
  for (auto w : reply.getWorkers()) {
    std::string device = DeviceName(w.getDevice());
    if (w.getDevice() == proto::DeviceKind::CUDA) device += ":" + std::to_string(w.getDeviceIndex());
    std::string job = Str(w.getJobId());
    t.Add({Str(w.getName()), WorkerStateName(w.getState()), Str(w.getHost()), device, std::to_string(w.getCores()),
           job.empty() ? "-" : job, Ago(w.getLastHeartbeatMs(), now) + " ago", Str(w.getReason())});
  }
  return t.Render();
}

std::string JobsJson(proto::ListJobsReply::Reader reply) {
  ordered_json out = ordered_json::array();
  for (auto j : reply.getJobs()) {
    out.push_back(ordered_json{{"id", Str(j.getJobId())},
                               {"name", Str(j.getName())},
                               {"state", JobStateName(j.getState())},
                               {"phase", PhaseOf(j)},
                               {"epoch", j.getEpoch()},
                               {"reason", Str(j.getReason())},
                               {"workers_needed", j.getWorkersNeeded()},
                               {"restarts", j.getRestarts()},
                               {"submitted_at_ms", j.getSubmittedAtMs()}});
  }
  return out.dump(2) + "\n";
}

std::string JobsTable(proto::ListJobsReply::Reader reply) {
  if (reply.getJobs().size() == 0) return "No jobs. Submit one with `shoal submit SPEC`.\n";
  int64_t now = WallMillis();
  Table t({"ID", "NAME", "STATE", "PHASE", "EPOCH", "WORKERS", "AGE", "REASON"});
  for (auto j : reply.getJobs()) {
    std::string phase = PhaseOf(j);
    t.Add({Str(j.getJobId()), Str(j.getName()), JobStateName(j.getState()), phase.empty() ? "-" : phase,
           std::to_string(j.getEpoch()), std::to_string(j.getWorkersNeeded()), Ago(j.getSubmittedAtMs(), now),
           Str(j.getReason())});
  }
  return t.Render();
}

namespace {

// The latest step report of rank (pp, dp) among the job's recent steps, if any.
std::optional<proto::StepReport::Reader> LatestStepOf(proto::JobStatusReply::Reader reply, uint32_t pp, uint32_t dp) {
  std::optional<proto::StepReport::Reader> out;
  for (auto s : reply.getRecentSteps()) {
    if (s.getPpRank() == pp && s.getDpRank() == dp) out = s;
  }
  return out;
}

double MetricOf(proto::StepReport::Reader s, const char* name) {
  for (auto m : s.getMetrics()) {
    if (Str(m.getName()) == name) return m.getValue();
  }
  return NAN;
}

// Rank progress from its latest step report: where it is and where its last step's time went.
ordered_json ProgressJson(proto::JobStatusReply::Reader reply, uint32_t pp, uint32_t dp) {
  auto s = LatestStepOf(reply, pp, dp);
  if (!s) return nullptr;
  ordered_json out{{"phase", Str(s->getPhase())}, {"step", s->getStep()}};
  for (const char* name : {"tokens_per_s", "step_seconds", "compute_s", "comm_s", "bubble_s"}) {
    double v = MetricOf(*s, name);
    out[name] = std::isnan(v) ? ordered_json(nullptr) : ordered_json(v);
  }
  return out;
}

}  // namespace

std::string StatusJson(proto::JobStatusReply::Reader reply) {
  auto j = reply.getJob();
  ordered_json phases = ordered_json::array();
  for (auto p : j.getPhases()) phases.push_back(PhaseJson(p));
  ordered_json placement = nullptr;
  if (reply.getHasPlacement()) {
    auto p = reply.getPlacement();
    ordered_json stages = ordered_json::array(), ranks = ordered_json::array();
    for (auto s : p.getStages()) {
      stages.push_back(ordered_json{{"stage", s.getStage()}, {"layer_begin", s.getLayerBegin()},
                                    {"layer_end", s.getLayerEnd()}, {"has_embedding", s.getHasEmbedding()},
                                    {"has_head", s.getHasHead()}});
    }
    for (auto r : p.getRanks()) {
      ordered_json st = ordered_json::array();
      for (auto s : r.getStages()) st.push_back(s);
      ranks.push_back(ordered_json{{"pp_rank", r.getPpRank()},
                                   {"dp_rank", r.getDpRank()},
                                   {"worker", Str(r.getWorkerName())},
                                   {"worker_id", Str(r.getWorkerId())},
                                   {"host", Str(r.getHost())},
                                   {"stages", st},
                                   {"ep_group", r.getEpGroup()},
                                   {"ep_rank", r.getEpRank()},
                                   {"experts", ordered_json::array({r.getExpertBegin(), r.getExpertEnd()})},
                                   {"acked", r.getAcked()},
                                   {"progress", ProgressJson(reply, r.getPpRank(), r.getDpRank())}});
    }
    placement = ordered_json{{"epoch", p.getEpoch()}, {"stages", stages}, {"ranks", ranks}};
  }
  ordered_json steps = ordered_json::array();
  for (auto s : reply.getRecentSteps()) {
    ordered_json m = ordered_json::object();
    for (auto x : s.getMetrics()) m[Str(x.getName())] = x.getValue();
    steps.push_back(ordered_json{{"phase", Str(s.getPhase())}, {"step", s.getStep()}, {"pp_rank", s.getPpRank()},
                                 {"dp_rank", s.getDpRank()}, {"loss", s.getLoss()}, {"metrics", m},
                                 {"time_ms", s.getTimeMs()}});
  }
  ordered_json curve = ordered_json::array();
  for (auto c : reply.getCurve()) {
    curve.push_back(ordered_json{{"phase_index", c.getPhaseIndex()}, {"step", c.getStep()}, {"loss", c.getLoss()}});
  }
  ordered_json events = ordered_json::array();
  for (auto e : reply.getEvents()) {
    events.push_back(ordered_json{{"time_ms", e.getTimeMs()}, {"kind", Str(e.getKind())},
                                  {"message", Str(e.getMessage())}});
  }
  ordered_json out{{"id", Str(j.getJobId())},
                   {"name", Str(j.getName())},
                   {"state", JobStateName(j.getState())},
                   {"reason", Str(j.getReason())},
                   {"epoch", j.getEpoch()},
                   {"phase", PhaseOf(j)},
                   {"phases", phases},
                   {"restarts", j.getRestarts()},
                   {"workers_needed", j.getWorkersNeeded()},
                   {"spec_file", Str(j.getSpecFile())},
                   {"submitted_at_ms", j.getSubmittedAtMs()},
                   {"placement", placement},
                   {"recent_steps", steps},
                   {"loss_curve", curve},
                   {"events", events}};
  return out.dump(2) + "\n";
}

std::string StatusText(proto::JobStatusReply::Reader reply) {
  auto j = reply.getJob();
  std::ostringstream os;
  int64_t now = WallMillis();
  os << "Status for job '" << Str(j.getName()) << "': " << JobStateName(j.getState()) << "\n";
  os << "  id:        " << Str(j.getJobId()) << "\n";
  os << "  reason:    " << Str(j.getReason()) << "\n";
  os << "  epoch:     " << j.getEpoch() << "   restarts: " << j.getRestarts() << "\n";
  os << "  submitted: " << Ago(j.getSubmittedAtMs(), now) << " ago from " << Str(j.getSpecFile()) << "\n\n";
  Table phases({"PHASE", "KIND", "STATE", "STEP"});
  for (auto p : j.getPhases()) {
    phases.Add({Str(p.getName()), Str(p.getKind()), Str(p.getState()),
                std::to_string(p.getStep()) + "/" + std::to_string(p.getTotalSteps())});
  }
  os << phases.Render();
  if (reply.getHasPlacement()) {
    auto p = reply.getPlacement();
    os << "\nPlacement (epoch " << p.getEpoch() << "):\n";
    Table ranks({"PP", "DP", "WORKER", "HOST", "STAGES", "EP GROUP/RANK", "EXPERTS", "ACKED"});
    for (auto r : p.getRanks()) {
      ranks.Add({std::to_string(r.getPpRank()), std::to_string(r.getDpRank()), Str(r.getWorkerName()),
                 Str(r.getHost()), Stages(r), std::to_string(r.getEpGroup()) + "/" + std::to_string(r.getEpRank()),
                 Experts(r), r.getAcked() ? "yes" : "no"});
    }
    os << ranks.Render();
    if (reply.getRecentSteps().size() > 0) {
      // Each rank's latest step: throughput, and its time split into compute, communication and pipeline bubble.
      Table progress({"PP", "DP", "WORKER", "PHASE", "STEP", "TOKENS/S", "STEP TIME", "COMPUTE", "COMM", "BUBBLE"});
      auto pct = [](double part, double whole) -> std::string {
        if (std::isnan(part) || std::isnan(whole) || whole <= 0) return "-";
        char b[16];
        std::snprintf(b, sizeof(b), "%.0f%%", 100.0 * part / whole);
        return b;
      };
      for (auto r : p.getRanks()) {
        auto s = LatestStepOf(reply, r.getPpRank(), r.getDpRank());
        if (!s) continue;
        const double total = MetricOf(*s, "step_seconds");
        char tps[32], st[32];
        std::snprintf(tps, sizeof(tps), "%.0f", MetricOf(*s, "tokens_per_s"));
        std::snprintf(st, sizeof(st), "%.3fs", total);
        progress.Add({std::to_string(r.getPpRank()), std::to_string(r.getDpRank()), Str(r.getWorkerName()),
                      Str(s->getPhase()), std::to_string(s->getStep()), tps, st, pct(MetricOf(*s, "compute_s"), total),
                      pct(MetricOf(*s, "comm_s"), total), pct(MetricOf(*s, "bubble_s"), total)});
      }
      os << "\nProgress (latest step of each rank):\n" << progress.Render();
    }
    Table stages({"STAGE", "LAYERS", "EMBEDDING", "HEAD"});
    for (auto s : p.getStages()) {
      stages.Add({std::to_string(s.getStage()),
                  "[" + std::to_string(s.getLayerBegin()) + "," + std::to_string(s.getLayerEnd()) + ")",
                  s.getHasEmbedding() ? "yes" : "-", s.getHasHead() ? "yes" : "-"});
    }
    os << "\n" << stages.Render();
  } else {
    os << "\nNot placed.\n";
  }
  auto curve = reply.getCurve();
  if (curve.size() > 0) {
    os << "\nLoss curves:\n";
    static const char* kBars[] = {"\u2581", "\u2582", "\u2583", "\u2584", "\u2585", "\u2586", "\u2587", "\u2588"};
    auto phases = j.getPhases();
    for (uint32_t p = 0; p < phases.size(); ++p) {
      std::vector<std::pair<uint64_t, double>> pts;
      for (auto c : curve) {
        if (c.getPhaseIndex() == p) pts.emplace_back(c.getStep(), c.getLoss());
      }
      if (pts.empty()) continue;
      double lo = pts[0].second, hi = pts[0].second;
      for (auto& [_, l] : pts) {
        lo = std::min(lo, l);
        hi = std::max(hi, l);
      }
      std::string bars;
      for (auto& [_, l] : pts) {
        int level = hi > lo ? static_cast<int>((l - lo) / (hi - lo) * 7.0 + 0.5) : 0;
        bars += kBars[std::clamp(level, 0, 7)];
      }
      char line[160];
      std::snprintf(line, sizeof(line), "  %-10s steps %llu-%llu  %.3f ", Str(phases[p].getName()).c_str(),
                    static_cast<unsigned long long>(pts.front().first),
                    static_cast<unsigned long long>(pts.back().first), pts.front().second);
      os << line << bars;
      std::snprintf(line, sizeof(line), " %.3f  (min %.3f)\n", pts.back().second, lo);
      os << line;
    }
  }
  auto steps = reply.getRecentSteps();
  if (steps.size() > 0) {
    os << "\nRecent steps:\n";
    Table t({"PHASE", "STEP", "RANK", "LOSS", "METRICS"});
    size_t begin = steps.size() > 10 ? steps.size() - 10 : 0;
    for (size_t i = begin; i < steps.size(); ++i) {
      auto s = steps[static_cast<unsigned>(i)];
      std::string metrics;
      for (auto m : s.getMetrics()) {
        char buf[64];
        std::snprintf(buf, sizeof(buf), "%s=%.4g ", Str(m.getName()).c_str(), m.getValue());
        metrics += buf;
      }
      char loss[32];
      std::snprintf(loss, sizeof(loss), "%.4f", s.getLoss());
      t.Add({Str(s.getPhase()), std::to_string(s.getStep()),
             std::to_string(s.getPpRank()) + "/" + std::to_string(s.getDpRank()), loss, metrics});
    }
    os << t.Render();
  }
  auto events = reply.getEvents();
  if (events.size() > 0) {
    os << "\nEvents:\n";
    for (auto e : events) {
      os << "  " << Ago(e.getTimeMs(), now) << " ago  " << Str(e.getKind()) << ": " << Str(e.getMessage()) << "\n";
    }
  }
  return os.str();
}

std::string CheckpointsJson(proto::ListCheckpointsReply::Reader reply) {
  ordered_json out = ordered_json::array();
  for (auto c : reply.getCheckpoints()) {
    ordered_json shards = ordered_json::array();
    uint64_t bytes = 0;
    for (auto s : c.getShards()) {
      ordered_json files = ordered_json::array();
      for (auto f : s.getFiles()) {
        char hex[17];
        std::snprintf(hex, sizeof(hex), "%016llx", static_cast<unsigned long long>(f.getXxh3()));
        files.push_back(ordered_json{{"name", Str(f.getName())}, {"bytes", f.getBytes()}, {"xxh3", hex}});
        bytes += f.getBytes();
      }
      shards.push_back(ordered_json{{"pp_rank", s.getPpRank()}, {"dp_rank", s.getDpRank()}, {"files", files}});
    }
    out.push_back(ordered_json{{"id", Str(c.getCheckpointId())},
                               {"phase", Str(c.getPhase())},
                               {"step", c.getStep()},
                               {"phase_done", c.getPhaseDone()},
                               {"dir", Str(c.getDir())},
                               {"epoch", c.getEpoch()},
                               {"bytes", bytes},
                               {"committed_at_ms", c.getCommittedAtMs()},
                               {"shards", shards}});
  }
  return out.dump(2) + "\n";
}

std::string CheckpointsTable(proto::ListCheckpointsReply::Reader reply) {
  if (reply.getCheckpoints().size() == 0) return "No committed checkpoints yet.\n";
  int64_t now = WallMillis();
  Table t({"CHECKPOINT", "PHASE", "STEP", "SHARDS", "SIZE", "COMMITTED", "DIR"});
  for (auto c : reply.getCheckpoints()) {
    uint64_t bytes = 0;
    for (auto s : c.getShards()) {
      for (auto f : s.getFiles()) bytes += f.getBytes();
    }
    char size[32];
    std::snprintf(size, sizeof(size), "%.1f MiB", bytes / 1048576.0);
    t.Add({Str(c.getCheckpointId()) + (c.getPhaseDone() ? " (final)" : ""), Str(c.getPhase()),
           std::to_string(c.getStep()), std::to_string(c.getShards().size()), size,
           Ago(c.getCommittedAtMs(), now) + " ago", Str(c.getDir())});
  }
  return t.Render();
}

}  // namespace shoal::cli
