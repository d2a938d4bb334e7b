#pragma once
// Where a command is allowed or refused: an MQTT message on a [[command]] topic is
// planned (planCommand: which rule, which device and path, allowed or not), queued per
// device (CommandQueue: one at a time, rate limits, timeouts) and sent as a CoAP request;
// its result goes back to MQTT. Also runs the admin API's reads through the same queues.
#include <cstdint>
#include <functional>
#include <string>

#include "gateway/command_queue.h"
#include "gateway/config.h"
#include "gateway/events.h"
#include "gateway/repeated_failure.h"

namespace coap2mqtt::gateway {

class CoapLink;
class Devices;
class EventLoop;
class MqttLink;
struct MqttMessageMeta;

class CommandRouter {
 public:
  CommandRouter(const GatewayConfig& config, EventLoop& loop, CoapLink& coap, MqttLink& mqtt,
                Devices& devices, Events& events);

  // Subscribes to every [[command]] topic.
  void subscribe();
  // An MQTT message that is not an admin request; ignored when no [[command]] takes it.
  void onMessage(const std::string& topic, const std::string& payload, const MqttMessageMeta& meta);
  // A CoAP GET now, queued behind the device's commands (admin device/read).
  void read(const std::string& device, const std::string& path,
            std::function<void(const CommandOutcome&)> done);

  const CommandQueue::Stats& stats() const { return queue_.stats(); }
  std::uint64_t refused() const { return refused_; }
  std::uint64_t badResponseTopics() const { return bad_response_topics_; }

 private:
  CommandQueue::Io io();
  bool responseTopicUsable(const std::string& response_topic);
  void publishResult(const std::string& result_topic, const std::string& response_topic,
                     const std::string& correlation, const std::string& payload);

  const GatewayConfig& config_;
  EventLoop& loop_;
  CoapLink& coap_;
  MqttLink& mqtt_;
  Devices& devices_;
  CommandQueue queue_;
  std::uint64_t refused_ = 0;
  std::uint64_t bad_response_topics_ = 0;
  RepeatedFailure bad_response_log_;
};

}  // namespace coap2mqtt::gateway
