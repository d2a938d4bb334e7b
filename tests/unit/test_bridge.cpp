// The bridge as a whole: rule files parsed into RuleSets (every new key and every rejection,
// with the exact file:line:col text), plan() matching, route() with every payload mode and
// template variable, SenML resolution with RFC 8428's own examples, min_interval /
// only_changes sequences, Home Assistant discovery payloads and the command path.
#include "bridge/bridge.h"

#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace coap2mqtt::bridge {
namespace {

using nlohmann::json;
using namespace std::string_literals;
namespace ct = content_format;

// ---- helpers --------------------------------------------------------------------------

std::vector<std::string> errorsOf(std::string_view toml) {
  RuleSet set;
  std::vector<ConfigError> errors;
  parseRules("r.toml", toml, "c2m", false, set, errors);
  std::vector<std::string> out;
  for (const auto& e : errors) out.push_back(e.toString());
  return out;
}

RuleSet load(std::string_view toml) {
  RuleSet set;
  std::vector<ConfigError> errors;
  parseRules("r.toml", toml, "c2m", false, set, errors);
  for (const auto& e : errors) ADD_FAILURE() << e.toString();
  return set;
}

std::string bytes(std::initializer_list<int> values) {
  std::string out;
  for (int v : values) out.push_back(static_cast<char>(v));
  return out;
}

std::string fromHex(std::string_view hex) {
  std::string out;
  int nibble = -1;
  for (char c : hex) {
    int v = -1;
    if (c >= '0' && c <= '9') v = c - '0';
    if (c >= 'a' && c <= 'f') v = c - 'a' + 10;
    if (v < 0) continue;
    if (nibble < 0) {
      nibble = v;
    } else {
      out.push_back(static_cast<char>(nibble * 16 + v));
      nibble = -1;
    }
  }
  return out;
}

std::string toHex(std::string_view data) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (char c : data) {
    out.push_back(kHex[(static_cast<unsigned char>(c) >> 4) & 0xF]);
    out.push_back(kHex[static_cast<unsigned char>(c) & 0xF]);
  }
  return out;
}

registry::Resource resource(std::string path, std::vector<std::string> rt = {},
                            std::vector<std::string> ifs = {}, std::vector<unsigned> cts = {},
                            bool obs = true) {
  registry::Resource r;
  r.path = std::move(path);
  r.rt = std::move(rt);
  r.ifs = std::move(ifs);
  r.ct = std::move(cts);
  r.obs = obs;
  return r;
}

constexpr std::int64_t kNow = 1'700'000'000'123;  // epoch ms

struct Routed {
  std::vector<Publish> out;
  RouteStats stats;
};

Routed routeAll(const RuleSet& set, std::optional<unsigned> format, std::string_view payload,
                std::string_view path = "/sensors/temp", std::string_view rt = "temperature",
                RouteState* state = nullptr, std::int64_t now = kNow) {
  Routed r;
  std::vector<std::size_t> all;
  for (std::size_t i = 0; i < set.rules.size(); ++i) all.push_back(i);
  Notification n{"dev1", path, format, payload, rt, now};
  route(set, "gw", all, n, r.out, r.stats, state);
  return r;
}

// ---- matching and plan -----------------------------------------------------------------

TEST(Match, RtIfCtAndEnabledDecideWhichRulesWatchAResource) {
  const RuleSet set = load(R"(
[[rule]]
name = "by-rt"
match = { rt = "temperature*" }
[[rule]]
name = "by-if"
match = { if = "core.s" }
[[rule]]
name = "by-ct-number"
match = { ct = 50 }
[[rule]]
name = "by-ct-name"
match = { ct = "application/senml+json" }
[[rule]]
name = "by-ct-list"
match = { ct = [60, "application/senml+cbor"] }
[[rule]]
name = "all"
match = { path = "/sensors/**" }
[[rule]]
name = "off"
match = { path = "/sensors/**" }
enabled = false
[[rule]]
name = "everything-combined"
match = { device = "dev*", path = "/sensors/*", rt = "temperature", if = "core.s", ct = 50 }
)");
  ASSERT_EQ(set.rules.size(), 8u);
  struct Case {
    const char* name;
    registry::Resource res;
    std::vector<std::size_t> rules;
  };
  const Case cases[] = {
      {"rt matches", resource("/sensors/a", {"temperature-c"}), {0, 5}},
      {"second rt value matches", resource("/sensors/a", {"x", "temperature"}), {0, 5}},
      {"if matches", resource("/sensors/a", {}, {"core.a", "core.s"}), {1, 5}},
      {"ct number", resource("/sensors/a", {}, {}, {50}), {2, 5}},
      {"ct name", resource("/sensors/a", {}, {}, {110}), {3, 5}},
      {"ct list", resource("/sensors/a", {}, {}, {0, 112}), {4, 5}},
      {"no ct advertised: no ct rule", resource("/sensors/a"), {5}},
      {"all at once (fan-out)",
       resource("/sensors/a", {"temperature"}, {"core.s"}, {50}),
       {0, 1, 2, 5, 7}},
      {"elsewhere", resource("/other", {"temperature"}, {"core.s"}, {50}), {0, 1, 2}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    registry::Device device;
    device.name = "dev1";
    device.resources = {c.res};
    const auto watches = plan(set, device);
    if (c.rules.empty()) {
      EXPECT_TRUE(watches.empty());
      continue;
    }
    ASSERT_EQ(watches.size(), 1u);
    EXPECT_EQ(watches[0].rules, c.rules);
  }
}

TEST(Match, FanOutPublishesOncePerMatchingRule) {
  const RuleSet set = load(R"(
[[rule]]
name = "a"
topic = "one/{device}/{path}"
[[rule]]
name = "b"
topic = "two/{device}/{path}"
payload = "raw"
[[rule]]
name = "c"
topic = "three/{device}"
enabled = false
)");
  registry::Device device;
  device.name = "dev1";
  device.resources = {resource("/sensors/temp")};
  const auto watches = plan(set, device);
  ASSERT_EQ(watches.size(), 1u);
  ASSERT_EQ(watches[0].rules, (std::vector<std::size_t>{0, 1}));
  std::vector<Publish> out;
  RouteStats stats;
  route(set, "gw", watches[0].rules, {"dev1", "/sensors/temp", ct::kTextPlain, "21.5", "", kNow},
        out, stats);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].topic, "one/dev1/sensors/temp");
  EXPECT_EQ(out[1].topic, "two/dev1/sensors/temp");
  EXPECT_EQ(stats.published, 2u);
}

// ---- rule file: new keys and their rejections -----------------------------------------

TEST(RuleFile, NewRuleKeysAreParsed) {
  const RuleSet set = load(R"(
[[rule]]
name = "r"
match = { if = "sensor", ct = ["text/plain; charset=utf-8", 50, "application/cbor"] }
payload = "envelope"
value = "/temp/0"
senml = "records"
topic = "c2m/{device}/{name}"
min_interval = "2s"
only_changes = true
homeassistant = { component = "sensor", unit = "°C", device_class = "temperature", state_class = "measurement", name = "Temp", value_template = "{{ value_json.value }}", icon = "mdi:thermometer" }
)");
  ASSERT_EQ(set.rules.size(), 1u);
  const Rule& r = set.rules[0];
  ASSERT_TRUE(r.ifs.has_value());
  EXPECT_TRUE(r.ifs->matches("sensor"));
  EXPECT_EQ(r.ct, (std::vector<unsigned>{0, 50, 60}));
  EXPECT_EQ(r.payload, PayloadMode::Envelope);
  EXPECT_EQ(r.value, "/temp/0");
  EXPECT_TRUE(r.senml_records);
  EXPECT_EQ(r.min_interval, std::chrono::seconds(2));
  EXPECT_TRUE(r.only_changes);
  ASSERT_TRUE(r.homeassistant.has_value());
  EXPECT_EQ(r.homeassistant->component, "sensor");
  EXPECT_EQ(r.homeassistant->unit, "°C");
  EXPECT_EQ(r.homeassistant->device_class, "temperature");
  EXPECT_EQ(r.homeassistant->state_class, "measurement");
  EXPECT_EQ(r.homeassistant->name, "Temp");
  EXPECT_EQ(r.homeassistant->value_template, "{{ value_json.value }}");
  EXPECT_EQ(r.homeassistant->icon, "mdi:thermometer");
}

TEST(RuleFile, Defaults) {
  const RuleSet set = load("[[rule]]\nname = \"r\"\n");
  ASSERT_EQ(set.rules.size(), 1u);
  const Rule& r = set.rules[0];
  EXPECT_FALSE(r.ifs.has_value());
  EXPECT_TRUE(r.ct.empty());
  EXPECT_EQ(r.payload, PayloadMode::Json);
  EXPECT_EQ(r.value, "");
  EXPECT_FALSE(r.senml_records);
  EXPECT_EQ(r.min_interval.count(), 0);
  EXPECT_FALSE(r.only_changes);
  EXPECT_FALSE(r.homeassistant.has_value());
  EXPECT_TRUE(r.enabled);
}

struct RejectCase {
  const char* name;
  std::string toml;
  std::vector<std::string> errors;  // exact ConfigError::toString() texts
};

void expectRejected(const std::vector<RejectCase>& cases) {
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    EXPECT_EQ(errorsOf(c.toml), c.errors);
    // A rule or command with an error is not half-loaded.
    RuleSet set;
    std::vector<ConfigError> errors;
    parseRules("r.toml", c.toml, "c2m", false, set, errors);
    EXPECT_TRUE(set.rules.empty());
    EXPECT_TRUE(set.commands.empty());
  }
}

TEST(RuleFile, RejectsBadTopicTemplatesAtTheirPosition) {
  expectRejected({
      {"plus",
       "[[rule]]\nname = \"r\"\ntopic = \"a/+/b\"\n",
       {"r.toml:3:9: rule[1].topic: invalid topic template \"a/+/b\": '+' at offset 2: "
        "wildcards are not allowed in a publish topic"}},
      {"hash",
       "[[rule]]\nname = \"r\"\ntopic = \"a/{device}/#\"\n",
       {"r.toml:3:9: rule[1].topic: invalid topic template \"a/{device}/#\": '#' at offset 11: "
        "wildcards are not allowed in a publish topic"}},
      {"plus inside a level",
       "[[rule]]\nname = \"r\"\ntopic = \"a/{device}+\"\n",
       {"r.toml:3:9: rule[1].topic: invalid topic template \"a/{device}+\": '+' at offset 10: "
        "wildcards are not allowed in a publish topic"}},
      {"empty level",
       "[[rule]]\nname = \"r\"\ntopic = \"a//{device}\"\n",
       {"r.toml:3:9: rule[1].topic: invalid topic template \"a//{device}\": empty topic level "
        "at offset 2: no leading, trailing or doubled '/' in a topic"}},
      {"leading slash",
       "[[rule]]\nname = \"r\"\n  topic = \"/{device}\"\n",
       {"r.toml:3:11: rule[1].topic: invalid topic template \"/{device}\": empty topic level "
        "at offset 0: no leading, trailing or doubled '/' in a topic"}},
      {"trailing slash",
       "[[rule]]\nname = \"r\"\ntopic = \"{device}/\"\n",
       {"r.toml:3:9: rule[1].topic: invalid topic template \"{device}/\": empty topic level "
        "at offset 8: no leading, trailing or doubled '/' in a topic"}},
      {"unknown variable",
       "[[rule]]\nname = \"r\"\ntopic = \"a/{nam}\"\n",
       {"r.toml:3:9: rule[1].topic: invalid topic template \"a/{nam}\": unknown variable {nam} "
        "at offset 2: expected {gateway}, {device}, {path}, {path[N]}, {rt} or {name}"}},
      {"name without senml records",
       "[[rule]]\nname = \"r\"\ntopic = \"a/{name}\"\n",
       {"r.toml:3:9: rule[1].topic: {name} is the SenML record name: it needs senml = "
        "\"records\" in this rule"}},
      {"name with senml pack",
       "[[rule]]\nname = \"r\"\ntopic = \"a/{name}\"\nsenml = \"pack\"\n",
       {"r.toml:3:9: rule[1].topic: {name} is the SenML record name: it needs senml = "
        "\"records\" in this rule"}},
      {"broker topic",
       "[[rule]]\nname = \"r\"\ntopic = \"$SYS/x\"\n",
       {"r.toml:3:9: rule[1].topic: invalid topic template \"$SYS/x\": topic template starts "
        "with '$': such topics are reserved for the broker (e.g. $SYS)"}},
  });
}

TEST(RuleFile, RejectsBadMatchPayloadAndRateKeys) {
  expectRejected({
      {"unknown ct name",
       "[[rule]]\nname = \"r\"\nmatch = { ct = \"application/jsn\" }\n",
       {"r.toml:3:16: rule[1].match.ct: unknown Content-Format \"application/jsn\"; did you mean "
        "\"application/json\"?"}},
      {"unknown ct name, nothing close",
       "[[rule]]\nname = \"r\"\nmatch = { ct = \"image/png\" }\n",
       {"r.toml:3:16: rule[1].match.ct: unknown Content-Format \"image/png\"; expected a "
        "Content-Format number (0..65535) or name such as \"application/json\""}},
      {"ct out of range",
       "[[rule]]\nname = \"r\"\nmatch = { ct = 70000 }\n",
       {"r.toml:3:16: rule[1].match.ct: expected a Content-Format number (0..65535) or name "
        "such as \"application/json\", got 70000"}},
      {"ct negative in a list",
       "[[rule]]\nname = \"r\"\nmatch = { ct = [50, -1] }\n",
       {"r.toml:3:21: rule[1].match.ct[2]: expected a Content-Format number (0..65535) or name "
        "such as \"application/json\", got -1"}},
      {"ct wrong type",
       "[[rule]]\nname = \"r\"\nmatch = { ct = true }\n",
       {"r.toml:3:16: rule[1].match.ct: expected a Content-Format number (0..65535) or name "
        "such as \"application/json\", got a boolean"}},
      {"ct empty list",
       "[[rule]]\nname = \"r\"\nmatch = { ct = [] }\n",
       {"r.toml:3:16: rule[1].match.ct: expected at least one a Content-Format number "
        "(0..65535) or name such as \"application/json\""}},
      {"if bad glob",
       "[[rule]]\nname = \"r\"\nmatch = { if = \"[x\" }\n",
       {"r.toml:3:16: rule[1].match.if: invalid glob \"[x\": unclosed '[' at offset 0: expected "
        "']'"}},
      {"unknown match key",
       "[[rule]]\nname = \"r\"\nmatch = { ctt = 50 }\n",
       {"r.toml:3:17: rule[1].match.ctt: unknown key; did you mean \"ct\"?"}},
      {"malformed pointer",
       "[[rule]]\nname = \"r\"\nvalue = \"temp\"\n",
       {"r.toml:3:9: rule[1].value: invalid JSON Pointer \"temp\": parse error at byte 1: JSON "
        "pointer must be empty "
        "or begin with '/' - was: 'temp'"}},
      {"malformed pointer escape",
       "[[rule]]\nname = \"r\"\nvalue = \"/a~2\"\n",
       {"r.toml:3:9: rule[1].value: invalid JSON Pointer \"/a~2\": parse error: escape character "
        "'~' must "
        "be followed with '0' or '1'"}},
      {"empty pointer",
       "[[rule]]\nname = \"r\"\nvalue = \"\"\n",
       {"r.toml:3:9: rule[1].value: an empty JSON Pointer selects the whole value; leave "
        "`value` out instead"}},
      {"pointer with raw",
       "[[rule]]\nname = \"r\"\npayload = \"raw\"\nvalue = \"/a\"\n",
       {"r.toml:4:9: rule[1].value: `value` needs payload = \"json\" or \"envelope\" (raw "
        "passes the bytes unchanged)"}},
      {"records with raw",
       "[[rule]]\nname = \"r\"\npayload = \"raw\"\nsenml = \"records\"\n",
       {"r.toml:4:9: rule[1].senml: senml = \"records\" needs payload = \"json\" or "
        "\"envelope\""}},
      {"unknown senml",
       "[[rule]]\nname = \"r\"\nsenml = \"split\"\n",
       {"r.toml:3:9: rule[1].senml: expected one of \"pack\", \"records\", got \"split\""}},
      {"unknown payload",
       "[[rule]]\nname = \"r\"\npayload = \"envelop\"\n",
       {"r.toml:3:11: rule[1].payload: expected one of \"raw\", \"json\", \"envelope\", got "
        "\"envelop\""}},
      {"min_interval words",
       "[[rule]]\nname = \"r\"\nmin_interval = \"2 sec\"\n",
       {"r.toml:3:16: rule[1].min_interval: expected a duration such as \"500ms\", \"30s\" or "
        "\"5m\" (or an integer number of seconds), got \"2 sec\""}},
      {"min_interval negative",
       "[[rule]]\nname = \"r\"\nmin_interval = -1\n",
       {"r.toml:3:16: rule[1].min_interval: expected a duration such as \"500ms\", \"30s\" or "
        "\"5m\" (or an integer number of seconds), got -1"}},
      {"only_changes string",
       "[[rule]]\nname = \"r\"\nonly_changes = \"yes\"\n",
       {"r.toml:3:16: rule[1].only_changes: expected true or false, got a string"}},
  });
}

TEST(RuleFile, RejectsBadHomeAssistantTables) {
  expectRejected({
      {"missing component",
       "[[rule]]\nname = \"r\"\nhomeassistant = { unit = \"W\" }\n",
       {"r.toml:3:17: rule[1].homeassistant.component: required key is missing; expected a "
        "Home Assistant MQTT component such as \"sensor\""}},
      {"typo component",
       "[[rule]]\nname = \"r\"\nhomeassistant = { component = \"sensr\" }\n",
       {"r.toml:3:31: rule[1].homeassistant.component: unknown Home Assistant component "
        "\"sensr\"; did you mean \"sensor\"?"}},
      {"unknown component",
       "[[rule]]\nname = \"r\"\nhomeassistant = { component = \"dishwasher\" }\n",
       {"r.toml:3:31: rule[1].homeassistant.component: unknown Home Assistant component "
        "\"dishwasher\"; expected one of: alarm_control_panel, binary_sensor, button, camera, "
        "climate, cover, device_tracker, event, fan, humidifier, image, lawn_mower, light, "
        "lock, notify, number, scene, select, sensor, siren, switch, text, update, vacuum, "
        "valve, water_heater"}},
      {"unknown key",
       "[[rule]]\nname = \"r\"\nhomeassistant = { component = \"sensor\", units = \"W\" }\n",
       {"r.toml:3:49: rule[1].homeassistant.units: unknown key; did you mean \"unit\"?"}},
      {"state_class for a switch",
       "[[rule]]\nname = \"r\"\nhomeassistant = { component = \"switch\", state_class = "
       "\"total\" }\n",
       {"r.toml:3:55: rule[1].homeassistant.state_class: state_class only applies to component "
        "\"sensor\""}},
      {"unknown state_class",
       "[[rule]]\nname = \"r\"\nhomeassistant = { component = \"sensor\", state_class = "
       "\"sum\" }\n",
       {"r.toml:3:55: rule[1].homeassistant.state_class: expected one of \"measurement\", "
        "\"total\", \"total_increasing\", got \"sum\""}},
      {"empty unit",
       "[[rule]]\nname = \"r\"\nhomeassistant = { component = \"sensor\", unit = \"\" }\n",
       {"r.toml:3:48: rule[1].homeassistant.unit: expected a non-empty string (leave the key "
        "out for none)"}},
      {"not a table",
       "[[rule]]\nname = \"r\"\nhomeassistant = \"sensor\"\n",
       {"r.toml:3:17: rule[1].homeassistant: expected a table, got a string"}},
  });
}

// ---- commands: new keys ------------------------------------------------------------------

constexpr const char* kCommandHead =
    "[[command]]\ntopic = \"c/{device}/{path}/set\"\nallow = { device = \"*\", path = \"**\" }\n";

TEST(CommandFile, NewKeysAndDefaults) {
  {
    const RuleSet set = load(kCommandHead);
    ASSERT_EQ(set.commands.size(), 1u);
    const CommandRule& c = set.commands[0];
    EXPECT_EQ(c.method, Method::Put);
    EXPECT_EQ(c.content_format, std::nullopt);
    EXPECT_EQ(c.result_topic.text(), "c/{device}/{path}/set/result");
    EXPECT_EQ(c.max_payload, 65536u);
    EXPECT_TRUE(c.rate_limit.unlimited());
    EXPECT_EQ(c.timeout, std::chrono::seconds(30));
    EXPECT_EQ(c.queue, 32u);
  }
  struct Case {
    std::string keys;
    std::optional<unsigned> content_format;
    std::string result_topic;
    std::size_t max_payload;
    RateLimit rate;
    std::chrono::milliseconds timeout;
    std::size_t queue;
  };
  using std::chrono::milliseconds;
  const Case cases[] = {
      {"content_format = \"application/cbor\"\nresult_topic = \"r/{gateway}/{device}/{path}\"\n"
       "max_payload = 1024\nrate_limit = \"10/s\"\ntimeout = \"5s\"\nqueue = 4\nmethod = "
       "\"POST\"\n",
       60,
       "r/{gateway}/{device}/{path}",
       1024,
       {10, milliseconds(1000)},
       milliseconds(5000),
       4},
      {"content_format = 0\nmax_payload = \"64KiB\"\nrate_limit = 5\n",
       0,
       "c/{device}/{path}/set/result",
       65536,
       {5, milliseconds(1000)},
       milliseconds(30000),
       32},
      {"content_format = \"Application/JSON\"\nmax_payload = \"1MiB\"\nrate_limit = 0.5\n",
       50,
       "c/{device}/{path}/set/result",
       1048576,
       {1, milliseconds(2000)},
       milliseconds(30000),
       32},
      {"content_format = \"text/plain;charset=utf-8\"\nmax_payload = 0\nrate_limit = \"30/m\"\n",
       0,
       "c/{device}/{path}/set/result",
       0,
       {30, milliseconds(60000)},
       milliseconds(30000),
       32},
      {"content_format = \"application/senml+cbor\"\nrate_limit = \"1/500ms\"\ntimeout = 1\n",
       112,
       "c/{device}/{path}/set/result",
       65536,
       {1, milliseconds(500)},
       milliseconds(1000),
       32},
      {"rate_limit = \"2/h\"\nresult_topic = \"res/{path[0]}\"\n",
       std::nullopt,
       "res/{path[0]}",
       65536,
       {2, milliseconds(3600000)},
       milliseconds(30000),
       32},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.keys);
    const RuleSet set = load(std::string(kCommandHead) + c.keys);
    ASSERT_EQ(set.commands.size(), 1u);
    const CommandRule& cmd = set.commands[0];
    EXPECT_EQ(cmd.content_format, c.content_format);
    EXPECT_EQ(cmd.result_topic.text(), c.result_topic);
    EXPECT_EQ(cmd.max_payload, c.max_payload);
    EXPECT_EQ(cmd.rate_limit.count, c.rate.count);
    EXPECT_EQ(cmd.rate_limit.period, c.rate.period);
    EXPECT_EQ(cmd.timeout, c.timeout);
    EXPECT_EQ(cmd.queue, c.queue);
  }
}

TEST(CommandFile, EveryMethodIsAccepted) {
  const std::pair<const char*, Method> methods[] = {{"GET", Method::Get},
                                                    {"PUT", Method::Put},
                                                    {"POST", Method::Post},
                                                    {"DELETE", Method::Delete},
                                                    {"post", Method::Post}};
  for (const auto& [text, method] : methods) {
    const RuleSet set = load(std::string(kCommandHead) + "method = \"" + text + "\"\n");
    ASSERT_EQ(set.commands.size(), 1u) << text;
    EXPECT_EQ(set.commands[0].method, method) << text;
  }
}

TEST(CommandFile, DefaultResultTopicIsDroppedWhereItCannotWork) {
  // "x/{device}/{path}" + "/result" would be matched by the command topic itself: a loop.
  const RuleSet loop = load(
      "[[command]]\ntopic = \"x/{device}/{path}\"\nallow = { device = \"*\", path = "
      "\"**\" }\n");
  ASSERT_EQ(loop.commands.size(), 1u);
  EXPECT_EQ(loop.commands[0].result_topic.expand({"gw", "d", "p", "", ""}), std::nullopt);
  // A wildcard in the command topic makes the default no publish topic.
  const RuleSet wild = load(
      "[[command]]\ntopic = \"x/+/{device}/{path}/set\"\nallow = { device = \"*\", path "
      "= \"**\" }\n");
  ASSERT_EQ(wild.commands.size(), 1u);
  EXPECT_EQ(wild.commands[0].result_topic.expand({"gw", "d", "p", "", ""}), std::nullopt);
}

TEST(CommandFile, RejectsBadKeys) {
  const std::string h = kCommandHead;
  expectRejected({
      {"unknown content format",
       h + "content_format = \"application/jsonn\"\n",
       {"r.toml:4:18: command[1].content_format: unknown Content-Format \"application/jsonn\"; "
        "did you mean \"application/json\"?"}},
      {"content format out of range",
       h + "content_format = 65536\n",
       {"r.toml:4:18: command[1].content_format: expected a Content-Format number (0..65535) or "
        "name such as \"application/json\", got 65536"}},
      {"content format list",
       h + "content_format = [50]\n",
       {"r.toml:4:18: command[1].content_format: expected a Content-Format number (0..65535) or "
        "name such as \"application/json\", got an array"}},
      {"method",
       h + "method = \"PATCH\"\n",
       {"r.toml:4:10: command[1].method: expected one of \"PUT\", \"POST\", \"GET\", "
        "\"DELETE\", got \"PATCH\""}},
      {"result topic wildcard",
       h + "result_topic = \"r/+/x\"\n",
       {"r.toml:4:16: command[1].result_topic: invalid topic template \"r/+/x\": '+' at offset "
        "2: wildcards are not allowed in a publish topic"}},
      {"result topic empty level",
       h + "result_topic = \"r//{device}\"\n",
       {"r.toml:4:16: command[1].result_topic: invalid topic template \"r//{device}\": empty "
        "topic level at offset 2: no leading, trailing or doubled '/' in a topic"}},
      {"result topic with {rt}",
       h + "result_topic = \"r/{rt}\"\n",
       {"r.toml:4:16: command[1].result_topic: invalid topic template \"r/{rt}\": a result "
        "topic may only use {gateway}, {device}, {path} and {path[N]}"}},
      {"result topic with {name}",
       h + "result_topic = \"r/{name}\"\n",
       {"r.toml:4:16: command[1].result_topic: invalid topic template \"r/{name}\": a result "
        "topic may only use {gateway}, {device}, {path} and {path[N]}"}},
      {"result topic loops",
       h + "result_topic = \"c/{device}/{path}/x/set\"\n",
       {"r.toml:4:16: command[1].result_topic: would match the command topic "
        "\"c/{device}/{path}/set\" itself (each result would be taken as a new command)"}},
      {"max_payload too large",
       h + "max_payload = 16777217\n",
       {"r.toml:4:15: command[1].max_payload: expected a size in bytes from 0 to 16 MiB (an "
        "integer, or a string such as \"64KiB\" or \"1MiB\"), got 16777217"}},
      {"max_payload negative",
       h + "max_payload = -1\n",
       {"r.toml:4:15: command[1].max_payload: expected a size in bytes from 0 to 16 MiB (an "
        "integer, or a string such as \"64KiB\" or \"1MiB\"), got -1"}},
      {"max_payload unit",
       h + "max_payload = \"64KB\"\n",
       {"r.toml:4:15: command[1].max_payload: expected a size in bytes from 0 to 16 MiB (an "
        "integer, or a string such as \"64KiB\" or \"1MiB\"), got \"64KB\""}},
      {"rate zero",
       h + "rate_limit = 0\n",
       {"r.toml:4:14: command[1].rate_limit: expected a rate such as \"10/s\", \"30/m\", "
        "\"1/500ms\" or a positive number per second, got 0"}},
      {"rate words",
       h + "rate_limit = \"10 per second\"\n",
       {"r.toml:4:14: command[1].rate_limit: expected a rate such as \"10/s\", \"30/m\", "
        "\"1/500ms\" or a positive number per second, got \"10 per second\""}},
      {"rate fraction",
       h + "rate_limit = \"10/5\"\n",
       {"r.toml:4:14: command[1].rate_limit: expected a rate such as \"10/s\", \"30/m\", "
        "\"1/500ms\" or a positive number per second, got \"10/5\""}},
      {"rate bool",
       h + "rate_limit = true\n",
       {"r.toml:4:14: command[1].rate_limit: expected a rate such as \"10/s\", \"30/m\", "
        "\"1/500ms\" or a positive number per second, got a boolean"}},
      {"timeout short",
       h + "timeout = \"10ms\"\n",
       {"r.toml:4:11: command[1].timeout: must be at least 100ms, got \"10ms\""}},
      {"queue zero",
       h + "queue = 0\n",
       {"r.toml:4:9: command[1].queue: expected an integer 1..10000, got 0"}},
      {"unknown key",
       h + "timeuot = \"1s\"\n",
       {"r.toml:4:11: command[1].timeuot: unknown key; did you mean \"timeout\"?"}},
  });
}

TEST(CommandFile, ParseRate) {
  using std::chrono::milliseconds;
  struct Case {
    const char* text;
    std::optional<std::pair<std::uint32_t, std::int64_t>> rate;
  };
  const Case cases[] = {
      {"10/s", {{10, 1000}}},  {"30/m", {{30, 60000}}}, {"30/min", {{30, 60000}}},
      {"2/h", {{2, 3600000}}}, {"1/500ms", {{1, 500}}}, {"3/1m30s", {{3, 90000}}},
      {"0/s", std::nullopt},   {"/s", std::nullopt},    {"10", std::nullopt},
      {"10/", std::nullopt},   {"10/5", std::nullopt},  {"10/0s", std::nullopt},
      {"-1/s", std::nullopt},  {"10/d", std::nullopt},  {"1x/s", std::nullopt},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.text);
    const auto rate = parseRate(c.text);
    ASSERT_EQ(rate.has_value(), c.rate.has_value());
    if (!rate) continue;
    EXPECT_EQ(rate->count, c.rate->first);
    EXPECT_EQ(rate->period, milliseconds(c.rate->second));
  }
}

// ---- Content-Format names ----------------------------------------------------------------

TEST(ContentFormat, NamesAndNumbers) {
  const std::pair<const char*, unsigned> cases[] = {
      {"text/plain", 0},
      {"text/plain; charset=utf-8", 0},
      {"TEXT/PLAIN;charset=UTF-8", 0},
      {"application/link-format", 40},
      {"application/xml", 41},
      {"application/octet-stream", 42},
      {"application/exi", 47},
      {"application/json", 50},
      {"application/cbor", 60},
      {"application/senml+json", 110},
      {"application/sensml+json", 111},
      {"application/senml+cbor", 112},
      {"application/vnd.ocf+cbor", 10000},
  };
  for (const auto& [text, number] : cases) {
    SCOPED_TRACE(text);
    EXPECT_EQ(ct::fromName(text), number);
  }
  EXPECT_EQ(ct::fromName("application/json; charset=utf-8"), std::nullopt);
  EXPECT_EQ(ct::fromName("application/jsonx"), std::nullopt);
  EXPECT_EQ(ct::fromName(""), std::nullopt);
  EXPECT_STREQ(ct::name(50), "application/json");
  EXPECT_STREQ(ct::name(112), "application/senml+cbor");
  EXPECT_EQ(ct::name(9999), nullptr);
}

// ---- route: payload modes by Content-Format ------------------------------------------------

RuleSet oneRule(const std::string& keys) {
  return load("[[rule]]\nname = \"r\"\ntopic = \"t/{device}/{path}\"\n" + keys);
}

TEST(Route, EveryContentFormatInEveryMode) {
  struct Case {
    const char* name;
    std::optional<unsigned> format;
    std::string payload;
    std::string json;  // the JSON form; the envelope's "value"
  };
  const Case cases[] = {
      {"no ct, number", std::nullopt, "21.5", "21.5"},
      {"text number", ct::kTextPlain, " 42 ", "42"},
      {"text bool", ct::kTextPlain, "true", "true"},
      {"text string", ct::kTextPlain, "on", "\"on\""},
      {"link format", ct::kLinkFormat, "</a>;rt=\"x\";obs",
       R"([{"href":"/a","obs":true,"rt":"x"}])"},
      {"octet stream", ct::kOctetStream, bytes({0, 1, 0xff}), R"({"base64":"AAH/"})"},
      {"json", ct::kJson, R"({ "b": 1, "a": [true, null] })", R"({"a":[true,null],"b":1})"},
      {"cbor", ct::kCbor, bytes({0xa1, 0x61, 0x74, 0xf9, 0x3e, 0x00}), R"({"t":1.5})"},
      {"unknown ct", 12345u, "xyz", R"({"base64":"eHl6"})"},
  };
  const RuleSet json_rule = oneRule("payload = \"json\"\n");
  const RuleSet envelope_rule = oneRule("payload = \"envelope\"\n");
  const RuleSet raw_rule = oneRule("payload = \"raw\"\n");
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const Routed j = routeAll(json_rule, c.format, c.payload);
    ASSERT_EQ(j.out.size(), 1u);
    EXPECT_EQ(j.out[0].payload, c.json);
    EXPECT_EQ(j.out[0].topic, "t/dev1/sensors/temp");

    const Routed e = routeAll(envelope_rule, c.format, c.payload);
    ASSERT_EQ(e.out.size(), 1u);
    const std::string ct_text = c.format ? std::to_string(*c.format) : "null";
    EXPECT_EQ(e.out[0].payload, R"({"device":"dev1","path":"/sensors/temp","value":)" + c.json +
                                    R"(,"ts":1700000000123,"ct":)" + ct_text + "}");
    EXPECT_TRUE(json::accept(e.out[0].payload));

    const Routed r = routeAll(raw_rule, c.format, c.payload);
    ASSERT_EQ(r.out.size(), 1u);
    EXPECT_EQ(r.out[0].payload, c.payload);
  }
}

TEST(Route, UnparseablePayloadIsDroppedAndCountedExceptInRawMode) {
  struct Case {
    const char* name;
    unsigned format;
    std::string payload;
    const char* error;
  };
  const Case cases[] = {
      {"json", ct::kJson, "{\"a\":", "invalid JSON"},
      {"cbor", ct::kCbor, bytes({0xa1}), "invalid CBOR"},
      {"text", ct::kTextPlain, "\xff", "not valid UTF-8"},
      {"link format", ct::kLinkFormat, "</a", "invalid link-format"},
      {"senml json", ct::kSenmlJson, "{\"v\":1}", "SenML: expected an array of records"},
      {"senml cbor", ct::kSenmlCbor, bytes({0x81}), "invalid CBOR"},
  };
  for (const char* mode : {"json", "envelope"}) {
    const RuleSet set = oneRule("payload = \""s + mode + "\"\n");
    for (const auto& c : cases) {
      SCOPED_TRACE(std::string(mode) + " " + c.name);
      const Routed r = routeAll(set, c.format, c.payload);
      EXPECT_TRUE(r.out.empty());
      EXPECT_EQ(r.stats.bad_payload, 1u);
      EXPECT_EQ(r.stats.published, 0u);
      EXPECT_NE(r.stats.last_error.find(c.error), std::string::npos) << r.stats.last_error;
      EXPECT_EQ(r.stats.last_error.rfind("rule r: ", 0), 0u) << r.stats.last_error;
    }
  }
  const RuleSet raw = oneRule("payload = \"raw\"\n");
  for (const auto& c : cases) {
    SCOPED_TRACE(std::string("raw ") + c.name);
    const Routed r = routeAll(raw, c.format, c.payload);
    ASSERT_EQ(r.out.size(), 1u);
    EXPECT_EQ(r.out[0].payload, c.payload);
    EXPECT_EQ(r.stats.bad_payload, 0u);
  }
}

TEST(Route, ValuePointerExtractsOneField) {
  struct Case {
    const char* name;
    const char* pointer;
    const char* mode;
    std::optional<unsigned> format;
    std::string payload;
    std::optional<std::string> out;  // nullopt: a bad payload
  };
  const std::string cbor = bytes({0xa1, 0x61, 0x74, 0x82, 0x01, 0x02});  // {"t":[1,2]}
  const Case cases[] = {
      {"object field", "/temp", "json", ct::kJson, R"({"temp":21.5,"hum":40})", "21.5"},
      {"nested", "/a/b/0", "json", ct::kJson, R"({"a":{"b":["x","y"]}})", "\"x\""},
      {"escaped", "/a~1b/m~0n", "json", ct::kJson, R"({"a/b":{"m~n":7}})", "7"},
      {"whole object below", "/a", "json", ct::kJson, R"({"a":{"z":1,"b":2}})", R"({"b":2,"z":1})"},
      {"from cbor", "/t/1", "json", ct::kCbor, cbor, "2"},
      {"envelope", "/temp", "envelope", ct::kJson, R"({"temp":21.5})",
       R"({"device":"dev1","path":"/sensors/temp","value":21.5,"ts":1700000000123,"ct":50})"},
      {"from link format", "/0/href", "json", ct::kLinkFormat, "</x>", "\"/x\""},
      {"missing field", "/nope", "json", ct::kJson, R"({"temp":1})", std::nullopt},
      {"index past the end", "/a/2", "json", ct::kJson, R"({"a":[1,2]})", std::nullopt},
      {"into a number", "/a/b", "json", ct::kJson, R"({"a":1})", std::nullopt},
      {"array dash", "/a/-", "json", ct::kJson, R"({"a":[1]})", std::nullopt},
      {"text payload", "/a", "json", ct::kTextPlain, "hello", std::nullopt},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const RuleSet set = oneRule("payload = \""s + c.mode + "\"\nvalue = \"" + c.pointer + "\"\n");
    const Routed r = routeAll(set, c.format, c.payload);
    if (c.out) {
      ASSERT_EQ(r.out.size(), 1u);
      EXPECT_EQ(r.out[0].payload, *c.out);
    } else {
      EXPECT_TRUE(r.out.empty());
      EXPECT_EQ(r.stats.bad_payload, 1u);
      EXPECT_NE(r.stats.last_error.find("does not resolve"), std::string::npos)
          << r.stats.last_error;
    }
  }
}

TEST(Route, EveryTemplateVariable) {
  struct Case {
    const char* topic;
    const char* extra;  // more rule keys
    std::string expected;
  };
  const Case cases[] = {
      {"{gateway}/x", "", "gw/x"},
      {"x/{device}", "", "x/dev1"},
      {"x/{path}", "", "x/sensors/temp"},
      {"x/{path[0]}", "", "x/sensors"},
      {"x/{path[1]}", "", "x/temp"},
      {"x/{rt}", "", "x/temperature"},
      {"{gateway}/{device}/{path[1]}-{rt}", "", "gw/dev1/temp-temperature"},
      {"x/{device}/{name}", "senml = \"records\"\n", "x/dev1/urn:dev:ow:1:temp"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.topic);
    const RuleSet set = load("[[rule]]\nname = \"r\"\ntopic = \""s + c.topic + "\"\n" + c.extra);
    const Routed r = c.extra[0] == '\0'
                         ? routeAll(set, ct::kTextPlain, "1")
                         : routeAll(set, ct::kSenmlJson, R"([{"n":"urn:dev:ow:1:temp","v":1}])");
    ASSERT_EQ(r.out.size(), 1u);
    EXPECT_EQ(r.out[0].topic, c.expected);
  }
  // A variable that expands to nothing where a level needs something: counted, dropped.
  const RuleSet set = load("[[rule]]\nname = \"r\"\ntopic = \"x/{rt}\"\n");
  const Routed r = routeAll(set, ct::kTextPlain, "1", "/sensors/temp", "");
  EXPECT_TRUE(r.out.empty());
  EXPECT_EQ(r.stats.bad_topic, 1u);
  EXPECT_EQ(r.stats.last_error, "rule r: topic x/{rt} expands to no valid MQTT topic");
}

TEST(Route, QosAndRetainComeFromTheRule) {
  const RuleSet set = oneRule("qos = 2\nretain = true\n");
  const Routed r = routeAll(set, ct::kTextPlain, "1");
  ASSERT_EQ(r.out.size(), 1u);
  EXPECT_EQ(r.out[0].qos, 2);
  EXPECT_TRUE(r.out[0].retain);
  // coap2mqtt_mqtt_published_total{qos="2"}
  EXPECT_EQ(r.stats.published_by_qos, (std::array<std::uint64_t, 3>{0, 0, 1}));
}

// ---- SenML (RFC 8428) ----------------------------------------------------------------------

// RFC 8428 §5.1.2 (the second example) and its CBOR form from §6.
const std::string kRfcExample3Json = R"([
  {"bn":"urn:dev:ow:10e2073a0108006:","bt":1.276020076001e+09,
   "bu":"A","bver":5,
   "n":"voltage","u":"V","v":120.1},
  {"n":"current","t":-5,"v":1.2},
  {"n":"current","t":-4,"v":1.3},
  {"n":"current","t":-3,"v":1.4},
  {"n":"current","t":-2,"v":1.5},
  {"n":"current","t":-1,"v":1.6},
  {"n":"current","v":1.7}
])";
const std::string kRfcExample3Cbor = fromHex(R"(
87 a7 21 78 1b 75 72 6e 3a 64 65 76 3a 6f 77 3a
31 30 65 32 30 37 33 61 30 31 30 38 30 30 36 3a
22 fb 41 d3 03 a1 5b 00 10 62 23 61 41 20 05 00
67 76 6f 6c 74 61 67 65 01 61 56 02 fb 40 5e 06
66 66 66 66 66 a3 00 67 63 75 72 72 65 6e 74 06
24 02 fb 3f f3 33 33 33 33 33 33 a3 00 67 63 75
72 72 65 6e 74 06 23 02 fb 3f f4 cc cc cc cc cc
cd a3 00 67 63 75 72 72 65 6e 74 06 22 02 fb 3f
f6 66 66 66 66 66 66 a3 00 67 63 75 72 72 65 6e
74 06 21 02 f9 3e 00 a3 00 67 63 75 72 72 65 6e
74 06 20 02 fb 3f f9 99 99 99 99 99 9a a3 00 67
63 75 72 72 65 6e 74 06 00 02 fb 3f fb 33 33 33
33 33 33)");

struct Record {
  std::string n;
  std::optional<std::string> u;
  std::optional<double> v;
  double t;
};

void expectRecords(const std::string& resolved, const std::vector<Record>& expected,
                   std::optional<std::uint64_t> bver = std::nullopt) {
  const json records = json::parse(resolved);
  ASSERT_TRUE(records.is_array());
  ASSERT_EQ(records.size(), expected.size()) << resolved;
  for (std::size_t i = 0; i < expected.size(); ++i) {
    SCOPED_TRACE("record " + std::to_string(i + 1) + ": " + records[i].dump());
    const json& r = records[i];
    EXPECT_EQ(r.at("n"), expected[i].n);
    if (expected[i].u) {
      EXPECT_EQ(r.at("u"), *expected[i].u);
    } else {
      EXPECT_FALSE(r.contains("u"));
    }
    if (expected[i].v) {
      EXPECT_DOUBLE_EQ(r.at("v").get<double>(), *expected[i].v);
    }
    EXPECT_NEAR(r.at("t").get<double>(), expected[i].t, 1e-6);
    for (const auto& [key, value] : r.items()) {
      if (key == "bver") continue;
      EXPECT_NE(key.front(), 'b') << "base field left: " << key;
    }
    if (bver) {
      EXPECT_EQ(r.at("bver"), *bver);
    } else {
      EXPECT_FALSE(r.contains("bver"));
    }
  }
}

TEST(Senml, RfcExample3ResolvesTheSameFromJsonAndCbor) {
  const double bt = 1.276020076001e+09;
  // Chronological order (§4.6): the five older "current" readings come first.
  const std::vector<Record> expected = {
      {"urn:dev:ow:10e2073a0108006:current", "A", 1.2, bt - 5},
      {"urn:dev:ow:10e2073a0108006:current", "A", 1.3, bt - 4},
      {"urn:dev:ow:10e2073a0108006:current", "A", 1.4, bt - 3},
      {"urn:dev:ow:10e2073a0108006:current", "A", 1.5, bt - 2},
      {"urn:dev:ow:10e2073a0108006:current", "A", 1.6, bt - 1},
      {"urn:dev:ow:10e2073a0108006:voltage", "V", 120.1, bt},
      {"urn:dev:ow:10e2073a0108006:current", "A", 1.7, bt},
  };
  const TransformResult from_json = resolveSenml(ct::kSenmlJson, kRfcExample3Json, kNow);
  ASSERT_TRUE(from_json.ok()) << *from_json.error;
  expectRecords(from_json.payload, expected, 5);
  const TransformResult from_cbor = resolveSenml(ct::kSenmlCbor, kRfcExample3Cbor, kNow);
  ASSERT_TRUE(from_cbor.ok()) << *from_cbor.error;
  expectRecords(from_cbor.payload, expected, 5);
  EXPECT_EQ(json::parse(from_json.payload), json::parse(from_cbor.payload));
}

TEST(Senml, RfcResolvedDataExample) {
  // §5.1.4 and its resolved form, §5.1.5.
  const std::string pack = R"([
    {"bn":"urn:dev:ow:10e2073a01080063","bt":1.320067464e+09,"bu":"%RH","v":20},
    {"u":"lon","v":24.30621},
    {"u":"lat","v":60.07965},
    {"t":60,"v":20.3},
    {"u":"lon","t":60,"v":24.30622},
    {"u":"lat","t":60,"v":60.07965},
    {"t":120,"v":20.7},
    {"u":"lon","t":120,"v":24.30623},
    {"u":"lat","t":120,"v":60.07966},
    {"u":"%EL","t":150,"v":98},
    {"t":180,"v":21.2},
    {"u":"lon","t":180,"v":24.30628},
    {"u":"lat","t":180,"v":60.07967}
  ])";
  const std::string n = "urn:dev:ow:10e2073a01080063";
  const std::vector<Record> expected = {
      {n, "%RH", 20, 1.320067464e+09},       {n, "lon", 24.30621, 1.320067464e+09},
      {n, "lat", 60.07965, 1.320067464e+09}, {n, "%RH", 20.3, 1.320067524e+09},
      {n, "lon", 24.30622, 1.320067524e+09}, {n, "lat", 60.07965, 1.320067524e+09},
      {n, "%RH", 20.7, 1.320067584e+09},     {n, "lon", 24.30623, 1.320067584e+09},
      {n, "lat", 60.07966, 1.320067584e+09}, {n, "%EL", 98, 1.320067614e+09},
      {n, "%RH", 21.2, 1.320067644e+09},     {n, "lon", 24.30628, 1.320067644e+09},
      {n, "lat", 60.07967, 1.320067644e+09},
  };
  const TransformResult r = resolveSenml(ct::kSenmlJson, pack, kNow);
  ASSERT_TRUE(r.ok()) << *r.error;
  expectRecords(r.payload, expected);
  // Integral values stay integers: 20, not 20.0.
  EXPECT_NE(r.payload.find(R"("v":20})"), std::string::npos) << r.payload;
  // The same pack as CBOR with the RFC's integer labels.
  const TransformResult cbor = jsonToCbor(pack, /*senml=*/true);
  ASSERT_TRUE(cbor.ok()) << *cbor.error;
  const TransformResult from_cbor = resolveSenml(ct::kSenmlCbor, cbor.payload, kNow);
  ASSERT_TRUE(from_cbor.ok()) << *from_cbor.error;
  EXPECT_EQ(json::parse(from_cbor.payload), json::parse(r.payload));
}

TEST(Senml, BaseValuesSumsAndRelativeTimes) {
  struct Case {
    const char* name;
    std::string pack;
    std::optional<std::int64_t> now;
    std::string resolved;  // exact
  };
  const Case cases[] = {
      {"single datapoint §5.1.1 at now",
       R"([{"n":"urn:dev:ow:10e2073a01080063","u":"Cel","v":23.1}])", kNow,
       R"([{"n":"urn:dev:ow:10e2073a01080063","t":1700000000.123,"u":"Cel","v":23.1}])"},
      {"no now: relative time stays", R"([{"n":"a","v":1,"t":-10}])", std::nullopt,
       R"([{"n":"a","t":-10,"v":1}])"},
      {"no now: time 0 stays", R"([{"n":"a","v":1}])", std::nullopt, R"([{"n":"a","t":0,"v":1}])"},
      {"relative: now minus 10 s", R"([{"n":"a","v":1,"t":-10}])", 1'700'000'000'000,
       R"([{"n":"a","t":1699999990,"v":1}])"},
      {"relative in the future", R"([{"n":"a","v":1,"bt":20}])", 1'700'000'000'000,
       R"([{"n":"a","t":1700000020,"v":1}])"},
      {"absolute stays", R"([{"n":"a","v":1,"t":268435456}])", kNow,
       R"([{"n":"a","t":268435456,"v":1}])"},
      {"base value added", R"([{"bn":"d:","bv":100,"n":"x","v":1.5},{"n":"y","v":-2}])",
       std::nullopt, R"([{"n":"d:x","t":0,"v":101.5},{"n":"d:y","t":0,"v":98}])"},
      {"base value alone", R"([{"bn":"d","bv":7}])", std::nullopt, R"([{"n":"d","t":0,"v":7}])"},
      {"base sum", R"([{"n":"e","bs":1000,"s":5},{"n":"e","v":3}])", std::nullopt,
       R"([{"n":"e","s":1005,"t":0},{"n":"e","s":1000,"t":0,"v":3}])"},
      {"base unit vs unit", R"([{"bn":"a","bu":"W","v":1},{"u":"V","v":2}])", std::nullopt,
       R"([{"n":"a","t":0,"u":"W","v":1},{"n":"a","t":0,"u":"V","v":2}])"},
      {"base name changes midway",
       R"([{"bn":"a:","n":"x","vb":true},{"bn":"b:","n":"x","vs":"on"},{"n":"y","vd":"AQ"}])",
       std::nullopt,
       R"([{"n":"a:x","t":0,"vb":true},{"n":"b:x","t":0,"vs":"on"},{"n":"b:y","t":0,"vd":"AQ"}])"},
      {"base value not added to a string value", R"([{"n":"a","bv":5,"vs":"x"}])", std::nullopt,
       R"([{"n":"a","t":0,"vs":"x"}])"},
      {"unknown fields kept, unknown base fields dropped",
       R"([{"n":"a","v":1,"ut":60,"l":"x","bfoo":1,"foo":2}])", std::nullopt,
       R"([{"foo":2,"l":"x","n":"a","t":0,"ut":60,"v":1}])"},
      {"bver 10 is dropped", R"([{"bver":10,"n":"a","v":1}])", std::nullopt,
       R"([{"n":"a","t":0,"v":1}])"},
      {"bver below 10 goes to every record", R"([{"n":"a","v":1},{"bver":5,"n":"b","v":2}])",
       std::nullopt, R"([{"bver":5,"n":"a","t":0,"v":1},{"bver":5,"n":"b","t":0,"v":2}])"},
      {"chronological order when absolute",
       R"([{"n":"a","v":1,"t":1500000002},{"n":"b","v":2,"t":1500000001}])", std::nullopt,
       R"([{"n":"b","t":1500000001,"v":2},{"n":"a","t":1500000002,"v":1}])"},
      {"empty pack", "[]", kNow, "[]"},
      {"name with slash", R"([{"bn":"room/1/","n":"temp","v":1}])", std::nullopt,
       R"([{"n":"room/1/temp","t":0,"v":1}])"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const TransformResult r = resolveSenml(ct::kSenmlJson, c.pack, c.now);
    ASSERT_TRUE(r.ok()) << *r.error;
    EXPECT_EQ(r.payload, c.resolved);
  }
}

TEST(Senml, InvalidPacks) {
  struct Case {
    std::string pack;
    const char* error;  // exact
  };
  const Case cases[] = {
      {R"({"n":"a","v":1})", "SenML: expected an array of records"},
      {R"([1])", "SenML record 1: expected an object"},
      {R"([{"n":"a","v":1},{"n":"b","v":1,"x_":1}])",
       "SenML record 2: label \"x_\" must be understood (RFC 8428 §4.4)"},
      {R"([{"bver":11,"n":"a","v":1}])", "SenML record 1: version 11 is newer than 10"},
      {R"([{"bver":-1,"n":"a","v":1}])", "SenML record 1: \"bver\" must be an unsigned integer"},
      {R"([{"n":"a","v":1,"vs":"x"}])", "SenML record 1: more than one value field"},
      {R"([{"n":"a"}])",
       "SenML record 1: no value (\"v\", \"vs\", \"vb\", \"vd\") and no sum (\"s\")"},
      {R"([{"v":1}])", "SenML record 1: no name (neither \"bn\" nor \"n\")"},
      {R"([{"n":"-a","v":1}])", "SenML record 1: invalid name \"-a\""},
      {R"([{"n":"a b","v":1}])", "SenML record 1: invalid name \"a b\""},
      {R"([{"n":"a+","v":1}])", "SenML record 1: invalid name \"a+\""},
      {R"([{"n":1,"v":1}])", "SenML record 1: \"n\" must be a string"},
      {R"([{"n":"a","v":"1"}])", "SenML record 1: \"v\" must be a number"},
      {R"([{"n":"a","t":"now","v":1}])", "SenML record 1: \"t\" must be a number"},
      {R"([{"n":"a","vb":1}])", "SenML record 1: \"vb\" must be true or false"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.pack);
    const TransformResult r = resolveSenml(ct::kSenmlJson, c.pack, kNow);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(*r.error, c.error);
    EXPECT_TRUE(r.payload.empty());
  }
}

TEST(Senml, RouteResolvesPacksAndSplitsRecords) {
  const std::string pack = R"([{"bn":"dev:","bt":1500000000,"n":"t","u":"Cel","v":21},
                               {"n":"h","u":"%RH","v":40,"t":1}])";
  {
    const RuleSet set = oneRule("");
    const Routed r = routeAll(set, ct::kSenmlJson, pack);
    ASSERT_EQ(r.out.size(), 1u);
    EXPECT_EQ(r.out[0].payload, R"([{"n":"dev:t","t":1500000000,"u":"Cel","v":21},)"
                                R"({"n":"dev:h","t":1500000001,"u":"%RH","v":40}])");
  }
  {
    const RuleSet set =
        load("[[rule]]\nname = \"r\"\ntopic = \"s/{device}/{name}\"\nsenml = \"records\"\n");
    const Routed r = routeAll(set, ct::kSenmlJson, pack);
    ASSERT_EQ(r.out.size(), 2u);
    EXPECT_EQ(r.out[0].topic, "s/dev1/dev:t");
    EXPECT_EQ(r.out[0].payload, R"({"n":"dev:t","t":1500000000,"u":"Cel","v":21})");
    EXPECT_EQ(r.out[1].topic, "s/dev1/dev:h");
    EXPECT_EQ(r.out[1].payload, R"({"n":"dev:h","t":1500000001,"u":"%RH","v":40})");
    EXPECT_EQ(r.stats.published, 2u);
  }
  {
    const RuleSet set = load(
        "[[rule]]\nname = \"r\"\ntopic = \"s/{name}\"\nsenml = \"records\"\nvalue = \"/v\"\n"
        "payload = \"envelope\"\n");
    const TransformResult cbor = jsonToCbor(pack, /*senml=*/true);
    ASSERT_TRUE(cbor.ok());
    const Routed r = routeAll(set, ct::kSenmlCbor, cbor.payload);
    ASSERT_EQ(r.out.size(), 2u);
    EXPECT_EQ(r.out[0].topic, "s/dev:t");
    EXPECT_EQ(r.out[0].payload,
              R"({"device":"dev1","path":"/sensors/temp","value":21,"ts":1700000000123,"ct":112})");
    EXPECT_EQ(r.out[1].payload,
              R"({"device":"dev1","path":"/sensors/temp","value":40,"ts":1700000000123,"ct":112})");
  }
  {
    // senml = "records" on a payload that is not SenML: one message without a name, and
    // a {name} level left empty is no topic (counted, dropped).
    const RuleSet set = load("[[rule]]\nname = \"r\"\ntopic = \"s/{name}\"\nsenml = \"records\"\n");
    const Routed r = routeAll(set, ct::kJson, R"({"v":1})");
    EXPECT_TRUE(r.out.empty());
    EXPECT_EQ(r.stats.bad_topic, 1u);
    const RuleSet fixed =
        load("[[rule]]\nname = \"r\"\ntopic = \"s/x{name}\"\nsenml = \"records\"\n");
    const Routed f = routeAll(fixed, ct::kJson, R"({"v":1})");
    ASSERT_EQ(f.out.size(), 1u);
    EXPECT_EQ(f.out[0].topic, "s/x");
    EXPECT_EQ(f.out[0].payload, R"({"v":1})");
  }
  {
    // A record without the pointed-at field makes the whole payload bad.
    const RuleSet set =
        load("[[rule]]\nname = \"r\"\ntopic = \"s/{name}\"\nsenml = \"records\"\nvalue = \"/v\"\n");
    const Routed r = routeAll(set, ct::kSenmlJson, R"([{"n":"a","v":1},{"n":"b","vs":"x"}])");
    EXPECT_TRUE(r.out.empty());
    EXPECT_EQ(r.stats.bad_payload, 1u);
  }
}

// ---- min_interval and only_changes -------------------------------------------------------

struct Step {
  std::int64_t at;                     // ms since the start
  std::string value;                   // a text payload; "" = no notification, only flushDue()
  std::vector<std::string> published;  // what goes out at this step
  std::optional<std::int64_t> due;     // nextDue() after the step, relative to the start
};

void runSequence(const RuleSet& set, const std::vector<Step>& steps, RouteStats& stats) {
  RouteState state;
  const std::int64_t t0 = 1'000'000;
  for (const auto& s : steps) {
    SCOPED_TRACE("at " + std::to_string(s.at) + " value '" + s.value + "'");
    std::vector<Publish> out;
    if (s.value.empty()) {
      state.flushDue(t0 + s.at, out, stats);
    } else {
      std::vector<std::size_t> rules{0};
      Notification n{"dev1", "/sensors/temp", ct::kTextPlain, s.value, "", t0 + s.at};
      route(set, "gw", rules, n, out, stats, &state);
    }
    std::vector<std::string> got;
    for (const auto& p : out) got.push_back(p.payload);
    EXPECT_EQ(got, s.published);
    const auto due = state.nextDue();
    EXPECT_EQ(due ? std::optional<std::int64_t>(*due - t0) : std::nullopt, s.due);
  }
}

TEST(RateLimit, MinIntervalPublishesTheLatestHeldBackValueWhenTheIntervalEnds) {
  const RuleSet set = oneRule("min_interval = \"1s\"\n");
  RouteStats stats;
  runSequence(set,
              {
                  {0, "1", {"1"}, std::nullopt},
                  {100, "2", {}, 1000},              // held back until 1000
                  {200, "3", {}, 1000},              // replaces 2
                  {999, "", {}, 1000},               // not yet
                  {1000, "", {"3"}, std::nullopt},   // trailing publish of the latest
                  {1500, "4", {}, 2000},             // 500 ms after the trailing one
                  {2100, "5", {"5"}, std::nullopt},  // caller did not flush: 5 wins, 4 dropped
                  {3200, "6", {"6"}, std::nullopt},  // interval passed: at once
                  {3100, "7", {"7"}, std::nullopt},  // clock went back: not held
              },
              stats);
  EXPECT_EQ(stats.published, 5u);
  // The trailing publish (flushDue) is counted by QoS too.
  EXPECT_EQ(stats.published_by_qos, (std::array<std::uint64_t, 3>{5, 0, 0}));
  EXPECT_EQ(stats.deferred, 3u);      // 2, 3, 4
  EXPECT_EQ(stats.rate_limited, 2u);  // 2 (by 3), 4 (by 5)
  EXPECT_EQ(stats.unchanged, 0u);
}

TEST(RateLimit, OnlyChangesDropsRepeats) {
  const RuleSet set = oneRule("only_changes = true\n");
  RouteStats stats;
  runSequence(set,
              {
                  {0, "1", {"1"}, std::nullopt},
                  {10, "1", {}, std::nullopt},
                  {20, " 1 ", {}, std::nullopt},  // the same JSON value: 1
                  {30, "2", {"2"}, std::nullopt},
                  {40, "1", {"1"}, std::nullopt},
                  {50, "1", {}, std::nullopt},
              },
              stats);
  EXPECT_EQ(stats.published, 3u);
  EXPECT_EQ(stats.unchanged, 3u);
}

TEST(RateLimit, OnlyChangesAndMinIntervalTogether) {
  const RuleSet set = oneRule("only_changes = true\nmin_interval = \"1s\"\n");
  RouteStats stats;
  runSequence(set,
              {
                  {0, "1", {"1"}, std::nullopt},
                  {100, "2", {}, 1000},
                  {200, "1", {}, std::nullopt},  // back to the published value: nothing due
                  {1000, "", {}, std::nullopt},
                  {1100, "1", {}, std::nullopt},  // unchanged
                  {1200, "3", {"3"}, std::nullopt},
                  {1300, "4", {}, 2200},
                  {2200, "", {"4"}, std::nullopt},
                  {2300, "4", {}, std::nullopt},  // equal to the trailing one
              },
              stats);
  EXPECT_EQ(stats.published, 3u);
  EXPECT_EQ(stats.unchanged, 3u);
  EXPECT_EQ(stats.deferred, 2u);
  EXPECT_EQ(stats.rate_limited, 1u);
}

TEST(RateLimit, EnvelopeTimestampDoesNotDefeatOnlyChanges) {
  const RuleSet set = oneRule("payload = \"envelope\"\nonly_changes = true\n");
  RouteState state;
  RouteStats stats;
  std::vector<Publish> out;
  std::vector<std::size_t> rules{0};
  route(set, "gw", rules, {"dev1", "/a", ct::kTextPlain, "1", "", 1000}, out, stats, &state);
  route(set, "gw", rules, {"dev1", "/a", ct::kTextPlain, "1", "", 2000}, out, stats, &state);
  route(set, "gw", rules, {"dev1", "/a", ct::kTextPlain, "2", "", 3000}, out, stats, &state);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(stats.unchanged, 1u);
  // Also SenML with times relative to now: the same reading a second later is no change.
  const RuleSet senml = oneRule("only_changes = true\n");
  RouteState s2;
  out.clear();
  route(senml, "gw", rules, {"dev1", "/a", ct::kSenmlJson, R"([{"n":"a","v":1}])", "", 1000}, out,
        stats, &s2);
  route(senml, "gw", rules, {"dev1", "/a", ct::kSenmlJson, R"([{"n":"a","v":1}])", "", 2000}, out,
        stats, &s2);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].payload, R"([{"n":"a","t":1,"v":1}])");
}

TEST(RateLimit, StateIsPerTopicAndPerRule) {
  const RuleSet set = load(R"(
[[rule]]
name = "a"
topic = "a/{name}"
senml = "records"
only_changes = true
[[rule]]
name = "b"
topic = "b/{name}"
senml = "records"
only_changes = true
)");
  RouteState state;
  RouteStats stats;
  std::vector<Publish> out;
  std::vector<std::size_t> rules{0, 1};
  const std::string p1 = R"([{"n":"x","v":1,"t":1500000000},{"n":"y","v":1,"t":1500000000}])";
  const std::string p2 = R"([{"n":"x","v":1,"t":1500000000},{"n":"y","v":2,"t":1500000000}])";
  route(set, "gw", rules, {"dev1", "/a", ct::kSenmlJson, p1, "", 1000}, out, stats, &state);
  EXPECT_EQ(out.size(), 4u);
  out.clear();
  route(set, "gw", rules, {"dev1", "/a", ct::kSenmlJson, p2, "", 2000}, out, stats, &state);
  ASSERT_EQ(out.size(), 2u);  // only y changed, once per rule
  EXPECT_EQ(out[0].topic, "a/y");
  EXPECT_EQ(out[1].topic, "b/y");
  EXPECT_EQ(state.size(), 4u);
}

TEST(RateLimit, WithoutStateNothingIsSuppressed) {
  const RuleSet set = oneRule("only_changes = true\nmin_interval = \"1h\"\n");
  const Routed a = routeAll(set, ct::kTextPlain, "1");
  const Routed b = routeAll(set, ct::kTextPlain, "1");
  EXPECT_EQ(a.out.size() + b.out.size(), 2u);
}

TEST(RateLimit, StateStaysBounded) {
  const RuleSet set = load(
      "[[rule]]\nname = \"r\"\ntopic = \"s/{name}\"\nsenml = \"records\"\nonly_changes = "
      "true\n");
  RouteState state;
  RouteStats stats;
  std::vector<Publish> out;
  std::vector<std::size_t> rules{0};
  for (int i = 0; i < 1000; ++i) {
    const std::string pack = R"([{"n":"n)" + std::to_string(i) + R"(","v":1}])";
    route(set, "gw", rules, {"dev1", "/a", ct::kSenmlJson, pack, "", i}, out, stats, &state);
  }
  EXPECT_EQ(out.size(), 1000u);
  EXPECT_LE(state.size(), 256u);
}

// ---- Home Assistant discovery -------------------------------------------------------------

HomeAssistantContext haContext() {
  HomeAssistantContext ctx;
  ctx.gateway = "pi-gw-1";
  ctx.device = "boiler";
  ctx.device_name = "Boiler room";
  ctx.path = "/sensors/temp";
  ctx.state_topic = "c2m/boiler/sensors/temp";
  ctx.availability_topic = "c2m/boiler/availability";
  return ctx;
}

TEST(HomeAssistant, SensorConfig) {
  const RuleSet set = oneRule(
      "payload = \"envelope\"\nqos = 1\nhomeassistant = { component = \"sensor\", unit = "
      "\"°C\", device_class = \"temperature\", state_class = \"measurement\" }\n");
  const auto config = homeAssistantConfig(set.rules[0], haContext());
  ASSERT_TRUE(config.has_value());
  const std::string id = homeAssistantObjectId(set.rules[0], haContext());
  EXPECT_EQ(id.rfind("boiler_sensors_temp_r_", 0), 0u) << id;
  EXPECT_EQ(id.size(), std::string("boiler_sensors_temp_r_").size() + 8);
  EXPECT_EQ(config->topic, "homeassistant/sensor/" + id + "/config");
  EXPECT_TRUE(config->retain);
  EXPECT_EQ(config->qos, 1);
  const json expected = {
      {"unique_id", "coap2mqtt_" + id},
      {"name", "sensors/temp"},
      {"state_topic", "c2m/boiler/sensors/temp"},
      {"availability_topic", "c2m/boiler/availability"},
      {"payload_available", "online"},
      {"payload_not_available", "offline"},
      {"qos", 1},
      {"unit_of_measurement", "°C"},
      {"device_class", "temperature"},
      {"state_class", "measurement"},
      {"value_template", "{{ value_json.value }}"},
      {"device",
       {{"identifiers", {"coap2mqtt_pi-gw-1_boiler"}},
        {"name", "Boiler room"},
        {"manufacturer", "coap2mqtt"},
        {"model", "CoAP device"},
        {"via_device", "coap2mqtt_bridge_pi-gw-1"}}},
      {"origin", {{"name", "coap2mqtt"}}},
  };
  EXPECT_EQ(json::parse(config->payload), expected) << config->payload;
}

TEST(HomeAssistant, ValueTemplateByPayloadMode) {
  struct Case {
    const char* keys;
    std::optional<std::string> value_template;
  };
  const Case cases[] = {
      {"payload = \"json\"\n", std::nullopt},
      {"payload = \"raw\"\n", std::nullopt},
      {"payload = \"envelope\"\n", "{{ value_json.value }}"},
      {"payload = \"json\"\nvalue = \"/temp\"\n", std::nullopt},
      {"topic = \"x/{name}\"\nsenml = \"records\"\n", "{{ value_json.v }}"},
      {"topic = \"x/{name}\"\nsenml = \"records\"\npayload = \"envelope\"\n",
       "{{ value_json.value.v }}"},
      {"topic = \"x/{name}\"\nsenml = \"records\"\nvalue = \"/v\"\n", std::nullopt},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.keys);
    const RuleSet set =
        load("[[rule]]\nname = \"r\"\n"s + c.keys + "homeassistant = { component = \"sensor\" }\n");
    ASSERT_EQ(set.rules.size(), 1u);
    const json config = json::parse(homeAssistantConfig(set.rules[0], haContext())->payload);
    if (c.value_template) {
      EXPECT_EQ(config.at("value_template"), *c.value_template);
    } else {
      EXPECT_FALSE(config.contains("value_template"));
    }
  }
  // An explicit template wins.
  const RuleSet set = oneRule(
      "payload = \"envelope\"\nhomeassistant = { component = \"sensor\", value_template = \"{{ "
      "value_json.value | round(1) }}\" }\n");
  const json config = json::parse(homeAssistantConfig(set.rules[0], haContext())->payload);
  EXPECT_EQ(config.at("value_template"), "{{ value_json.value | round(1) }}");
}

TEST(HomeAssistant, BinarySensorNamesCommandAndPrefix) {
  const RuleSet set = oneRule(
      "payload = \"envelope\"\nhomeassistant = { component = \"binary_sensor\", name = "
      "\"Door\", icon = \"mdi:door\" }\n");
  HomeAssistantContext ctx = haContext();
  ctx.device_name = "";
  ctx.prefix = "ha";
  ctx.command_topic = "c2m/boiler/sensors/temp/set";
  const auto config = homeAssistantConfig(set.rules[0], ctx);
  ASSERT_TRUE(config.has_value());
  EXPECT_EQ(config->topic.rfind("ha/binary_sensor/boiler_sensors_temp_r_", 0), 0u) << config->topic;
  const json payload = json::parse(config->payload);
  EXPECT_EQ(payload.at("name"), "Door");
  EXPECT_EQ(payload.at("icon"), "mdi:door");
  EXPECT_EQ(payload.at("payload_on"), "true");
  EXPECT_EQ(payload.at("payload_off"), "false");
  EXPECT_EQ(payload.at("value_template"), "{{ value_json.value | lower }}");
  EXPECT_EQ(payload.at("command_topic"), "c2m/boiler/sensors/temp/set");
  EXPECT_EQ(payload.at("device").at("name"), "boiler");  // no friendly name
  EXPECT_FALSE(payload.contains("unit_of_measurement"));
  EXPECT_FALSE(payload.contains("device_class"));
}

TEST(HomeAssistant, ObjectIdsAreSanitisedAndUnique) {
  const RuleSet set = oneRule("homeassistant = { component = \"sensor\" }\n");
  const Rule& rule = set.rules[0];
  HomeAssistantContext a = haContext();
  a.device = "dev.1 (kitchen)";
  a.path = "/a/b";
  HomeAssistantContext b = a;
  b.path = "/a_b";
  HomeAssistantContext c = a;
  c.gateway = "other-gw";
  HomeAssistantContext d = a;
  d.record_name = "urn:x:temp";
  const std::string ia = homeAssistantObjectId(rule, a);
  const std::string ib = homeAssistantObjectId(rule, b);
  const std::string ic = homeAssistantObjectId(rule, c);
  const std::string id = homeAssistantObjectId(rule, d);
  for (const std::string& s : {ia, ib, ic, id}) {
    SCOPED_TRACE(s);
    EXPECT_EQ(
        s.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"),
        std::string::npos);
  }
  EXPECT_EQ(ia.rfind("dev_1__kitchen__a_b_r_", 0), 0u) << ia;
  EXPECT_EQ(id.rfind("dev_1__kitchen__a_b_r_urn_x_temp_", 0), 0u) << id;
  EXPECT_NE(ia, ib);  // same after sanitising, told apart by the hash
  EXPECT_NE(ia, ic);
  EXPECT_NE(ia, id);
  EXPECT_EQ(ia, homeAssistantObjectId(rule, a));  // stable
  EXPECT_EQ(json::parse(homeAssistantConfig(rule, d)->payload).at("name"), "a/b urn:x:temp");
  // No homeassistant table: no config.
  const RuleSet plain = oneRule("");
  EXPECT_EQ(homeAssistantConfig(plain.rules[0], a), std::nullopt);
}

// ---- commands: conversion and routing -----------------------------------------------------

TEST(Commands, JsonToCbor) {
  struct Case {
    std::string json_text;
    std::string hex;
  };
  const Case cases[] = {
      {"1", "01"},
      {"-1", "20"},
      {"true", "f5"},
      {"null", "f6"},
      {"\"a\"", "6161"},
      {"[1,2]", "820102"},
      {R"({"a":1})", "a1616101"},
      {"1.5", "fa3fc00000"},
      {"100000", "1a000186a0"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.json_text);
    const TransformResult r = jsonToCbor(c.json_text);
    ASSERT_TRUE(r.ok()) << *r.error;
    EXPECT_EQ(toHex(r.payload), c.hex);
    // And back through our own decoder.
    EXPECT_EQ(json::parse(transformPayload(PayloadMode::Json, ct::kCbor, r.payload).payload),
              json::parse(c.json_text));
  }
  // SenML labels become the RFC 8428 integer keys; others stay text.
  const TransformResult senml = jsonToCbor(R"([{"bn":"a","n":"b","v":1,"x":2}])", true);
  ASSERT_TRUE(senml.ok());
  EXPECT_EQ(toHex(senml.payload),
            "81a421616100616202016178"
            "02");
  const std::pair<std::string, const char*> errors[] = {
      {"{",
       "invalid JSON: parse error at line 1, column 2: syntax error while parsing object key - "
       "unexpected end of input; "
       "expected string literal"},
      {"",
       "invalid JSON: parse error at line 1, column 1: syntax error while parsing value - "
       "unexpected end of input; expected "
       "'[', '{', or a literal"},
      {"{\"a\":1} x",
       "invalid JSON: parse error at line 1, column 9: syntax error while parsing value - "
       "invalid literal; expected end of input"},
  };
  for (const auto& [text, error] : errors) {
    SCOPED_TRACE(text);
    const TransformResult r = jsonToCbor(text);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(*r.error, error);
  }
  const TransformResult not_pack = jsonToCbor("{}", true);
  ASSERT_FALSE(not_pack.ok());
  EXPECT_EQ(*not_pack.error, "SenML: expected an array of records");
}

TEST(Commands, RfcExampleRoundTripsThroughSenmlCbor) {
  const TransformResult decoded =
      transformPayload(PayloadMode::Json, ct::kSenmlCbor, kRfcExample3Cbor);
  ASSERT_TRUE(decoded.ok()) << *decoded.error;
  const TransformResult encoded = jsonToCbor(decoded.payload, true);
  ASSERT_TRUE(encoded.ok());
  // Same records; only the 1.5 differs in width (half float in the RFC).
  EXPECT_EQ(transformPayload(PayloadMode::Json, ct::kSenmlCbor, encoded.payload).payload,
            decoded.payload);
  EXPECT_EQ(encoded.payload.substr(0, 48), kRfcExample3Cbor.substr(0, 48));
}

TEST(Commands, ResponseToJson) {
  struct Case {
    std::optional<unsigned> format;
    std::string payload;
    std::string json_text;
  };
  const Case cases[] = {
      {std::nullopt, "", "null"},
      {ct::kTextPlain, "2.5", "2.5"},
      {ct::kTextPlain, "done", "\"done\""},
      {ct::kJson, R"({"ok":true})", R"({"ok":true})"},
      {ct::kJson, "not json", "\"not json\""},  // unparseable but text: a string
      {ct::kCbor, bytes({0x82, 0x01, 0x02}), "[1,2]"},
      {ct::kCbor, bytes({0xff, 0xfe}), R"({"base64":"//4="})"},  // neither: base64
      {ct::kOctetStream, bytes({0x01}), R"({"base64":"AQ=="})"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.json_text);
    EXPECT_EQ(responseToJson(c.format, c.payload), c.json_text);
  }
}

}  // namespace
}  // namespace coap2mqtt::bridge

namespace coap2mqtt::bridge {
namespace {

// Mutated SenML / JSON / CBOR seeds through every mode: never a crash (ASan run), and
// whatever comes out of json / envelope is valid JSON.
TEST(RenderPayload, MutatedInputGivesValidJsonOrAnError) {
  const std::vector<std::string> seeds = {kRfcExample3Json,
                                          kRfcExample3Cbor,
                                          R"([{"bn":"a:","bt":-5,"n":"x","v":1,"s":2}])",
                                          R"({"a":[1,{"b":"c"}],"d":null})",
                                          "</a>;rt=\"x\";ct=50,</b>",
                                          "21.5"};
  const std::optional<unsigned> formats[] = {std::nullopt, 0u, 40u, 42u, 50u, 60u, 110u, 112u};
  std::mt19937 rng(12345);
  std::size_t rendered = 0;
  for (int round = 0; round < 4000; ++round) {
    std::string input = seeds[rng() % seeds.size()];
    const int edits = static_cast<int>(rng() % 4);
    for (int e = 0; e < edits && !input.empty(); ++e) {
      const std::size_t at = rng() % input.size();
      switch (rng() % 3) {
        case 0:
          input[at] = static_cast<char>(rng() & 0xFF);
          break;
        case 1:
          input.erase(at, 1 + rng() % 4);
          break;
        default:
          input.insert(at, 1, static_cast<char>(rng() & 0xFF));
      }
    }
    RenderOptions options;
    options.mode = (round & 1) != 0 ? PayloadMode::Envelope : PayloadMode::Json;
    options.split_senml = (round & 2) != 0;
    options.value_pointer = (round & 4) != 0 ? "/0/v" : "";
    options.device = "d";
    options.path = "/p";
    options.now_ms = kNow;
    std::vector<RenderedPayload> out;
    const auto format = formats[rng() % std::size(formats)];
    const auto error = renderPayload(options, format, input, out);
    if (error) {
      EXPECT_TRUE(out.empty());
      EXPECT_FALSE(error->empty());
      continue;
    }
    for (const auto& r : out) {
      ++rendered;
      ASSERT_TRUE(json::accept(r.payload)) << r.payload;
      ASSERT_TRUE(json::accept(r.key)) << r.key;
    }
  }
  EXPECT_GT(rendered, 500u);  // the mutations leave enough valid input to mean something
}

// The shipped example documents every key: it must load, and say what it shows.
TEST(ShippedExample, RulesDExampleUsesTheNewKeys) {
  std::ifstream in(std::string(C2M_SOURCE_DIR) + "/configs/rules.d/example.toml", std::ios::binary);
  ASSERT_TRUE(in.good());
  const std::string content{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  const RuleSet set = load(content);
  ASSERT_EQ(set.rules.size(), 4u);
  EXPECT_EQ(set.rules[2].name, "senml-records");
  EXPECT_TRUE(set.rules[2].senml_records);
  EXPECT_EQ(set.rules[2].ct, (std::vector<unsigned>{110, 112}));
  EXPECT_FALSE(set.rules[2].enabled);
  ASSERT_TRUE(set.rules[3].homeassistant.has_value());
  EXPECT_EQ(set.rules[3].homeassistant->device_class, "humidity");
  EXPECT_EQ(set.rules[3].payload, PayloadMode::Envelope);
  EXPECT_EQ(set.rules[3].min_interval, std::chrono::seconds(30));
  ASSERT_EQ(set.commands.size(), 2u);
  EXPECT_EQ(set.commands[0].result_topic.text(), "coap2mqtt/{device}/{path}/set/result");
  EXPECT_EQ(set.commands[1].name, "scenes");
  EXPECT_TRUE(set.commands[1].envelope);
  EXPECT_EQ(set.commands[1].content_format, 60u);
  EXPECT_EQ(set.commands[1].rate_limit.count, 2u);
}

}  // namespace
}  // namespace coap2mqtt::bridge
