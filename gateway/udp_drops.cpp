#include "gateway/udp_drops.h"

#include <dirent.h>
#include <unistd.h>

#include <charconv>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace coap2mqtt::gateway {
namespace {

std::vector<std::string_view> fields(std::string_view line) {
  std::vector<std::string_view> out;
  std::size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
    const std::size_t start = i;
    while (i < line.size() && line[i] != ' ' && line[i] != '\t') ++i;
    if (i > start) out.push_back(line.substr(start, i - start));
  }
  return out;
}

bool number(std::string_view s, std::uint64_t* out) {
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && end == s.data() + s.size();
}

std::string readAll(const char* path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

}  // namespace

std::uint64_t sumUdpDrops(std::string_view table, const std::set<std::uint64_t>& inodes) {
  // "sl local rem st tx:rx tr:when retrnsmt uid timeout inode ref pointer drops"
  constexpr std::size_t kInode = 9;
  constexpr std::size_t kDrops = 12;
  std::uint64_t total = 0;
  while (!table.empty()) {
    const std::size_t eol = table.find('\n');
    const std::string_view line = table.substr(0, eol);
    table.remove_prefix(eol == std::string_view::npos ? table.size() : eol + 1);
    const std::vector<std::string_view> f = fields(line);
    std::uint64_t inode = 0;
    std::uint64_t drops = 0;
    if (f.size() <= kDrops || !number(f[kInode], &inode) || !number(f[kDrops], &drops)) continue;
    if (inodes.count(inode) != 0) total += drops;
  }
  return total;
}

std::uint64_t udpDropsOfThisProcess() {
  std::set<std::uint64_t> inodes;
  if (DIR* dir = ::opendir("/proc/self/fd")) {
    while (const dirent* entry = ::readdir(dir)) {
      const std::string path = std::string("/proc/self/fd/") + entry->d_name;
      char target[64];
      const ssize_t n = ::readlink(path.c_str(), target, sizeof target - 1);
      if (n <= 0) continue;
      const std::string_view t(target, static_cast<std::size_t>(n));
      // "socket:[12345]"
      if (t.size() < 10 || t.substr(0, 8) != "socket:[" || t.back() != ']') continue;
      std::uint64_t inode = 0;
      if (number(t.substr(8, t.size() - 9), &inode)) inodes.insert(inode);
    }
    ::closedir(dir);
  }
  if (inodes.empty()) return 0;
  return sumUdpDrops(readAll("/proc/self/net/udp"), inodes) +
         sumUdpDrops(readAll("/proc/self/net/udp6"), inodes);
}

}  // namespace coap2mqtt::gateway
