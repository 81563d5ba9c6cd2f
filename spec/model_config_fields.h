// The table of ModelConfig knobs by HF name, in config.json order (§9.2). One table drives config.json reading and
// writing, the job spec's `model:` overrides and the canonical YAML, so a new knob is added in one place.
// Internal to spec/.
#pragma once

#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>

#include "spec/model_config.h"

namespace shoal::spec_internal {

struct ModelField {
  using Member = std::variant<int64_t ModelConfig::*, double ModelConfig::*, bool ModelConfig::*,
                              std::string ModelConfig::*, std::optional<RopeScaling> ModelConfig::*>;
  std::string_view name;
  Member member;
  // A size with no safe default: config.json must carry it, and a job spec without a preset must set it.
  bool required = false;
  // An integer where HF writes null for "none" (q_lora_rank): 0 <-> null.
  bool zero_is_null = false;
};

// Every knob except the constants "architectures" and "model_type".
std::span<const ModelField> ModelFields();
const ModelField* FindModelField(std::string_view name);

// Sub-keys of rope_scaling, in the hub's order.
struct RopeField {
  using Member = std::variant<double RopeScaling::*, int64_t RopeScaling::*, std::string RopeScaling::*>;
  std::string_view name;
  Member member;
  bool required = false;
};
std::span<const RopeField> RopeFields();

// Shortest text that parses back to the same double ("0.002", "1e-08", "10000").
std::string FormatDouble(double v);

// Levenshtein distance, for "did you mean" hints.
size_t EditDistance(std::string_view a, std::string_view b);
// The closest candidate when it is plausibly a typo of `word`, else empty.
std::string NearestName(std::string_view word, std::span<const std::string> candidates);

}  // namespace shoal::spec_internal
