// shoal: the command line people use every day (submit jobs, inspect workers and jobs, run a local cluster).
// Exit codes: 0 success, 1 the operation failed (one-line reason on stderr), 2 bad usage.
#include <capnp/message.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <thread>

#include "common/file_util.h"
#include "coordinator/records.h"
#include "tools/cli/client.h"
#include "tools/cli/data_commands.h"
#include "tools/cli/model_commands.h"
#include "tools/cli/plan_command.h"
#include "tools/cli/local_cluster.h"
#include "tools/cli/render.h"

namespace shoal::cli {
namespace {

int Fail(const Status& s) {
  std::string m = s.ToString();
  std::replace(m.begin(), m.end(), '\n', ' ');
  std::fprintf(stderr, "shoal: %s\n", m.c_str());
  return 1;
}

// Connects, sends a request built by `build`, and hands the reply to `use`.
template <typename Build, typename Use>
int Request(const GlobalOptions& g, Build build, Use use) {
  auto client = ConnectToCoordinator(g);
  if (!client.ok()) return Fail(client.status());
  capnp::MallocMessageBuilder b;
  build(b.initRoot<proto::Envelope>());
  auto reply = Call(**client, b, g);
  if (!reply.ok()) return Fail(reply.status());
  return use((*reply)->envelope());
}

int Submit(const GlobalOptions& g, const std::string& path, bool follow) {
  auto text = ReadFile(path);
  if (!text.ok()) return Fail(text.status().WithContext("reading job spec"));
  std::string job_id;
  int rc = Request(
      g,
      [&](proto::Envelope::Builder env) {
        auto s = env.initSubmit();
        s.setSpecYaml(*text);
        s.setSpecFile(path);
      },
      [&](proto::Envelope::Reader env) {
        if (!env.isSubmitReply()) return Fail(InternalError("unexpected reply to submit"));
        auto j = env.getSubmitReply();
        job_id = j.getJobId().cStr();
        if (g.json) {
          std::printf("{\"id\": \"%s\", \"name\": \"%s\", \"state\": \"%s\"}\n", j.getJobId().cStr(),
                      j.getName().cStr(), coordinator::JobStateName(j.getState()));
        } else {
          std::printf("Job '%s' submitted as %s: %s (%s)\n", j.getName().cStr(), j.getJobId().cStr(),
                      coordinator::JobStateName(j.getState()), j.getReason().cStr());
        }
        return 0;
      });
  if (rc != 0 || !follow) return rc;
  // --follow: print every change of state and phase progress until the job ends.
  std::string last;
  for (;;) {
    std::string line;
    bool done = false;
    int r = Request(
        g, [&](proto::Envelope::Builder env) { env.initJobStatus().setJob(job_id); },
        [&](proto::Envelope::Reader env) {
          auto j = env.getJobStatusReply().getJob();
          std::string phase;
          if (j.getPhaseIndex() < j.getPhases().size()) {
            auto p = j.getPhases()[j.getPhaseIndex()];
            phase = std::string(" phase ") + p.getName().cStr() + " step " + std::to_string(p.getStep()) + "/" +
                    std::to_string(p.getTotalSteps());
          }
          line = std::string(coordinator::JobStateName(j.getState())) + phase + ": " + j.getReason().cStr();
          done = coordinator::IsTerminal(j.getState());
          return 0;
        });
    if (r != 0) return r;
    if (line != last) {
      std::printf("%s\n", line.c_str());
      std::fflush(stdout);
      last = line;
    }
    if (done) return last.rfind("SUCCEEDED", 0) == 0 ? 0 : 1;
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
}

}  // namespace
}  // namespace shoal::cli

int main(int argc, char** argv) {
  using namespace shoal;
  using namespace shoal::cli;
  CLI::App app{"shoal: train DeepSeek-V3-style models on a cluster of workers"};
  app.require_subcommand(1);
  GlobalOptions g;
  app.add_option("--coordinator", g.coordinator, "Coordinator HOST:PORT (default: $SHOAL_COORDINATOR or .shoal/)");
  app.add_option("--token-file", g.token_file, "Cluster token (default: $SHOAL_TOKEN_FILE or .shoal/state/token)");
  app.add_option("--dir", g.dir, "Local cluster directory for up/down and defaults")->default_val(".shoal");
  app.add_option("--timeout-ms", g.timeout_ms, "Request timeout")->default_val(10000);

  UpOptions up;
  auto* up_cmd = app.add_subcommand("up", "Start a local cluster: a coordinator and N CPU workers in the background");
  up_cmd->add_option("--workers,-n", up.workers, "Number of workers")->default_val(2);
  up_cmd->add_option("--threads", up.threads_per_worker, "Compute threads per worker (default: cores / workers)");
  up_cmd->add_option("--listen", up.listen, "Coordinator HOST:PORT")->default_val("127.0.0.1:0");
  up_cmd->add_option("--http", up.http, "Coordinator metrics HOST:PORT (off by default)");
  up_cmd->add_option("--wait-ms", up.wait_ms, "How long to wait for every worker to be ALIVE")->default_val(30000);

  bool purge = false;
  auto* down_cmd = app.add_subcommand("down", "Stop the local cluster started by `shoal up`");
  down_cmd->add_flag("--purge", purge, "Also delete its state (jobs, token, logs)");

  std::string spec_path;
  bool follow = false;
  auto* submit_cmd = app.add_subcommand("submit", "Submit a YAML job spec");
  submit_cmd->add_option("spec", spec_path, "Job spec file")->required();
  submit_cmd->add_flag("--follow,-f", follow, "Follow the job's state until it ends");
  submit_cmd->add_flag("--json", g.json, "Print the result as JSON");

  auto* jobs_cmd = app.add_subcommand("jobs", "List jobs");
  jobs_cmd->add_flag("--json", g.json, "JSON array of {id, name, state, phase, epoch, reason, ...}");

  std::string job;
  auto* status_cmd = app.add_subcommand("status", "Show a job's state, phases, placement and recent events");
  status_cmd->add_option("job", job, "Job id or name")->required();
  status_cmd->add_flag("--json", g.json, "JSON {id, name, state, epoch, phases, placement, ...}");

  auto* workers_cmd = app.add_subcommand("workers", "List workers");
  workers_cmd->add_flag("--json", g.json, "JSON array of {name, host, device, state, reason, ...}");

  std::string worker;
  auto* detach_cmd = app.add_subcommand("detach", "Drain a worker: it stops its work and exits");
  detach_cmd->add_option("worker", worker, "Worker name or id")->required();

  auto* cancel_cmd = app.add_subcommand("cancel", "Cancel a job; its workers are released");
  cancel_cmd->add_option("job", job, "Job id or name")->required();

  DataPrepareOptions prep;
  auto* data_cmd = app.add_subcommand("data", "Data preparation");
  data_cmd->require_subcommand(1);
  auto* prepare_cmd = data_cmd->add_subcommand("prepare", "Tokenise text or JSONL files into token shards");
  prepare_cmd->add_option("inputs", prep.inputs, "Input files or directories (*.txt, *.jsonl)")->required();
  prepare_cmd->add_option("--out,-o", prep.out, "Output directory")->required();
  prepare_cmd->add_option("--format", prep.format, "text (blank-line separated documents) or jsonl")
      ->default_val("text");
  prepare_cmd->add_option("--kind", prep.kind, "pretrain ('text' field) or sft ('prompt'/'response' fields)")
      ->default_val("pretrain");
  prepare_cmd->add_option("--tokenizer", prep.tokenizer, "byte, or a Hugging Face tokenizer.json")->default_val("byte");
  prepare_cmd->add_option("--shard-tokens", prep.shard_tokens, "Tokens per shard at most");
  prepare_cmd->add_flag("--json", g.json, "Print the result as JSON");

  GenerateOptions gen;
  auto* generate_cmd = app.add_subcommand("generate", "Generate text with a trained model");
  generate_cmd->add_option("--model", gen.model_dir, "A checkpoint step directory or a `shoal export` directory")
      ->required();
  generate_cmd->add_option("--prompt,-p", gen.prompt, "Prompt text, e.g. \"12+35=\"")->required();
  generate_cmd->add_option("--max-new-tokens", gen.max_new_tokens, "Tokens to generate at most")->default_val(32);
  generate_cmd->add_option("--temperature", gen.temperature, "0: greedy")->default_val(0.0);
  generate_cmd->add_option("--top-k", gen.top_k, "Sample from the k most likely tokens (0: all)")->default_val(0);
  generate_cmd->add_option("--seed", gen.seed, "Sampling seed")->default_val(0);
  generate_cmd->add_flag("--raw", gen.raw, "Do not wrap the prompt in the chat template of a fine-tuned model");
  generate_cmd->add_flag("--speculative", gen.speculative,
                         "MTP speculative decoding (greedy): the MTP layer drafts the token after next, one main pass "
                         "verifies it; prints the acceptance rate");
  generate_cmd->add_flag("--json", g.json, "Print {prompt, completion, tokens, finished, seconds}");

  EvalOptions ev;
  auto* eval_cmd = app.add_subcommand("eval", "Loss and perplexity of a model on held-out data");
  eval_cmd->add_option("--model", ev.model_dir, "A checkpoint step directory or a `shoal export` directory")
      ->required();
  eval_cmd->add_option("--data", ev.data, "arith | arith-sft | a text/JSONL file | a shards directory")
      ->default_val("arith");
  eval_cmd->add_option("--batches", ev.batches, "Batches to evaluate")->default_val(8);
  eval_cmd->add_option("--batch-size", ev.batch_size, "Rows per batch")->default_val(8);
  eval_cmd->add_option("--seq-len", ev.seq_len, "Tokens per row (default: the training length)");
  eval_cmd->add_option("--tokens", ev.tokens, "Score exactly these token ids (comma separated)");
  eval_cmd->add_option("--dump-logits", ev.dump_logits, "With --tokens: write the [T, V] logits as .npy");
  eval_cmd->add_option("--accuracy", ev.accuracy, "Also answer N held-out arithmetic problems (exact match)");
  eval_cmd->add_option("--seed", ev.seed, "Data seed")->default_val(1234);
  eval_cmd->add_flag("--json", g.json, "Print the result as JSON");

  ExportOptionsCli ex;
  auto* export_cmd = app.add_subcommand("export", "Write a job's checkpoint as a Hugging Face directory");
  export_cmd->add_option("job", ex.job, "Job id or name")->required();
  export_cmd->add_option("--checkpoint", ex.checkpoint, "Checkpoint id (default: the latest committed)");
  export_cmd->add_option("--out,-o", ex.out, "Output directory")->required();
  export_cmd->add_option("--dtype", ex.dtype, "bf16 or f32")->default_val("bf16");
  export_cmd->add_flag("--fp8", ex.fp8, "FP8 E4M3 Linear weights with 128x128 weight_scale_inv (as released)");
  export_cmd->add_flag("--no-mtp", ex.no_mtp, "Leave out the MTP layers");

  auto* checkpoints_cmd = app.add_subcommand("checkpoints", "List a job's committed checkpoints");
  checkpoints_cmd->add_option("job", job, "Job id or name")->required();
  checkpoints_cmd->add_flag("--json", g.json, "JSON array of {id, phase, step, phase_done, dir, bytes, shards, ...}");

  PlanOptions plan;
  auto* plan_cmd = app.add_subcommand("plan", "Placement, memory per worker, bubble and step time of a job spec "
                                               "on a hypothetical cluster");
  plan_cmd->add_option("spec", plan.spec_path, "Job spec file")->required();
  plan_cmd->add_option("--cluster", plan.cluster, "NODESxGPUS, e.g. 256x8")->required();
  plan_cmd->add_option("--tflops", plan.tflops, "Achieved TFLOP/s per worker (default 400 cuda, 0.1 cpu)");
  plan_cmd->add_option("--link-gbs", plan.link_gbs, "Pipeline link GB/s (default 50 cuda, 5 cpu)");
  plan_cmd->add_option("--device-memory-gib", plan.device_memory_gib, "Memory per worker (default 80 cuda)");
  plan_cmd->add_flag("--json", g.json, "Print the plan as JSON");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }

  if (*up_cmd) {
    Status s = Up(g, up);
    return s.ok() ? 0 : Fail(s);
  }
  if (*down_cmd) {
    Status s = Down(g, purge);
    return s.ok() ? 0 : Fail(s);
  }
  if (*submit_cmd) return Submit(g, spec_path, follow);
  if (*jobs_cmd) {
    return Request(g, [](proto::Envelope::Builder e) { e.setListJobs(); }, [&](proto::Envelope::Reader e) {
      auto r = e.getListJobsReply();
      std::fputs((g.json ? JobsJson(r) : JobsTable(r)).c_str(), stdout);
      return 0;
    });
  }
  if (*status_cmd) {
    return Request(g, [&](proto::Envelope::Builder e) { e.initJobStatus().setJob(job); },
                   [&](proto::Envelope::Reader e) {
                     auto r = e.getJobStatusReply();
                     std::fputs((g.json ? StatusJson(r) : StatusText(r)).c_str(), stdout);
                     return 0;
                   });
  }
  if (*workers_cmd) {
    return Request(g, [](proto::Envelope::Builder e) { e.setListWorkers(); }, [&](proto::Envelope::Reader e) {
      auto r = e.getListWorkersReply();
      std::fputs((g.json ? WorkersJson(r) : WorkersTable(r)).c_str(), stdout);
      return 0;
    });
  }
  if (*prepare_cmd) return DataPrepare(prep, g.json);
  if (*generate_cmd) return GenerateCommand(gen, g.json);
  if (*eval_cmd) return EvalCommand(ev, g.json);
  if (*export_cmd) return ExportCommand(g, ex);
  if (*plan_cmd) return PlanCommand(plan, g.json);
  if (*checkpoints_cmd) {
    return Request(g, [&](proto::Envelope::Builder e) { e.initListCheckpoints().setJob(job); },
                   [&](proto::Envelope::Reader e) {
                     auto r = e.getListCheckpointsReply();
                     std::fputs((g.json ? CheckpointsJson(r) : CheckpointsTable(r)).c_str(), stdout);
                     return 0;
                   });
  }
  auto print_ack = [](proto::Envelope::Reader e) {
    std::printf("%s\n", e.isAck() ? e.getAck().getMessage().cStr() : "done");
    return 0;
  };
  if (*detach_cmd) {
    return Request(g, [&](proto::Envelope::Builder e) { e.initDetach().setWorker(worker); }, print_ack);
  }
  if (*cancel_cmd) {
    return Request(g, [&](proto::Envelope::Builder e) { e.initCancel().setJob(job); }, print_ack);
  }
  return 2;
}
