// Shared by the comm tests and their peer process: deterministic inputs, the uneven all-to-all layout, and the
// file conventions of a test directory (addresses, outputs, markers).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace shoal::comm::testing {

inline uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Inputs whose sums depend on the order of addition: signs, and exponents spread over 2^-12 .. 2^12.
inline float InputValue(uint64_t seed, int rank, size_t i) {
  uint64_t h = Mix(seed * 1000003u + static_cast<uint64_t>(rank) * 7919u + i * 104729u);
  float mantissa = 1.0f + static_cast<float>(h & 0xffffff) / 16777216.0f;
  int exponent = static_cast<int>((h >> 24) % 25) - 12;
  float v = mantissa * static_cast<float>(std::ldexp(1.0, exponent));
  return (h >> 40) & 1 ? -v : v;
}

inline std::vector<float> Inputs(uint64_t seed, int rank, size_t n) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = InputValue(seed, rank, i);
  return v;
}

inline std::byte PatternByte(uint64_t seed, int src, int dst, size_t i) {
  return static_cast<std::byte>(Mix(seed ^ (static_cast<uint64_t>(src) << 40) ^ (static_cast<uint64_t>(dst) << 48) ^ i) &
                                0xff);
}

inline std::vector<std::byte> Pattern(uint64_t seed, int src, int dst, size_t n) {
  std::vector<std::byte> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = PatternByte(seed, src, dst, i);
  return v;
}

// Uneven all-to-all: bytes member i sends member j (zero for some pairs, including off-diagonal ones).
inline size_t AllToAllCount(int i, int j, size_t scale) {
  return static_cast<size_t>((i * 31 + j * 17) % 4) * scale + static_cast<size_t>(j % 2) * 5;
}
constexpr size_t kAllToAllGap = 3;      // bytes left between segments, to check offsets
constexpr std::byte kUntouched{0xEE};   // fill of receive buffers

// ---- files -------------------------------------------------------------------------------------------------

inline bool WriteFileAtomically(const std::string& path, const std::string& data) {
  std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) return false;
    f.write(data.data(), static_cast<std::streamsize>(data.size()));
    if (!f) return false;
  }
  return std::rename(tmp.c_str(), path.c_str()) == 0;
}

inline bool ReadWholeFile(const std::string& path, std::string* out) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return false;
  std::stringstream ss;
  ss << f.rdbuf();
  *out = ss.str();
  return true;
}

// Polls until `path` exists (written atomically) or `timeout` passes.
inline bool WaitForFile(const std::string& path, std::chrono::milliseconds timeout, std::string* out = nullptr) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string data;
  while (std::chrono::steady_clock::now() < deadline) {
    if (ReadWholeFile(path, &data)) {
      if (out) *out = data;
      return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return false;
}

template <typename T>
std::string AsBytes(const std::vector<T>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

}  // namespace shoal::comm::testing
