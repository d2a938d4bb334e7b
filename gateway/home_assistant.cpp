#include "gateway/home_assistant.h"

#include "bridge/bridge.h"
#include "gateway/mqtt_link.h"
#include "gateway/values.h"

namespace coap2mqtt::gateway {

HomeAssistant::HomeAssistant(const GatewayConfig& config, MqttLink& mqtt, Events& events)
    : config_(config), mqtt_(mqtt) {
  events.on<WatchesPlanned>([this](const WatchesPlanned& e) { onPlanned(e); });
  events.on<DeviceRemoved>([this](const DeviceRemoved& e) { onRemoved(e.device); });
  events.on<MqttConnected>([this](const MqttConnected&) { republish(); });
}

void HomeAssistant::onPlanned(const WatchesPlanned& e) {
  const registry::Device& device = e.device;
  std::map<std::string, std::string> next;
  const std::string availability = config_.mqtt.base_topic + "/" + device.name + "/availability";
  for (const ValueSlot* slot : e.slots) {
    const std::string path = slot->path.substr(1);
    for (std::size_t index : slot->rules) {
      const bridge::Rule& rule = config_.rules.rules[index];
      // Records rules name their topics after the records a device sends: not known here.
      if (!rule.homeassistant || rule.topic.usesName()) continue;
      auto state_topic = rule.topic.expand({config_.name, device.name, path, slot->rt});
      if (!state_topic) continue;
      bridge::HomeAssistantContext ctx;
      ctx.gateway = config_.name;
      ctx.device = device.name;
      ctx.device_name = device.friendly_name;
      ctx.path = slot->path;
      ctx.state_topic = *state_topic;
      ctx.availability_topic = availability;
      if (auto message = bridge::homeAssistantConfig(rule, ctx)) {
        next[message->topic] = std::move(message->payload);
      }
    }
  }
  auto& current = configs_[device.name];
  for (const auto& [topic, payload] : current) {
    if (next.count(topic) == 0) mqtt_.publish(topic, "", 1, true);
  }
  for (const auto& [topic, payload] : next) {
    auto old = current.find(topic);
    if (old == current.end() || old->second != payload) mqtt_.publish(topic, payload, 1, true);
  }
  current = std::move(next);
}

void HomeAssistant::onRemoved(const registry::Device& device) {
  auto it = configs_.find(device.name);
  if (it == configs_.end()) return;
  for (const auto& [topic, payload] : it->second) mqtt_.publish(topic, "", 1, true);
  configs_.erase(it);
}

void HomeAssistant::republish() {
  for (const auto& [device, configs] : configs_) {
    for (const auto& [topic, payload] : configs) mqtt_.publish(topic, payload, 1, true);
  }
}

}  // namespace coap2mqtt::gateway
