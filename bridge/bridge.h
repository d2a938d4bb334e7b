#pragma once
// The bridge: which resources to watch, where their values go, which commands may pass.
// Pure: no sockets, no clocks. The gateway calls it from its loop thread.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "bridge/rules.h"
#include "registry/registry.h"

namespace coap2mqtt::bridge {

// One resource the gateway must watch, with the rules that want it (decided once, at plan
// time, so the per-notification path never scans the rule list).
struct Watch {
  std::string device;
  std::string path;
  Mode mode = Mode::Observe;  // Observe only when some rule wants observe and resource has obs
  std::chrono::milliseconds interval{0};  // for Poll: the smallest interval of the rules
  std::vector<std::size_t> rules;          // indices into RuleSet::rules
};

// Every (resource, rules) pair of `device` that at least one enabled rule matches.
std::vector<Watch> plan(const RuleSet& rules, const registry::Device& device);

struct Notification {
  std::string_view device;
  std::string_view path;  // with leading '/'
  std::optional<unsigned> content_format;
  std::string_view payload;
  std::string_view rt;  // first rt of the resource, for {rt}
};

struct Publish {
  std::string topic;
  std::string payload;
  int qos = 0;
  bool retain = false;
};

struct RouteStats {
  std::uint64_t published = 0;
  std::uint64_t bad_payload = 0;  // payload did not parse as its Content-Format (dropped)
  std::uint64_t bad_topic = 0;    // template expanded to an invalid topic (dropped)
};

// Appends one Publish per rule in `rule_indices` (from Watch::rules).
void route(const RuleSet& rules, std::string_view gateway_name,
           const std::vector<std::size_t>& rule_indices, const Notification& n,
           std::vector<Publish>& out, RouteStats& stats);

struct CoapRequest {
  std::string device;
  std::string path;  // with leading '/'
  Method method = Method::Put;
  std::string payload;
  std::size_t command_index = 0;
};

struct CommandRefused {
  std::string reason;  // for the log and, later, the result message
};

// Maps an incoming MQTT message to a CoAP request: the first [[command]] whose topic
// matches decides; refused when its `allow` does not cover (device, path) or the device is
// unknown. nullopt when no command topic matches at all (not ours).
std::optional<std::variant<CoapRequest, CommandRefused>> routeCommand(
    const RuleSet& rules, const registry::Registry& registry, std::string_view topic,
    std::string_view payload);

}  // namespace coap2mqtt::bridge
