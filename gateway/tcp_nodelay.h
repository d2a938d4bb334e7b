#pragma once
// Nagle's algorithm off for the broker connection. Paho C 1.3.12 leaves it on and exposes
// neither its socket nor a hook to set socket options. With QoS 0 the broker sends nothing
// back to carry TCP's acknowledgements, so a small publish written while an earlier one is
// unacknowledged waits for the broker's delayed ACK (40 ms on Linux): at 10,000 msg/s the
// p99 of QoS 0 was 41 ms where that of QoS 1, whose PUBACKs carry the ACKs, was 3 ms.
#include <cstdint>
#include <optional>
#include <string_view>

namespace coap2mqtt::gateway {

// The TCP port a broker URI (mqtt://, mqtts://, tcp://, ssl://, ws://, wss://) connects
// to: its own, or the scheme's default (1883, 8883, 80, 443). nullopt when it names none.
std::optional<std::uint16_t> brokerPort(std::string_view uri);

// Sets TCP_NODELAY on every connected TCP socket of this process whose peer port is
// `peer_port` (found through /proc/self/fd); how many it set. Other sockets of ours that
// match by chance (a web client's ephemeral port) lose nothing by it.
int disableNagleTowards(std::uint16_t peer_port);

}  // namespace coap2mqtt::gateway
