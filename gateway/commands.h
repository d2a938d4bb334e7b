#pragma once
// MQTT command messages: which [[command]] rule takes one, what goes to the device, and
// the result message that comes back. Pure functions; the CommandQueue does the timing.
//
// The transaction rule: a command carries a transaction id only when its rule says
// `envelope = true`. The MQTT payload is then a JSON object
//   {"value": <what goes to the device>, "transaction": <any JSON value, echoed>}
// Without an envelope the payload goes to the device as it is, whatever it looks like (a
// JSON payload that happens to have a "transaction" key is just a payload), and MQTT 5
// Correlation Data is the way to pair a result with its request.
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include "bridge/rules.h"
#include "gateway/command_queue.h"
#include "registry/registry.h"

namespace coap2mqtt::gateway {

// What a result needs to say about its command, known before any CoAP traffic.
struct CommandContext {
  std::string device;
  std::string path;  // with leading '/'
  bridge::Method method = bridge::Method::Put;
  std::string result_topic;
  std::optional<std::string> transaction;  // JSON text of the envelope's "transaction"
};

struct PlannedCommand {
  std::size_t rule_index = 0;
  CommandContext context;
  CommandRequest request;  // payload converted, Content-Format set
  CommandLimits limits;
};

struct RefusedCommand {
  CommandContext context;
  std::string reason;  // not_allowed | unknown_device | payload_too_large | invalid_json |
                       // invalid_envelope
  std::string error;   // for people
};

// nullopt: no [[command]] topic matches (not a command), or `topic` is the result topic
// (<command topic>/result) of a command topic: results are never commands.
std::optional<std::variant<PlannedCommand, RefusedCommand>> planCommand(
    const bridge::RuleSet& rules, const registry::Registry& registry, std::string_view gateway,
    std::string_view topic, std::string_view payload);

// {"code":"2.04","payload":<by Content-Format, as bridge::transformPayload json mode>,
//  "latency_ms":N,"device":...,"path":...,"method":...,"transaction":...} for an answer;
// {"error":"...","reason":"timeout"|...,...} otherwise.
std::string commandResultJson(const CommandContext& context, const CommandOutcome& outcome);
std::string commandRefusedJson(const RefusedCommand& refused);

// "2.04" for 204.
std::string coapCodeString(unsigned code);
// A CoAP response body for JSON: bridge::transformPayload(json); null when empty;
// {"base64":...} when it does not parse as its Content-Format says. Returns JSON text.
std::string responsePayloadJson(std::optional<unsigned> content_format, std::string_view body);

}  // namespace coap2mqtt::gateway
