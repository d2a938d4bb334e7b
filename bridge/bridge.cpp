#include "bridge/bridge.h"

#include <algorithm>
#include <limits>
#include <utility>

#include <nlohmann/json.hpp>

namespace coap2mqtt::bridge {
namespace {

using nlohmann::json;

std::string_view withoutLeadingSlash(std::string_view path) {
  if (!path.empty() && path.front() == '/') path.remove_prefix(1);
  return path;
}

bool anyMatches(const Glob& glob, const std::vector<std::string>& values) {
  return std::any_of(values.begin(), values.end(),
                     [&](const std::string& v) { return glob.matches(v); });
}

std::string sanitise(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '-';
    out.push_back(ok ? c : '_');
  }
  return out;
}

std::uint32_t fnv1a(std::initializer_list<std::string_view> parts) {
  std::uint32_t h = 2166136261u;
  for (std::string_view part : parts) {
    for (char c : part) {
      h ^= static_cast<unsigned char>(c);
      h *= 16777619u;
    }
    h ^= 0xFFu;  // a separator no UTF-8 text contains
    h *= 16777619u;
  }
  return h;
}

std::string hex8(std::uint32_t v) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out(8, '0');
  for (int i = 7; i >= 0; --i) {
    out[static_cast<std::size_t>(i)] = kHex[v & 0xF];
    v >>= 4;
  }
  return out;
}

}  // namespace

bool ruleMatches(const Rule& rule, const registry::Device& device,
                 const registry::Resource& resource) {
  if (!rule.enabled) return false;
  if (!rule.device.matches(device.name) || !rule.path.matches(resource.path)) return false;
  if (rule.rt && !anyMatches(*rule.rt, resource.rt)) return false;
  if (rule.ifs && !anyMatches(*rule.ifs, resource.ifs)) return false;
  if (!rule.ct.empty() && std::none_of(resource.ct.begin(), resource.ct.end(), [&](unsigned ct) {
        return std::find(rule.ct.begin(), rule.ct.end(), ct) != rule.ct.end();
      })) {
    return false;
  }
  return true;
}

std::vector<Watch> plan(const RuleSet& rules, const registry::Device& device) {
  std::vector<Watch> watches;
  for (const auto& resource : device.resources) {
    Watch watch;
    watch.device = device.name;
    watch.path = resource.path;
    bool wants_observe = false;
    for (std::size_t i = 0; i < rules.rules.size(); ++i) {
      const Rule& rule = rules.rules[i];
      if (!ruleMatches(rule, device, resource)) continue;
      watch.rules.push_back(i);
      // Observe is only possible where the device says the resource is observable;
      // everything else falls back to polling at the rule's interval.
      if (rule.mode == Mode::Observe && resource.obs) {
        wants_observe = true;
      } else if (watch.interval.count() == 0 || rule.interval < watch.interval) {
        watch.interval = rule.interval;
      }
    }
    if (watch.rules.empty()) continue;
    watch.mode = wants_observe ? Mode::Observe : Mode::Poll;
    if (wants_observe) watch.interval = std::chrono::milliseconds(0);
    watches.push_back(std::move(watch));
  }
  return watches;
}

// ---- RouteState ---------------------------------------------------------------------------

std::optional<std::int64_t> RouteState::nextDue() const {
  std::optional<std::int64_t> due;
  for (const auto& [key, e] : entries_) {
    if (e.pending && (!due || e.due_ms < *due)) due = e.due_ms;
  }
  return due;
}

void RouteState::flushDue(std::int64_t now_ms, std::vector<Publish>& out, RouteStats& stats) {
  for (auto& [key, e] : entries_) {
    if (!e.pending || e.due_ms > now_ms) continue;
    out.push_back(std::move(*e.pending));
    e.pending.reset();
    e.published = true;
    e.last_ms = now_ms;
    e.last_key = std::move(e.pending_key);
    e.pending_key.clear();
    stats.countPublished(out.back().qos);
  }
}

void RouteState::admit(const Rule& rule, Publish publish, std::string_view key, std::int64_t now_ms,
                       std::vector<Publish>& out, RouteStats& stats) {
  std::string id;
  id.reserve(rule.name.size() + 1 + publish.topic.size());
  id.append(rule.name).push_back('\n');
  id.append(publish.topic);
  auto it = entries_.find(id);
  if (it == entries_.end()) {
    if (entries_.size() >= kMaxEntries) {
      std::erase_if(entries_, [](const auto& kv) { return !kv.second.pending.has_value(); });
    }
    it = entries_.emplace(std::move(id), Entry{}).first;
  }
  Entry& e = it->second;

  if (rule.only_changes && e.published && key == e.last_key) {
    if (e.pending) {  // the value went back to the published one: nothing left to send
      e.pending.reset();
      e.pending_key.clear();
      ++stats.rate_limited;
    }
    ++stats.unchanged;
    return;
  }
  const std::int64_t interval = rule.min_interval.count();
  // A clock that went backwards (now < last) counts as the interval having passed.
  if (interval > 0 && e.published && now_ms >= e.last_ms && now_ms - e.last_ms < interval) {
    if (e.pending) ++stats.rate_limited;
    e.pending = std::move(publish);
    e.pending_key = rule.only_changes ? std::string(key) : std::string();
    e.due_ms = e.last_ms + interval;
    ++stats.deferred;
    return;
  }
  if (e.pending) {  // its time came, but the caller did not flush: the new value wins
    e.pending.reset();
    e.pending_key.clear();
    ++stats.rate_limited;
  }
  e.published = true;
  e.last_ms = now_ms;
  if (rule.only_changes) e.last_key.assign(key);
  out.push_back(std::move(publish));
  stats.countPublished(out.back().qos);
}

// ---- route -------------------------------------------------------------------------------

void route(const RuleSet& rules, std::string_view gateway_name,
           const std::vector<std::size_t>& rule_indices, const Notification& n,
           std::vector<Publish>& out, RouteStats& stats, RouteState* state) {
  TopicVars vars{gateway_name, n.device, withoutLeadingSlash(n.path), n.rt, {}};
  // Reused across calls (the loop thread routes one notification at a time): no
  // allocation for the list itself per notification.
  thread_local std::vector<RenderedPayload> rendered;
  for (std::size_t index : rule_indices) {
    if (index >= rules.rules.size()) continue;
    const Rule& rule = rules.rules[index];
    const bool stateful = state != nullptr && (rule.only_changes || rule.min_interval.count() > 0);
    RenderOptions options;
    options.mode = rule.payload;
    options.value_pointer = rule.value;
    options.split_senml = rule.senml_records;
    options.device = n.device;
    options.path = n.path;
    options.now_ms = n.time_ms;
    options.want_key = stateful && rule.only_changes;
    rendered.clear();
    if (auto error = renderPayload(options, n.content_format, n.payload, rendered)) {
      ++stats.bad_payload;
      stats.last_error = "rule " + rule.name + ": " + *error;
      continue;
    }
    for (RenderedPayload& r : rendered) {
      vars.name = r.name;
      auto topic = rule.topic.expand(vars);
      if (!topic) {
        ++stats.bad_topic;
        stats.last_error = "rule " + rule.name + ": topic " + rule.topic.text() +
                           " expands to no valid MQTT topic";
        continue;
      }
      Publish publish{std::move(*topic), std::move(r.payload), rule.qos, rule.retain};
      if (stateful) {
        state->admit(rule, std::move(publish), r.key, n.time_ms, out, stats);
      } else {
        out.push_back(std::move(publish));
        stats.countPublished(out.back().qos);
      }
    }
  }
}

// ---- Home Assistant ------------------------------------------------------------------------

std::string homeAssistantObjectId(const Rule& rule, const HomeAssistantContext& ctx) {
  std::string id = sanitise(ctx.device);
  id.push_back('_');
  id.append(sanitise(withoutLeadingSlash(ctx.path)));
  id.push_back('_');
  id.append(sanitise(rule.name));
  if (!ctx.record_name.empty()) {
    id.push_back('_');
    id.append(sanitise(ctx.record_name));
  }
  id.push_back('_');
  id.append(hex8(fnv1a({ctx.gateway, ctx.device, ctx.path, rule.name, ctx.record_name})));
  return id;
}

std::optional<Publish> homeAssistantConfig(const Rule& rule, const HomeAssistantContext& ctx) {
  if (!rule.homeassistant) return std::nullopt;
  const HomeAssistant& ha = *rule.homeassistant;
  const std::string object_id = homeAssistantObjectId(rule, ctx);
  const std::string gateway(ctx.gateway);

  json config = json::object();
  config["unique_id"] = "coap2mqtt_" + object_id;
  std::string name = ha.name;
  if (name.empty()) name = std::string(withoutLeadingSlash(ctx.path));
  if (name.empty()) name = rule.name;
  if (!ctx.record_name.empty()) name += " " + std::string(ctx.record_name);
  config["name"] = name;
  config["state_topic"] = std::string(ctx.state_topic);
  config["availability_topic"] = std::string(ctx.availability_topic);
  config["payload_available"] = "online";
  config["payload_not_available"] = "offline";
  config["qos"] = rule.qos;
  if (!ctx.command_topic.empty()) config["command_topic"] = std::string(ctx.command_topic);
  if (!ha.unit.empty()) config["unit_of_measurement"] = ha.unit;
  if (!ha.device_class.empty()) config["device_class"] = ha.device_class;
  if (!ha.state_class.empty()) config["state_class"] = ha.state_class;
  if (!ha.icon.empty()) config["icon"] = ha.icon;

  std::string value_template = ha.value_template;
  if (value_template.empty()) {
    std::string expression;
    const bool whole_record = rule.senml_records && rule.value.empty();
    if (rule.payload == PayloadMode::Envelope) {
      expression = whole_record ? "value_json.value.v" : "value_json.value";
    } else if (rule.payload == PayloadMode::Json && whole_record) {
      expression = "value_json.v";
    }
    if (!expression.empty()) {
      value_template = ha.component == "binary_sensor" ? "{{ " + expression + " | lower }}"
                                                       : "{{ " + expression + " }}";
    }
  }
  if (!value_template.empty()) config["value_template"] = value_template;
  if (ha.component == "binary_sensor") {
    config["payload_on"] = "true";
    config["payload_off"] = "false";
  }

  json device = json::object();
  device["identifiers"] = json::array({"coap2mqtt_" + gateway + "_" + std::string(ctx.device)});
  device["name"] = std::string(ctx.device_name.empty() ? ctx.device : ctx.device_name);
  device["manufacturer"] = "coap2mqtt";
  device["model"] = "CoAP device";
  device["via_device"] = "coap2mqtt_bridge_" + gateway;
  config["device"] = std::move(device);
  config["origin"] = json{{"name", "coap2mqtt"}};

  Publish publish;
  publish.topic = std::string(ctx.prefix) + "/" + ha.component + "/" + object_id + "/config";
  publish.payload = config.dump(-1, ' ', false, json::error_handler_t::replace);
  publish.qos = 1;
  publish.retain = true;
  return publish;
}

// ---- commands ----------------------------------------------------------------------------

TransformResult commandPayload(std::optional<unsigned> content_format, std::string_view payload) {
  if (!content_format) return {std::string(payload), {}};
  switch (*content_format) {
    case content_format::kCbor:
      return jsonToCbor(payload, /*senml=*/false);
    case content_format::kSenmlCbor:
      return jsonToCbor(payload, /*senml=*/true);
    case content_format::kJson:
    case content_format::kSenmlJson: {
      TransformResult checked = transformPayload(PayloadMode::Json, content_format, payload);
      if (!checked.ok()) return checked;
      return {std::string(payload), {}};
    }
    default:
      return {std::string(payload), {}};
  }
}

}  // namespace coap2mqtt::bridge
