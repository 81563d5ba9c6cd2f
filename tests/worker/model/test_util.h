// Shared helpers of the model tests: the dsv3-micro golden fixture (checkpoint, batch, expected values), a
// tensor lookup over a checkpoint, and micro-batches built the way worker/data packs rows (§4.2).
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/status.h"
#include "spec/model_config.h"
#include "worker/checkpoint/export.h"
#include "worker/checkpoint/safetensors.h"
#include "worker/model/model.h"

namespace shoal::model::testing_util {

inline std::string FixtureDir() {
#ifdef SHOAL_DSV3_MICRO_DIR
  return SHOAL_DSV3_MICRO_DIR;
#else
  return "";
#endif
}

// Rows of S + 1 tokens → the main and MTP-depth-1 inputs and targets of worker/data/batch.h.
struct Rows {
  int B = 0, T = 0;
  std::vector<int32_t> inputs, targets, mtp_inputs, mtp_targets;

  static Rows FromTokens(const std::vector<int32_t>& tokens, int B, int S) {
    Rows r;
    r.B = B;
    r.T = S;
    for (int b = 0; b < B; ++b) {
      const int32_t* x = tokens.data() + static_cast<size_t>(b) * (S + 1);
      for (int i = 0; i < S; ++i) {
        r.inputs.push_back(x[i]);
        r.targets.push_back(x[i + 1]);
        r.mtp_inputs.push_back(x[i + 1]);
        r.mtp_targets.push_back(i + 2 <= S ? x[i + 2] : -1);
      }
    }
    return r;
  }
  MicroBatch Batch() const {
    MicroBatch mb;
    mb.inputs = inputs.data();
    mb.targets = targets.data();
    mb.mtp_inputs = mtp_inputs.data();
    mb.mtp_targets = mtp_targets.data();
    mb.B = B;
    mb.T = T;
    return mb;
  }
};

struct Fixture {
  checkpoint::HfCheckpoint checkpoint;
  std::vector<int32_t> tokens;  // [B, S+1]
  int B = 0, S = 0;
  checkpoint::TensorSet expected;

  const ModelConfig& config() const { return checkpoint.config; }
  Rows rows() const { return Rows::FromTokens(tokens, B, S); }
  std::vector<float> Expected(const std::string& name) const {
    auto it = expected.find(name);
    if (it == expected.end()) return {};
    return checkpoint::ToF32(it->second.ref());
  }
  const checkpoint::Tensor* ExpectedTensor(const std::string& name) const {
    auto it = expected.find(name);
    return it == expected.end() ? nullptr : &it->second;
  }
};

inline Result<Fixture> LoadFixture() {
  Fixture f;
  ASSIGN_OR_RETURN(f.checkpoint, checkpoint::LoadHuggingFace(FixtureDir()));
  ASSIGN_OR_RETURN(auto batch, checkpoint::SafetensorsFile::Open(FixtureDir() + "/batch.safetensors"));
  ASSIGN_OR_RETURN(checkpoint::Tensor tokens, batch.Read("tokens"));
  if (tokens.dtype != checkpoint::DType::kI32 || tokens.shape.size() != 2) {
    return InvalidArgumentError("batch.safetensors: tokens must be I32 [B, S+1]");
  }
  f.B = static_cast<int>(tokens.shape[0]);
  f.S = static_cast<int>(tokens.shape[1]) - 1;
  auto v = tokens.values<int32_t>();
  f.tokens.assign(v.begin(), v.end());
  ASSIGN_OR_RETURN(auto expected, checkpoint::SafetensorsFile::Open(FixtureDir() + "/expected.safetensors"));
  ASSIGN_OR_RETURN(f.expected, expected.ReadAll());
  return f;
}

// lookup(name, shape) over F32 tensors of a checkpoint.
inline std::function<const float*(const std::string&, const std::vector<int64_t>&)> LookupIn(
    const checkpoint::TensorSet& tensors) {
  return [&tensors](const std::string& name, const std::vector<int64_t>& shape) -> const float* {
    auto it = tensors.find(name);
    if (it == tensors.end() || it->second.shape != shape || it->second.dtype != checkpoint::DType::kF32) {
      return nullptr;
    }
    return it->second.values<float>().data();
  };
}

inline double MaxAbs(const float* x, int64_t n) {
  double m = 0;
  for (int64_t i = 0; i < n; ++i) m = std::max(m, std::abs(static_cast<double>(x[i])));
  return m;
}

inline double MaxAbsDiff(const float* a, const float* b, int64_t n) {
  double m = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = std::abs(static_cast<double>(a[i]) - static_cast<double>(b[i]));
    if (!(d <= m)) m = d;  // NaN wins
  }
  return m;
}

}  // namespace shoal::model::testing_util
