#pragma once
// The bridge: which resources to watch and where their values go (plan, route, Home
// Assistant discovery). Which commands may pass is decided in bridge/command_plan.h.
// Pure: no sockets, no clocks, no files. The gateway calls it from its loop thread.
#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "bridge/rules.h"
#include "registry/registry.h"

namespace coap2mqtt::bridge {

// One resource the gateway must watch, with the rules that want it (decided once, at plan
// time, so the per-notification path never scans the rule list).
struct Watch {
  std::string device;
  std::string path;
  Mode mode = Mode::Observe;  // Observe only when some rule wants observe and resource has obs
  std::chrono::milliseconds interval{0};  // for Poll: the smallest interval of the rules
  std::vector<std::size_t> rules;         // indices into RuleSet::rules
};

// Whether an enabled `rule` wants `resource` of `device`: device and path globs, and where
// the rule names them, an rt / if value matching its glob and a ct among its list (a
// resource that advertises no ct does not match a rule with match.ct).
bool ruleMatches(const Rule& rule, const registry::Device& device,
                 const registry::Resource& resource);

// Every (resource, rules) pair of `device` that at least one enabled rule matches. Several
// rules may match one resource: each of them publishes (fan-out).
std::vector<Watch> plan(const RuleSet& rules, const registry::Device& device);

struct Notification {
  std::string_view device;
  std::string_view path;  // with leading '/'
  std::optional<unsigned> content_format;
  std::string_view payload;
  std::string_view rt;  // first rt of the resource, for {rt}
  // Reception time, epoch ms: the envelope's "ts", "now" for relative SenML times, and
  // the clock of min_interval. The bridge reads no clock itself.
  std::int64_t time_ms = 0;
};

struct Publish {
  std::string topic;
  std::string payload;
  int qos = 0;
  bool retain = false;
};

struct RouteStats {
  std::uint64_t published = 0;
  // published split by the rule's QoS (0, 1, 2): coap2mqtt_mqtt_published_total{qos=...}
  std::array<std::uint64_t, 3> published_by_qos{};
  void countPublished(int qos) {
    ++published;
    ++published_by_qos[static_cast<std::size_t>(qos < 0 ? 0 : (qos > 2 ? 2 : qos))];
  }
  std::uint64_t bad_payload = 0;   // payload did not parse as its Content-Format, or the
                                   // rule's value pointer did not resolve (dropped)
  std::uint64_t bad_topic = 0;     // template expanded to an invalid topic (dropped)
  std::uint64_t deferred = 0;      // held back by min_interval for a trailing publish
  std::uint64_t rate_limited = 0;  // held back, then superseded before its time (dropped)
  std::uint64_t unchanged = 0;     // equal to the last published value, only_changes (dropped)
  std::string last_error;          // the latest bad_payload / bad_topic reason, for the log
};

// What min_interval and only_changes remember about the topics of one watched resource.
// The gateway keeps one per watch and passes it to every route() of that watch; it holds
// nothing for rules that use neither option. Entries are keyed by rule name and topic, so
// they survive a rule reload that keeps the rule.
//
// min_interval (trailing edge): a value arriving less than min_interval after the last one
// published on its topic is held back; a newer one replaces it (counted rate_limited); when
// the interval ends, flushDue() publishes the latest held-back value, so a dashboard always
// ends up showing the latest value. only_changes: a value equal to the last published one
// (compared without the envelope's "ts" and without SenML times resolved from "now") is not
// published, and it also cancels a held-back value (the published one is the latest again).
class RouteState {
 public:
  // When flushDue() next has something to publish (epoch ms, Notification::time_ms's
  // clock); nullopt when nothing is held back. Arm a timer for it after each route().
  std::optional<std::int64_t> nextDue() const;
  // Publishes every held-back message whose time has come.
  void flushDue(std::int64_t now_ms, std::vector<Publish>& out, RouteStats& stats);
  std::size_t size() const { return entries_.size(); }
  void clear() { entries_.clear(); }

  // Internal to route(): decides for one message; appends it to `out` when it goes now.
  void admit(const Rule& rule, Publish publish, std::string_view key, std::int64_t now_ms,
             std::vector<Publish>& out, RouteStats& stats);

 private:
  struct Entry {
    bool published = false;
    std::int64_t last_ms = 0;
    std::string last_key;  // only_changes only
    std::optional<Publish> pending;
    std::string pending_key;
    std::int64_t due_ms = 0;
  };
  // A SenML device could invent record names without end: past this many topics, entries
  // with nothing held back are forgotten.
  static constexpr std::size_t kMaxEntries = 256;
  std::map<std::string, Entry, std::less<>> entries_;  // rule name + '\n' + topic
};

// Appends the messages of every rule in `rule_indices` (from Watch::rules): one per rule,
// or one per SenML record for rules with senml = "records". Without a `state`, min_interval
// and only_changes are not applied.
void route(const RuleSet& rules, std::string_view gateway_name,
           const std::vector<std::size_t>& rule_indices, const Notification& n,
           std::vector<Publish>& out, RouteStats& stats, RouteState* state = nullptr);

// ---- Home Assistant MQTT discovery --------------------------------------------------------

struct HomeAssistantContext {
  std::string_view gateway;                   // gateway name
  std::string_view device;                    // device name (as in topics)
  std::string_view device_name;               // friendly name; empty = the device name
  std::string_view path;                      // resource path, with the leading '/'
  std::string_view record_name;               // SenML record name (senml = "records"), else empty
  std::string_view state_topic;               // the rule's expanded topic
  std::string_view availability_topic;        // <base>/<device>/availability
  std::string_view command_topic;             // empty = none (a read-only entity)
  std::string_view prefix = "homeassistant";  // HA's discovery prefix
};

// Sanitised to [A-Za-z0-9_-]: "<device>_<path>_<rule>[_<record>]_<hash>", the hash (8 hex
// digits, FNV-1a of gateway, device, path, rule and record) keeping ids unique where
// sanitising merged names ("a/b" and "a_b").
std::string homeAssistantObjectId(const Rule& rule, const HomeAssistantContext& ctx);

// The retained discovery message for one entity: topic
// "<prefix>/<component>/<object_id>/config", payload with unique_id ("coap2mqtt_" +
// object_id), name (homeassistant.name, else the path without '/', plus the record name),
// state_topic, availability_topic with payload_available "online" / payload_not_available
// "offline", device {identifiers ["coap2mqtt_<gateway>_<device>"], name, manufacturer
// "coap2mqtt", model "CoAP device", via_device "coap2mqtt_bridge_<gateway>"}, origin, qos,
// and where set unit_of_measurement, device_class, state_class, icon, command_topic.
// value_template: homeassistant.value_template, else derived from the payload mode:
// envelope "{{ value_json.value }}", SenML records "{{ value_json.v }}" (envelope:
// "{{ value_json.value.v }}"), none when the payload is the value itself. binary_sensor
// gets payload_on "true" / payload_off "false" (and "| lower" on a derived template).
// nullopt when the rule has no homeassistant table.
std::optional<Publish> homeAssistantConfig(const Rule& rule, const HomeAssistantContext& ctx);

// The MQTT payload of a command converted to what the device gets for `content_format`:
// JSON -> CBOR for application/cbor (60) and senml+cbor (112), checked JSON for
// application/json (50) and senml+json (110), unchanged otherwise. error on invalid JSON.
TransformResult commandPayload(std::optional<unsigned> content_format, std::string_view payload);

}  // namespace coap2mqtt::bridge
