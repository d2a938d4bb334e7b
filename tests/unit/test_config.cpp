// gateway.toml and rule files: every default, every error class, file:line:col in messages.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>
#include <vector>

#include "bridge/config_error.h"
#include "bridge/rules.h"
#include "gateway/config.h"
#include "gateway/config_files.h"
#include "tests/unit/temp_dir.h"

namespace {

namespace fs = std::filesystem;
using coap2mqtt::bridge::ConfigError;
using coap2mqtt::bridge::ConfigErrors;
using coap2mqtt::bridge::Method;
using coap2mqtt::bridge::Mode;
using coap2mqtt::bridge::PayloadMode;
using coap2mqtt::gateway::GatewayConfig;
using coap2mqtt::gateway::loadConfig;
using coap2mqtt::unit::TempDir;
using namespace std::chrono_literals;

// Loads `toml` as <tmp>/gateway.toml; returns the errors (empty when it loaded).
std::vector<ConfigError> loadErrors(const TempDir& dir, const std::string& toml,
                                    GatewayConfig* out = nullptr) {
  const std::string file = dir.write("gateway.toml", toml);
  try {
    GatewayConfig cfg = loadConfig(file);
    if (out != nullptr) *out = std::move(cfg);
    return {};
  } catch (const ConfigErrors& e) {
    return e.errors();
  }
}

GatewayConfig loadOk(const TempDir& dir, const std::string& toml) {
  GatewayConfig cfg;
  const auto errors = loadErrors(dir, toml, &cfg);
  for (const auto& e : errors) ADD_FAILURE() << e.toString();
  return cfg;
}

std::string joined(const std::vector<ConfigError>& errors) {
  std::string s;
  for (const auto& e : errors) s += e.toString() + "\n";
  return s;
}

// ---------------------------------------------------------------------------------------
// ConfigError formatting

TEST(ConfigError, ToStringFormats) {
  EXPECT_EQ(
      (ConfigError{"a.toml", 3, 7, "rule[2].qos", "expected an integer 0..2, got 5"}).toString(),
      "a.toml:3:7: rule[2].qos: expected an integer 0..2, got 5");
  EXPECT_EQ((ConfigError{"a.toml", 0, 0, "", "rule file not found"}).toString(),
            "a.toml: rule file not found");
  EXPECT_EQ((ConfigError{"a.toml", 0, 0, "gateway.rules", "bad"}).toString(),
            "a.toml: gateway.rules: bad");
  EXPECT_EQ((ConfigError{"a.toml", 4, 0, "", "bad"}).toString(), "a.toml:4: bad");
  EXPECT_EQ((ConfigError{"a.toml", 2, 1, "", "TOML syntax error: x"}).toString(),
            "a.toml:2:1: TOML syntax error: x");
}

TEST(ConfigError, WhatJoinsAllErrors) {
  const ConfigErrors e({{"a.toml", 1, 2, "k", "one"}, {"b.toml", 3, 4, "", "two"}});
  EXPECT_STREQ(e.what(), "a.toml:1:2: k: one\nb.toml:3:4: two");
  EXPECT_EQ(e.errors().size(), 2u);
}

// ---------------------------------------------------------------------------------------
// Helpers shared with gateway.toml

TEST(ParseDuration, Table) {
  struct Case {
    const char* text;
    std::optional<std::chrono::milliseconds> want;
  };
  const Case cases[] = {
      {"500ms", 500ms},
      {"30s", 30s},
      {"5m", 5min},
      {"1h", 1h},
      {"1h30m", 90min},
      {"1m30s", 90s},
      {"30", 30s},
      {"0s", 0ms},
      {"0", 0ms},
      {"", std::nullopt},
      {"s", std::nullopt},
      {"30 s", std::nullopt},
      {"30sec", std::nullopt},
      {"-5s", std::nullopt},
      {"1.5s", std::nullopt},
      {"10d", std::nullopt},
      {"5m30", std::nullopt},
      {"99999999999999999999s", std::nullopt},
      {"9223372036854775807h", std::nullopt},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(coap2mqtt::bridge::parseDuration(c.text), c.want) << c.text;
    EXPECT_EQ(coap2mqtt::gateway::parseDuration(c.text), c.want) << c.text;
  }
}

TEST(ClosestMatch, Table) {
  const std::vector<std::string> keys{"name",    "match", "mode",   "interval", "topic",
                                      "payload", "qos",   "retain", "enabled"};
  using coap2mqtt::bridge::closestMatch;
  EXPECT_EQ(closestMatch("qso", keys), "qos");  // transposition counts once
  EXPECT_EQ(closestMatch("topik", keys), "topic");
  EXPECT_EQ(closestMatch("intervall", keys), "interval");
  EXPECT_EQ(closestMatch("Retain", keys), "retain");
  EXPECT_EQ(closestMatch("paylod", keys), "payload");
  EXPECT_EQ(closestMatch("colour", keys), "");
  EXPECT_EQ(closestMatch("x", {"rt"}), "");  // replacing everything is not a typo
}

TEST(Method, ToString) {
  EXPECT_STREQ(toString(Method::Get), "GET");
  EXPECT_STREQ(toString(Method::Put), "PUT");
  EXPECT_STREQ(toString(Method::Post), "POST");
  EXPECT_STREQ(toString(Method::Delete), "DELETE");
}

// ---------------------------------------------------------------------------------------
// Valid configurations and defaults

constexpr const char* kFullConfig = R"(# full
[gateway]
name = "pi-gw-1"
state_dir = "/var/lib/c2m"
rules = ["rules.d/*.toml"]
log_level = "debug"

[coap]
listen = ["0.0.0.0:5683", "[::]:5683", "gw.local:0"]
request_timeout = "2s"
retry_interval = 20

[[coap.device]]
name = "boiler"
uri = "coap://192.0.2.10"

[[coap.device]]
name = "lamp.1"
uri = "coap://[2001:db8::1]:5684/"

[[coap.device]]
name = "door_2"
uri = "coap://door.lan:5683"

[mqtt]
uri = "tcp://broker.example.com:1884"
client_id = "gw-one"
base_topic = "home/coap"
username = "gw"
password_file = "mqtt.pass"
keepalive = "1m"

[[rule]]
name = "temps"
match = { device = "t-*", path = "/sensors/*", rt = "temperature*" }
mode = "poll"
interval = "500ms"
topic = "home/{device}/{path}"
payload = "raw"
qos = 2
retain = true
enabled = false

[[command]]
name = "actuators"
topic = "home/{device}/{path}/set"
method = "post"
allow = { device = "lamp*", path = "/actuators/**" }
qos = 0
)";

TEST(LoadConfig, FullConfig) {
  TempDir dir;
  dir.write("mqtt.pass", "s3cret\n");
  dir.write("rules.d/10-more.toml", R"([[rule]]
name = "more"
[rule.match]
path = "/more/**"
)");
  const GatewayConfig cfg = loadOk(dir, kFullConfig);
  EXPECT_EQ(cfg.file, dir.path("gateway.toml"));
  EXPECT_EQ(cfg.name, "pi-gw-1");
  EXPECT_EQ(cfg.state_dir, "/var/lib/c2m");
  EXPECT_EQ(cfg.rule_globs, std::vector<std::string>{"rules.d/*.toml"});
  EXPECT_EQ(cfg.log_level, "debug");
  EXPECT_EQ(cfg.coap.listen, (std::vector<std::string>{"0.0.0.0:5683", "[::]:5683", "gw.local:0"}));
  EXPECT_EQ(cfg.coap.request_timeout, 2s);
  EXPECT_EQ(cfg.coap.retry_interval, 20s);
  ASSERT_EQ(cfg.devices.size(), 3u);
  EXPECT_EQ(cfg.devices[0].name, "boiler");
  EXPECT_EQ(cfg.devices[0].uri, "coap://192.0.2.10");
  EXPECT_EQ(cfg.devices[1].name, "lamp.1");
  EXPECT_EQ(cfg.devices[2].uri, "coap://door.lan:5683");
  EXPECT_EQ(cfg.mqtt.uri, "tcp://broker.example.com:1884");
  EXPECT_EQ(cfg.mqtt.client_id, "gw-one");
  EXPECT_EQ(cfg.mqtt.base_topic, "home/coap");
  EXPECT_EQ(cfg.mqtt.username, "gw");
  EXPECT_EQ(cfg.mqtt.password_file, dir.path("mqtt.pass"));
  EXPECT_EQ(cfg.mqtt.password, "s3cret");
  EXPECT_EQ(cfg.mqtt.keepalive, 60s);

  ASSERT_EQ(cfg.rules.rules.size(), 2u);  // gateway.toml's own first, then rules.d
  const auto& r = cfg.rules.rules[0];
  EXPECT_EQ(r.name, "temps");
  EXPECT_EQ(r.file, dir.path("gateway.toml"));
  EXPECT_TRUE(r.device.matches("t-1"));
  EXPECT_FALSE(r.device.matches("lamp"));
  EXPECT_TRUE(r.path.matches("/sensors/t"));
  ASSERT_TRUE(r.rt.has_value());
  EXPECT_TRUE(r.rt->matches("temperature.c"));
  EXPECT_EQ(r.mode, Mode::Poll);
  EXPECT_EQ(r.interval, 500ms);
  EXPECT_EQ(r.topic.text(), "home/{device}/{path}");
  EXPECT_EQ(r.payload, PayloadMode::Raw);
  EXPECT_EQ(r.qos, 2);
  EXPECT_TRUE(r.retain);
  EXPECT_FALSE(r.enabled);

  const auto& more = cfg.rules.rules[1];
  EXPECT_EQ(more.name, "more");
  EXPECT_EQ(more.file, dir.path("rules.d/10-more.toml"));
  EXPECT_TRUE(more.path.matches("/more/a/b"));
  EXPECT_EQ(more.topic.text(), "home/coap/{device}/{path}");  // default from base_topic

  ASSERT_EQ(cfg.rules.commands.size(), 1u);
  const auto& c = cfg.rules.commands[0];
  EXPECT_EQ(c.name, "actuators");
  EXPECT_EQ(c.method, Method::Post);  // case-insensitive
  EXPECT_EQ(c.topic.text(), "home/{device}/{path}/set");
  EXPECT_TRUE(c.allow_device.matches("lamp-2"));
  EXPECT_FALSE(c.allow_device.matches("boiler"));
  EXPECT_TRUE(c.allow_path.matches("/actuators/led/0"));
  EXPECT_EQ(c.qos, 0);
}

TEST(LoadConfig, EmptyFileHasEveryDefault) {
  TempDir dir;
  const GatewayConfig cfg = loadOk(dir, "");
  EXPECT_FALSE(cfg.name.empty());  // the host name
  EXPECT_TRUE(std::all_of(cfg.name.begin(), cfg.name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-';
  })) << cfg.name;
  EXPECT_EQ(cfg.state_dir, "/var/lib/coap2mqtt");
  EXPECT_TRUE(cfg.rule_globs.empty());
  EXPECT_EQ(cfg.log_level, "info");
  EXPECT_TRUE(cfg.coap.listen.empty());
  EXPECT_EQ(cfg.coap.request_timeout, 10s);
  EXPECT_EQ(cfg.coap.retry_interval, 15s);
  EXPECT_TRUE(cfg.devices.empty());
  EXPECT_EQ(cfg.mqtt.uri, "mqtt://127.0.0.1:1883");
  EXPECT_EQ(cfg.mqtt.client_id, "coap2mqtt-" + cfg.name);
  EXPECT_EQ(cfg.mqtt.base_topic, "coap2mqtt");
  EXPECT_TRUE(cfg.mqtt.username.empty());
  EXPECT_TRUE(cfg.mqtt.password_file.empty());
  EXPECT_TRUE(cfg.mqtt.password.empty());
  EXPECT_EQ(cfg.mqtt.keepalive, 30s);
  EXPECT_EQ(cfg.mqtt.protocol, coap2mqtt::gateway::MqttProtocol::V311);
  EXPECT_TRUE(cfg.mqtt.clean_session);
  EXPECT_FALSE(cfg.mqtt.session_expiry);
  EXPECT_EQ(cfg.mqtt.max_inflight, 100u);
  EXPECT_EQ(cfg.mqtt.reconnect_max, 30s);
  EXPECT_TRUE(cfg.mqtt.tls.ca_file.empty());
  EXPECT_TRUE(cfg.mqtt.tls.verify);
  EXPECT_EQ(cfg.mqtt.buffer.max_messages, 100000u);
  EXPECT_EQ(cfg.mqtt.buffer.max_bytes, 64u * 1024 * 1024);
  EXPECT_EQ(cfg.mqtt.buffer.qos0_messages, 1000u);
  EXPECT_TRUE(cfg.rules.rules.empty());
  EXPECT_TRUE(cfg.rules.commands.empty());
}

TEST(LoadConfig, MqttSessionExpiry) {
  TempDir dir;
  const std::string persistent5 = "[mqtt]\nprotocol = \"5\"\nclean_session = false\n";
  EXPECT_EQ(loadOk(dir, persistent5 + "session_expiry = \"never\"\n").mqtt.session_expiry,
            coap2mqtt::gateway::kSessionNeverExpires);
  EXPECT_EQ(loadOk(dir, persistent5 + "session_expiry = \"12h\"\n").mqtt.session_expiry, 12h);
  EXPECT_EQ(loadOk(dir, persistent5 + "session_expiry = 0\n").mqtt.session_expiry, 0s);
  EXPECT_FALSE(loadOk(dir, persistent5).mqtt.session_expiry);  // the link derives it
}

TEST(LoadConfig, MqttTlsProtocolAndBuffer) {
  TempDir dir;
  dir.write("pki/ca.pem", "ca");
  dir.write("pki/gw.pem", "cert");
  dir.write("pki/gw.key", "key");
  const auto cfg = loadOk(dir, R"([mqtt]
uri = "mqtts://broker.example.com:8883"
protocol = "5"
clean_session = false
max_inflight = 20
reconnect_max = "5s"
[mqtt.tls]
ca_file = "pki/ca.pem"
cert_file = "pki/gw.pem"
key_file = "pki/gw.key"
verify = false
alpn = ["mqtt"]
[mqtt.buffer]
max_messages = 500
max_bytes = 1048576
qos0_messages = 10
)");
  EXPECT_EQ(cfg.mqtt.uri, "mqtts://broker.example.com:8883");
  EXPECT_EQ(cfg.mqtt.protocol, coap2mqtt::gateway::MqttProtocol::V5);
  EXPECT_FALSE(cfg.mqtt.clean_session);
  EXPECT_EQ(cfg.mqtt.max_inflight, 20u);
  EXPECT_EQ(cfg.mqtt.reconnect_max, 5s);
  EXPECT_EQ(cfg.mqtt.tls.ca_file, dir.path("pki/ca.pem"));
  EXPECT_EQ(cfg.mqtt.tls.cert_file, dir.path("pki/gw.pem"));
  EXPECT_EQ(cfg.mqtt.tls.key_file, dir.path("pki/gw.key"));
  EXPECT_FALSE(cfg.mqtt.tls.verify);
  EXPECT_EQ(cfg.mqtt.tls.alpn, std::vector<std::string>{"mqtt"});
  EXPECT_EQ(cfg.mqtt.buffer.max_messages, 500u);
  EXPECT_EQ(cfg.mqtt.buffer.max_bytes, 1048576u);
  EXPECT_EQ(cfg.mqtt.buffer.qos0_messages, 10u);
  for (const char* uri : {"ssl://b:8883", "ws://b:8080/mqtt", "wss://b/mqtt", "tcp://[::1]:1883"}) {
    EXPECT_EQ(loadOk(dir, std::string("[mqtt]\nuri = \"") + uri + "\"\n").mqtt.uri, uri);
  }
}

TEST(LoadConfig, MqttClientCertNeedsItsKey) {
  TempDir dir;
  dir.write("gw.pem", "cert");
  const auto errors =
      loadErrors(dir, "[mqtt]\nuri = \"mqtts://b\"\n[mqtt.tls]\ncert_file = \"gw.pem\"\n");
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].key, "mqtt.tls.cert_file");
  EXPECT_EQ(errors[0].line, 4u);
  EXPECT_NE(errors[0].message.find("needs mqtt.tls.key_file"), std::string::npos);
}

TEST(LoadConfig, ClientIdDefaultsFromGatewayName) {
  TempDir dir;
  EXPECT_EQ(loadOk(dir, "[gateway]\nname = \"gw7\"\n").mqtt.client_id, "coap2mqtt-gw7");
}

TEST(LoadConfig, RelativePathsResolveAgainstTheConfigFolder) {
  TempDir dir;
  dir.write("secrets/pw", "pw\r\n\n");
  const auto cfg = loadOk(dir, R"([gateway]
state_dir = "state"
[mqtt]
username = "u"
password_file = "secrets/pw"
)");
  EXPECT_EQ(cfg.state_dir, dir.path("state"));
  EXPECT_EQ(cfg.mqtt.password, "pw");  // every trailing newline stripped
}

// Under systemd, LoadCredential=mqtt.pass:/etc/coap2mqtt/mqtt.pass puts the root-only file
// where the dynamic user can read it; the same relative password_file finds it there.
TEST(LoadConfig, RelativePasswordFileIsACredentialFirst) {
  TempDir dir;
  TempDir credentials;
  dir.write("mqtt.pass", "from-config-folder\n");
  credentials.write("mqtt.pass", "from-credentials\n");
  const std::string toml = "[mqtt]\nusername = \"u\"\npassword_file = \"mqtt.pass\"\n";
  ASSERT_EQ(setenv("CREDENTIALS_DIRECTORY", credentials.path().c_str(), 1), 0);
  const auto under_systemd = loadOk(dir, toml);
  // An absolute path is what it says, credentials or not.
  const auto absolute =
      loadOk(dir, "[mqtt]\nusername = \"u\"\npassword_file = \"" + dir.path("mqtt.pass") + "\"\n");
  // A credential of another name: the config folder's file.
  credentials.write("other", "x");
  std::filesystem::remove(credentials.path("mqtt.pass"));
  const auto not_a_credential = loadOk(dir, toml);
  unsetenv("CREDENTIALS_DIRECTORY");
  const auto by_hand = loadOk(dir, toml);
  EXPECT_EQ(under_systemd.mqtt.password, "from-credentials");
  EXPECT_EQ(under_systemd.mqtt.password_file, credentials.path("mqtt.pass"));
  EXPECT_EQ(absolute.mqtt.password, "from-config-folder");
  EXPECT_EQ(not_a_credential.mqtt.password, "from-config-folder");
  EXPECT_EQ(by_hand.mqtt.password, "from-config-folder");
  EXPECT_EQ(by_hand.mqtt.password_file, dir.path("mqtt.pass"));
}

// Issue 17, finding 5: the admin API can be turned off or cut down to some operations.
TEST(LoadConfig, AdminSection) {
  TempDir dir;
  auto cfg = loadOk(dir, "[mqtt]\nbase_topic = \"x\"\n");
  EXPECT_TRUE(cfg.admin.enabled);
  EXPECT_FALSE(cfg.admin.allow) << "every operation by default";
  cfg = loadOk(dir, "[admin]\nenabled = false\nallow = [\"health_check\", \"info\", \"info\"]\n");
  EXPECT_FALSE(cfg.admin.enabled);
  ASSERT_TRUE(cfg.admin.allow);
  EXPECT_EQ(*cfg.admin.allow, (std::vector<std::string>{"health_check", "info"}));
  cfg = loadOk(dir, "[admin]\nallow = []\n");
  ASSERT_TRUE(cfg.admin.allow);
  EXPECT_TRUE(cfg.admin.allow->empty()) << "nothing allowed";
}

// Issue 19: the Prometheus endpoint is off unless [metrics] listen says where.
TEST(LoadConfig, MetricsSection) {
  TempDir dir;
  EXPECT_EQ(loadOk(dir, "[mqtt]\nbase_topic = \"x\"\n").metrics.listen, "") << "off by default";
  EXPECT_EQ(loadOk(dir, "[metrics]\n").metrics.listen, "") << "an empty table is off too";
  EXPECT_EQ(loadOk(dir, "[metrics]\nlisten = \"127.0.0.1:9105\"\n").metrics.listen,
            "127.0.0.1:9105");
  EXPECT_EQ(loadOk(dir, "[metrics]\nlisten = \"[::1]:9105\"\n").metrics.listen, "[::1]:9105");
  EXPECT_EQ(loadOk(dir, "[metrics]\nlisten = \"localhost:9105\"\n").metrics.listen,
            "localhost:9105");
}

// Issue 17, finding 12: the README promises the first line; a second line (a comment, an
// old password) must never be sent.
TEST(LoadConfig, PasswordFileGivesItsFirstLineOnly) {
  TempDir dir;
  dir.write("pw", "s3cret\r\nold-password\n");
  const auto cfg = loadOk(dir, "[mqtt]\nusername = \"u\"\npassword_file = \"pw\"\n");
  EXPECT_EQ(cfg.mqtt.password, "s3cret");
}

TEST(LoadConfig, RuleDefaults) {
  TempDir dir;
  const auto cfg = loadOk(dir, R"([[rule]]
name = "r"

[[command]]
topic = "coap2mqtt/{device}/{path}/set"
allow = { device = "*", path = "**" }
)");
  ASSERT_EQ(cfg.rules.rules.size(), 1u);
  const auto& r = cfg.rules.rules[0];
  EXPECT_TRUE(r.device.matchesEverything() || r.device.matches("any-device"));
  EXPECT_TRUE(r.path.matches("/a/b/c"));
  EXPECT_FALSE(r.rt.has_value());
  EXPECT_EQ(r.mode, Mode::Observe);
  EXPECT_EQ(r.interval, 30s);
  EXPECT_EQ(r.topic.text(), "coap2mqtt/{device}/{path}");
  EXPECT_EQ(r.payload, PayloadMode::Json);
  EXPECT_EQ(r.qos, 0);
  EXPECT_FALSE(r.retain);
  EXPECT_TRUE(r.enabled);

  ASSERT_EQ(cfg.rules.commands.size(), 1u);
  const auto& c = cfg.rules.commands[0];
  EXPECT_EQ(c.name, "command[1]");
  EXPECT_EQ(c.method, Method::Put);
  EXPECT_EQ(c.qos, 1);
}

TEST(LoadConfig, IntervalAsIntegerSeconds) {
  TempDir dir;
  const auto cfg = loadOk(dir, "[[rule]]\nname = \"r\"\nmode = \"poll\"\ninterval = 45\n");
  ASSERT_EQ(cfg.rules.rules.size(), 1u);
  EXPECT_EQ(cfg.rules.rules[0].interval, 45s);
}

// ---------------------------------------------------------------------------------------
// Errors: one table, each case a gateway.toml with exactly one error.

struct ErrorCase {
  const char* name;
  const char* toml;
  std::size_t line;
  std::size_t column;
  const char* key;
  const char* message;  // a substring of the message
};

const ErrorCase kErrorCases[] = {
    // TOML syntax: the position toml11 points at, not the start of the line.
    {"syntax_missing_value", "[gateway]\nname = \n", 2, 8, "", "missing value"},
    {"syntax_bad_line", "[gateway]\nname = \"a\" state_dir = \"b\"\n", 2, 12, "",
     "expected newline"},
    {"syntax_duplicate_key", "[gateway]\nname = \"a\"\nname = \"b\"\n", 3, 8, "", "already exists"},
    {"syntax_unterminated_array", "[coap]\nlisten = [\"a:1\"\n", 3, 1, "", "TOML syntax error"},

    // Unknown keys, with and without a suggestion.
    {"unknown_top_level", "[gatway]\nname = \"x\"\n", 1, 1, "gatway",
     "unknown key; did you mean \"gateway\"?"},
    {"unknown_gateway_key", "[gateway]\nstatedir = \"/x\"\n", 2, 12, "gateway.statedir",
     "did you mean \"state_dir\"?"},
    {"unknown_mqtt_key", "[mqtt]\nbase_topc = \"x\"\n", 2, 13, "mqtt.base_topc",
     "did you mean \"base_topic\"?"},
    {"unknown_rule_key", "[[rule]]\nname = \"r\"\nqso = 1\n", 3, 7, "rule[1].qso",
     "did you mean \"qos\"?"},
    {"unknown_match_key", "[[rule]]\nname = \"r\"\nmatch = { devce = \"x\" }\n", 3, 19,
     "rule[1].match.devce", "did you mean \"device\"?"},
    {"unknown_key_no_suggestion", "[[rule]]\nname = \"r\"\ncolour = \"red\"\n", 3, 10,
     "rule[1].colour", "unknown key; expected one of: name, match, mode"},
    {"unknown_device_key", "[[coap.device]]\nname = \"a\"\nuri = \"coap://h\"\nport = 5683\n", 4, 8,
     "coap.device[1].port", "unknown key; expected one of: name, uri, psk"},
    {"unknown_allow_key",
     "[[command]]\ntopic = \"t/{device}/{path}\"\nallow = { device = \"*\", path = \"**\", "
     "methd = \"x\" }\n",
     3, 46, "command[1].allow.methd", "unknown key; expected one of: device, path"},

    // Wrong types.
    {"qos_string", "[[rule]]\nname = \"r\"\nqos = \"1\"\n", 3, 7, "rule[1].qos",
     "expected an integer 0..2, got a string"},
    {"qos_range", "[[rule]]\nname = \"r\"\nqos = 3\n", 3, 7, "rule[1].qos",
     "expected an integer 0..2, got 3"},
    {"qos_float",
     "[[command]]\ntopic = \"t/{device}/{path}\"\nallow = { device = \"*\", "
     "path = \"**\" }\nqos = 1.0\n",
     4, 7, "command[1].qos", "expected an integer 0..2, got a float"},
    {"retain_string", "[[rule]]\nname = \"r\"\nretain = \"yes\"\n", 3, 10, "rule[1].retain",
     "expected true or false, got a string"},
    {"name_integer", "[[rule]]\nname = 5\n", 2, 8, "rule[1].name", "got an integer"},
    {"match_string", "[[rule]]\nname = \"r\"\nmatch = \"*\"\n", 3, 9, "rule[1].match",
     "expected a table, got a string"},
    {"rules_string", "[gateway]\nrules = \"rules.d/*.toml\"\n", 2, 9, "gateway.rules",
     "expected an array of rule file paths or globs (strings), got a string"},
    {"rules_element", "[gateway]\nrules = [\"a*.toml\", 7]\n", 2, 21, "gateway.rules[2]",
     "got an integer"},
    {"gateway_not_table", "gateway = 1\n", 1, 11, "gateway", "expected a table, got an integer"},
    {"rule_not_array", "[rule]\nname = \"r\"\n", 1, 1, "rule",
     "expected an array of tables (write [[rule]] for each entry)"},

    // Enumerations.
    {"unknown_method",
     "[[command]]\ntopic = \"t/{device}/{path}\"\nmethod = \"PATCH\"\nallow = { device = \"*\", "
     "path = \"**\" }\n",
     3, 10, "command[1].method",
     "expected one of \"PUT\", \"POST\", \"GET\", \"DELETE\", got \"PATCH\""},
    {"unknown_mode", "[[rule]]\nname = \"r\"\nmode = \"watch\"\n", 3, 8, "rule[1].mode",
     "expected one of \"observe\", \"poll\", got \"watch\""},
    {"unknown_payload", "[[rule]]\nname = \"r\"\npayload = \"xml\"\n", 3, 11, "rule[1].payload",
     "expected one of \"raw\", \"json\", \"envelope\", got \"xml\""},
    {"unknown_log_level", "[gateway]\nlog_level = \"verbose\"\n", 2, 13, "gateway.log_level",
     "expected one of \"trace\", \"debug\""},

    // Globs, templates, command topics.
    {"bad_path_glob", "[[rule]]\nname = \"r\"\nmatch = { path = \"[abc\" }\n", 3, 18,
     "rule[1].match.path", "invalid glob \"[abc\": "},
    {"bad_device_glob", "[[rule]]\nname = \"r\"\n[rule.match]\ndevice = \"\"\n", 4, 10,
     "rule[1].match.device", "invalid glob \"\": "},
    {"bad_allow_glob",
     "[[command]]\ntopic = \"t/{device}/{path}\"\nallow = { device = \"[x\", path = \"**\" }\n", 3,
     20, "command[1].allow.device", "invalid glob"},
    {"bad_topic_template", "[[rule]]\nname = \"r\"\ntopic = \"a/{nope}\"\n", 3, 9, "rule[1].topic",
     "invalid topic template \"a/{nope}\": "},
    {"topic_with_wildcard", "[[rule]]\nname = \"r\"\ntopic = \"a/+/b\"\n", 3, 9, "rule[1].topic",
     "invalid topic template"},
    {"bad_command_topic",
     "[[command]]\ntopic = \"a/b/set\"\nallow = { device = \"*\", path = \"**\" }\n", 2, 9,
     "command[1].topic", "invalid command topic \"a/b/set\": "},

    // Required keys: reported at the table.
    {"missing_rule_name", "\n[[rule]]\nqos = 1\n", 2, 1, "rule[1].name",
     "required key is missing; expected a string"},
    {"missing_device_uri", "[[coap.device]]\nname = \"boiler\"\n", 1, 1, "coap.device[1].uri",
     "required key is missing; expected a URI coap://host[:port] or coaps://host[:port]"},
    {"missing_device_name", "[[coap.device]]\nuri = \"coap://h\"\n", 1, 1, "coap.device[1].name",
     "required key is missing"},
    {"missing_command_topic", "[[command]]\nallow = { device = \"*\", path = \"**\" }\n", 1, 1,
     "command[1].topic", "required key is missing"},
    {"missing_allow", "[[command]]\ntopic = \"t/{device}/{path}/set\"\n", 1, 1, "command[1].allow",
     "commands are refused unless `allow` names the devices and paths"},
    {"missing_allow_path",
     "[[command]]\ntopic = \"t/{device}/{path}/set\"\nallow = { device = \"*\" }\n", 3, 9,
     "command[1].allow.path", "commands are refused unless `allow` names the devices and paths"},

    // Names and URIs.
    {"duplicate_rule_name", "[[rule]]\nname = \"a\"\n\n[[rule]]\nname = \"a\"\n", 5, 8,
     "rule[2].name", "duplicate rule name \"a\" (already used at line 2)"},
    {"duplicate_device_name",
     "[[coap.device]]\nname = \"a\"\nuri = \"coap://h1\"\n[[coap.device]]\nname = \"a\"\nuri = "
     "\"coap://h2\"\n",
     5, 8, "coap.device[2].name", "duplicate device name \"a\" (already used at line 2)"},
    {"device_name_reserved", "[[coap.device]]\nname = \"bridge\"\nuri = \"coap://h\"\n", 2, 8,
     "coap.device[1].name", "\"bridge\" is reserved"},
    {"device_name_chars", "[[coap.device]]\nname = \"my device\"\nuri = \"coap://h\"\n", 2, 8,
     "coap.device[1].name", "expected a name of letters, digits"},
    {"gateway_name_chars", "[gateway]\nname = \"gw/1\"\n", 2, 8, "gateway.name",
     "used as an MQTT topic level"},
    {"coaps_uri_without_credentials",
     "[[coap.device]]\nname = \"a\"\nuri = \"coaps://192.0.2.1\"\n", 3, 7, "coap.device[1].uri",
     "coaps:// needs the device's credentials: psk = {"},
    {"http_uri", "[[coap.device]]\nname = \"a\"\nuri = \"http://h\"\n", 3, 7, "coap.device[1].uri",
     "expected coap://host[:port]"},
    {"bad_host", "[[coap.device]]\nname = \"a\"\nuri = \"coap://bad host\"\n", 3, 7,
     "coap.device[1].uri", "expected coap://host[:port]"},
    {"bad_ipv4", "[[coap.device]]\nname = \"a\"\nuri = \"coap://192.0.2.300\"\n", 3, 7,
     "coap.device[1].uri", "expected coap://host[:port]"},
    {"bad_port", "[[coap.device]]\nname = \"a\"\nuri = \"coap://h:70000\"\n", 3, 7,
     "coap.device[1].uri", "expected coap://host[:port]"},
    {"uri_with_path", "[[coap.device]]\nname = \"a\"\nuri = \"coap://h/x\"\n", 3, 7,
     "coap.device[1].uri", "expected coap://host[:port]"},
    {"bad_listen", "[coap]\nlisten = [\"0.0.0.0\"]\n", 2, 11, "coap.listen[1]",
     "expected \"host:port\""},
    {"bad_mqtt_uri", "[mqtt]\nuri = \"amqp://b\"\n", 2, 7, "mqtt.uri",
     "expected mqtt://, tcp://, mqtts://, ssl://, ws:// or wss://"},
    {"mqtts_uri_bad_port", "[mqtt]\nuri = \"mqtts://b:0\"\n", 2, 7, "mqtt.uri",
     "expected mqtt://, tcp://"},
    {"mqtt_protocol", "[mqtt]\nprotocol = \"5.0\"\n", 2, 12, "mqtt.protocol",
     "expected one of \"3.1.1\", \"5\", got \"5.0\""},
    {"mqtt_clean_session", "[mqtt]\nclean_session = 1\n", 2, 17, "mqtt.clean_session",
     "expected true or false, got"},
    {"mqtt_max_inflight", "[mqtt]\nmax_inflight = 0\n", 2, 16, "mqtt.max_inflight", "1"},
    {"session_expiry_with_3_1_1", "[mqtt]\nclean_session = false\nsession_expiry = \"1h\"\n", 3, 18,
     "mqtt.session_expiry", "needs protocol = \"5\": MQTT 3.1.1 has no session expiry"},
    {"session_expiry_with_clean_session", "[mqtt]\nprotocol = \"5\"\nsession_expiry = \"1h\"\n", 3,
     18, "mqtt.session_expiry", "needs clean_session = false"},
    {"session_expiry_word",
     "[mqtt]\nprotocol = \"5\"\nclean_session = false\nsession_expiry = \"forever\"\n", 4, 18,
     "mqtt.session_expiry", "expected \"never\" or a duration such as \"12h\", got \"forever\""},
    {"session_expiry_fraction",
     "[mqtt]\nprotocol = \"5\"\nclean_session = false\nsession_expiry = \"1500ms\"\n", 4, 18,
     "mqtt.session_expiry", "expected \"never\" or whole seconds"},
    {"session_expiry_boolean",
     "[mqtt]\nprotocol = \"5\"\nclean_session = false\nsession_expiry = true\n", 4, 18,
     "mqtt.session_expiry", "expected \"never\" or a duration such as \"12h\", got a boolean"},
    // Only the protocol's own error: session_expiry is not judged against a bad protocol.
    {"session_expiry_after_bad_protocol",
     "[mqtt]\nprotocol = \"5.0\"\nclean_session = false\nsession_expiry = \"1h\"\n", 2, 12,
     "mqtt.protocol", "expected one of"},
    {"session_expiry_too_long",
     "[mqtt]\nprotocol = \"5\"\nclean_session = false\nsession_expiry = 4294967295\n", 4, 18,
     "mqtt.session_expiry", "below 4294967295s"},
    {"mqtt_buffer_max_messages", "[mqtt.buffer]\nmax_messages = 0\n", 2, 16,
     "mqtt.buffer.max_messages", "1"},
    {"mqtt_buffer_unknown", "[mqtt.buffer]\nmax_mesages = 5\n", 2, 15, "mqtt.buffer.max_mesages",
     "did you mean \"max_messages\"?"},
    {"mqtt_tls_missing_ca",
     "[mqtt]\nuri = \"mqtts://b\"\n[mqtt.tls]\nca_file = \"/nonexistent/ca.pem\"\n", 4, 11,
     "mqtt.tls.ca_file", "cannot read \"/nonexistent/ca.pem\": No such file or directory"},
    {"mqtt_tls_verify_type", "[mqtt]\nuri = \"ssl://b:8883\"\n[mqtt.tls]\nverify = \"no\"\n", 4, 10,
     "mqtt.tls.verify", "expected true or false, got"},
    {"mqtt_tls_with_plain_uri", "[mqtt]\nuri = \"mqtt://b\"\n[mqtt.tls]\nverify = true\n", 3, 1,
     "mqtt.tls", "TLS settings need a TLS URI"},

    // base_topic.
    {"base_topic_plus", "[mqtt]\nbase_topic = \"a/+/b\"\n", 2, 14, "mqtt.base_topic",
     "must not contain the wildcards"},
    {"base_topic_hash", "[mqtt]\nbase_topic = \"a/#\"\n", 2, 14, "mqtt.base_topic",
     "must not contain the wildcards"},
    {"base_topic_dollar", "[mqtt]\nbase_topic = \"$SYS\"\n", 2, 14, "mqtt.base_topic",
     "must not start with '$'"},
    {"base_topic_empty_level", "[mqtt]\nbase_topic = \"a//b\"\n", 2, 14, "mqtt.base_topic",
     "empty levels"},
    {"base_topic_trailing_slash", "[mqtt]\nbase_topic = \"a/\"\n", 2, 14, "mqtt.base_topic",
     "empty levels"},
    {"base_topic_empty", "[mqtt]\nbase_topic = \"\"\n", 2, 14, "mqtt.base_topic",
     "must not be empty"},

    // Durations.
    {"interval_words", "[[rule]]\nname = \"r\"\ninterval = \"30 sec\"\n", 3, 12, "rule[1].interval",
     "expected a duration such as \"500ms\", \"30s\" or \"5m\""},
    {"interval_too_short", "[[rule]]\nname = \"r\"\ninterval = \"50ms\"\n", 3, 12,
     "rule[1].interval", "must be at least 100ms, got \"50ms\""},
    {"interval_zero", "[[rule]]\nname = \"r\"\ninterval = 0\n", 3, 12, "rule[1].interval",
     "must be at least 100ms, got 0"},
    {"interval_negative", "[[rule]]\nname = \"r\"\ninterval = -5\n", 3, 12, "rule[1].interval",
     "expected a duration"},
    {"interval_float", "[[rule]]\nname = \"r\"\ninterval = 1.5\n", 3, 12, "rule[1].interval",
     "expected a duration such as \"500ms\", \"30s\" or \"5m\" (or an integer number of seconds), "
     "got a float"},
    {"request_timeout_bad", "[coap]\nrequest_timeout = \"soon\"\n", 2, 19, "coap.request_timeout",
     "expected a duration"},
    {"retry_interval_short", "[coap]\nretry_interval = \"10ms\"\n", 2, 18, "coap.retry_interval",
     "must be at least 100ms"},
    {"keepalive_fraction", "[mqtt]\nkeepalive = \"1500ms\"\n", 2, 13, "mqtt.keepalive",
     "expected whole seconds"},

    // Files named in the config.
    {"missing_rule_file", "[gateway]\nrules = [\"nope.toml\"]\n", 2, 10, "gateway.rules[1]",
     "nope.toml\" not found"},
    {"missing_password_file", "[mqtt]\nusername = \"u\"\npassword_file = \"none.pass\"\n", 3, 17,
     "mqtt.password_file", "cannot read"},

    // [admin] (issue 17, finding 5).
    {"admin_unknown_operation", "[admin]\nallow = [\"info\", \"device/nuke\"]\n", 2, 18,
     "admin.allow[2]", "unknown admin operation \"device/nuke\"; expected one of: discover,"},
    {"admin_allow_not_a_list", "[admin]\nallow = \"info\"\n", 2, 9, "admin.allow",
     "expected an array of admin operation names"},
    {"admin_enabled_not_bool", "[admin]\nenabled = \"no\"\n", 2, 11, "admin.enabled", "expected"},

    // [metrics] (issue 19).
    {"metrics_listen_no_port", "[metrics]\nlisten = \"127.0.0.1\"\n", 2, 10, "metrics.listen",
     "expected \"host:port\" such as \"127.0.0.1:9105\" or \"[::1]:9105\""},
    {"metrics_listen_port_zero", "[metrics]\nlisten = \"127.0.0.1:0\"\n", 2, 10, "metrics.listen",
     "got \"127.0.0.1:0\""},
    {"metrics_listen_bare_ipv6", "[metrics]\nlisten = \"::1:9105\"\n", 2, 10, "metrics.listen",
     "expected \"host:port\""},
    {"metrics_listen_not_string", "[metrics]\nlisten = 9105\n", 2, 10, "metrics.listen",
     "expected"},
    {"metrics_unknown_key", "[metrics]\nport = 9105\n", 2, 8, "metrics.port", "unknown key"},
};

void PrintTo(const ErrorCase& c, std::ostream* os) {
  *os << c.name;
}

class ConfigErrorCase : public ::testing::TestWithParam<ErrorCase> {};

TEST_P(ConfigErrorCase, ReportsExactlyOneErrorAtTheValue) {
  const ErrorCase& c = GetParam();
  TempDir dir;
  const auto errors = loadErrors(dir, c.toml);
  ASSERT_EQ(errors.size(), 1u) << joined(errors);
  const ConfigError& e = errors[0];
  EXPECT_EQ(e.file, dir.path("gateway.toml"));
  EXPECT_EQ(e.line, c.line) << e.toString();
  EXPECT_EQ(e.column, c.column) << e.toString();
  EXPECT_EQ(e.key, c.key) << e.toString();
  EXPECT_NE(e.message.find(c.message), std::string::npos) << e.toString();
  // The printed form leads with file:line:col.
  const std::string where = dir.path("gateway.toml") + ":" + std::to_string(c.line) + ":" +
                            std::to_string(c.column) + ":";
  EXPECT_EQ(e.toString().rfind(where, 0), 0u) << e.toString();
}

INSTANTIATE_TEST_SUITE_P(Table, ConfigErrorCase, ::testing::ValuesIn(kErrorCases),
                         [](const ::testing::TestParamInfo<ErrorCase>& info) {
                           return std::string(info.param.name);
                         });

TEST(LoadConfig, SyntaxErrorMessageHasFileLineCol) {
  TempDir dir;
  const std::string file = dir.write("gateway.toml", "[gateway]\nname = \"x\"\n\n  log_level = \n");
  try {
    loadConfig(file);
    FAIL() << "expected ConfigErrors";
  } catch (const ConfigErrors& e) {
    ASSERT_EQ(e.errors().size(), 1u) << e.what();
    EXPECT_NE(std::string(e.what()).find(file + ":4:15: TOML syntax error: "), std::string::npos)
        << e.what();
  }
}

TEST(LoadConfig, PasswordFileNeedsUsername) {
  TempDir dir;
  dir.write("pw", "x\n");
  const auto errors = loadErrors(dir, "[mqtt]\npassword_file = \"pw\"\n");
  ASSERT_EQ(errors.size(), 1u) << joined(errors);
  EXPECT_EQ(errors[0].key, "mqtt.password_file");
  EXPECT_NE(errors[0].message.find("needs mqtt.username"), std::string::npos);
}

TEST(LoadConfig, MissingConfigFile) {
  TempDir dir;
  try {
    loadConfig(dir.path("absent.toml"));
    FAIL() << "expected ConfigErrors";
  } catch (const ConfigErrors& e) {
    ASSERT_EQ(e.errors().size(), 1u);
    EXPECT_EQ(e.errors()[0].file, dir.path("absent.toml"));
    EXPECT_EQ(e.errors()[0].line, 0u);
    EXPECT_NE(e.errors()[0].message.find("cannot read config file"), std::string::npos);
  }
}

TEST(LoadConfig, ReportsEveryErrorInOrder) {
  TempDir dir;
  const auto errors = loadErrors(dir, R"([gateway]
name = "bad name"
log_level = 3

[mqtt]
base_topic = "a/#"
kepalive = "30s"

[[coap.device]]
name = "x"

[[rule]]
name = "r"
qos = 9
mode = "never"

[[rule]]
name = "r"

[[command]]
topic = "t/{device}/{path}"
)");
  std::vector<std::pair<std::size_t, std::string>> got;
  got.reserve(errors.size());
  for (const auto& e : errors) got.emplace_back(e.line, e.key);
  const std::vector<std::pair<std::size_t, std::string>> want{
      {2, "gateway.name"},  {3, "gateway.log_level"},  {6, "mqtt.base_topic"},
      {7, "mqtt.kepalive"}, {9, "coap.device[1].uri"}, {14, "rule[1].qos"},
      {15, "rule[1].mode"}, {18, "rule[2].name"},      {20, "command[1].allow"},
  };
  EXPECT_EQ(got, want) << joined(errors);
}

TEST(LoadConfig, InvalidBaseTopicIsReportedOnceNotPerRule) {
  TempDir dir;
  const auto errors = loadErrors(dir, R"([mqtt]
base_topic = "+"
[[rule]]
name = "a"
[[rule]]
name = "b"
)");
  ASSERT_EQ(errors.size(), 1u) << joined(errors);
  EXPECT_EQ(errors[0].key, "mqtt.base_topic");
}

TEST(LoadConfig, RuleWithErrorsIsNotHalfLoaded) {
  TempDir dir;
  const std::string file = dir.write("r.toml", R"([[rule]]
name = "good"
[[rule]]
name = "bad"
qos = 7
)");
  coap2mqtt::bridge::RuleSet set;
  std::vector<ConfigError> errors;
  coap2mqtt::gateway::loadRuleFiles({file}, "", "coap2mqtt", set, errors);
  ASSERT_EQ(errors.size(), 1u);
  ASSERT_EQ(set.rules.size(), 1u);
  EXPECT_EQ(set.rules[0].name, "good");
}

// ---------------------------------------------------------------------------------------
// Rule files

TEST(RuleFiles, GlobsLoadInSortedOrder) {
  TempDir dir;
  dir.write("rules.d/b.toml", "[[rule]]\nname = \"from-b\"\n");
  dir.write("rules.d/a.toml", "[[rule]]\nname = \"from-a\"\n[[rule]]\nname = \"from-a2\"\n");
  dir.write("rules.d/c.txt", "this is not toml");
  dir.write("extra.toml",
            "[[command]]\ntopic = \"x/{device}/{path}\"\n"
            "allow = { device = \"d\", path = \"/p\" }\n");
  const auto cfg = loadOk(dir,
                          "[gateway]\nrules = [\"rules.d/*.toml\", \"extra.toml\", "
                          "\"empty.d/*.toml\", \"rules.d/a.toml\"]\n");
  std::vector<std::string> names;
  for (const auto& r : cfg.rules.rules) names.push_back(r.name);
  EXPECT_EQ(names, (std::vector<std::string>{"from-a", "from-a2", "from-b"}));  // a.toml once
  ASSERT_EQ(cfg.rules.commands.size(), 1u);
  EXPECT_EQ(cfg.rules.commands[0].file, dir.path("extra.toml"));
}

TEST(RuleFiles, ErrorsNameTheRuleFile) {
  TempDir dir;
  dir.write("rules.d/a.toml", "[[rule]]\nname = \"x\"\n\n[[rule]]\nname = \"y\"\nmode = 1\n");
  dir.write("rules.d/b.toml", "[[rule]]\nname = \"x\"\n");
  dir.write("rules.d/c.toml", "[[rule]\nname = \"z\"\n");
  dir.write("rules.d/d.toml", "[gateway]\nname = \"no\"\n[[rules]]\nname = \"q\"\n");
  const auto errors = loadErrors(dir,
                                 "# gw\n[gateway]\nrules = [\"rules.d/*.toml\"]\n"
                                 "[mqtt]\nbase_topc = \"x\"\n");
  ASSERT_EQ(errors.size(), 6u) << joined(errors);
  EXPECT_EQ(errors[0].file, dir.path("gateway.toml"));  // the config first
  EXPECT_EQ(errors[0].key, "mqtt.base_topc");
  EXPECT_EQ(errors[1].toString(),
            dir.path("rules.d/a.toml") +
                ":6:8: rule[2].mode: expected one of \"observe\", \"poll\", got an integer");
  EXPECT_EQ(errors[2].file, dir.path("rules.d/b.toml"));
  EXPECT_EQ(errors[2].key, "rule[1].name");
  EXPECT_NE(errors[2].message.find("already used in " + dir.path("rules.d/a.toml")),
            std::string::npos)
      << errors[2].toString();
  EXPECT_EQ(errors[3].file, dir.path("rules.d/c.toml"));
  EXPECT_EQ(errors[3].line, 1u);
  EXPECT_NE(errors[3].message.find("TOML syntax error"), std::string::npos);
  // A rule file holds only [[rule]], [[command]] and [[inbound]].
  EXPECT_EQ(errors[4].toString(), dir.path("rules.d/d.toml") +
                                      ":1:1: gateway: unknown key; expected one of: rule, "
                                      "command, inbound");
  EXPECT_EQ(errors[5].toString(),
            dir.path("rules.d/d.toml") + ":3:1: rules: unknown key; did you mean \"rule\"?");
}

TEST(RuleFiles, WildcardMatchingNothingIsFine) {
  TempDir dir;
  const auto cfg = loadOk(dir, "[gateway]\nrules = [\"rules.d/*.toml\", \"/nonexistent-c2m/*\"]\n");
  EXPECT_TRUE(cfg.rules.rules.empty());
}

TEST(RuleFiles, MissingExplicitFileIsAnError) {
  TempDir dir;
  coap2mqtt::bridge::RuleSet set;
  std::vector<ConfigError> errors;
  coap2mqtt::gateway::loadRuleFiles({"absent.toml"}, dir.path(), "coap2mqtt", set, errors);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].toString(), dir.path("absent.toml") + ": rule file not found");
}

TEST(RuleFiles, DirectoriesWhereFilesBelongSaySo) {
  TempDir dir;
  dir.write("rules.d/a.toml", "[[rule]]\nname = \"a\"\n");
  dir.write("certs/x", "");
  const auto errors = loadErrors(dir, "[gateway]\nrules = [\"rules.d\"]\n");
  ASSERT_EQ(errors.size(), 1u) << joined(errors);
  EXPECT_EQ(errors[0].toString(),
            dir.path("rules.d") +
                ": is a directory, not a rule file (use a pattern such as \"rules.d/*.toml\")");
  const auto tls =
      loadErrors(dir, "[mqtt]\nuri = \"mqtts://h\"\n[mqtt.tls]\nca_file = \"certs\"\n");
  ASSERT_EQ(tls.size(), 1u) << joined(tls);
  EXPECT_EQ(tls[0].toString(), dir.path("gateway.toml") +
                                   ":4:11: mqtt.tls.ca_file: cannot read \"" + dir.path("certs") +
                                   "\": is a directory");
  try {
    loadConfig(dir.path("certs"));
    FAIL() << "expected ConfigErrors";
  } catch (const ConfigErrors& e) {
    ASSERT_EQ(e.errors().size(), 1u);
    EXPECT_EQ(e.errors()[0].toString(), dir.path("certs") + ": is a directory, not a config file");
  }
}

TEST(RuleFiles, ParseRulesAloneRejectsOtherTables) {
  coap2mqtt::bridge::RuleSet set;
  std::vector<ConfigError> errors;
  coap2mqtt::bridge::parseRules("mem.toml", "[mqtt]\nuri = \"x\"\n[[rule]]\nname = \"r\"\n", "base",
                                false, set, errors);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].toString(),
            "mem.toml:1:1: mqtt: unknown key; expected one of: rule, command, inbound");
  ASSERT_EQ(set.rules.size(), 1u);
  EXPECT_EQ(set.rules[0].topic.text(), "base/{device}/{path}");

  errors.clear();
  set = {};
  coap2mqtt::bridge::parseRules("mem.toml", "[mqtt]\nuri = \"x\"\n", "base", true, set, errors);
  EXPECT_TRUE(errors.empty());
}

// ---------------------------------------------------------------------------------------
// Every configuration shipped in configs/ loads without errors.

bool isGatewayConfig(const fs::path& p) {
  const std::string name = p.filename().string();
  return name == "gateway.toml" ||
         (name.size() > 13 && name.compare(name.size() - 13, 13, ".gateway.toml") == 0);
}

TEST(ShippedConfigs, AllLoad) {
  const fs::path root = fs::path(C2M_SOURCE_DIR) / "configs";
  if (!fs::exists(root)) GTEST_SKIP() << "no configs/ yet";
  std::vector<fs::path> files;
  for (const auto& entry : fs::recursive_directory_iterator(root)) {
    if (entry.is_regular_file() && entry.path().extension() == ".toml") {
      files.push_back(entry.path());
    }
  }
  std::sort(files.begin(), files.end());
  for (const fs::path& p : files) {
    SCOPED_TRACE(p.string());
    if (isGatewayConfig(p)) {
      try {
        loadConfig(p.string());
      } catch (const ConfigErrors& e) {
        ADD_FAILURE() << e.what();
      }
    } else {
      std::ifstream in(p, std::ios::binary);
      const std::string content{std::istreambuf_iterator<char>(in),
                                std::istreambuf_iterator<char>()};
      coap2mqtt::bridge::RuleSet set;
      std::vector<ConfigError> errors;
      coap2mqtt::bridge::parseRules(p.string(), content, "coap2mqtt", false, set, errors);
      EXPECT_TRUE(errors.empty()) << joined(errors);
    }
  }
}

}  // namespace

namespace {

TEST(LoadConfig, DiscoveryAndTransmissionSettings) {
  TempDir dir;
  GatewayConfig cfg = loadOk(dir, R"(
[coap]
listen = ["127.0.0.1:5683"]
offline_after = "90s"
resource_directory = false
ack_timeout = "3s"
ack_random_factor = 2
max_retransmit = 6
[coap.discovery]
multicast = ["224.0.1.187", "ff02::fd"]
interfaces = ["eth0"]
port = 5684
interval = "10m"
window = "7s"
query = "rt=temperature*"
)");
  EXPECT_EQ(cfg.coap.offline_after, std::chrono::seconds(90));
  EXPECT_FALSE(cfg.coap.resource_directory);
  EXPECT_EQ(cfg.coap.ack_timeout, std::chrono::seconds(3));
  EXPECT_DOUBLE_EQ(cfg.coap.ack_random_factor, 2.0);
  EXPECT_EQ(cfg.coap.max_retransmit, 6u);
  const auto& d = cfg.coap.discovery;
  EXPECT_EQ(d.multicast, (std::vector<std::string>{"224.0.1.187", "ff02::fd"}));
  EXPECT_EQ(d.interfaces, (std::vector<std::string>{"eth0"}));
  EXPECT_EQ(d.port, 5684);
  EXPECT_EQ(d.interval, std::chrono::minutes(10));
  EXPECT_EQ(d.window, std::chrono::seconds(7));
  EXPECT_EQ(d.query, "rt=temperature*");

  GatewayConfig defaults = loadOk(dir, "");
  EXPECT_TRUE(defaults.coap.discovery.multicast.empty()) << "multicast is off unless asked for";
  EXPECT_EQ(defaults.coap.ack_timeout, std::chrono::seconds(2));
  EXPECT_DOUBLE_EQ(defaults.coap.ack_random_factor, 1.5);
  EXPECT_EQ(defaults.coap.max_retransmit, 4u);
  EXPECT_EQ(defaults.coap.discovery.window, std::chrono::seconds(6));
}

TEST(LoadConfig, DiscoveryAndTransmissionErrors) {
  TempDir dir;
  const struct {
    const char* toml;
    const char* key;
  } cases[] = {
      {"[coap.discovery]\nmulticast = [\"10.0.0.1\"]\n", "coap.discovery.multicast[1]"},
      {"[coap.discovery]\nmulticast = [\"fe80::1\"]\n", "coap.discovery.multicast[1]"},
      {"[coap.discovery]\nport = 0\n", "coap.discovery.port"},
      {"[coap.discovery]\nwindow = \"fast\"\n", "coap.discovery.window"},
      {"[coap.discovery]\nmulticats = []\n", "coap.discovery.multicats"},
      {"[coap]\nack_random_factor = 0.5\n", "coap.ack_random_factor"},
      {"[coap]\nmax_retransmit = 99\n", "coap.max_retransmit"},
      {"[coap]\nack_timeout = \"5m\"\n", "coap.ack_timeout"},
      {"[coap]\nresource_directory = \"yes\"\n", "coap.resource_directory"},
  };
  for (const auto& c : cases) {
    auto errors = loadErrors(dir, c.toml);
    ASSERT_EQ(errors.size(), 1u) << c.toml;
    EXPECT_EQ(errors[0].key, c.key) << c.toml << errors[0].toString();
    EXPECT_EQ(errors[0].line, 2u) << errors[0].toString();
  }
}

// Issue 17: [coap.limits], its defaults and its errors (file:line:col).
TEST(LoadConfig, CoapLimits) {
  TempDir dir;
  GatewayConfig cfg = loadOk(dir, R"([coap.limits]
max_devices = 50
max_devices_per_host = 4
max_answers_per_round = 100
max_sessions = 64
)");
  EXPECT_EQ(cfg.coap.limits.max_devices, 50u);
  EXPECT_EQ(cfg.coap.limits.max_devices_per_host, 4u);
  EXPECT_EQ(cfg.coap.limits.max_answers_per_round, 100u);
  EXPECT_EQ(cfg.coap.limits.max_sessions, 64u);
  GatewayConfig defaults = loadOk(dir, "");
  EXPECT_EQ(defaults.coap.limits.max_devices, 1000u);
  EXPECT_EQ(defaults.coap.limits.max_devices_per_host, 16u);
  EXPECT_EQ(defaults.coap.limits.max_answers_per_round, 2000u);
  EXPECT_EQ(defaults.coap.limits.max_sessions, 1000u);

  const struct {
    const char* toml;
    const char* key;
  } cases[] = {
      {"[coap.limits]\nmax_devices = 0\n", "coap.limits.max_devices"},
      {"[coap.limits]\nmax_devices_per_host = \"16\"\n", "coap.limits.max_devices_per_host"},
      {"[coap.limits]\nmax_answers_per_round = -1\n", "coap.limits.max_answers_per_round"},
      {"[coap.limits]\nmax_device = 5\n", "coap.limits.max_device"},
  };
  for (const auto& c : cases) {
    auto errors = loadErrors(dir, c.toml);
    ASSERT_EQ(errors.size(), 1u) << c.toml;
    EXPECT_EQ(errors[0].key, c.key) << c.toml << errors[0].toString();
    EXPECT_EQ(errors[0].line, 2u) << errors[0].toString();
  }
}

}  // namespace
