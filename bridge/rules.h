#pragma once
// Rules are data: parsed once from TOML, matched and expanded by pure functions.
#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "bridge/config_error.h"
#include "bridge/glob.h"
#include "bridge/topic_template.h"
#include "bridge/transform.h"

namespace coap2mqtt::bridge {

enum class Mode { Observe, Poll };
enum class Method { Get, Put, Post, Delete };
const char* toString(Method);

struct Rule {
  std::string name;
  std::string file;           // where it was defined, for messages
  Glob device;                // match.device, default "*"
  Glob path;                  // match.path, default "**"
  std::optional<Glob> rt;     // match.rt: the resource must have an rt value matching it
  Mode mode = Mode::Observe;  // observe falls back to polling when the resource lacks obs
  std::chrono::milliseconds interval{std::chrono::seconds(30)};  // poll interval
  TopicTemplate topic;  // default "{base}/{device}/{path}" with base from [mqtt]
  PayloadMode payload = PayloadMode::Json;
  int qos = 0;
  bool retain = false;
  bool enabled = true;
};

struct CommandRule {
  std::string name;
  std::string file;
  CommandTopic topic;
  Method method = Method::Put;
  Glob allow_device;  // default: nothing is allowed unless `allow` says so
  Glob allow_path;
  int qos = 1;  // subscription QoS

  // ---- command delivery (issue 7, branch wt-cmd) ------------------------------------
  // The key names match wt-bridge's, so the merge keeps one copy of this block.
  struct RateLimit {
    unsigned count = 0;                // commands ...
    std::chrono::milliseconds per{0};  // ... per this period (a token bucket per device)
  };
  std::optional<unsigned> content_format;  // `content_format`: number or name
  // `result_topic`: a template ({gateway} {device} {path}); unset = the command's own
  // topic + "/result".
  std::optional<TopicTemplate> result_topic;
  std::size_t max_payload = std::size_t{64} * 1024;  // `max_payload`, bytes
  std::optional<RateLimit> rate_limit;               // `rate_limit` = "10/s"; unset = unlimited
  std::chrono::milliseconds timeout{std::chrono::seconds(30)};  // `timeout`, from arrival
  std::size_t queue = 32;  // `queue`: commands that may wait per device behind the one in flight
  // `envelope` (wt-cmd): the MQTT payload is a JSON object {"value": ..., "transaction": ...};
  // "value" is what goes to the device and "transaction" is echoed in the result.
  bool envelope = false;
};

// Content-Format by name ("application/cbor") or number text ("60"); nullopt if unknown.
std::optional<unsigned> contentFormatFromName(std::string_view name);

struct RuleSet {
  std::vector<Rule> rules;
  std::vector<CommandRule> commands;
};

// Parses the [[rule]] and [[command]] tables of one TOML document. `default_topic_base`
// is used for the default topic "<base>/{device}/{path}". Errors (all of them) are
// appended to `errors`; rules with errors are not added. Keys that are not part of
// rules (e.g. [gateway]) are left for the caller when `allow_other_tables` is true.
void parseRules(const std::string& file, std::string_view content,
                std::string_view default_topic_base, bool allow_other_tables, RuleSet& out,
                std::vector<ConfigError>& errors);

// Expands each glob (relative to `base_dir`) and parses every matching file in sorted
// order. A glob without wildcards that matches nothing is an error; a wildcard glob that
// matches nothing is fine (an empty rules.d).
void loadRuleFiles(const std::vector<std::string>& globs, const std::string& base_dir,
                   std::string_view default_topic_base, RuleSet& out,
                   std::vector<ConfigError>& errors);

// Parses a duration: one or more <integer><unit> groups with the units ms, s, m, h
// ("500ms", "30s", "5m", "1h30m"), or a bare integer meaning seconds ("30"). nullopt when
// malformed or out of range. Shared by rule files and gateway.toml.
std::optional<std::chrono::milliseconds> parseDuration(std::string_view text);

// The candidate closest to `word` within an edit distance of 2, for "did you mean"
// hints; empty when none is that close. Shared by rule files and gateway.toml.
std::string closestMatch(std::string_view word, const std::vector<std::string>& candidates);

}  // namespace coap2mqtt::bridge
