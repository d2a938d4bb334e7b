#pragma once
// What the values of gateway.toml must look like, apart from TOML: names, host:port
// addresses, CoAP and MQTT URIs, the MQTT base topic. Pure checks on text; config.cpp
// reports what they reject at the value's file:line:col.
#include <optional>
#include <string>
#include <string_view>

#include "bridge/toml_reader.h"
#include "gateway/config.h"

namespace coap2mqtt::gateway {

struct AdminConfig;

// A gateway or device name is [a-zA-Z0-9_.-]+: it is used as an MQTT topic level.
bool isNameChar(char c);
bool isValidName(std::string_view s);

// "host:port", or "host" unless `port_required`, with host an IPv4 address, [IPv6] (with
// an optional %zone) or a DNS name, and port 1..65535 (or 0 with `allow_port_zero`).
bool isHostPort(std::string_view s, bool port_required, bool allow_port_zero);

// An IPv4 (224.0.0.0/4) or IPv6 (ff00::/8) multicast address, such as "224.0.1.187" or
// "ff02::fd".
bool isMulticastGroup(const std::string& address);

// nullopt when `uri` is a usable coap://host[:port] or coaps://host[:port] (DTLS, port 5684
// by default); otherwise what is wrong, for a message.
std::optional<std::string> checkCoapUri(std::string_view uri);
// coaps:// in any case.
bool isCoapsUri(std::string_view uri);

// nullopt when `uri` is a broker URI paho takes: mqtt://, tcp://, mqtts://, ssl:// with
// host[:port], or ws://, wss:// with host[:port][/path]; otherwise what is wrong.
std::optional<std::string> checkMqttUri(std::string_view uri);

// mqtts://, ssl:// or wss:// (the schemes [mqtt.tls] applies to), in any case.
bool isTlsMqttUri(std::string_view uri);

// nullopt when `topic` can prefix every topic we publish (not empty, no '$' first, no
// wildcards, no NUL, no empty levels); otherwise what is wrong.
std::optional<std::string> checkBaseTopic(std::string_view topic);

// ---- [admin] (issue 17, finding 5) ----------------------------------------------------
// Reads the [admin] table of gateway.toml into `out`: `enabled` (bool) and `allow` (a list
// of admin operation names, each checked against admin::operations()); errors go to
// `report` at their file:line:col.
void parseAdminSection(bridge::toml_reader::TableReader& root,
                       bridge::toml_reader::Reporter& report, AdminConfig& out);

// ---- [metrics] (issue 19) -------------------------------------------------------------
// Reads the optional [metrics] table: `listen` ("host:port"); errors at file:line:col.
// An HTTP endpoint's `listen` key: "host:port" into `out`, left as it is when the key is
// absent; `what` names the endpoint in the message ("the web page").
void parseHttpListen(bridge::toml_reader::TableReader& r, int example_port, const char* what,
                     std::string& out);
void parseMetricsSection(bridge::toml_reader::TableReader& root,
                         bridge::toml_reader::Reporter& report, MetricsConfig& out);

// ---- [coap.limits] (issue 17) -------------------------------------------------------
// Reads the optional [coap.limits] table of `coap` into `out`; errors at file:line:col.
void parseCoapLimits(bridge::toml_reader::TableReader& coap, bridge::toml_reader::Reporter& report,
                     CoapLimits& out);

}  // namespace coap2mqtt::gateway
