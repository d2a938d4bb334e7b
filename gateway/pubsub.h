#pragma once
// Devices that speak first (issue 20): POST/PUT /ps/<topic path> on the gateway's own CoAP
// listeners becomes an MQTT publish. The [[inbound]] entries decide who may (default deny,
// bridge/inbound.h); the value goes through the same rules as an observed one, as a value
// of (sender, "/<topic path>"), so topic templates, transforms, only_changes and
// min_interval apply; with no rule for it the MQTT topic is the topic path itself (EMQX's
// CoAP gateway does the same). A CON publish that queued a QoS >= 1 message is answered
// 2.04 only once the outbox has it on disk (an empty ACK first, then a separate response).
#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <utility>

#include "bridge/glob.h"
#include "bridge/inbound.h"
#include "gateway/coap_link.h"
#include "gateway/config.h"
#include "gateway/events.h"
#include "gateway/pubsub_queue.h"
#include "gateway/repeated_failure.h"
#include "gateway/timers.h"
#include "gateway/values.h"

namespace coap2mqtt::gateway {

class Devices;
class MqttLink;

class PubSub {
 public:
  // Counted refusals and what went through; bridge/info "dropped" and /metrics show them.
  struct Counters {
    std::uint64_t published = 0;   // publishes taken (routed or on their own topic)
    std::uint64_t denied = 0;      // 4.03: no [[inbound]] entry allows it
    std::uint64_t bad_path = 0;    // 4.00: wildcards, empty levels, '..', not UTF-8...
    std::uint64_t too_large = 0;   // 4.13: beyond ps_max_payload, or a Block1 upload
    std::uint64_t slots_full = 0;  // 5.03: kMaxSlots (device, path) pairs already held
    // Outbound (GET, observe, queue mode):
    std::uint64_t topics_full = 0;     // MQTT messages of topics beyond kMaxTopics, not kept
    std::uint64_t notify_dropped = 0;  // beyond kMaxPending waiting for observers (oldest)
    std::uint64_t queue_dropped = 0;   // beyond ps_queue for a sleeping device (oldest)
    std::uint64_t queue_expired = 0;   // older than ps_queue_expiry when their device asked
  };
  // What each (device, topic path) keeps between publishes (only_changes, min_interval).
  static constexpr std::size_t kMaxSlots = 4096;
  static constexpr std::size_t kMaxSlotsPerDevice = 64;
  // Outbound: topics whose last message is kept (and observed), queues of sleeping devices,
  // messages waiting for a topic's observers, and the gap between two notifications.
  static constexpr std::size_t kMaxTopics = 1024;
  static constexpr std::size_t kMaxQueues = 1024;
  static constexpr std::size_t kMaxPending = 64;
  static constexpr std::chrono::milliseconds kNotifyGap{20};

  PubSub(const GatewayConfig& config, Timers& timers, CoapLink& coap, MqttLink& mqtt,
         Devices& devices, ValuePublisher& values, Events& events);

  // Serves /<ps_root> and below on the listeners (when there are any and ps_root is set).
  void serve();
  const Counters& counters() const;
  // Subscribes to what [[inbound]] entries let devices GET (call again after a reload).
  void subscribe();
  // Every MQTT message (the gateway's one handler): kept when a device may GET its topic.
  void onMessage(const std::string& topic, const std::string& payload, bool retained);

  // Who sent `r`: its DTLS identity (PSK identity or certificate name, when a valid device
  // name), else the device registered
  // or configured at the request's host, else the name derived from the host
  // ("coap-127-0-0-5": the port is left out, a sleepy device's changes with every wake-up).
  std::string senderName(const CoapServerRequest& r) const;

 private:
  CoapServerResponse onRequest(const CoapServerRequest& r);
  CoapServerResponse publish(const CoapServerRequest& r, const std::string& device,
                             const std::string& topic_path, const bridge::InboundRule& rule);
  ValueSlot* slotFor(const std::string& device, const std::string& path,
                     std::optional<unsigned> content_format);
  // The sender as a device: one never seen before joins (source "pushed", within
  // [coap.limits]); each publish says it is alive. False when [coap.limits] refuses it.
  bool heard(const CoapServerRequest& r, const std::string& name);
  // Outbound (pubsub_outbound.cpp).
  struct Topic {
    std::string last;  // the newest message (plain GET)
    bool have_last = false;
    std::string current;  // the one observers were last told of
    bool have_current = false;
    std::deque<std::string> pending;  // for observers, oldest first
    Timers::TimerId pump = 0;
    std::vector<std::string> queued_for;  // devices with a queue for this topic
  };
  CoapServerResponse get(const CoapServerRequest& r, const std::string& device,
                         const std::string& topic_path);
  CoapServerResponse queueGet(const std::string& device, const std::string& topic_path);
  Topic* topic(const std::string& topic_path);  // found or made; nullptr past kMaxTopics
  void pumpOne(const std::string& topic_path);
  CoapServerResponse refuse(unsigned code, std::uint64_t& counter, const CoapServerRequest& r,
                            const std::string& why);

  const GatewayConfig& config_;
  std::vector<bridge::Glob> identity_names_;  // see the constructor
  Timers& timers_;
  CoapLink& coap_;
  MqttLink& mqtt_;
  Devices& devices_;
  ValuePublisher& values_;
  Counters counters_;
  // (device, "/topic/path") -> what the rules remember; dropped when the rules change.
  struct Slot {
    std::unique_ptr<ValueSlot> value;
    std::optional<unsigned> ct;  // the rules in value->rules were matched with this ct
  };
  std::map<std::pair<std::string, std::string>, Slot> slots_;
  std::map<std::string, std::size_t, std::less<>> slots_per_device_;
  RepeatedFailure refusal_log_;  // one line per interval for a flood of refusals
  RepeatedFailure add_log_;      // devices that could not be added
  std::map<std::string, Topic, std::less<>> topics_;
  std::map<std::pair<std::string, std::string>, MessageQueue> queues_;  // (device, topic)
  mutable Counters totals_;  // counters_ plus the queues' drops
};

}  // namespace coap2mqtt::gateway
