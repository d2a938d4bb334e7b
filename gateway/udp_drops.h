#pragma once
// Datagrams the kernel dropped on this process's UDP sockets because a receive buffer was
// full (a flood, or a loop that fell behind): libcoap reads the sockets, so nothing of ours
// sees those datagrams. The kernel counts them per socket, in the last column ("drops") of
// /proc/self/net/udp and udp6; a socket's count goes when the socket is closed.
#include <cstdint>
#include <set>
#include <string_view>

namespace coap2mqtt::gateway {

// The sum of the "drops" column over the lines of `table` (the text of /proc/net/udp or
// udp6) whose inode is in `inodes`. Lines it cannot read are skipped.
std::uint64_t sumUdpDrops(std::string_view table, const std::set<std::uint64_t>& inodes);

// The inodes of the sockets this process holds (from /proc/self/fd), and sumUdpDrops over
// /proc/self/net/udp and udp6 for them. 0 where /proc cannot be read.
std::uint64_t udpDropsOfThisProcess();

}  // namespace coap2mqtt::gateway
