#pragma once
// Where a command is allowed or refused: an MQTT message on a [[command]] topic is
// planned (planCommand: which rule, which device and path, allowed or not), queued per
// device (CommandQueue: one at a time, rate limits, timeouts) and sent as a CoAP request;
// its result goes back to MQTT. Also runs the admin API's reads through the same queues.
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
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
  // A command from the web page (gateway/web_api.h): `topic` and `payload` go exactly the
  // way of an MQTT message on that topic (planCommand's allow-list, the device's queue, the
  // result on MQTT, every count), and `done` also gets the result's JSON text (a refusal
  // at once, with no CoAP traffic). `done("")`: `topic` is not a command topic.
  using Done = std::function<void(const std::string& result_json)>;
  void submit(const std::string& topic, const std::string& payload, Done done);
  // A GET that bridge::planRead allowed, now, queued behind the device's commands (admin
  // device/read).
  void read(CommandRequest get, std::function<void(const CommandOutcome&)> done);

  const CommandQueue::Stats& stats() const { return queue_.stats(); }
  std::uint64_t refused() const { return refused_; }
  // Refused commands by RefusedCommand::reason.
  const std::map<std::string, std::uint64_t, std::less<>>& refusedByReason() const {
    return refused_by_reason_;
  }
  std::uint64_t badResponseTopics() const { return bad_response_topics_; }
  // Retained messages on command topics: the broker's stored copy, delivered again at
  // every (re)subscription, is never executed.
  std::uint64_t retainedIgnored() const { return retained_ignored_; }
  // Refusal results that could go nowhere (no valid result or response topic).
  std::uint64_t resultsUndeliverable() const { return results_undeliverable_; }

  // Results of refused commands go out at QoS 1 up to this burst and rate, beyond it at
  // QoS 0: a QoS 1 result waits in the outbox, whose oldest messages (real values) a
  // flood of refusals would otherwise push out. Each refusal still gets its result.
  static constexpr double kRefusedResultsPerSecond = 10.0;
  static constexpr double kRefusedResultsBurst = 20.0;

 private:
  CommandQueue::Io io();
  bool responseTopicUsable(const std::string& response_topic);
  bool publishResult(const std::string& result_topic, const std::string& response_topic,
                     const std::string& correlation, const std::string& payload, int qos);
  void handle(const std::string& topic, const std::string& payload, const MqttMessageMeta& meta,
              Done done);
  void refuse(const std::string& topic, const bridge::RefusedCommand& refused,
              const MqttMessageMeta& meta);
  int refusedResultQos();

  const GatewayConfig& config_;
  EventLoop& loop_;
  CoapLink& coap_;
  MqttLink& mqtt_;
  Devices& devices_;
  CommandQueue queue_;
  std::uint64_t refused_ = 0;
  std::uint64_t bad_response_topics_ = 0;
  RepeatedFailure bad_response_log_;
  std::map<std::string, std::uint64_t, std::less<>> refused_by_reason_;
  std::map<std::string, RepeatedFailure, std::less<>> refused_log_;  // one per reason
  std::uint64_t retained_ignored_ = 0;
  RepeatedFailure retained_log_;
  std::uint64_t results_undeliverable_ = 0;
  double refused_tokens_ = kRefusedResultsBurst;
  std::chrono::steady_clock::time_point refused_tokens_at_{};
};

}  // namespace coap2mqtt::gateway
