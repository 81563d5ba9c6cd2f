// Which control connection reaches which worker. Thread-safe (a mutex around a map), so any actor can send
// a message to a worker without hopping through the registry's strand; only the registry mutates it.
#pragma once

#include <capnp/message.h>

#include <map>
#include <mutex>
#include <string>

#include "protocol/connection.h"

namespace shoal::coordinator {

class WorkerDirectory {
 public:
  void Set(const std::string& worker_id, protocol::ConnectionPtr conn) {
    std::lock_guard<std::mutex> lock(mu_);
    conns_[worker_id] = std::move(conn);
  }
  // Removes the entry only if it still points at `conn` (a newer registration may have replaced it).
  void Remove(const std::string& worker_id, const protocol::Connection* conn) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = conns_.find(worker_id);
    if (it != conns_.end() && it->second.get() == conn) conns_.erase(it);
  }
  protocol::ConnectionPtr Get(const std::string& worker_id) const {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = conns_.find(worker_id);
    return it == conns_.end() ? nullptr : it->second;
  }
  // Sends if the worker is connected; returns whether it was.
  bool Send(const std::string& worker_id, capnp::MessageBuilder& envelope) {
    auto conn = Get(worker_id);
    if (!conn || !conn->is_open()) return false;
    conn->Send(envelope);
    return true;
  }

 private:
  mutable std::mutex mu_;
  std::map<std::string, protocol::ConnectionPtr> conns_;
};

}  // namespace shoal::coordinator
