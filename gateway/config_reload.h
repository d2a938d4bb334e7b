#pragma once
// What a reload (SIGHUP, the admin op rules/reload) applies and what only a restart does.
// A reload loads gateway.toml and every rule file again but applies only the rules and
// commands (GatewayConfig::rules: the files [gateway].rules names and the [[rule]] and
// [[command]] tables of gateway.toml); every other setting takes effect on restart.
#include <string>
#include <vector>

#include "gateway/config.h"

namespace coap2mqtt::gateway {

// The dotted keys of the settings that differ between the `running` config and `fresh`
// (a new load of the same file) and only take effect on restart, in gateway.toml's order:
// "gateway.state_dir", "coap.listen", "coap.discovery.interval", "coap.device[boiler]"
// (a static device added, removed or changed), "mqtt.uri", "mqtt.tls.ca_file", ... Empty
// when only rules or commands changed. Keys only, never values: a changed password (its
// file's path or the file's content) is reported as "mqtt.password_file".
std::vector<std::string> restartRequired(const GatewayConfig& running, const GatewayConfig& fresh);

}  // namespace coap2mqtt::gateway
