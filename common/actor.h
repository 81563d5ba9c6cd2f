// Actor base: a strand on an io_context, private state touched only on that strand, and a public API that
// posts *named* handlers ("JobManager.OnWorkerDead"). Names key per-handler metrics and let tests inject
// delays or faults before a handler runs (STYLE.md §3; Ray's instrumented_io_context).
//
// Lifetime: an actor must outlive every handler it posted. Owners stop the io_context (and join its
// threads) before destroying actors.
#pragma once

#include <boost/asio/bind_executor.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace shoal {

struct HandlerStats {
  std::string name;
  uint64_t count = 0;
  uint64_t total_ns = 0;
  uint64_t max_ns = 0;
};

// Test-time hook: called on the strand just before a named handler runs.
using HandlerHook = std::function<void(std::string_view handler_name)>;

// Shared by every actor of a process: the metrics table and the optional hook.
class HandlerRegistry {
 public:
  void SetHook(HandlerHook hook);
  void Record(const char* name, uint64_t ns);
  void RunHook(std::string_view name);
  std::vector<HandlerStats> Snapshot() const;

 private:
  mutable std::mutex mu_;
  HandlerHook hook_;
  std::map<std::string, HandlerStats, std::less<>> stats_;
};

class Actor {
 public:
  using Strand = boost::asio::strand<boost::asio::io_context::executor_type>;

  Actor(boost::asio::io_context& io, std::string name, std::shared_ptr<HandlerRegistry> registry = nullptr);
  virtual ~Actor() = default;
  Actor(const Actor&) = delete;
  Actor& operator=(const Actor&) = delete;

  const std::string& actor_name() const { return name_; }
  Strand& strand() { return strand_; }
  boost::asio::io_context& io() { return io_; }

  // Runs fn on this actor's strand. `handler_name` must be a string literal ("Actor.Method").
  template <typename F>
  void Post(const char* handler_name, F&& fn) {
    boost::asio::post(strand_, [this, handler_name, fn = std::forward<F>(fn)]() mutable {
      RunNamed(handler_name, fn);
    });
  }

  // Runs fn on this actor's strand after `delay`.
  template <typename F>
  void PostAfter(const char* handler_name, std::chrono::steady_clock::duration delay, F&& fn) {
    auto timer = std::make_shared<boost::asio::steady_timer>(io_, delay);
    timer->async_wait(boost::asio::bind_executor(
        strand_, [this, timer, handler_name, fn = std::forward<F>(fn)](const boost::system::error_code& ec) mutable {
          if (!ec) RunNamed(handler_name, fn);
        }));
  }

  bool OnStrand() const { return strand_.running_in_this_thread(); }

 protected:
  template <typename F>
  void RunNamed(const char* handler_name, F& fn) {
    registry_->RunHook(handler_name);
    auto start = std::chrono::steady_clock::now();
    fn();
    auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start);
    registry_->Record(handler_name, static_cast<uint64_t>(ns.count()));
  }

  boost::asio::io_context& io_;
  Strand strand_;
  std::string name_;
  std::shared_ptr<HandlerRegistry> registry_;
};

}  // namespace shoal
