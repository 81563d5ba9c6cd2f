// A minimal HTTP/1.1 endpoint for operators: GET /metrics (Prometheus text format), GET /healthz.
// One request per connection, GET only, small bounded requests; anything else gets 404/405/400.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "common/status.h"

namespace boost::asio {
class io_context;
}

namespace shoal::coordinator {

class HttpServer {
 public:
  // `handler(path, &content_type)` returns the body, or nullopt for 404. It runs on an io thread.
  using Handler = std::function<std::optional<std::string>(const std::string& path, std::string* content_type)>;
  static Result<std::unique_ptr<HttpServer>> Listen(boost::asio::io_context& io, const std::string& address,
                                                    Handler handler);
  virtual ~HttpServer() = default;
  virtual uint16_t port() const = 0;
  virtual void Stop() = 0;
};

}  // namespace shoal::coordinator
