#pragma once
// Rules are data: parsed once from TOML, matched and expanded by pure functions.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "bridge/config_error.h"
#include "bridge/glob.h"
#include "bridge/inbound.h"
#include "bridge/topic_template.h"
#include "bridge/transform.h"

namespace coap2mqtt::bridge {

enum class Mode { Observe, Poll };
enum class Method { Get, Put, Post, Delete };
const char* toString(Method);

// Home Assistant MQTT discovery for the entities a rule publishes (`homeassistant = {...}`).
struct HomeAssistant {
  std::string component;       // one of homeAssistantComponents()
  std::string unit;            // unit_of_measurement; empty = none
  std::string device_class;    // empty = none
  std::string state_class;     // sensor only: measurement | total | total_increasing
  std::string name;            // entity name; empty = the resource path
  std::string value_template;  // empty = derived from the payload mode (see bridge.h)
  std::string icon;            // e.g. "mdi:thermometer"; empty = none
};

// The HA MQTT integration's component (platform) names that discovery accepts.
const std::vector<std::string>& homeAssistantComponents();

struct Rule {
  std::string name;
  std::string file;         // where it was defined, for messages
  Glob device;              // match.device, default "*"
  Glob path;                // match.path, default "**"
  std::optional<Glob> rt;   // match.rt: the resource must have an rt value matching it
  std::optional<Glob> ifs;  // match.if: the resource must have an if value matching it
  // match.ct: the resource must advertise (ct=) one of these Content-Formats; empty = any.
  // Written as a number, a name ("application/json") or an array of them.
  std::vector<unsigned> ct;
  Mode mode = Mode::Observe;  // observe falls back to polling when the resource lacks obs
  std::chrono::milliseconds interval{std::chrono::seconds(30)};  // poll interval
  TopicTemplate topic;  // default "{base}/{device}/{path}" with base from [mqtt]
  PayloadMode payload = PayloadMode::Json;
  std::string value;           // a JSON Pointer ("/temp") extracting one field; "" = all
  bool senml_records = false;  // senml = "records": one message per SenML record ({name})
  int qos = 0;
  bool retain = false;
  bool enabled = true;
  // At most one message per topic per min_interval (0 = off). A value arriving sooner is
  // held back; the latest one held back is published when the interval ends (trailing).
  std::chrono::milliseconds min_interval{0};
  bool only_changes = false;  // a value equal to the last published one is not published
  std::optional<HomeAssistant> homeassistant;
};

// `rate_limit`: at most `count` commands per `period`; count 0 = unlimited.
struct RateLimit {
  std::uint32_t count = 0;
  std::chrono::milliseconds period{0};
  bool unlimited() const { return count == 0; }
};

struct CommandRule {
  std::string name;
  std::string file;
  CommandTopic topic;
  Method method = Method::Put;
  Glob allow_device;  // default: nothing is allowed unless `allow` says so
  Glob allow_path;
  int qos = 1;  // subscription QoS
  // Content-Format of the request (number or name). application/cbor and
  // application/senml+cbor: the MQTT payload is JSON and is converted (jsonToCbor);
  // application/json and application/senml+json: the payload must be valid JSON.
  std::optional<unsigned> content_format;
  // Where the result of each command goes: {gateway} {device} {path} {path[N]}. Default:
  // the command topic + "/result". No result topic (default-constructed: expands to
  // nothing) when that default is not a publish topic (a command topic with '+' or '#')
  // or would itself match the command topic ("x/{device}/{path}"): set one explicitly then.
  // An explicit result_topic that would match its own command topic is an error.
  TopicTemplate result_topic;
  std::size_t max_payload = 64 * 1024;  // bytes; larger commands are refused
  RateLimit rate_limit;                 // "10/s", "5/m", "1/500ms" or a number per second
  std::chrono::milliseconds timeout{std::chrono::seconds(30)};  // for the CoAP exchange
  std::size_t queue = 32;  // commands queued per device before more are refused
  // `envelope`: the MQTT payload is a JSON object {"value": ..., "transaction": ...};
  // "value" is what goes to the device and "transaction" is echoed in the result.
  bool envelope = false;
};

struct RuleSet {
  std::vector<Rule> rules;
  std::vector<CommandRule> commands;
  std::vector<InboundRule> inbound;  // [[inbound]]: who may use /ps (bridge/inbound.h)
};

// Parses the [[rule]], [[command]] and [[inbound]] tables of one TOML document: `content` is the
// text of `file`, which is only used to name it in messages (file:line:col) and in Rule::file. No
// file is read here: gateway/config_files.h reads rule files and expands their globs.
// `default_topic_base` is used for the default topic "<base>/{device}/{path}". Errors (all
// of them) are appended to `errors`; rules with errors are not added. Keys that are not
// part of rules (e.g. [gateway]) are left for the caller when `allow_other_tables` is true.
void parseRules(const std::string& file, std::string_view content,
                std::string_view default_topic_base, bool allow_other_tables, RuleSet& out,
                std::vector<ConfigError>& errors);

// Parses a duration: one or more <integer><unit> groups with the units ms, s, m, h
// ("500ms", "30s", "5m", "1h30m"), or a bare integer meaning seconds ("30"). nullopt when
// malformed or out of range. Shared by rule files and gateway.toml.
std::optional<std::chrono::milliseconds> parseDuration(std::string_view text);

// Parses a rate: "N/s", "N/m", "N/h", "N/<duration>" ("1/500ms"), N a positive integer.
std::optional<RateLimit> parseRate(std::string_view text);

// The candidate closest to `word` within an edit distance of 2, for "did you mean"
// hints; empty when none is that close. Shared by rule files and gateway.toml.
std::string closestMatch(std::string_view word, const std::vector<std::string>& candidates);

}  // namespace coap2mqtt::bridge
