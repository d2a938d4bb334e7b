#pragma once
// The result messages of MQTT commands, published on the command's result topic. Which
// [[command]] rule takes a message, whether it may pass and what goes to the device is
// bridge/command_plan.h; gateway/command_queue.h delivers it.
#include <optional>
#include <string>
#include <string_view>

#include "bridge/command_plan.h"
#include "gateway/command_queue.h"

namespace coap2mqtt::gateway {

// The plan's types and function under the names the gateway has always used for them.
using bridge::CommandContext;
using bridge::planCommand;
using bridge::PlannedCommand;
using bridge::RefusedCommand;

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
