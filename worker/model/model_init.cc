// Model: deterministic initialisation and loading of the held tensors.
#include <cmath>
#include <cstring>

#include "common/thread_pool.h"
#include "worker/model/model.h"
#include "worker/model/model_impl.h"

namespace shoal::model {

namespace {

uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t Fnv1a(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// The tensor whose values a name takes: the MTP layer's copies of the embedding and the head initialise as the
// shared tensors they copy, so a stage that holds its own copy starts from the same values.
std::string InitName(const std::string& name) {
  if (EndsWith(name, ".embed_tokens.weight")) return "model.embed_tokens.weight";
  if (EndsWith(name, ".shared_head.head.weight")) return "lm_head.weight";
  return name;
}

// N(0, std²) from Box-Muller over a SplitMix64 stream per 4096-element block, so blocks fill in parallel and the
// values do not depend on the thread count.
void FillNormal(float* x, int64_t n, uint64_t seed, float std) {
  constexpr int64_t kBlock = 4096;
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  ThreadPool::Default().ParallelFor(blocks, 16, [&](int64_t b0, int64_t b1, int) {
    for (int64_t blk = b0; blk < b1; ++blk) {
      uint64_t state = seed ^ (0xd1b54a32d192ed03ull * static_cast<uint64_t>(blk + 1));
      const int64_t end = std::min(n, (blk + 1) * kBlock);
      for (int64_t i = blk * kBlock; i < end; i += 2) {
        const double u1 = (static_cast<double>(SplitMix64(state) >> 11) + 1.0) * 0x1p-53;  // (0, 1]
        const double u2 = static_cast<double>(SplitMix64(state) >> 11) * 0x1p-53;
        const double r = std::sqrt(-2.0 * std::log(u1)), th = 2.0 * M_PI * u2;
        x[i] = static_cast<float>(std * r * std::cos(th));
        if (i + 1 < end) x[i + 1] = static_cast<float>(std * r * std::sin(th));
      }
    }
  });
}

}  // namespace

void Model::InitRandom(uint64_t seed, float init_std) {
  for (const NamedTensor& t : Parameters()) {
    const int64_t n = t.numel();
    if (EndsWith(t.name, "norm.weight")) {  // every RMSNorm (input/post-attention, q_a/kv_a, enorm/hnorm, finals)
      std::fill(t.data, t.data + n, 1.0f);
    } else if (EndsWith(t.name, "e_score_correction_bias")) {
      std::fill(t.data, t.data + n, 0.0f);
    } else {
      uint64_t s = seed ^ Fnv1a(InitName(t.name));
      FillNormal(t.data, n, SplitMix64(s), init_std);
    }
  }
}

Status Model::Load(
    const std::function<const float*(const std::string& name, const std::vector<int64_t>& shape)>& lookup) {
  for (const NamedTensor& t : Parameters()) {
    const float* src = lookup(t.name, t.shape);
    if (src == nullptr) {
      std::string shape = "[";
      for (size_t i = 0; i < t.shape.size(); ++i) shape += (i ? ", " : "") + std::to_string(t.shape[i]);
      return NotFoundError("model tensor " + t.name + " " + shape +
                           "]: not in the checkpoint, or stored with another shape (check that config.json "
                           "describes this checkpoint)");
    }
    std::memcpy(t.data, src, sizeof(float) * t.numel());
  }
  return Status::OK();
}

}  // namespace shoal::model
