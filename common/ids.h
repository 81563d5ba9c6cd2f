// Identifiers: random, printable, prefixed by kind ("job-7f3a91c2d04e"), and the random bytes behind them.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace shoal {

// Cryptographically random bytes (OpenSSL RAND_bytes; aborts if the system has no entropy source).
std::vector<uint8_t> RandomBytes(size_t n);

// "<prefix>-" followed by 12 lowercase hex digits (48 random bits).
std::string NewId(std::string_view prefix);

std::string HexEncode(const uint8_t* data, size_t n);
inline std::string HexEncode(const std::vector<uint8_t>& v) { return HexEncode(v.data(), v.size()); }
// Returns false on odd length or a non-hex character.
bool HexDecode(std::string_view hex, std::vector<uint8_t>* out);

}  // namespace shoal
