// Cluster token and the HMAC challenge-response that proves knowledge of it (the token never crosses the
// wire). The token is 32 random bytes, stored hex-encoded in STATE_DIR/token with mode 0600.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace shoal::protocol {

constexpr uint32_t kProtocolVersion = 1;
constexpr size_t kTokenBytes = 32;
constexpr size_t kNonceBytes = 32;

struct Token {
  std::vector<uint8_t> bytes;  // kTokenBytes
};

// Reads a token file (64 hex digits, surrounding whitespace ignored).
Result<Token> LoadToken(const std::string& path);
// Creates `path` with a new random token (mode 0600) if it does not exist; returns the token either way.
Result<Token> LoadOrCreateToken(const std::string& path);

// A stable identifier of the cluster derived from its token (so RocksDB state is bound to one cluster).
std::string ClusterIdFromToken(const Token& token);

std::vector<uint8_t> ClientMac(const Token& token, const std::vector<uint8_t>& server_nonce,
                               const std::vector<uint8_t>& client_nonce, uint32_t role, std::string_view name);
std::vector<uint8_t> ServerMac(const Token& token, const std::vector<uint8_t>& client_nonce,
                               const std::vector<uint8_t>& server_nonce);
// Constant-time comparison.
bool MacEquals(const uint8_t* a, size_t a_len, const std::vector<uint8_t>& b);

}  // namespace shoal::protocol
