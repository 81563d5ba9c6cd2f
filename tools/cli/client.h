// How the CLI finds and talks to its coordinator: the address from --coordinator, $SHOAL_COORDINATOR or
// ./.shoal/state/address; the token from --token-file, $SHOAL_TOKEN_FILE or ./.shoal/state/token.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "common/status.h"
#include "protocol/blocking_client.h"

namespace shoal::cli {

struct GlobalOptions {
  std::string coordinator;
  std::string token_file;
  std::string dir = ".shoal";   // local cluster directory (shoal up)
  int timeout_ms = 10000;
  bool json = false;
};

struct Endpoint {
  std::string address;
  std::string token_file;
};

Result<Endpoint> ResolveEndpoint(const GlobalOptions& options);
Result<std::unique_ptr<protocol::BlockingClient>> ConnectToCoordinator(const GlobalOptions& options);

// Sends `request` and returns the reply, or the error (including an `error` reply from the coordinator).
Result<protocol::MessagePtr> Call(protocol::BlockingClient& client, capnp::MessageBuilder& request,
                                  const GlobalOptions& options);

}  // namespace shoal::cli
