#include "protocol/auth.h"

#include <openssl/crypto.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <sys/stat.h>

#include "common/file_util.h"
#include "common/ids.h"

namespace shoal::protocol {
namespace {

std::vector<uint8_t> Hmac(const Token& token, const std::vector<uint8_t>& msg) {
  std::vector<uint8_t> out(EVP_MAX_MD_SIZE);
  unsigned int len = 0;
  HMAC(EVP_sha256(), token.bytes.data(), static_cast<int>(token.bytes.size()), msg.data(), msg.size(),
       out.data(), &len);
  out.resize(len);
  return out;
}

void Append(std::vector<uint8_t>* out, std::string_view s) { out->insert(out->end(), s.begin(), s.end()); }
void Append(std::vector<uint8_t>* out, const std::vector<uint8_t>& v) { out->insert(out->end(), v.begin(), v.end()); }

std::string_view Trim(std::string_view s) {
  while (!s.empty() && isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

}  // namespace

Result<Token> LoadToken(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  Token token;
  if (!HexDecode(Trim(text), &token.bytes) || token.bytes.size() != kTokenBytes) {
    return InvalidArgumentError("token file " + path + " is malformed: expected " +
                                std::to_string(2 * kTokenBytes) + " hex digits");
  }
  return token;
}

Result<Token> LoadOrCreateToken(const std::string& path) {
  if (FileExists(path)) return LoadToken(path);
  Token token{RandomBytes(kTokenBytes)};
  RETURN_IF_ERROR(WriteFileAtomic(path, HexEncode(token.bytes) + "\n", 0600));
  return token;
}

std::string ClusterIdFromToken(const Token& token) {
  std::vector<uint8_t> msg;
  Append(&msg, std::string_view("shoal-cluster-id-v1"));
  auto mac = Hmac(token, msg);
  return "cluster-" + HexEncode(mac.data(), 8);
}

std::vector<uint8_t> ClientMac(const Token& token, const std::vector<uint8_t>& server_nonce,
                               const std::vector<uint8_t>& client_nonce, uint32_t role, std::string_view name) {
  std::vector<uint8_t> msg;
  Append(&msg, std::string_view("shoal-auth-v1 client"));
  Append(&msg, server_nonce);
  Append(&msg, client_nonce);
  for (int i = 0; i < 4; ++i) msg.push_back(static_cast<uint8_t>(role >> (8 * i)));
  Append(&msg, name);
  return Hmac(token, msg);
}

std::vector<uint8_t> ServerMac(const Token& token, const std::vector<uint8_t>& client_nonce,
                               const std::vector<uint8_t>& server_nonce) {
  std::vector<uint8_t> msg;
  Append(&msg, std::string_view("shoal-auth-v1 server"));
  Append(&msg, client_nonce);
  Append(&msg, server_nonce);
  return Hmac(token, msg);
}

bool MacEquals(const uint8_t* a, size_t a_len, const std::vector<uint8_t>& b) {
  return a_len == b.size() && CRYPTO_memcmp(a, b.data(), a_len) == 0;
}

}  // namespace shoal::protocol
