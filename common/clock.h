// Clocks, injectable so that health checks and timeouts can be tested without sleeping (STYLE.md §13).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

namespace shoal {

using Clock_ = std::chrono::steady_clock;
using TimePoint = Clock_::time_point;
using Duration = Clock_::duration;

class Clock {
 public:
  virtual ~Clock() = default;
  virtual TimePoint Now() const = 0;
};

class SteadyClock final : public Clock {
 public:
  TimePoint Now() const override { return Clock_::now(); }
};

// A clock that only moves when told to.
class FakeClock final : public Clock {
 public:
  TimePoint Now() const override { return TimePoint(Duration(ticks_.load())); }
  void Advance(Duration d) { ticks_ += d.count(); }

 private:
  std::atomic<Duration::rep> ticks_{Duration(std::chrono::hours(1)).count()};
};

// Milliseconds since the Unix epoch, for timestamps that are stored or shown.
int64_t WallMillis();

}  // namespace shoal
