#pragma once
// Home Assistant MQTT discovery: the retained config messages of every watched resource
// whose rules ask for one; cleared (an empty retained message) when they no longer apply,
// sent again on every connect (brokers lose retained messages).
#include <map>
#include <string>

#include "gateway/config.h"
#include "gateway/events.h"

namespace coap2mqtt::gateway {

class MqttLink;

class HomeAssistant {
 public:
  HomeAssistant(const GatewayConfig& config, MqttLink& mqtt, Events& events);

 private:
  void onPlanned(const WatchesPlanned& e);
  void onRemoved(const registry::Device& device);
  void republish();

  const GatewayConfig& config_;
  MqttLink& mqtt_;
  // device -> (topic -> payload) of what is retained now
  std::map<std::string, std::map<std::string, std::string>, std::less<>> configs_;
};

}  // namespace coap2mqtt::gateway
