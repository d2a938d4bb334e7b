#pragma once
// The gateway's own MQTT topics (README "What appears on MQTT"): <base>/bridge/state,
// bridge/info, bridge/devices, bridge/event and every device's availability. Fed by the
// device events; on every connect it says again where everything stands, in this order:
// state, info, availability, devices (then Home Assistant, which subscribed after it).
#include <chrono>
#include <string>

#include "gateway/config.h"
#include "gateway/events.h"

namespace coap2mqtt::gateway {

class Devices;
class EventLoop;
class MqttLink;
class Stats;

class BridgeTopics {
 public:
  BridgeTopics(const GatewayConfig& config, EventLoop& loop, MqttLink& mqtt, const Devices& devices,
               const Stats& stats, Events& events);

  // The periodic stats (log line and bridge/info).
  void start();
  void stop() { stopping_ = true; }

  std::string topic(const std::string& suffix) const;
  void publishInfo();

 private:
  void onConnected();
  void availability(const registry::Device& device);
  void event(const char* type, const registry::Device& device);
  void scheduleDevicesPublish();
  void publishDevices();
  void scheduleStats();

  const GatewayConfig& config_;
  EventLoop& loop_;
  MqttLink& mqtt_;
  const Devices& devices_;
  const Stats& stats_;
  bool devices_publish_pending_ = false;
  std::chrono::steady_clock::duration devices_publish_cost_{};  // of the last bridge/devices
  bool stopping_ = false;
};

// {"state":"online"} and the like, for <base>/bridge/state and the MQTT will.
std::string bridgeStateJson(const char* state);

}  // namespace coap2mqtt::gateway
