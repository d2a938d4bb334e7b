#pragma once
// [web] of gateway.toml (issue 22): where the web page listens and the token that guards it.
#include <string>
#include <string_view>

#include "bridge/toml_reader.h"
#include "gateway/config.h"

namespace coap2mqtt::gateway {

// Reads [web] into `out`: `listen` ("host:port"), `token_file` (a file whose first line is
// the token; a relative path names a systemd credential first, as mqtt.password_file).
// A `listen` that is not a loopback address needs a token_file. Errors go to `report` at
// their file:line:col; the token itself never appears in a message.
void parseWebSection(bridge::toml_reader::TableReader& root, bridge::toml_reader::Reporter& report,
                     const std::string& dir, WebConfig& out);

// Whether the host of `listen` ("host:port", "[v6]:port") is a loopback address:
// 127.0.0.0/8, ::1 or "localhost".
bool isLoopbackListen(std::string_view listen);

// The shortest token accepted.
constexpr std::size_t kMinWebTokenLength = 16;

}  // namespace coap2mqtt::gateway
