// Shared helpers of the kernel tests: seeded random tensors, closeness checks that report the worst element,
// and central-difference gradient checks of a scalar loss (usually L = Σ r ⊙ out for a fixed random r,
// evaluated with the fp64 reference kernels, so a wrong backward shows up as an O(1) relative error while
// rounding stays near 1e-9).
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <sstream>
#include <vector>

namespace shoal::kernels::testing {

inline std::vector<double> RandomVec(size_t n, uint64_t seed, double lo = -1.0, double hi = 1.0) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> dist(lo, hi);
  std::vector<double> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

inline std::vector<float> RandomVecF(size_t n, uint64_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

inline std::vector<int32_t> RandomInts(size_t n, uint64_t seed, int32_t lo, int32_t hi_inclusive) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> dist(lo, hi_inclusive);
  std::vector<int32_t> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

template <typename To, typename From>
std::vector<To> Cast(const std::vector<From>& v) {
  return std::vector<To>(v.begin(), v.end());
}

template <typename T>
double Dot(const std::vector<T>& a, const std::vector<T>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += static_cast<double>(a[i]) * static_cast<double>(b[i]);
  return s;
}

// Every |a − b| ≤ atol + rtol·|b|; the failure message names the worst element.
template <typename A, typename B>
::testing::AssertionResult AllClose(const A* a, const B* b, size_t n, double rtol, double atol) {
  double worst = -1;
  size_t worst_i = 0;
  for (size_t i = 0; i < n; ++i) {
    const double x = static_cast<double>(a[i]), y = static_cast<double>(b[i]);
    const double excess = std::abs(x - y) - (atol + rtol * std::abs(y));
    if (!(excess <= 0) && (std::isnan(excess) || excess > worst)) {
      worst = std::isnan(excess) ? 1e300 : excess;
      worst_i = i;
    }
  }
  if (worst < 0) return ::testing::AssertionSuccess();
  std::ostringstream os;
  os << "element " << worst_i << " of " << n << ": " << static_cast<double>(a[worst_i]) << " vs "
     << static_cast<double>(b[worst_i]) << " (rtol " << rtol << ", atol " << atol << ")";
  return ::testing::AssertionFailure() << os.str();
}

template <typename A, typename B>
::testing::AssertionResult AllClose(const std::vector<A>& a, const std::vector<B>& b, double rtol, double atol) {
  if (a.size() != b.size())
    return ::testing::AssertionFailure() << "sizes differ: " << a.size() << " vs " << b.size();
  return AllClose(a.data(), b.data(), a.size(), rtol, atol);
}

// Compares analytic[i] with the central difference (L(x + h e_i) − L(x − h e_i)) / 2h for up to max_coords
// coordinates of x (all of them when x is small; an evenly spread subset otherwise). x is restored.
inline ::testing::AssertionResult CheckGradient(const std::function<double()>& loss, std::vector<double>& x,
                                                const std::vector<double>& analytic, double h = 1e-6,
                                                double rtol = 1e-6, double atol = 1e-8, size_t max_coords = 400) {
  if (analytic.size() != x.size())
    return ::testing::AssertionFailure() << "gradient size " << analytic.size() << " vs " << x.size();
  const size_t n = x.size();
  const size_t step = std::max<size_t>(1, n / max_coords);
  double max_abs = 0;
  for (double g : analytic) max_abs = std::max(max_abs, std::abs(g));
  for (size_t i = 0; i < n; i += step) {
    const double x0 = x[i];
    x[i] = x0 + h;
    const double lp = loss();
    x[i] = x0 - h;
    const double lm = loss();
    x[i] = x0;
    const double num = (lp - lm) / (2 * h);
    const double tol = atol + rtol * std::max(std::abs(num), max_abs);
    if (!(std::abs(num - analytic[i]) <= tol))
      return ::testing::AssertionFailure() << "d/dx[" << i << "]: numeric " << num << " vs analytic "
                                           << analytic[i] << " (tol " << tol << ")";
  }
  return ::testing::AssertionSuccess();
}

}  // namespace shoal::kernels::testing
