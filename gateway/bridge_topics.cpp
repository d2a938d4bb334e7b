#include "gateway/bridge_topics.h"

#include <algorithm>

#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include "gateway/devices.h"
#include "gateway/event_loop.h"
#include "gateway/mqtt_link.h"
#include "gateway/stats.h"

namespace coap2mqtt::gateway {
namespace {

using Json = nlohmann::json;

constexpr auto kDevicesDebounce = std::chrono::milliseconds(200);
// While devices keep changing (10,000 coming up take ~20 s), the list is published again
// no sooner than this many times what the last one cost to build: at most ~5 % of the loop
// (with 10,000 devices one list is ~70 ms, and every 200 ms it was 38 % of the start-up).
constexpr int kDevicesCostFactor = 20;
constexpr auto kStatsInterval = std::chrono::minutes(5);

std::int64_t epochMs(std::chrono::system_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

Json deviceJson(const registry::Device& d) {
  Json resources = Json::array();
  for (const auto& r : d.resources) {
    Json res{{"path", r.path}, {"obs", r.obs}};
    if (!r.rt.empty()) res["rt"] = r.rt;
    if (!r.ifs.empty()) res["if"] = r.ifs;
    if (!r.ct.empty()) res["ct"] = r.ct;
    if (r.title) res["title"] = *r.title;
    resources.push_back(std::move(res));
  }
  Json j{{"name", d.name},
         {"uri", d.uri},
         {"source", registry::toString(d.source)},
         {"online", d.online},
         {"resources", std::move(resources)}};
  if (!d.friendly_name.empty()) j["friendly_name"] = d.friendly_name;
  if (d.last_seen != std::chrono::system_clock::time_point{}) j["last_seen"] = epochMs(d.last_seen);
  return j;
}

}  // namespace

std::string bridgeStateJson(const char* state) {
  return Json{{"state", state}}.dump();
}

BridgeTopics::BridgeTopics(const GatewayConfig& config, EventLoop& loop, MqttLink& mqtt,
                           const Devices& devices, const Stats& stats, Events& events)
    : config_(config), loop_(loop), mqtt_(mqtt), devices_(devices), stats_(stats) {
  events.on<MqttConnected>([this](const MqttConnected&) { onConnected(); });
  events.on<DeviceJoined>([this](const DeviceJoined& e) {
    event("device_joined", e.device);
    scheduleDevicesPublish();
  });
  events.on<DeviceResources>([this](const DeviceResources& e) {
    if (!e.changed) return;
    event("device_updated", e.device);
    scheduleDevicesPublish();
  });
  events.on<DeviceAvailability>([this](const DeviceAvailability& e) {
    availability(e.device);
    if (!e.changed) return;
    event(e.device.online ? "device_online" : "device_offline", e.device);
    scheduleDevicesPublish();
  });
  events.on<DeviceMoved>([this](const DeviceMoved&) { scheduleDevicesPublish(); });
  events.on<DeviceRemoved>([this](const DeviceRemoved& e) {
    if (e.announce) event("device_left", e.device);
    mqtt_.publish(topic(e.device.name + "/availability"), "", 1, true);  // clears it
    scheduleDevicesPublish();
  });
  events.on<DeviceRenamed>([this](const DeviceRenamed& e) { event("device_renamed", e.device); });
}

std::string BridgeTopics::topic(const std::string& suffix) const {
  return config_.mqtt.base_topic + "/" + suffix;
}

void BridgeTopics::start() {
  scheduleStats();
}

void BridgeTopics::availability(const registry::Device& device) {
  mqtt_.publish(topic(device.name + "/availability"), device.online ? "online" : "offline", 1,
                true);
}

void BridgeTopics::event(const char* type, const registry::Device& device) {
  Json data{
      {"name", device.name}, {"source", registry::toString(device.source)}, {"uri", device.uri}};
  mqtt_.publish(topic("bridge/event"), Json{{"type", type}, {"data", std::move(data)}}.dump(), 1,
                false);
}

void BridgeTopics::scheduleDevicesPublish() {
  if (devices_publish_pending_) return;
  devices_publish_pending_ = true;
  const auto wait = std::max<std::chrono::milliseconds>(
      kDevicesDebounce,
      std::chrono::ceil<std::chrono::milliseconds>(devices_publish_cost_ * kDevicesCostFactor));
  loop_.runAfter(wait, [this] {
    devices_publish_pending_ = false;
    publishDevices();
  });
}

void BridgeTopics::publishDevices() {
  const auto started = std::chrono::steady_clock::now();  // the work's cost, not loop time
  // One device's JSON at a time: a document of 1,000 devices would be megabytes of
  // nodes at its peak, and the heap keeps that high-water mark as RSS.
  std::string list = "[";
  for (const registry::Device* d : devices_.registry().all()) {
    if (list.size() > 1) list += ',';
    list += deviceJson(*d).dump();
  }
  list += ']';
  mqtt_.publish(topic("bridge/devices"), list, 1, true);
  devices_publish_cost_ = std::chrono::steady_clock::now() - started;
}

// Retained: who we are and how we are doing (refreshed every kStatsInterval).
void BridgeTopics::publishInfo() {
  mqtt_.publish(topic("bridge/info"), stats_.infoJson().dump(), 1, true);
}

void BridgeTopics::scheduleStats() {
  loop_.runAfter(kStatsInterval, [this] {
    if (stopping_) return;
    spdlog::info("stats: {}", Stats::statsJson(stats_.snapshot()).dump());
    publishInfo();
    scheduleStats();
  });
}

void BridgeTopics::onConnected() {
  mqtt_.publish(topic("bridge/state"), bridgeStateJson("online"), 1, true);
  publishInfo();
  // Brokers lose retained messages: say again where every device stands.
  for (const registry::Device* device : devices_.registry().all()) {
    if (devices_.everOnline(device->name) || !device->online) availability(*device);
  }
  publishDevices();
}

}  // namespace coap2mqtt::gateway
