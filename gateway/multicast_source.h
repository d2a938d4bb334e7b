#pragma once
// Devices found by multicast: a discovery round (GET /.well-known/core to All-CoAP-Nodes)
// every coap.discovery.interval, and on request (admin "discover"). Every answer is a
// device: a new one is added with the resources it listed.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "gateway/config.h"

namespace coap2mqtt::gateway {

class Devices;
class EventLoop;
class MulticastDiscovery;
struct DiscoveryAnswer;

class MulticastSource {
 public:
  MulticastSource(const GatewayConfig& config, EventLoop& loop, Devices& devices);
  ~MulticastSource();

  void start();  // the first round now, then every interval; nothing when no groups are set
  void stop() { stopping_ = true; }
  bool enabled() const { return discovery_ != nullptr; }
  // Answers beyond a round's bound ([coap.limits] max_answers_per_round), ignored.
  std::uint64_t answersOverLimit() const;
  // `done` gets the names of the devices that answered.
  void runRound(std::function<void(const std::vector<std::string>&)> done);

 private:
  void scheduleRounds();
  std::string onAnswer(const DiscoveryAnswer& answer);  // returns the device's name

  const GatewayConfig& config_;
  EventLoop& loop_;
  Devices& devices_;
  std::unique_ptr<MulticastDiscovery> discovery_;
  bool stopping_ = false;
};

}  // namespace coap2mqtt::gateway
