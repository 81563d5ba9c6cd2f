// Job spec errors, asserted as the user reads them: file:line:column (1-based), the key path, what was expected.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "spec/job_spec.h"

namespace shoal {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

// The full error text for a spec that must not parse.
std::string ErrorOf(std::string_view yaml, std::string_view file = "jobs/arith.yaml") {
  Result<JobSpec> r = ParseJobSpec(yaml, file);
  EXPECT_FALSE(r.ok()) << "parsed:\n" << yaml;
  if (r.ok()) return "";
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  return r.status().message();
}

// A valid spec with `extra` appended to the top-level map (lines 1-4 are fixed).
std::string Spec(std::string_view parallel, std::string_view train = "{}", std::string_view model = "{preset: demo}") {
  return "name: arith-demo\n"
         "model: " + std::string(model) + "\n"
         "parallel: " + std::string(parallel) + "\n"
         "train: " + std::string(train) + "\n"
         "phases:\n"
         "  - {name: pretrain, kind: pretrain, data: {builtin: arith}, steps: 10}\n";
}

TEST(JobSpecErrorsTest, WrongTypeNamesFileLineColumnAndPath) {
  const char* yaml =
      "name: arith-demo\n"                       // 1
      "model: {preset: demo}\n"                  // 2
      "phases:\n"                                // 3
      "  - name: pretrain\n"                     // 4
      "    kind: pretrain\n"                     // 5
      "    data: {builtin: arith}\n"             // 6
      "    steps: 300\n"                         // 7
      "  - name: sft\n"                          // 8
      "    kind: sft\n"                          // 9
      "    data: {builtin: arith-sft}\n"         // 10
      "    steps: ten\n";                        // 11
  EXPECT_EQ(ErrorOf(yaml), "jobs/arith.yaml:11:12: phases[1].steps: expected a positive integer, got \"ten\"");
  EXPECT_EQ(ErrorOf(Spec("{pipeline: two}")),
            "jobs/arith.yaml:3:22: parallel.pipeline: expected a positive integer, got \"two\"");
  EXPECT_EQ(ErrorOf(Spec("{}", "{lr: -1}")), "jobs/arith.yaml:4:13: train.lr: expected a positive number, got \"-1\"");
  EXPECT_EQ(ErrorOf(Spec("{}", "[1, 2]")), "jobs/arith.yaml:4:8: train: expected a map, got a list");
  EXPECT_EQ(ErrorOf(Spec("{}", "{beta2: 1.5}")),
            "jobs/arith.yaml:4:16: train.beta2: expected a number in [0, 1), got \"1.5\"");
  EXPECT_EQ(ErrorOf(Spec("{}", "{seq_len:}")),
            "jobs/arith.yaml:4:9: train.seq_len: expected a positive integer, got nothing");
}

TEST(JobSpecErrorsTest, UnknownKeyListsKnownKeysAndSuggestsTheNearest) {
  EXPECT_EQ(ErrorOf(Spec("{}", "{lr_max: 1}")),
            "jobs/arith.yaml:4:9: train.lr_max: unknown key; known keys are seq_len, micro_batch, global_batch, lr, "
            "min_lr, warmup_steps, lr_schedule, weight_decay, beta1, beta2, eps, grad_clip, seed, init_std, "
            "bias_update_speed, balance_alpha, mtp_lambda");
  EXPECT_THAT(ErrorOf(Spec("{}", "{warmup_step: 10}")),
              StartsWith("jobs/arith.yaml:4:9: train.warmup_step: unknown key; did you mean \"warmup_steps\"?"));
  EXPECT_THAT(ErrorOf(Spec("{pipelines: 2}")),
              StartsWith("jobs/arith.yaml:3:12: parallel.pipelines: unknown key; did you mean \"pipeline\"?"));
  EXPECT_THAT(ErrorOf(Spec("{}", "{}", "{preset: demo, hiden_size: 64}")),
              StartsWith("jobs/arith.yaml:2:23: model.hiden_size: unknown key; did you mean \"hidden_size\"?"));
  EXPECT_THAT(ErrorOf("nmae: x\n" + Spec("{}")),
              StartsWith("jobs/arith.yaml:1:1: nmae: unknown key; did you mean \"name\"?"));
}

TEST(JobSpecErrorsTest, MissingRequiredKeyPointsAtTheEnclosingMap) {
  const char* no_steps =
      "name: arith-demo\n"
      "model: {preset: demo}\n"
      "phases:\n"
      "  - {name: pretrain, kind: pretrain, data: {builtin: arith}}\n";
  EXPECT_EQ(ErrorOf(no_steps), "jobs/arith.yaml:4:5: phases[0]: missing required key \"steps\"");
  EXPECT_EQ(ErrorOf("model: {preset: demo}\nphases: [{name: p, kind: pretrain, data: {builtin: arith}, steps: 1}]\n"),
            "jobs/arith.yaml:1:1: missing required key \"name\"");
  EXPECT_EQ(ErrorOf(Spec("{}", "{}", "{hidden_size: 64}")),
            "jobs/arith.yaml:2:8: model: no preset given (known: demo, small, deepseek-v3-671b), so every size must "
            "be set; missing vocab_size, intermediate_size, moe_intermediate_size, num_hidden_layers, "
            "num_attention_heads, num_key_value_heads, q_lora_rank, kv_lora_rank, qk_nope_head_dim, qk_rope_head_dim, "
            "v_head_dim, n_routed_experts, num_experts_per_tok, n_group, topk_group, first_k_dense_replace, "
            "max_position_embeddings");
  const char* grpo_no_reward =
      "name: arith-demo\n"
      "model: {preset: demo}\n"
      "phases:\n"
      "  - name: rl\n"
      "    kind: grpo\n"
      "    data: {builtin: arith-rl}\n"
      "    steps: 5\n";
  EXPECT_EQ(ErrorOf(grpo_no_reward), "jobs/arith.yaml:4:5: phases[0]: a grpo phase needs a reward (e.g. reward: exact_match)");
}

TEST(JobSpecErrorsTest, YamlSyntaxErrorCarriesTheParserMark) {
  EXPECT_EQ(ErrorOf("name: [a, b\nmodel: x\n"), "jobs/arith.yaml:2:6: YAML syntax error: end of sequence flow not found");
  EXPECT_EQ(ErrorOf("name: a: b\n"), "jobs/arith.yaml:1:8: YAML syntax error: illegal map value");
  EXPECT_EQ(ErrorOf(""), "jobs/arith.yaml:1:1: empty job spec; expected a map with at least name, model and phases");
  EXPECT_EQ(ErrorOf("- a\n- b\n"),
            "jobs/arith.yaml:1:1: expected a map (name, model, phases, ...) at the top level, got a list");
}

TEST(JobSpecErrorsTest, UnknownEnumsSayWhatIsAllowed) {
  EXPECT_EQ(ErrorOf(Spec("{schedule: gpipe}")),
            "jobs/arith.yaml:3:22: parallel.schedule: expected a pipeline schedule (one of 1f1b, zb1p, dualpipe, "
            "dualpipev), got \"gpipe\"");
  EXPECT_EQ(ErrorOf(Spec("{schedule: dualpip}")),
            "jobs/arith.yaml:3:22: parallel.schedule: expected a pipeline schedule (one of 1f1b, zb1p, dualpipe, "
            "dualpipev), got \"dualpip\"; did you mean \"dualpipe\"?");
  EXPECT_EQ(ErrorOf("precision: int4\n" + Spec("{}")),
            "jobs/arith.yaml:1:12: precision: expected a precision (one of fp32, bf16, fp8), got \"int4\"");
  EXPECT_EQ(ErrorOf(Spec("{}", "{}", "{preset: tiny}")),
            "jobs/arith.yaml:2:17: model.preset: unknown preset \"tiny\"; known presets are demo, small, "
            "deepseek-v3-671b");
  EXPECT_EQ(ErrorOf(Spec("{}", "{}", "{preset: dmeo}")),
            "jobs/arith.yaml:2:17: model.preset: unknown preset \"dmeo\"; did you mean \"demo\"? known presets are "
            "demo, small, deepseek-v3-671b");
  const char* bad_kind =
      "name: arith-demo\n"
      "model: {preset: demo}\n"
      "phases:\n"
      "  - {name: p, kind: rlhf, data: {builtin: arith}, steps: 1}\n";
  EXPECT_EQ(ErrorOf(bad_kind),
            "jobs/arith.yaml:4:21: phases[0].kind: expected a phase kind (one of pretrain, sft, grpo), got \"rlhf\"");
  EXPECT_EQ(ErrorOf("resources: {device: tpu}\n" + Spec("{}")),
            "jobs/arith.yaml:1:21: resources.device: expected a device kind (one of cpu, cuda), got \"tpu\"; did you mean \"cpu\"?");
}

TEST(JobSpecErrorsTest, ImpossibleLayouts) {
  // 16 experts over EP 3.
  EXPECT_EQ(ErrorOf(Spec("{data: 3, expert: 3}", "{micro_batch: 1, global_batch: 6}")),
            "jobs/arith.yaml:3:29: parallel.expert: the model's 16 routed experts (n_routed_experts) are not "
            "divisible by the expert-parallel degree 3; pick a divisor of 16");
  // EP must divide DP.
  EXPECT_EQ(ErrorOf(Spec("{data: 2, expert: 4}", "{micro_batch: 1, global_batch: 4}")),
            "jobs/arith.yaml:3:29: parallel.expert: the expert-parallel degree 4 must divide the data-parallel "
            "degree 2 (EP groups are formed from data-parallel replicas)");
  // demo: 4 layers + MTP fill at most 5 stages.
  EXPECT_EQ(ErrorOf(Spec("{pipeline: 6}", "{micro_batch: 1, global_batch: 12}")),
            "jobs/arith.yaml:3:22: parallel.pipeline: pipeline 6 needs 6 stages, but the model can fill at most 5 "
            "(4 layers + the MTP layer(s), which share the last stage); every stage needs at least one layer");
  EXPECT_THAT(ErrorOf(Spec("{pipeline: 3, schedule: dualpipev}", "{micro_batch: 1, global_batch: 6}")),
              HasSubstr("3:22: parallel.pipeline: dualpipev with pipeline 3 cuts the model into 6 stages, but the "
                        "model can fill at most 5"));
  // A spec whose own model is deeper accepts the same pipeline.
  EXPECT_TRUE(ParseJobSpec(Spec("{pipeline: 6}", "{micro_batch: 1, global_batch: 12}",
                                "{preset: demo, num_hidden_layers: 5}"),
                           "x.yaml")
                  .ok());
  EXPECT_EQ(ErrorOf(Spec("{pipeline: 3, schedule: dualpipe}", "{micro_batch: 1, global_batch: 6}")),
            "jobs/arith.yaml:3:22: parallel.pipeline: dualpipe needs an even pipeline degree, got 3 (use dualpipev "
            "or 1f1b for an odd one)");
  // 16 / (8 x 1) = 2 micro-batches < 2 x 2.
  EXPECT_EQ(ErrorOf(Spec("{pipeline: 2, schedule: dualpipe}")),
            "jobs/arith.yaml:3:35: parallel.schedule: dualpipe with pipeline 2 needs at least 4 micro-batches per "
            "step (2 x pipeline), got 2 (global_batch 16 / (micro_batch 8 x data 1))");
  EXPECT_EQ(ErrorOf(Spec("{pipeline: 2, schedule: dualpipe}", "{micro_batch: 1, global_batch: 5}")),
            "jobs/arith.yaml:3:35: parallel.schedule: dualpipe needs an even number of micro-batches per step "
            "(half go each way), got 5 (global_batch 5 / (micro_batch 1 x data 1))");
  EXPECT_EQ(ErrorOf(Spec("{data: 2}", "{micro_batch: 3, global_batch: 16}")),
            "jobs/arith.yaml:4:39: train.global_batch: global_batch 16 is not divisible by micro_batch 3 x data 2 "
            "= 6");
  // A constraint on a default that was not written points at the section that would hold it.
  EXPECT_EQ(ErrorOf(Spec("{data: 3}")),
            "jobs/arith.yaml:4:8: train.global_batch: global_batch 16 is not divisible by micro_batch 8 x data 3 = 24");
  EXPECT_EQ(ErrorOf(Spec("{}", "{seq_len: 512}")),
            "jobs/arith.yaml:4:18: train.seq_len: must be <= the model's max_position_embeddings (256), got 512");
}

TEST(JobSpecErrorsTest, PhaseRules) {
  const char* dup =
      "name: arith-demo\n"
      "model: {preset: demo}\n"
      "phases:\n"
      "  - {name: a, kind: pretrain, data: {builtin: arith}, steps: 1}\n"
      "  - {name: a, kind: sft, data: {builtin: arith-sft}, steps: 1}\n";
  EXPECT_EQ(ErrorOf(dup), "jobs/arith.yaml:5:12: phases[1].name: duplicate phase name \"a\" (also phases[0])");
  const char* reward_on_sft =
      "name: arith-demo\n"
      "model: {preset: demo}\n"
      "phases:\n"
      "  - {name: a, kind: sft, data: {builtin: arith-sft}, steps: 1, reward: exact_match}\n";
  EXPECT_EQ(ErrorOf(reward_on_sft),
            "jobs/arith.yaml:4:64: phases[0].reward: only grpo phases take reward (this phase is sft)");
  const char* wrong_builtin =
      "name: arith-demo\n"
      "model: {preset: demo}\n"
      "phases:\n"
      "  - {name: a, kind: sft, data: {builtin: arith}, steps: 1}\n";
  EXPECT_EQ(ErrorOf(wrong_builtin),
            "jobs/arith.yaml:4:42: phases[0].data.builtin: the built-in data set \"arith\" is for pretrain phases, "
            "not sft");
  const char* no_format =
      "name: arith-demo\n"
      "model: {preset: demo}\n"
      "phases:\n"
      "  - {name: a, kind: pretrain, data: {path: /corpus}, steps: 1}\n";
  EXPECT_THAT(ErrorOf(no_format),
              StartsWith("jobs/arith.yaml:4:37: phases[0].data: missing required key \"format\" (text, jsonl or "
                         "shards)"));
  const char* group =
      "name: arith-demo\n"
      "model: {preset: demo}\n"
      "phases:\n"
      "  - {name: rl, kind: grpo, data: {builtin: arith-rl}, steps: 1, reward: exact_match, group_size: 5}\n";
  EXPECT_EQ(ErrorOf(group),
            "jobs/arith.yaml:4:98: phases[0].group_size: must divide train.global_batch (16) so that every step "
            "holds whole groups, got 5");
  EXPECT_EQ(ErrorOf("name: Arith Demo\nmodel: {preset: demo}\n"
                    "phases: [{name: p, kind: pretrain, data: {builtin: arith}, steps: 1}]\n"),
            "jobs/arith.yaml:1:7: name: must be 1-63 characters of [a-z0-9-] not starting with '-', got \"Arith Demo\"");
}

TEST(JobSpecErrorsTest, ModelKnobProblemsPointAtTheKnob) {
  EXPECT_EQ(ErrorOf(Spec("{}", "{}", "{preset: demo, num_key_value_heads: 2}")),
            "jobs/arith.yaml:2:44: model.num_key_value_heads: must equal num_attention_heads (4), got 2 (MLA has no "
            "grouped KV heads)");
  EXPECT_EQ(ErrorOf(Spec("{}", "{}", "{preset: demo, rope_scaling: {factor: 0.5, original_max_position_embeddings: 64}}")),
            "jobs/arith.yaml:2:46: model.rope_scaling.factor: must be >= 1");
  EXPECT_EQ(ErrorOf(Spec("{}", "{}", "{preset: demo, tie_word_embeddings: yes}")),
            "jobs/arith.yaml:2:44: model.tie_word_embeddings: expected true or false, got \"yes\"");
}

TEST(JobSpecErrorsTest, DuplicateKeys) {
  EXPECT_EQ(ErrorOf(Spec("{}", "{lr: 1.0e-3, lr: 2.0e-3}")),
            "jobs/arith.yaml:4:21: train.lr: duplicate key (first at line 4)");
}

TEST(JobSpecErrorsTest, EveryErrorIsReportedInDocumentOrder) {
  std::string msg = ErrorOf(Spec("{pipeline: x, data: y}", "{lr_max: 1}"));
  EXPECT_EQ(msg,
            "jobs/arith.yaml:3:22: parallel.pipeline: expected a positive integer, got \"x\"\n"
            "jobs/arith.yaml:3:31: parallel.data: expected a positive integer, got \"y\"\n"
            "jobs/arith.yaml:4:9: train.lr_max: unknown key; known keys are seq_len, micro_batch, global_batch, lr, "
            "min_lr, warmup_steps, lr_schedule, weight_decay, beta1, beta2, eps, grad_clip, seed, init_std, "
            "bias_update_speed, balance_alpha, mtp_lambda");
}

TEST(JobSpecErrorsTest, ValidateWithoutYamlNamesPaths) {
  Result<JobSpec> s = ParseJobSpec(Spec("{}"), "x.yaml");
  ASSERT_TRUE(s.ok()) << s.status();
  JobSpec bad = *s;
  bad.parallel.expert = 3;
  bad.phases.push_back(bad.phases[0]);
  Status st = ValidateJobSpec(bad);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("parallel.expert: the model's 16 routed experts"));
  EXPECT_THAT(st.message(), HasSubstr("phases[1].name: duplicate phase name \"pretrain\" (also phases[0])"));
}

TEST(JobSpecErrorsTest, ExpertPayloadTypesAndNodeLimitAreChecked) {
  // Accepted, and the defaults follow the precision.
  auto ok = ParseJobSpec(Spec("{pipeline: 1, data: 2, expert: 2, dispatch: fp8, combine: bf16, max_nodes_per_token: 2}"),
                         "a.yaml");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->parallel.dispatch, Precision::kFp8);
  EXPECT_EQ(ok->parallel.combine, Precision::kBf16);
  EXPECT_EQ(ok->parallel.max_nodes_per_token, 2);
  // The dispatch travels in fp32 or fp8 only, the combine in fp32 or bf16 only.
  EXPECT_THAT(ErrorOf(Spec("{dispatch: bf16}")), HasSubstr("parallel.dispatch"));
  EXPECT_THAT(ErrorOf(Spec("{combine: fp8}")), HasSubstr("parallel.combine"));
  // The demo router keeps topk_group = 2 groups: a 1-node limit cannot hold.
  const std::string err = ErrorOf(Spec("{pipeline: 1, data: 2, expert: 2, max_nodes_per_token: 1}"));
  EXPECT_THAT(err, HasSubstr("parallel.max_nodes_per_token"));
  EXPECT_THAT(err, HasSubstr("topk_group = 2"));
}

}  // namespace
}  // namespace shoal
