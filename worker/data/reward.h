// Rule-based rewards for GRPO (reference/deepseek-v3.md §7.2): pure functions of a completion and the reference.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "worker/data/tokenizer.h"

namespace shoal::data {

// The first integer in `text` (an optional '-' directly before a run of ASCII digits), as written.
std::optional<std::string_view> FirstNumber(std::string_view text);

// 1 when the first number of the completion, up to its first `eos_text`, is exactly `answer` ("85"); else 0.
// Text after eos is ignored, so "85<|eos|>12" scores 1 and "8<|eos|>85" scores 0.
double ExactMatchReward(std::string_view completion, std::string_view answer,
                        std::string_view eos_text = kEosToken);
// The same on generated ids: cut at the first eos id, decode without specials, then compare.
double ExactMatchReward(const Tokenizer& tokenizer, std::span<const int32_t> completion, std::string_view answer);

}  // namespace shoal::data
