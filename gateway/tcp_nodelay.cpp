#include "gateway/tcp_nodelay.h"

#include <dirent.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <cstdlib>
#include <string>

namespace coap2mqtt::gateway {

std::optional<std::uint16_t> brokerPort(std::string_view uri) {
  const std::size_t scheme_end = uri.find("://");
  if (scheme_end == std::string_view::npos) return std::nullopt;
  const std::string_view scheme = uri.substr(0, scheme_end);
  std::string_view rest = uri.substr(scheme_end + 3);
  rest = rest.substr(0, rest.find_first_of("/?#"));
  if (const std::size_t at = rest.rfind('@'); at != std::string_view::npos) {
    rest = rest.substr(at + 1);
  }
  // The port follows the host: after "]" for an IPv6 literal.
  const std::size_t host_end = rest.empty() || rest[0] != '[' ? 0 : rest.find(']');
  if (host_end == std::string_view::npos) return std::nullopt;
  const std::size_t colon = rest.find(':', host_end);
  if (colon != std::string_view::npos) {
    const std::string digits(rest.substr(colon + 1));
    if (digits.empty() || digits.size() > 5 ||
        digits.find_first_not_of("0123456789") != std::string::npos) {
      return std::nullopt;
    }
    const unsigned long port = std::strtoul(digits.c_str(), nullptr, 10);
    if (port == 0 || port > 65535) return std::nullopt;
    return static_cast<std::uint16_t>(port);
  }
  if (scheme == "mqtt" || scheme == "tcp") return 1883;
  if (scheme == "mqtts" || scheme == "ssl") return 8883;
  if (scheme == "ws") return 80;
  if (scheme == "wss") return 443;
  return std::nullopt;
}

int disableNagleTowards(std::uint16_t peer_port) {
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr) return 0;
  int set = 0;
  const int own = ::dirfd(dir);
  while (const dirent* entry = ::readdir(dir)) {
    char* end = nullptr;
    const long fd = std::strtol(entry->d_name, &end, 10);
    if (end == entry->d_name || *end != '\0' || fd == own) continue;
    const int s = static_cast<int>(fd);
    int type = 0;
    socklen_t length = sizeof type;
    if (::getsockopt(s, SOL_SOCKET, SO_TYPE, &type, &length) != 0 || type != SOCK_STREAM) continue;
    sockaddr_storage peer{};
    socklen_t peer_length = sizeof peer;
    if (::getpeername(s, reinterpret_cast<sockaddr*>(&peer), &peer_length) != 0) continue;
    std::uint16_t port = 0;
    if (peer.ss_family == AF_INET) {
      port = ntohs(reinterpret_cast<const sockaddr_in*>(&peer)->sin_port);
    } else if (peer.ss_family == AF_INET6) {
      port = ntohs(reinterpret_cast<const sockaddr_in6*>(&peer)->sin6_port);
    } else {
      continue;
    }
    if (port != peer_port) continue;
    const int one = 1;
    if (::setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == 0) ++set;
  }
  ::closedir(dir);
  return set;
}

}  // namespace coap2mqtt::gateway
