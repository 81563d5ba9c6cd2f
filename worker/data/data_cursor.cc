#include "worker/data/data_cursor.h"

#include <nlohmann/json.hpp>

namespace shoal::data {

std::string DataCursor::ToJson() const {
  nlohmann::json j = {{"source", source}, {"seed", seed}, {"epoch", epoch}, {"index", index}};
  return j.dump();
}

Result<DataCursor> DataCursor::FromJson(std::string_view text) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  const std::string where = "data cursor " + std::string(text.substr(0, 200));
  if (j.is_discarded() || !j.is_object()) return InvalidArgumentError(where + ": not a JSON object");
  DataCursor c;
  if (!j.contains("source") || !j["source"].is_string())
    return InvalidArgumentError(where + ": \"source\" must be a string");
  c.source = j["source"].get<std::string>();
  if (!j.contains("seed") || !j["seed"].is_number_unsigned())
    return InvalidArgumentError(where + ": \"seed\" must be a non-negative integer");
  c.seed = j["seed"].get<uint64_t>();
  for (auto [key, field] : {std::pair{"epoch", &c.epoch}, std::pair{"index", &c.index}}) {
    if (!j.contains(key) || !j[key].is_number_integer() || j[key].get<int64_t>() < 0)
      return InvalidArgumentError(where + ": \"" + key + "\" must be a non-negative integer");
    *field = j[key].get<int64_t>();
  }
  return c;
}

}  // namespace shoal::data
