#pragma once
// MQTT command messages: which [[command]] rule takes a message, whether it may pass (the
// rule's `allow`, a known device, the payload's size and shape), and what goes to the
// device. Pure: no sockets, no clocks. gateway/command_queue.h delivers the request (one
// at a time per device, rate limit, deadline); gateway/commands.h writes the result.
//
// The transaction rule: a command carries a transaction id only when its rule says
// `envelope = true`. The MQTT payload is then a JSON object
//   {"value": <what goes to the device>, "transaction": <any JSON value, echoed>}
// Without an envelope the payload goes to the device as it is, whatever it looks like (a
// JSON payload that happens to have a "transaction" key is just a payload), and MQTT 5
// Correlation Data is the way to pair a result with its request.
#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include "bridge/rules.h"
#include "registry/registry.h"

namespace coap2mqtt::bridge {

// One command as it goes to a device.
struct CommandRequest {
  std::string device;
  std::string path;  // with leading '/'
  Method method = Method::Put;
  std::string payload;
  std::optional<unsigned> content_format;
};

// How a command is delivered, from its [[command]] rule.
struct CommandLimits {
  std::size_t queue = 32;  // how many may wait behind the one in flight
  std::optional<RateLimit> rate;
  // The deadline, counted from gateway::CommandQueue::submit(), waiting included.
  std::chrono::milliseconds timeout{std::chrono::seconds(30)};
};

// What a result needs to say about its command, known before any CoAP traffic.
struct CommandContext {
  std::string device;
  std::string path;  // with leading '/'
  Method method = Method::Put;
  std::string result_topic;
  std::optional<std::string> transaction;  // JSON text of the envelope's "transaction"
};

struct PlannedCommand {
  std::size_t rule_index = 0;  // into RuleSet::commands
  CommandContext context;
  CommandRequest request;  // payload converted, Content-Format set
  CommandLimits limits;
};

struct RefusedCommand {
  CommandContext context;
  std::string reason;  // not_allowed | unknown_device | payload_too_large | invalid_json |
                       // invalid_envelope | invalid_path | invalid_topic
  std::string error;   // for people
};

// The first [[command]] of `rules` whose topic matches `topic` decides: a PlannedCommand
// when its `allow` covers the device and path, `registry` knows the device and the
// payload fits the rule (max_payload, envelope, content_format), else a RefusedCommand
// saying why. `gateway` is the {gateway} of result topics. nullopt: no [[command]] topic
// matches (not a command), or `topic` is the result topic (<command topic>/result) of a
// command topic: results are never commands.
//
// Paths: {path} is percent-decoded once (bridge/uri_path.h) and `allow` matches the
// decoded path; CommandRequest::path is its encoded form, which the CoAP side decodes to
// exactly those segments. A "." or ".." segment, an empty one, NUL or '/' inside one after
// decoding: "invalid_path". A topic that fits a [[command]] topic except for an empty
// level in the device or path ("c2m/lamp//set"): "invalid_topic" (its result topic may
// not be a valid topic; the caller checks before publishing).
std::optional<std::variant<PlannedCommand, RefusedCommand>> planCommand(
    const RuleSet& rules, const registry::Registry& registry, std::string_view gateway,
    std::string_view topic, std::string_view payload);

// A read (the admin API's device/read): a GET, allowed where some [[command]] with
// method = "GET" allows the device and the decoded path, as for commands. The request, or
// why not (not_allowed, unknown_device, invalid_path; no result topic).
std::variant<CommandRequest, RefusedCommand> planRead(const RuleSet& rules,
                                                      const registry::Registry& registry,
                                                      std::string_view device,
                                                      std::string_view path);

}  // namespace coap2mqtt::bridge
