#pragma once
// Stable device names: a configured name wins, an RD endpoint name next, else one derived
// from the address. Names are MQTT topic levels: [A-Za-z0-9_.-]+.
#include <cstdint>
#include <string>
#include <string_view>

namespace coap2mqtt::gateway {

// Not reserved (see below), [A-Za-z0-9_.-]{1,64}.
bool isValidDeviceName(std::string_view name);
// "bridge": <base>/bridge/... are the gateway's own topics (state, requests): a device
// named so would publish onto them (an RD endpoint "bridge" set bridge/state offline).
bool isReservedDeviceName(std::string_view name);
// "127.0.0.5", 5683 → "coap-127-0-0-5"; other ports are appended ("coap-127-0-0-5-5690");
// IPv6 "fe80::1%eth0" → "coap-fe80--1-eth0".
std::string deviceNameForAddress(std::string_view host, std::uint16_t port);
// An RD ep made safe as a name: every character outside [A-Za-z0-9_.-] becomes '-';
// an empty result becomes "ep", a reserved one gets "ep-" in front.
std::string deviceNameFromEndpoint(std::string_view ep);

}  // namespace coap2mqtt::gateway
