#include "common/actor.h"

namespace shoal {

void HandlerRegistry::SetHook(HandlerHook hook) {
  std::lock_guard<std::mutex> lock(mu_);
  hook_ = std::move(hook);
}

void HandlerRegistry::RunHook(std::string_view name) {
  HandlerHook hook;
  {
    std::lock_guard<std::mutex> lock(mu_);
    hook = hook_;
  }
  if (hook) hook(name);
}

void HandlerRegistry::Record(const char* name, uint64_t ns) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = stats_.find(std::string_view(name));
  if (it == stats_.end()) it = stats_.emplace(name, HandlerStats{name}).first;
  it->second.count++;
  it->second.total_ns += ns;
  if (ns > it->second.max_ns) it->second.max_ns = ns;
}

std::vector<HandlerStats> HandlerRegistry::Snapshot() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<HandlerStats> out;
  out.reserve(stats_.size());
  for (const auto& [_, s] : stats_) out.push_back(s);
  return out;
}

Actor::Actor(boost::asio::io_context& io, std::string name, std::shared_ptr<HandlerRegistry> registry)
    : io_(io),
      strand_(boost::asio::make_strand(io)),
      name_(std::move(name)),
      registry_(registry ? std::move(registry) : std::make_shared<HandlerRegistry>()) {}

}  // namespace shoal
