#include "tools/cli/model_commands.h"

#include <capnp/message.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <map>
#include <random>
#include <sstream>

#include "common/file_util.h"
#include "spec/job_spec.h"
#include "worker/checkpoint/checkpoint.h"
#include "worker/checkpoint/export.h"
#include "worker/checkpoint/model_dir.h"
#include "worker/data/arith.h"
#include "worker/data/data_source.h"
#include "worker/data/reward.h"
#include "worker/data/tokenizer.h"
#include "worker/infer/generate.h"
#include "worker/model/model.h"

namespace shoal::cli {
namespace {
namespace fs = std::filesystem;

int Fail(const Status& s) {
  std::string m = s.ToString();
  std::replace(m.begin(), m.end(), '\n', ' ');
  std::fprintf(stderr, "shoal: %s\n", m.c_str());
  return 1;
}

using LoadedModel = checkpoint::ModelDir;
using checkpoint::LoadModelDir;

Result<std::unique_ptr<model::Model>> BuildModel(const LoadedModel& loaded, int max_batch, int max_seq) {
  model::ModelOptions options;
  options.max_batch = max_batch;
  options.max_seq = std::min<int64_t>(max_seq, loaded.config.max_position_embeddings);
  ASSIGN_OR_RETURN(auto m, model::Model::Create(loaded.config, options));
  RETURN_IF_ERROR(m->Load([&](const std::string& name, const std::vector<int64_t>& shape) {
    return checkpoint::FindF32(loaded.tensors, name, shape);
  }));
  return m;
}

std::vector<int32_t> EncodePrompt(const data::Tokenizer& tok, const std::string& prompt, bool chat) {
  if (chat) return tok.Encode("<|user|>" + prompt + "<|assistant|>", /*allow_special=*/true);
  return tok.Encode(prompt);
}

Status WriteNpy(const std::string& path, const std::vector<float>& data, int64_t rows, int64_t cols) {
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + std::to_string(rows) + ", " +
                       std::to_string(cols) + "), }";
  size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  std::string out = "\x93NUMPY";
  out += '\x01';
  out += '\x00';
  uint16_t len = static_cast<uint16_t>(header.size());
  out += static_cast<char>(len & 0xff);
  out += static_cast<char>(len >> 8);
  out += header;
  out.append(reinterpret_cast<const char*>(data.data()), data.size() * sizeof(float));
  return WriteFileAtomic(path, out);
}

}  // namespace

int GenerateCommand(const GenerateOptions& o, bool json) {
  auto loaded = LoadModelDir(o.model_dir);
  if (!loaded.ok()) return Fail(loaded.status());
  auto tok = data::LoadTokenizer("byte");
  if (!tok.ok()) return Fail(tok.status());
  auto prompt = EncodePrompt(**tok, o.prompt, loaded->chat && !o.raw);
  int max_seq = static_cast<int>(prompt.size()) + o.max_new_tokens;
  if (max_seq > loaded->config.max_position_embeddings) {
    return Fail(InvalidArgumentError("prompt + --max-new-tokens = " + std::to_string(max_seq) +
                                     " tokens exceed the model's max_position_embeddings (" +
                                     std::to_string(loaded->config.max_position_embeddings) + ")"));
  }
  auto m = BuildModel(*loaded, 1, max_seq);
  if (!m.ok()) return Fail(m.status());
  infer::SamplingOptions s;
  s.max_new_tokens = o.max_new_tokens;
  s.temperature = o.temperature;
  s.top_k = o.top_k;
  s.eos_id = static_cast<int32_t>(loaded->config.eos_token_id);
  std::mt19937_64 rng(o.seed);
  auto t0 = std::chrono::steady_clock::now();
  infer::Completion completion;
  infer::SpeculativeStats spec;
  if (o.speculative) {
    auto out = infer::GenerateSpeculative(**m, prompt, s, &spec);
    if (!out.ok()) return Fail(out.status());
    completion = std::move(*out);
  } else {
    auto out = infer::Generate(**m, {prompt}, s, rng);
    if (!out.ok()) return Fail(out.status());
    completion = std::move((*out)[0]);
  }
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::string text = (*tok)->Decode(completion.tokens, /*skip_special=*/true);
  if (json) {
    nlohmann::ordered_json j{{"prompt", o.prompt}, {"completion", text}, {"tokens", completion.tokens},
                             {"finished", completion.finished}, {"seconds", seconds}};
    if (o.speculative) {
      j["speculative"] = {{"main_passes", spec.main_passes}, {"drafted", spec.drafted},
                          {"accepted", spec.accepted}, {"acceptance", spec.acceptance()}};
    }
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("%s%s\n", o.prompt.c_str(), text.c_str());
    if (o.speculative) {
      std::fprintf(stderr, "MTP speculative decoding: %zu tokens in %lld main passes (prompt included), %lld of %lld "
                   "drafts accepted (%.0f%%)\n", completion.tokens.size(), static_cast<long long>(spec.main_passes),
                   static_cast<long long>(spec.accepted), static_cast<long long>(spec.drafted),
                   100 * spec.acceptance());
    }
  }
  return 0;
}

int EvalCommand(const EvalOptions& o, bool json) {
  auto loaded = LoadModelDir(o.model_dir);
  if (!loaded.ok()) return Fail(loaded.status());
  auto tok = data::LoadTokenizer("byte");
  if (!tok.ok()) return Fail(tok.status());
  nlohmann::ordered_json result{{"model", o.model_dir}};

  if (!o.tokens.empty()) {
    std::vector<int32_t> ids;
    std::stringstream ss(o.tokens);
    std::string item;
    while (std::getline(ss, item, ',')) {
      char* end = nullptr;
      long v = std::strtol(item.c_str(), &end, 10);
      if (item.empty() || *end != '\0' || v < 0 || v >= loaded->config.vocab_size) {
        return Fail(InvalidArgumentError("--tokens: '" + item + "' is not a token id in [0, " +
                                         std::to_string(loaded->config.vocab_size) + ")"));
      }
      ids.push_back(static_cast<int32_t>(v));
    }
    auto m = BuildModel(*loaded, 1, static_cast<int>(ids.size()));
    if (!m.ok()) return Fail(m.status());
    int64_t T = static_cast<int64_t>(ids.size()), V = loaded->config.vocab_size;
    std::vector<float> logits(static_cast<size_t>(T * V));
    std::vector<int32_t> targets(ids.begin() + 1, ids.end());
    targets.push_back(-1);
    model::MicroBatch mb;
    mb.inputs = ids.data();
    mb.targets = targets.data();
    mb.B = 1;
    mb.T = static_cast<int>(T);
    auto losses = (*m)->Forward(mb, logits.data(), nullptr);
    if (!losses.ok()) return Fail(losses.status());
    if (!o.dump_logits.empty()) {
      Status s = WriteNpy(o.dump_logits, logits, T, V);
      if (!s.ok()) return Fail(s);
      result["logits_file"] = o.dump_logits;
      result["logits_shape"] = {T, V};
    }
    double loss = losses->main_count ? losses->main_sum / losses->main_count : NAN;
    result["tokens"] = T;
    result["loss"] = loss;
    result["perplexity"] = std::exp(loss);
  } else {
    int seq_len = o.seq_len > 0 ? o.seq_len : (loaded->train_seq_len > 0 ? static_cast<int>(loaded->train_seq_len) : 128);
    DataSpec spec;
    if (o.data.find('/') == std::string::npos && o.data.find('.') == std::string::npos) {
      spec.builtin = o.data;
    } else {
      spec.path = o.data;
      spec.format = FileExists(o.data + "/manifest.json") ? DataFormat::kShards
                    : o.data.size() > 6 && o.data.substr(o.data.size() - 6) == ".jsonl" ? DataFormat::kJsonl
                                                                                        : DataFormat::kText;
    }
    PhaseKind kind = o.data == "arith-sft" ? PhaseKind::kSft : PhaseKind::kPretrain;
    data::DataOptions dopt;
    dopt.seq_len = seq_len;
    dopt.seed = o.seed;
    dopt.split = data::ArithSplit::kEval;  // builtin data: the held-out problems only
    auto source = data::OpenDataSource(spec, kind, **tok, dopt);
    if (!source.ok()) return Fail(source.status());
    auto m = BuildModel(*loaded, o.batch_size, seq_len);
    if (!m.ok()) return Fail(m.status());
    double sum = 0, mtp_sum = 0;
    int64_t count = 0, mtp_count = 0;
    auto cursor = (*source)->Start();
    for (int b = 0; b < o.batches; ++b) {
      auto batch = (*source)->Next(cursor, o.batch_size);
      if (!batch.ok()) return Fail(batch.status());
      model::MicroBatch mb{batch->inputs.data(),     batch->targets.data(),   batch->mtp_inputs.data(),
                           batch->mtp_targets.data(), batch->positions.data(),
                           batch->block_diagonal ? batch->segment_ids.data() : nullptr,
                           static_cast<int>(batch->num_rows), static_cast<int>(batch->seq_len)};
      auto l = (*m)->Forward(mb, nullptr, nullptr);
      if (!l.ok()) return Fail(l.status());
      sum += l->main_sum;
      count += l->main_count;
      mtp_sum += l->mtp_sum;
      mtp_count += l->mtp_count;
      auto next = (*source)->Advance(cursor, o.batch_size);
      if (!next.ok()) return Fail(next.status());
      cursor = *next;
    }
    double loss = count ? sum / count : NAN;
    result["data"] = o.data;
    result["split"] = spec.is_builtin() ? "eval" : "all";
    result["tokens"] = count;
    result["loss"] = loss;
    result["perplexity"] = std::exp(loss);
    if (mtp_count) result["mtp_loss"] = mtp_sum / mtp_count;
  }

  if (o.accuracy > 0) {
    auto m = BuildModel(*loaded, 1, 64);
    if (!m.ok()) return Fail(m.status());
    infer::SamplingOptions s;
    s.max_new_tokens = 8;
    s.eos_id = static_cast<int32_t>(loaded->config.eos_token_id);
    std::mt19937_64 rng(o.seed);
    int correct = 0;
    std::map<char, std::pair<int, int>> by_op;  // op -> (correct, total)
    nlohmann::ordered_json examples = nlohmann::ordered_json::array();
    for (int i = 0; i < o.accuracy; ++i) {
      auto problem = data::ArithProblemAt(o.seed, data::ArithSplit::kEval, i);
      auto prompt = EncodePrompt(**tok, problem.Question(), loaded->chat);
      auto out = infer::Generate(**m, {prompt}, s, rng);
      if (!out.ok()) return Fail(out.status());
      std::string text = (*tok)->Decode((*out)[0].tokens, true);
      bool ok = data::ExactMatchReward(text, problem.Answer()) > 0.5;
      correct += ok;
      by_op[problem.op].first += ok;
      by_op[problem.op].second += 1;
      if (examples.size() < 5) examples.push_back({{"prompt", problem.Question()}, {"completion", text}, {"correct", ok}});
    }
    result["accuracy_problems"] = o.accuracy;
    result["accuracy"] = static_cast<double>(correct) / o.accuracy;
    nlohmann::ordered_json ops = nlohmann::ordered_json::object();
    for (auto& [op, ct] : by_op) ops[std::string(1, op)] = {{"correct", ct.first}, {"problems", ct.second}};
    result["accuracy_by_op"] = ops;
    result["examples"] = examples;
  }

  if (json) {
    std::printf("%s\n", result.dump(2).c_str());
  } else {
    if (result.contains("loss")) {
      std::printf("loss %.4f nats/token, perplexity %.3f over %lld tokens", result["loss"].get<double>(),
                  result["perplexity"].get<double>(), static_cast<long long>(result["tokens"].get<int64_t>()));
      if (result.contains("mtp_loss")) std::printf(" (MTP loss %.4f)", result["mtp_loss"].get<double>());
      std::printf("\n");
    }
    if (result.contains("logits_file")) std::printf("logits written to %s\n", o.dump_logits.c_str());
    if (result.contains("accuracy")) {
      std::printf("held-out arithmetic: %.1f%% exact answers over %d problems (", 100.0 * result["accuracy"].get<double>(),
                  o.accuracy);
      bool first = true;
      for (auto& [op, ct] : result["accuracy_by_op"].items()) {
        std::printf("%s%s %d/%d", first ? "" : ", ", op.c_str(), ct["correct"].get<int>(), ct["problems"].get<int>());
        first = false;
      }
      std::printf(")\n");
      for (const auto& e : result["examples"]) {
        std::printf("  %s%s  %s\n", e["prompt"].get<std::string>().c_str(), e["completion"].get<std::string>().c_str(),
                    e["correct"].get<bool>() ? "ok" : "wrong");
      }
    }
  }
  return 0;
}

int ExportCommand(const GlobalOptions& g, const ExportOptionsCli& o) {
  auto client = ConnectToCoordinator(g);
  if (!client.ok()) return Fail(client.status());
  capnp::MallocMessageBuilder sb;
  sb.initRoot<proto::Envelope>().initJobStatus().setJob(o.job);
  auto status = Call(**client, sb, g);
  if (!status.ok()) return Fail(status.status());
  auto job = (*status)->envelope().getJobStatusReply().getJob();
  auto spec = ParseJobSpec(job.getSpecYaml().cStr(), "job " + std::string(job.getJobId().cStr()));
  if (!spec.ok()) return Fail(spec.status());
  capnp::MallocMessageBuilder cb;
  cb.initRoot<proto::Envelope>().initListCheckpoints().setJob(o.job);
  auto list = Call(**client, cb, g);
  if (!list.ok()) return Fail(list.status());
  auto checkpoints = (*list)->envelope().getListCheckpointsReply().getCheckpoints();
  if (checkpoints.size() == 0) return Fail(NotFoundError("job '" + o.job + "' has no committed checkpoint yet"));
  std::string dir, id;
  for (auto c : checkpoints) {
    if (o.checkpoint.empty() || o.checkpoint == c.getCheckpointId().cStr()) {
      dir = c.getDir().cStr();
      id = c.getCheckpointId().cStr();
    }
  }
  if (dir.empty()) {
    return Fail(NotFoundError("job '" + o.job + "' has no checkpoint '" + o.checkpoint + "'; see `shoal checkpoints " +
                              o.job + "`"));
  }
  auto merged = checkpoint::LoadMerged(dir);
  if (!merged.ok()) return Fail(merged.status());
  checkpoint::ExportOptions e;
  if (o.dtype == "bf16") e.dtype = checkpoint::DType::kBF16;
  else if (o.dtype == "f32") e.dtype = checkpoint::DType::kF32;
  else return Fail(InvalidArgumentError("--dtype must be bf16 or f32"));
  e.fp8 = o.fp8;
  e.include_mtp = !o.no_mtp;
  Status s = checkpoint::ExportHuggingFace(spec->model.config, merged->params, o.out, e);
  if (!s.ok()) return Fail(s);
  // Beside the HF files: what shoal needs to prompt the model as it was trained (ignored by transformers).
  std::string phase;
  for (auto c : checkpoints) {
    if (id == c.getCheckpointId().cStr()) phase = c.getPhase().cStr();
  }
  bool chat = false;
  for (const auto& ph : spec->phases) {
    if (ph.kind == PhaseKind::kSft) chat = true;
    if (ph.name == phase) break;
  }
  nlohmann::ordered_json meta{{"job", job.getName().cStr()}, {"checkpoint", id}, {"phase", phase},
                              {"chat_template", chat}, {"seq_len", spec->train.seq_len}, {"tokenizer", "byte"}};
  s = WriteFileAtomic(o.out + "/shoal.json", meta.dump(2) + "\n");
  if (!s.ok()) return Fail(s);
  std::printf("Exported checkpoint %s of job '%s' to %s (%s%s): config.json + model.safetensors, loadable as "
              "DeepseekV3ForCausalLM.\n",
              id.c_str(), job.getName().cStr(), o.out.c_str(), o.dtype.c_str(), o.fp8 ? ", FP8 weights" : "");
  return 0;
}

}  // namespace shoal::cli
