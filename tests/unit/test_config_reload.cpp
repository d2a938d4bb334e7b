// restartRequired: every setting a reload cannot apply is reported by its dotted key, and
// nothing is reported when only rules or commands change.
#include "gateway/config_reload.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "tests/unit/temp_dir.h"

namespace coap2mqtt::gateway {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using Keys = std::vector<std::string>;
using coap2mqtt::unit::TempDir;

struct Change {
  const char* key;
  std::function<void(GatewayConfig&)> apply;
};

// One row per setting: changing it alone reports exactly its key.
StaticDevice& lamp(GatewayConfig& c) {
  return *std::find_if(c.devices.begin(), c.devices.end(),
                       [](const StaticDevice& d) { return d.name == "lamp"; });
}

const std::vector<Change>& changes() {
  static const std::vector<Change> table{
      {"gateway.name", [](GatewayConfig& c) { c.name = "other-gw"; }},
      {"gateway.state_dir", [](GatewayConfig& c) { c.state_dir = "/tmp/elsewhere"; }},
      {"gateway.log_level", [](GatewayConfig& c) { c.log_level = "debug"; }},
      {"coap.listen", [](GatewayConfig& c) { c.coap.listen.push_back("[::]:5683"); }},
      // Keys included, under the table's key only.
      {"coap.psk_client", [](GatewayConfig& c) { c.coap.psk_clients[0].key = "k8"; }},
      {"coap.psk_client", [](GatewayConfig& c) { c.coap.psk_clients[0].endpoints = {"node*"}; }},
      {"coap.request_timeout", [](GatewayConfig& c) { c.coap.request_timeout = 3s; }},
      {"coap.retry_interval", [](GatewayConfig& c) { c.coap.retry_interval = 1s; }},
      {"coap.offline_after", [](GatewayConfig& c) { c.coap.offline_after = 1h; }},
      {"coap.resource_directory", [](GatewayConfig& c) { c.coap.resource_directory = false; }},
      {"coap.ack_timeout", [](GatewayConfig& c) { c.coap.ack_timeout = 3s; }},
      {"coap.ack_random_factor", [](GatewayConfig& c) { c.coap.ack_random_factor = 2.0; }},
      {"coap.max_retransmit", [](GatewayConfig& c) { c.coap.max_retransmit = 2; }},
      {"coap.discovery.multicast",
       [](GatewayConfig& c) { c.coap.discovery.multicast.push_back("ff05::fd"); }},
      {"coap.discovery.interfaces",
       [](GatewayConfig& c) { c.coap.discovery.interfaces.push_back("eth0"); }},
      {"coap.discovery.port", [](GatewayConfig& c) { c.coap.discovery.port = 5684; }},
      {"coap.discovery.interval", [](GatewayConfig& c) { c.coap.discovery.interval = 1min; }},
      {"coap.discovery.window", [](GatewayConfig& c) { c.coap.discovery.window = 2s; }},
      {"coap.discovery.query", [](GatewayConfig& c) { c.coap.discovery.query = "rt=temp"; }},
      {"coap.device[boiler]", [](GatewayConfig& c) { c.devices[0].uri = "coap://192.0.2.99"; }},
      {"coap.device[boiler]", [](GatewayConfig& c) { c.devices.erase(c.devices.begin()); }},
      // A device's new key or identity is a changed device (the key itself is never named).
      {"coap.device[lamp]", [](GatewayConfig& c) { lamp(c).psk->key = "k2"; }},
      {"coap.device[lamp]", [](GatewayConfig& c) { lamp(c).psk->identity = "gw2"; }},
      {"coap.device[lamp]",
       [](GatewayConfig& c) {
         lamp(c).pki = PkiCredentials{"/etc/ca.pem", "/etc/gw.pem", "/etc/gw.key", true};
       }},
      {"coap.device[garage]",
       [](GatewayConfig& c) {
         c.devices.push_back({"garage", "coap://192.0.2.30", std::nullopt, std::nullopt});
       }},
      {"mqtt.uri", [](GatewayConfig& c) { c.mqtt.uri = "mqtts://broker.example.com"; }},
      {"mqtt.client_id", [](GatewayConfig& c) { c.mqtt.client_id = "someone-else"; }},
      {"mqtt.base_topic", [](GatewayConfig& c) { c.mqtt.base_topic = "site2"; }},
      {"mqtt.username", [](GatewayConfig& c) { c.mqtt.username = "gw2"; }},
      {"mqtt.password_file", [](GatewayConfig& c) { c.mqtt.password_file = "/etc/other.pass"; }},
      {"mqtt.password_file", [](GatewayConfig& c) { c.mqtt.password = "hunter3"; }},
      {"mqtt.keepalive", [](GatewayConfig& c) { c.mqtt.keepalive = 60s; }},
      {"mqtt.protocol", [](GatewayConfig& c) { c.mqtt.protocol = MqttProtocol::V5; }},
      {"mqtt.clean_session", [](GatewayConfig& c) { c.mqtt.clean_session = false; }},
      {"mqtt.session_expiry", [](GatewayConfig& c) { c.mqtt.session_expiry = 1h; }},
      {"mqtt.max_inflight", [](GatewayConfig& c) { c.mqtt.max_inflight = 10; }},
      {"mqtt.reconnect_max", [](GatewayConfig& c) { c.mqtt.reconnect_max = 5s; }},
      {"mqtt.tls.ca_file", [](GatewayConfig& c) { c.mqtt.tls.ca_file = "/etc/ca.pem"; }},
      {"mqtt.tls.cert_file", [](GatewayConfig& c) { c.mqtt.tls.cert_file = "/etc/c.pem"; }},
      {"mqtt.tls.key_file", [](GatewayConfig& c) { c.mqtt.tls.key_file = "/etc/k.pem"; }},
      {"mqtt.tls.verify", [](GatewayConfig& c) { c.mqtt.tls.verify = false; }},
      {"mqtt.tls.alpn", [](GatewayConfig& c) { c.mqtt.tls.alpn = {"mqtt"}; }},
      {"mqtt.buffer.max_messages", [](GatewayConfig& c) { c.mqtt.buffer.max_messages = 10; }},
      {"mqtt.buffer.max_bytes", [](GatewayConfig& c) { c.mqtt.buffer.max_bytes = 4096; }},
      {"mqtt.buffer.qos0_messages", [](GatewayConfig& c) { c.mqtt.buffer.qos0_messages = 0; }},
      {"admin.enabled", [](GatewayConfig& c) { c.admin.enabled = false; }},
      {"admin.allow", [](GatewayConfig& c) { c.admin.allow = std::vector<std::string>{"info"}; }},
      {"metrics.listen", [](GatewayConfig& c) { c.metrics.listen = "127.0.0.1:9105"; }},
  };
  return table;
}

GatewayConfig running() {
  GatewayConfig c;
  c.file = "/etc/coap2mqtt/gateway.toml";
  c.name = "pi-gw-1";
  c.devices = {
      {"boiler", "coap://192.0.2.10", std::nullopt, std::nullopt},
      {"lamp", "coaps://192.0.2.20", PskCredentials{"gw", "/etc/lamp.key", "k1"}, std::nullopt}};
  c.coap.psk_clients = {PskClient{"node7", "/etc/node7.key", "k7", {"node7"}}};
  c.mqtt.username = "gw";
  c.mqtt.password_file = "/etc/coap2mqtt/mqtt.pass";
  c.mqtt.password = "hunter2";
  return c;
}

TEST(RestartRequired, EachSettingIsReportedByItsKey) {
  const GatewayConfig before = running();
  for (const Change& change : changes()) {
    SCOPED_TRACE(change.key);
    GatewayConfig after = before;
    change.apply(after);
    EXPECT_EQ(restartRequired(before, after), Keys{change.key});
  }
}

TEST(RestartRequired, NothingChangedNothingReported) {
  EXPECT_EQ(restartRequired(running(), running()), Keys{});
}

TEST(RestartRequired, SeveralChangesInConfigOrderEachOnce) {
  const GatewayConfig before = running();
  GatewayConfig after = before;
  for (const Change& change : changes()) change.apply(after);
  Keys want;
  for (const Change& change : changes()) {
    if (std::find(want.begin(), want.end(), change.key) == want.end())
      want.emplace_back(change.key);
  }
  // The device rows change boiler, then drop it and add garage: boiler (removed) comes
  // before garage (added), lamp is unchanged.
  EXPECT_EQ(restartRequired(before, after), want);
}

TEST(RestartRequired, ReorderedDevicesAreNoChange) {
  const GatewayConfig before = running();
  GatewayConfig after = before;
  std::swap(after.devices[0], after.devices[1]);
  EXPECT_EQ(restartRequired(before, after), Keys{});
}

TEST(RestartRequired, NeverNamesAPassword) {
  const GatewayConfig before = running();
  GatewayConfig after = before;
  after.mqtt.password = "hunter3";
  after.mqtt.password_file = "/etc/coap2mqtt/new.pass";
  const Keys keys = restartRequired(before, after);
  EXPECT_EQ(keys, Keys{"mqtt.password_file"});
  for (const auto& key : keys) {
    EXPECT_EQ(key.find("hunter"), std::string::npos);
    EXPECT_EQ(key.find("new.pass"), std::string::npos);
  }
}

// The same file loaded twice, as a reload does: rules and commands, in gateway.toml and in
// the rule files (and which rule files), are what a reload applies.
constexpr const char* kGateway = R"([gateway]
name = "gw"
state_dir = "state"
rules = [RULES]

[coap]
listen = ["127.0.0.1:5683"]

[[coap.device]]
name = "boiler"
uri = "coap://192.0.2.10"

[mqtt]
uri = "URI"
username = "gw"
password_file = "pw"
)";

std::string gatewayToml(const std::string& rules, const std::string& uri,
                        const std::string& extra = "") {
  std::string s = kGateway;
  s.replace(s.find("RULES"), 5, rules);
  s.replace(s.find("URI"), 3, uri);
  return s + extra;
}

TEST(RestartRequired, LoadedTwiceRulesOnlyChangeIsEmptyOtherChangesAreNamed) {
  TempDir dir;
  dir.write("pw", "secret\n");
  dir.write("rules.d/a.toml", "[[rule]]\nname = \"a\"\n");
  dir.write("more/b.toml", "[[rule]]\nname = \"b\"\n");
  const std::string file =
      dir.write("gateway.toml", gatewayToml("\"rules.d/*.toml\"", "mqtt://127.0.0.1:1883"));
  const GatewayConfig before = loadConfig(file);

  dir.write("gateway.toml",
            gatewayToml("\"rules.d/*.toml\", \"more/*.toml\"", "mqtt://127.0.0.1:1883",
                        "[[command]]\ntopic = \"c/{device}/{path}/set\"\n"
                        "allow = { device = \"*\", path = \"/*\" }\n"));
  dir.write("rules.d/a.toml", "[[rule]]\nname = \"a\"\nqos = 1\n");
  const GatewayConfig rules_only = loadConfig(file);
  ASSERT_EQ(rules_only.rules.rules.size(), 2u);
  ASSERT_EQ(rules_only.rules.commands.size(), 1u);
  EXPECT_EQ(restartRequired(before, rules_only), Keys{});

  dir.write("pw", "changed\n");
  dir.write("gateway.toml", gatewayToml("\"rules.d/*.toml\"", "mqtt://127.0.0.1:1884"));
  EXPECT_EQ(restartRequired(before, loadConfig(file)), (Keys{"mqtt.uri", "mqtt.password_file"}));
}

}  // namespace
}  // namespace coap2mqtt::gateway
