#pragma once
// Datagrams the kernel dropped on this process's UDP sockets because a receive buffer was
// full (a flood, or a loop that fell behind): libcoap reads the sockets, so nothing of ours
// sees those datagrams. The kernel counts them per socket; a socket's count goes when the
// socket is closed.
#include <cstdint>

namespace coap2mqtt::gateway {

// The sum over this process's UDP sockets (found in /proc/self/fd) of each one's drop count
// (getsockopt SO_MEMINFO, SK_MEMINFO_DROPS: the "drops" column of /proc/net/udp, without
// reading that table, whose every read walks all UDP sockets of the host: a second and more
// with 10,000 devices). 0 where /proc cannot be read.
std::uint64_t udpDropsOfThisProcess();

}  // namespace coap2mqtt::gateway
