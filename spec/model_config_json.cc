// HF config.json <-> ModelConfig (§9.2). nlohmann/json stays in this file.
#include <cmath>
#include <type_traits>

#include <nlohmann/json.hpp>

#include "spec/model_config.h"
#include "spec/model_config_fields.h"

namespace shoal {
namespace {

using Json = nlohmann::ordered_json;
using spec_internal::ModelField;
using spec_internal::RopeField;

// rope_theta and the YaRN sizes are integral in the hub file; keep them so ("10000", not "10000.0").
Json Number(double v) {
  if (std::isfinite(v) && v == std::floor(v) && std::fabs(v) < 1e15) return Json(static_cast<int64_t>(v));
  return Json(v);
}

Json RopeToJson(const RopeScaling& r) {
  Json j = Json::object();
  for (const RopeField& f : spec_internal::RopeFields()) {
    std::visit(
        [&](auto member) {
          using T = std::remove_cvref_t<decltype(r.*member)>;
          if constexpr (std::is_same_v<T, double>) {
            // factor/beta are integral in the hub file; mscale is written 1.0 there. Both read back the same.
            j[std::string(f.name)] = (f.name == "mscale" || f.name == "mscale_all_dim") ? Json(r.*member)
                                                                                       : Number(r.*member);
          } else {
            j[std::string(f.name)] = r.*member;
          }
        },
        f.member);
  }
  return j;
}

std::string TypeName(const Json& v) {
  switch (v.type()) {
    case Json::value_t::null: return "null";
    case Json::value_t::boolean: return "a boolean";
    case Json::value_t::string: return "a string";
    case Json::value_t::array: return "an array";
    case Json::value_t::object: return "an object";
    default: return "a number";
  }
}

Status ReadInt(const Json& v, std::string_view key, bool zero_is_null, int64_t* out) {
  if (v.is_null() && zero_is_null) {
    *out = 0;
    return Status::OK();
  }
  if (v.is_number_integer()) {
    *out = v.get<int64_t>();
    return Status::OK();
  }
  if (v.is_number_float()) {
    double d = v.get<double>();
    if (d == std::floor(d) && std::fabs(d) < 9e15) {
      *out = static_cast<int64_t>(d);
      return Status::OK();
    }
  }
  return InvalidArgumentError("config.json: \"" + std::string(key) + "\": expected an integer" +
                              (zero_is_null ? " or null" : "") + ", got " + TypeName(v) + " " + v.dump());
}

Status ReadDouble(const Json& v, std::string_view key, double* out) {
  if (!v.is_number()) {
    return InvalidArgumentError("config.json: \"" + std::string(key) + "\": expected a number, got " +
                                TypeName(v) + " " + v.dump());
  }
  *out = v.get<double>();
  return Status::OK();
}

Status ReadRope(const Json& v, std::optional<RopeScaling>* out) {
  if (v.is_null()) {
    out->reset();
    return Status::OK();
  }
  if (!v.is_object())
    return InvalidArgumentError("config.json: \"rope_scaling\": expected an object or null, got " + TypeName(v));
  RopeScaling r;
  for (const RopeField& f : spec_internal::RopeFields()) {
    std::string key(f.name);
    auto it = v.find(key);
    // Newer transformers write "rope_type" where the hub file has "type".
    if (it == v.end() && f.name == "type") it = v.find("rope_type");
    std::string path = "rope_scaling." + key;
    if (it == v.end()) {
      if (f.required) return InvalidArgumentError("config.json: \"" + path + "\": missing required key");
      continue;
    }
    Status s = std::visit(
        [&](auto member) -> Status {
          using T = std::remove_cvref_t<decltype(r.*member)>;
          if constexpr (std::is_same_v<T, double>) {
            return ReadDouble(*it, path, &(r.*member));
          } else if constexpr (std::is_same_v<T, int64_t>) {
            return ReadInt(*it, path, false, &(r.*member));
          } else {
            if (!it->is_string())
              return InvalidArgumentError("config.json: \"" + path + "\": expected a string, got " + TypeName(*it));
            r.*member = it->template get<std::string>();
            return Status::OK();
          }
        },
        f.member);
    RETURN_IF_ERROR(s);
  }
  *out = r;
  return Status::OK();
}

}  // namespace

std::string ToHfConfigJson(const ModelConfig& c) {
  Json j = Json::object();
  j["architectures"] = Json::array({"DeepseekV3ForCausalLM"});
  j["model_type"] = "deepseek_v3";
  for (const ModelField& f : spec_internal::ModelFields()) {
    std::string key(f.name);
    std::visit(
        [&](auto member) {
          using T = std::remove_cvref_t<decltype(c.*member)>;
          if constexpr (std::is_same_v<T, int64_t>) {
            if (f.zero_is_null && c.*member == 0)
              j[key] = nullptr;
            else
              j[key] = c.*member;
          } else if constexpr (std::is_same_v<T, double>) {
            j[key] = key == "rope_theta" ? Number(c.*member) : Json(c.*member);
          } else if constexpr (std::is_same_v<T, std::optional<RopeScaling>>) {
            j[key] = (c.*member) ? RopeToJson(*(c.*member)) : Json(nullptr);
          } else {
            j[key] = c.*member;
          }
        },
        f.member);
  }
  return j.dump(2) + "\n";
}

Result<ModelConfig> ModelConfigFromHfJson(std::string_view json_text) {
  Json j = Json::parse(json_text.begin(), json_text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    // Parse again with exceptions only to get nlohmann's position-bearing message.
    try {
      Json again = Json::parse(json_text.begin(), json_text.end());
      (void)again;
    } catch (const Json::parse_error& e) {
      return InvalidArgumentError(std::string("config.json: not valid JSON: ") + e.what());
    }
    return InvalidArgumentError("config.json: not valid JSON");
  }
  if (!j.is_object()) return InvalidArgumentError("config.json: expected a JSON object at the top level");
  if (auto it = j.find("model_type"); it != j.end() && *it != "deepseek_v3")
    return InvalidArgumentError("config.json: \"model_type\": expected \"deepseek_v3\", got " + it->dump());
  ModelConfig c;
  for (const ModelField& f : spec_internal::ModelFields()) {
    std::string key(f.name);
    auto it = j.find(key);
    if (it == j.end()) {
      if (f.required)
        return InvalidArgumentError("config.json: missing \"" + key +
                                    "\" (every size must be written out; HF's defaults are the 671B values)");
      continue;
    }
    const Json& v = *it;
    Status s = std::visit(
        [&](auto member) -> Status {
          using T = std::remove_cvref_t<decltype(c.*member)>;
          if constexpr (std::is_same_v<T, int64_t>) {
            return ReadInt(v, key, f.zero_is_null, &(c.*member));
          } else if constexpr (std::is_same_v<T, double>) {
            return ReadDouble(v, key, &(c.*member));
          } else if constexpr (std::is_same_v<T, bool>) {
            if (!v.is_boolean())
              return InvalidArgumentError("config.json: \"" + key + "\": expected true or false, got " + v.dump());
            c.*member = v.get<bool>();
            return Status::OK();
          } else if constexpr (std::is_same_v<T, std::string>) {
            if (!v.is_string())
              return InvalidArgumentError("config.json: \"" + key + "\": expected a string, got " + v.dump());
            c.*member = v.get<std::string>();
            return Status::OK();
          } else {
            return ReadRope(v, &(c.*member));
          }
        },
        f.member);
    RETURN_IF_ERROR(s);
  }
  RETURN_IF_ERROR(c.Validate().WithContext("config.json"));
  return c;
}

}  // namespace shoal
