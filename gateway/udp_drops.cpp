#include "gateway/udp_drops.h"

#include <dirent.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <charconv>
#include <cstring>

namespace coap2mqtt::gateway {

std::uint64_t udpDropsOfThisProcess() {
  std::uint64_t total = 0;
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr) return 0;
  while (const dirent* entry = ::readdir(dir)) {
    int fd = -1;
    const char* name = entry->d_name;
    const char* end = name + std::strlen(name);
    if (const auto [at, ec] = std::from_chars(name, end, fd); ec != std::errc() || at != end) {
      continue;  // "." and ".."
    }
    int protocol = 0;
    socklen_t length = sizeof protocol;
    // Not a socket (ENOTSOCK, also the directory's own descriptor), or not UDP.
    if (::getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &protocol, &length) != 0) continue;
    if (protocol != IPPROTO_UDP) continue;
    std::uint32_t meminfo[SK_MEMINFO_VARS] = {};
    length = sizeof meminfo;
    if (::getsockopt(fd, SOL_SOCKET, SO_MEMINFO, meminfo, &length) != 0) continue;
    if (length > SK_MEMINFO_DROPS * sizeof meminfo[0]) total += meminfo[SK_MEMINFO_DROPS];
  }
  ::closedir(dir);
  return total;
}

}  // namespace coap2mqtt::gateway
