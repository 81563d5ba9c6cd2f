#include "tools/cli/client.h"

#include <cstdlib>

#include "common/file_util.h"

namespace shoal::cli {
namespace {

std::string Trim(std::string s) {
  while (!s.empty() && isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  size_t i = 0;
  while (i < s.size() && isspace(static_cast<unsigned char>(s[i]))) ++i;
  return s.substr(i);
}

}  // namespace

Result<Endpoint> ResolveEndpoint(const GlobalOptions& options) {
  Endpoint ep;
  ep.address = options.coordinator;
  if (ep.address.empty() && getenv("SHOAL_COORDINATOR")) ep.address = getenv("SHOAL_COORDINATOR");
  if (ep.address.empty()) {
    std::string path = options.dir + "/state/address";
    auto text = ReadFile(path);
    if (!text.ok()) {
      return NotFoundError("no coordinator: pass --coordinator HOST:PORT, set SHOAL_COORDINATOR, or start a local "
                           "cluster with `shoal up` (looked for " + path + ")");
    }
    ep.address = Trim(*text);
  }
  ep.token_file = options.token_file;
  if (ep.token_file.empty() && getenv("SHOAL_TOKEN_FILE")) ep.token_file = getenv("SHOAL_TOKEN_FILE");
  if (ep.token_file.empty()) ep.token_file = options.dir + "/state/token";
  return ep;
}

Result<std::unique_ptr<protocol::BlockingClient>> ConnectToCoordinator(const GlobalOptions& options) {
  ASSIGN_OR_RETURN(Endpoint ep, ResolveEndpoint(options));
  auto token = protocol::LoadToken(ep.token_file);
  if (!token.ok()) {
    return Status(token.status().code(), "cannot read the cluster token (" + token.status().message() +
                                             "); pass --token-file or set SHOAL_TOKEN_FILE");
  }
  auto client = protocol::BlockingClient::Connect(ep.address, *token, proto::Role::CLI, "cli-" + std::to_string(getpid()),
                                                  std::chrono::milliseconds(options.timeout_ms));
  if (!client.ok()) return client.status().WithContext("coordinator " + ep.address);
  return client;
}

Result<protocol::MessagePtr> Call(protocol::BlockingClient& client, capnp::MessageBuilder& request,
                                  const GlobalOptions& options) {
  return client.Call(request, std::chrono::milliseconds(options.timeout_ms));
}

}  // namespace shoal::cli
