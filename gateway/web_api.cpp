#include "gateway/web_api.h"

#include <algorithm>

#include <spdlog/spdlog.h>

#include "bridge/json_parse.h"
#include "bridge/topic_template.h"
#include "gateway/admin.h"
#include "gateway/command_router.h"
#include "gateway/commands.h"
#include "gateway/devices.h"
#include "gateway/event_loop.h"
#include "gateway/observer.h"
#include "gateway/stats.h"
#include "gateway/values.h"

namespace coap2mqtt::gateway {

namespace {

using Json = nlohmann::json;

std::int64_t epochMs(std::chrono::system_clock::time_point t) {
  if (t.time_since_epoch().count() == 0) return 0;
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

std::int64_t nowMs() {
  return epochMs(std::chrono::system_clock::now());
}

WebResponse jsonResponse(const Json& j, int status = 200) {
  return {status, j.dump(-1, ' ', false, Json::error_handler_t::replace)};
}

WebResponse error(int status, const std::string& message) {
  return jsonResponse(Json{{"status", "error"}, {"error", message}}, status);
}

const char* modeName(bridge::Mode m) {
  return m == bridge::Mode::Observe ? "observe" : "poll";
}

const char* payloadName(bridge::PayloadMode m) {
  switch (m) {
    case bridge::PayloadMode::Raw:
      return "raw";
    case bridge::PayloadMode::Envelope:
      return "envelope";
    default:
      return "json";
  }
}

// A [[command]] topic for one device and path, when the topic has no wildcard levels.
std::optional<std::string> commandTopic(const bridge::CommandRule& rule, const std::string& device,
                                        const std::string& path) {
  std::string topic = rule.topic.text();
  if (topic.find_first_of("+#") != std::string::npos) return std::nullopt;
  const auto replace = [&topic](const std::string& var, const std::string& with) {
    for (auto at = topic.find(var); at != std::string::npos;
         at = topic.find(var, at + with.size())) {
      topic.replace(at, var.size(), with);
    }
  };
  replace("{device}", device);
  replace("{path}", path.empty() || path.front() != '/' ? path : path.substr(1));
  return topic;
}

}  // namespace

WebApi::WebApi(const GatewayConfig& config, EventLoop& loop, Devices& devices, Observer& observer,
               const ValuePublisher& values, const Stats& stats, AdminApi& admin,
               CommandRouter& commands, Events& events, WebEventHub& hub, ReloadError reload_error)
    : config_(config),
      loop_(loop),
      devices_(devices),
      observer_(observer),
      values_(values),
      stats_(stats),
      admin_(admin),
      commands_(commands),
      hub_(hub),
      reload_error_(std::move(reload_error)) {
  // Listeners cost nothing while no browser listens (hasClients() is one mutex).
  events.on<DeviceJoined>([this](const DeviceJoined& e) { publishDevice(e.device); });
  events.on<DeviceAvailability>([this](const DeviceAvailability& e) {
    if (e.changed) publishDevice(e.device);
  });
  events.on<DeviceResources>([this](const DeviceResources& e) {
    if (e.changed) publishDevice(e.device);
  });
  events.on<DeviceMoved>([this](const DeviceMoved& e) { publishDevice(e.device); });
  events.on<DeviceRenamed>([this](const DeviceRenamed& e) {
    if (!running_ || !hub_.hasClients()) return;
    hub_.publish("renamed", Json{{"from", e.from}, {"to", e.device.name}}.dump());
  });
  events.on<DeviceRemoved>([this](const DeviceRemoved& e) {
    if (!running_ || !hub_.hasClients() || !e.announce) return;
    hub_.publish("removed", Json{{"device", e.device.name}}.dump());
  });
  events.on<RulesReplaced>([this](const RulesReplaced&) {
    if (running_ && hub_.hasClients()) hub_.publish("rules", "{}");
  });
  events.on<ValueReceived>([this](const ValueReceived& v) { onValue(v); });
}

void WebApi::start() {
  running_ = true;
  last_notifications_ = observer_.totals().notifications;
  last_published_ = values_.stats().published;
  sample_timer_ = loop_.runAfter(std::chrono::seconds(1), [this] { sample(); });
}

void WebApi::stop() {
  running_ = false;
  if (sample_timer_ != 0) loop_.cancel(sample_timer_);
  if (flush_timer_ != 0) loop_.cancel(flush_timer_);
  sample_timer_ = flush_timer_ = 0;
  pending_values_.clear();
}

void WebApi::onValue(const ValueReceived& v) {
  if (!running_ || !hub_.hasClients()) return;
  const ValueSlot& slot = v.slot;
  PendingValue& p = pending_values_[slot.device + '\n' + slot.path];
  if (p.device.empty()) {
    p.device = slot.device;
    p.path = slot.path;
  }
  p.ct = slot.last_ct;
  p.payload.assign(slot.last_value, 0, std::min(slot.last_value.size(), kMaxValueBytes));
  p.time_ms = slot.last_time_ms;
  if (flush_timer_ == 0) flush_timer_ = loop_.runAfter(kValueFlush, [this] { flushValues(); });
}

void WebApi::flushValues() {
  flush_timer_ = 0;
  if (pending_values_.empty()) return;
  Json values = Json::array();
  for (const auto& [key, p] : pending_values_) {
    values.push_back({{"device", p.device},
                      {"path", p.path},
                      {"value", valueJson(p.ct, p.payload)},
                      {"time", p.time_ms}});
  }
  pending_values_.clear();
  hub_.publish("values", values.dump(-1, ' ', false, Json::error_handler_t::replace));
}

void WebApi::publishDevice(const registry::Device& device) {
  if (!running_ || !hub_.hasClients()) return;
  hub_.publish("device",
               deviceSummary(device).dump(-1, ' ', false, Json::error_handler_t::replace));
}

void WebApi::sample() {
  sample_timer_ = loop_.runAfter(std::chrono::seconds(1), [this] { sample(); });
  const std::uint64_t notifications = observer_.totals().notifications;
  const std::uint64_t published = values_.stats().published;
  rate_.push_back({nowMs(), notifications - last_notifications_, published - last_published_});
  last_notifications_ = notifications;
  last_published_ = published;
  while (rate_.size() > kRateSeconds) rate_.pop_front();
  if (hub_.hasClients()) {
    const StatsSnapshot s = stats_.snapshot();
    hub_.publish("tick", Json{{"t", rate_.back().t_ms},
                              {"notifications", rate_.back().notifications},
                              {"published", rate_.back().published},
                              {"mqtt_connected", s.mqtt_connected},
                              {"outbox", s.outbox},
                              {"devices", s.devices},
                              {"devices_online", s.devices_online},
                              {"uptime_s", s.uptime_s}}
                             .dump());
  }
}

Json WebApi::valueJson(std::optional<unsigned> ct, const std::string& payload) {
  Json v = Json::parse(responsePayloadJson(ct, payload), nullptr, false);
  return v.is_discarded() ? Json(payload) : v;
}

Json WebApi::deviceSummary(const registry::Device& d) const {
  return Json{{"name", d.name},
              {"friendly_name", d.friendly_name},
              {"uri", d.uri},
              {"source", registry::toString(d.source)},
              {"online", d.online},
              {"first_seen", epochMs(d.first_seen)},
              {"last_seen", epochMs(d.last_seen)},
              {"resources", d.resources.size()}};
}

Json WebApi::devicesJson() {
  std::map<std::string, Observer::Counters, std::less<>> counters;
  for (auto& [name, c] : observer_.perDevice()) counters.emplace(name, c);
  // The registry's last_seen is what the store keeps; a value is the latest sign of life.
  std::map<std::string, std::int64_t, std::less<>> last_value;
  observer_.forEachSlot([&](ValueSlot& slot) {
    if (!slot.have_value) return;
    std::int64_t& t = last_value[slot.device];
    t = std::max(t, slot.last_time_ms);
  });
  Json list = Json::array();
  for (const registry::Device* d : devices_.registry().all()) {
    Json j = deviceSummary(*d);
    if (auto v = last_value.find(d->name); v != last_value.end()) {
      j["last_seen"] = std::max(j["last_seen"].get<std::int64_t>(), v->second);
    }
    const auto c = counters.find(d->name);
    const Observer::Counters none;
    const Observer::Counters& n = c == counters.end() ? none : c->second;
    j["counters"] = {{"notifications", n.notifications},
                     {"stale", n.stale},
                     {"reregistrations", n.reregistrations},
                     {"failures", n.failures}};
    list.push_back(std::move(j));
  }
  return list;
}

std::optional<Json> WebApi::deviceJson(const std::string& name) {
  const registry::Device* d = devices_.registry().find(name);
  if (d == nullptr) return std::nullopt;
  Json out = deviceSummary(*d);
  std::map<std::string, Json> watched;  // by path
  observer_.forEachSlot([&](ValueSlot& slot) {
    if (slot.device != name) return;
    Json rules = Json::array();
    Json topics = Json::array();
    const std::string rel = slot.path.empty() ? slot.path : slot.path.substr(1);
    for (std::size_t i : slot.rules) {
      if (i >= config_.rules.rules.size()) continue;
      const bridge::Rule& rule = config_.rules.rules[i];
      rules.push_back(rule.name);
      auto topic = rule.topic.expand({config_.name, slot.device, rel, slot.rt});
      topics.push_back(topic ? *topic : rule.topic.text());
    }
    Json w{{"rules", std::move(rules)}, {"topics", std::move(topics)}};
    if (slot.have_value) {
      w["value"] =
          valueJson(slot.last_ct,
                    slot.last_value.substr(0, std::min(slot.last_value.size(), kMaxValueBytes)));
      w["time"] = slot.last_time_ms;
    }
    watched[slot.path] = std::move(w);
  });
  Json resources = Json::array();
  for (const registry::Resource& r : d->resources) {
    Json j{{"path", r.path}, {"rt", r.rt}, {"if", r.ifs}, {"ct", r.ct}, {"obs", r.obs}};
    if (r.sz) j["sz"] = *r.sz;
    if (r.title) j["title"] = *r.title;
    if (auto w = watched.find(r.path); w != watched.end()) j.update(w->second);
    Json commands = Json::array();
    for (std::size_t i = 0; i < config_.rules.commands.size(); ++i) {
      const bridge::CommandRule& c = config_.rules.commands[i];
      if (c.allow_device.matches(name) && c.allow_path.matches(r.path)) commands.push_back(i);
    }
    j["commands"] = std::move(commands);
    resources.push_back(std::move(j));
  }
  out["resources"] = std::move(resources);
  Json commands = Json::array();
  for (std::size_t i = 0; i < config_.rules.commands.size(); ++i) {
    const bridge::CommandRule& c = config_.rules.commands[i];
    commands.push_back({{"index", i},
                        {"name", c.name},
                        {"method", bridge::toString(c.method)},
                        {"topic", c.topic.text()}});
  }
  out["commands"] = std::move(commands);
  return out;
}

Json WebApi::rulesJson() {
  std::vector<Json> matched(config_.rules.rules.size(), Json::array());
  observer_.forEachSlot([&](ValueSlot& slot) {
    for (std::size_t i : slot.rules) {
      if (i < matched.size() && matched[i].size() < 1000) {
        matched[i].push_back({{"device", slot.device}, {"path", slot.path}});
      }
    }
  });
  Json rules = Json::array();
  for (std::size_t i = 0; i < config_.rules.rules.size(); ++i) {
    const bridge::Rule& r = config_.rules.rules[i];
    Json match{{"device", r.device.pattern()}, {"path", r.path.pattern()}};
    if (r.rt) match["rt"] = r.rt->pattern();
    if (r.ifs) match["if"] = r.ifs->pattern();
    if (!r.ct.empty()) match["ct"] = r.ct;
    rules.push_back({{"name", r.name},
                     {"file", r.file},
                     {"match", std::move(match)},
                     {"mode", modeName(r.mode)},
                     {"topic", r.topic.text()},
                     {"payload", payloadName(r.payload)},
                     {"qos", r.qos},
                     {"retain", r.retain},
                     {"enabled", r.enabled},
                     {"matched", std::move(matched[i])}});
  }
  Json commands = Json::array();
  for (const bridge::CommandRule& c : config_.rules.commands) {
    commands.push_back(
        {{"name", c.name},
         {"file", c.file},
         {"topic", c.topic.text()},
         {"method", bridge::toString(c.method)},
         {"allow", {{"device", c.allow_device.pattern()}, {"path", c.allow_path.pattern()}}}});
  }
  return Json{{"rules", std::move(rules)},
              {"commands", std::move(commands)},
              {"reload_error", reload_error_ ? reload_error_() : std::string()}};
}

Json WebApi::rateJson() const {
  Json rate = Json::array();
  for (const Sample& s : rate_) rate.push_back({s.t_ms, s.notifications, s.published});
  return rate;
}

Json WebApi::healthJson() const {
  const StatsSnapshot s = stats_.snapshot();
  const WebEventHub::Counters web = hub_.counters();
  return Json{{"health", Stats::healthJson(s)},
              {"stats", Stats::statsJson(s)},
              {"outbox", s.outbox},
              {"rate", rateJson()},
              {"web",
               {{"stream_clients", web.clients},
                {"events", web.published},
                {"events_dropped", web.dropped},
                {"streams_refused", web.refused}}}};
}

void WebApi::admin(const std::string& op, const std::string& body, const Reply& reply) {
  admin_.run(op, body, [this, op, reply](const std::string& response) {
    if (op == "discover") {
      last_discovery_ = Json::parse(response, nullptr, false);
      last_discovery_["time"] = nowMs();
      if (hub_.hasClients()) hub_.publish("discovery", last_discovery_.dump());
    }
    reply({200, response});
  });
}

// {"device","path","payload","command": index of the [[command]] (default 0)}: the topic
// that [[command]] would take for this device and path, then exactly the MQTT way.
void WebApi::command(const WebRequest& request, const Reply& reply) {
  std::string parse_error;
  auto body = bridge::parseJson(request.body, &parse_error);
  if (!body || !body->is_object()) {
    reply(error(400, body ? "expected a JSON object" : parse_error));
    return;
  }
  const auto device = body->value("device", std::string());
  const auto path = body->value("path", std::string());
  const Json payload = body->value("payload", Json(""));
  const std::string text = payload.is_string() ? payload.get<std::string>() : payload.dump();
  const auto index = body->value("command", std::size_t{0});
  if (device.empty() || path.empty()) {
    reply(error(400, "\"device\" and \"path\" are required"));
    return;
  }
  if (index >= config_.rules.commands.size()) {
    reply(error(400, config_.rules.commands.empty() ? "no [[command]] is configured"
                                                    : "no such [[command]]"));
    return;
  }
  auto topic = commandTopic(config_.rules.commands[index], device, path);
  if (!topic) {
    reply(error(400, "this [[command]]'s topic has wildcards: send it on MQTT"));
    return;
  }
  commands_.submit(*topic, text, [reply, topic = *topic](const std::string& result) {
    if (result.empty()) {
      reply(error(400, "not a command topic: " + topic));
      return;
    }
    Json r = Json::parse(result, nullptr, false);
    reply(jsonResponse(Json{{"topic", topic}, {"result", r}}));
  });
}

void WebApi::handle(const WebRequest& request, Reply reply) {
  // A body of the wrong shape ({"device": 5}) makes nlohmann throw: a 400, never a loop
  // that stops. `reply` runs at most once: a handler that threw did not answer yet.
  try {
    route(request, reply);
  } catch (const std::exception& e) {
    reply(error(400, std::string("bad request: ") + e.what()));
  }
}

void WebApi::route(const WebRequest& request, const Reply& reply) {
  const std::string& p = request.path;
  if (request.method == "GET") {
    if (p == "/api/devices") return reply(jsonResponse(devicesJson()));
    if (p == "/api/device") {
      const auto name = request.params.find("name");
      auto d = name == request.params.end() ? std::nullopt : deviceJson(name->second);
      return reply(d ? jsonResponse(*d) : error(404, "no such device"));
    }
    if (p == "/api/rules") return reply(jsonResponse(rulesJson()));
    if (p == "/api/health") return reply(jsonResponse(healthJson()));
    if (p == "/api/discovery") {
      return reply(jsonResponse(
          Json{{"enabled", !config_.coap.discovery.multicast.empty()}, {"last", last_discovery_}}));
    }
    return reply(error(404, "no such API"));
  }
  // POST: the admin API's operations, and commands.
  static const std::map<std::string, std::string> kAdmin{{"/api/device/rename", "device/rename"},
                                                         {"/api/device/remove", "device/remove"},
                                                         {"/api/device/read", "device/read"},
                                                         {"/api/discover", "discover"},
                                                         {"/api/rules/reload", "rules/reload"}};
  if (auto op = kAdmin.find(p); op != kAdmin.end()) return admin(op->second, request.body, reply);
  if (p == "/api/command") return command(request, reply);
  reply(error(404, "no such API"));
}

}  // namespace coap2mqtt::gateway
