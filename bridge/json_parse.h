#pragma once
// JSON from outside (device payloads, MQTT commands and admin requests), parsed with the
// limits every such input gets: no NUL byte (nlohmann takes one for the end of the input
// and ignores what follows) and at most 64 levels of nesting (dump() recurses).
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace coap2mqtt::bridge {

// nullopt and *error ("invalid JSON: ...") when `text` is not one JSON value within limits.
std::optional<nlohmann::json> parseJson(std::string_view text, std::string* error);

}  // namespace coap2mqtt::bridge
