#pragma once
// gateway.toml: the daemon's own settings plus the rules it loads.
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "bridge/rules.h"

namespace coap2mqtt::gateway {

struct StaticDevice {
  std::string name;  // [a-zA-Z0-9_.-]+, unique; used as a topic level
  std::string uri;   // coap://host[:port]  (coaps:// later)
};

struct MqttConfig {
  std::string uri = "mqtt://127.0.0.1:1883";  // mqtt:// or tcp:// (mqtts:// later)
  std::string client_id;                      // default "coap2mqtt-<gateway.name>"
  std::string base_topic = "coap2mqtt";       // no wildcards, no empty levels
  std::string username;
  std::string password_file;  // path; relative to the config file's folder
  std::string password;       // read from password_file at load; never logged
  std::chrono::seconds keepalive{30};
  // `version`: "3.1.1" or "5". MQTT 5 lets command results go to a request's Response
  // Topic with its Correlation Data.
  int protocol_version = 4;  // 4 = 3.1.1, 5 = MQTT 5
};

struct DiscoveryConfig {
  // All-CoAP-Nodes groups to ask; empty = no multicast discovery (static/RD devices only).
  std::vector<std::string> multicast;   // e.g. "224.0.1.187", "ff02::fd", "ff05::fd"
  std::vector<std::string> interfaces;  // names; empty = the kernel's choice (IPv4 only)
  std::uint16_t port = 5683;            // where devices listen
  std::chrono::milliseconds interval{std::chrono::minutes(5)};  // between rounds
  // How long answers are collected: devices wait up to 5 s (leisure) before answering.
  std::chrono::milliseconds window{std::chrono::seconds(6)};
  std::string query;  // Uri-Query filter, e.g. "rt=temperature*"; empty = none
};

struct CoapConfig {
  // Server endpoints ("host:port") for the Resource Directory and our own
  // /.well-known/core; empty = client only (ephemeral ports).
  std::vector<std::string> listen;
  // How long to wait for /.well-known/core and other requests before giving up.
  std::chrono::milliseconds request_timeout{std::chrono::seconds(10)};
  // How often to retry a static device whose discovery failed.
  std::chrono::milliseconds retry_interval{std::chrono::seconds(15)};
  // A device that has not answered for this long is offline.
  std::chrono::milliseconds offline_after{std::chrono::minutes(3)};
  bool resource_directory = true;  // serve /rd and /rd-lookup on the listen endpoints
  // RFC 7252 §4.8 transmission parameters, per device session.
  std::chrono::milliseconds ack_timeout{2000};
  double ack_random_factor = 1.5;
  unsigned max_retransmit = 4;
  DiscoveryConfig discovery;
};

struct GatewayConfig {
  std::string file;  // path it was loaded from
  std::string name;  // [gateway].name, default: host name
  std::string state_dir = "/var/lib/coap2mqtt";
  std::vector<std::string> rule_globs;  // [gateway].rules, relative to the config file
  std::string log_level = "info";       // trace|debug|info|warn|error|critical|off
  CoapConfig coap;
  std::vector<StaticDevice> devices;  // [[coap.device]]
  MqttConfig mqtt;
  bridge::RuleSet rules;  // from rule files, plus any [[rule]]/[[command]] in this file
};

// Loads gateway.toml and every rule file it names. Throws bridge::ConfigErrors listing
// every error (file:line:col, key, what was expected). Unknown keys are errors.
GatewayConfig loadConfig(const std::string& path);

// Parses durations like "500ms", "10s", "5m", "1h" (also a bare integer = seconds).
std::optional<std::chrono::milliseconds> parseDuration(std::string_view text);

}  // namespace coap2mqtt::gateway
