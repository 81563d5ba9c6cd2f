#include "worker/comm/ucx_util.h"

#include <string>

namespace shoal::comm {

Status UcsToStatus(ucs_status_t status, std::string_view context) {
  if (status == UCS_OK) return Status::OK();
  std::string msg = std::string(context) + ": UCX " + ucs_status_string(status) + " (" + std::to_string(status) + ")";
  switch (status) {
    case UCS_ERR_CANCELED:
      return CancelledError(std::move(msg));
    case UCS_ERR_TIMED_OUT:
      return DeadlineExceededError(std::move(msg));
    case UCS_ERR_MESSAGE_TRUNCATED:
      return DataLossError(std::move(msg));
    case UCS_ERR_NO_MEMORY:
    case UCS_ERR_NO_RESOURCE:
    case UCS_ERR_EXCEEDS_LIMIT:
      return ResourceExhaustedError(std::move(msg));
    case UCS_ERR_INVALID_PARAM:
    case UCS_ERR_INVALID_ADDR:
      return InvalidArgumentError(std::move(msg));
    case UCS_ERR_UNSUPPORTED:
      return UnimplementedError(std::move(msg));
    case UCS_ERR_UNREACHABLE:
    case UCS_ERR_ENDPOINT_TIMEOUT:
    case UCS_ERR_CONNECTION_RESET:
    case UCS_ERR_REJECTED:
    case UCS_ERR_NOT_CONNECTED:
    case UCS_ERR_IO_ERROR:
    case UCS_ERR_NO_DEVICE:
    case UCS_ERR_BUSY:
    case UCS_ERR_SHMEM_SEGMENT:  // the peer's shared memory is gone (it exited)
      return UnavailableError(std::move(msg));
    default:
      return InternalError(std::move(msg));
  }
}

std::string HexEncode(std::string_view bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out.push_back(kDigits[c >> 4]);
    out.push_back(kDigits[c & 15]);
  }
  return out;
}

Result<std::string> HexDecode(std::string_view text) {
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  if (text.size() % 2 != 0) {
    return InvalidArgumentError("data address: odd number of hex digits (" + std::to_string(text.size()) +
                                "); expected the text Communicator::address() published");
  }
  std::string out(text.size() / 2, '\0');
  for (size_t i = 0; i < out.size(); ++i) {
    int hi = nibble(text[2 * i]), lo = nibble(text[2 * i + 1]);
    if (hi < 0 || lo < 0) {
      return InvalidArgumentError("data address: non-hex character at offset " + std::to_string(2 * i));
    }
    out[i] = static_cast<char>(hi << 4 | lo);
  }
  return out;
}

}  // namespace shoal::comm
