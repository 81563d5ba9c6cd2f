#include "worker/data/reward.h"

#include <algorithm>

namespace shoal::data {

std::optional<std::string_view> FirstNumber(std::string_view text) {
  auto is_digit = [](char c) { return c >= '0' && c <= '9'; };
  size_t i = 0;
  while (i < text.size() && !is_digit(text[i])) ++i;
  if (i == text.size()) return std::nullopt;
  size_t start = (i > 0 && text[i - 1] == '-') ? i - 1 : i;
  while (i < text.size() && is_digit(text[i])) ++i;
  return text.substr(start, i - start);
}

double ExactMatchReward(std::string_view completion, std::string_view answer, std::string_view eos_text) {
  if (!eos_text.empty()) completion = completion.substr(0, completion.find(eos_text));
  std::optional<std::string_view> n = FirstNumber(completion);
  return n && *n == answer ? 1.0 : 0.0;
}

double ExactMatchReward(const Tokenizer& tokenizer, std::span<const int32_t> completion, std::string_view answer) {
  auto end = std::find(completion.begin(), completion.end(), tokenizer.eos_id());
  std::string text = tokenizer.Decode(completion.subspan(0, static_cast<size_t>(end - completion.begin())),
                                      /*skip_special=*/true);
  return ExactMatchReward(text, answer, /*eos_text=*/{});
}

}  // namespace shoal::data
