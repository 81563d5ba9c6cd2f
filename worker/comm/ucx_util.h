// RAII owners for UCX handles (STYLE.md §10), UCX status -> Status, and the text form of a worker address.
// Internal to worker/comm: only the progress thread touches a worker and its endpoints.
#pragma once

#include <ucp/api/ucp.h>

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"

namespace shoal::comm {

// "Unavailable: <context>: UCX Endpoint timeout (UCS_ERR_ENDPOINT_TIMEOUT)". Connection-type failures map to
// Unavailable, timeouts to DeadlineExceeded, cancellation to Cancelled, truncation to DataLoss.
Status UcsToStatus(ucs_status_t status, std::string_view context);

struct UcpConfigDeleter {
  void operator()(ucp_config_t* c) const { ucp_config_release(c); }
};
using UcpConfigPtr = std::unique_ptr<ucp_config_t, UcpConfigDeleter>;

struct UcpContextDeleter {
  void operator()(ucp_context* c) const { ucp_cleanup(c); }
};
using UcpContextPtr = std::unique_ptr<ucp_context, UcpContextDeleter>;

struct UcpWorkerDeleter {
  void operator()(ucp_worker* w) const { ucp_worker_destroy(w); }
};
using UcpWorkerPtr = std::unique_ptr<ucp_worker, UcpWorkerDeleter>;

// A worker address as returned by ucp_worker_get_address; released with the worker that made it.
class WorkerAddress {
 public:
  WorkerAddress() = default;
  WorkerAddress(ucp_worker_h worker, ucp_address_t* address, size_t length)
      : worker_(worker), address_(address), length_(length) {}
  ~WorkerAddress() { Reset(); }
  WorkerAddress(WorkerAddress&& o) noexcept { *this = std::move(o); }
  WorkerAddress& operator=(WorkerAddress&& o) noexcept {
    if (this != &o) {
      Reset();
      worker_ = std::exchange(o.worker_, nullptr);
      address_ = std::exchange(o.address_, nullptr);
      length_ = std::exchange(o.length_, 0);
    }
    return *this;
  }
  std::string_view bytes() const { return {reinterpret_cast<const char*>(address_), length_}; }
  void Reset() {
    if (address_) ucp_worker_release_address(worker_, address_);
    address_ = nullptr;
  }

 private:
  ucp_worker_h worker_ = nullptr;
  ucp_address_t* address_ = nullptr;
  size_t length_ = 0;
};

// Lowercase hex: the worker address travels as text (RankAssignment.dataAddress).
std::string HexEncode(std::string_view bytes);
Result<std::string> HexDecode(std::string_view text);

}  // namespace shoal::comm
