#pragma once
// One model of how the gateway is doing, which every surface reads: bridge/info and the
// admin API's info and health_check, the periodic stats log line, the Prometheus endpoint
// (gateway/metrics.h).
// snapshot() gathers the components' counters; the JSON renderings are fixed by the README.
#include <array>
#include <chrono>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "gateway/coap_link.h"
#include "gateway/command_queue.h"
#include "gateway/config.h"
#include "gateway/observer.h"
#include "gateway/service_notifier.h"

namespace coap2mqtt::gateway {

class AdminApi;
class CommandRouter;
class Devices;
class MqttLink;
class MulticastSource;
class PubSub;
class RdSource;
class ValuePublisher;

struct StatsSnapshot {
  std::size_t devices = 0;
  std::size_t devices_online = 0;
  std::size_t observations = 0;
  std::int64_t uptime_s = 0;
  CoapStats coap;
  Observer::Counters observe;
  std::vector<std::pair<std::string, Observer::Counters>> per_device;
  std::uint64_t published = 0;
  std::array<std::uint64_t, 3> published_by_qos{};  // published, by the rule's QoS
  std::uint64_t bad_payload = 0;
  std::uint64_t bad_topic = 0;
  std::uint64_t commands_refused = 0;
  std::uint64_t rd_refused = 0;
  std::uint64_t bad_response_topic = 0;  // MQTT 5 Response Topics we would not publish to  // RD
                                         // requests against the security policy
  std::uint64_t device_limit = 0;        // devices refused by [coap.limits]
  std::uint64_t discovery_answers = 0;   // multicast answers beyond a round's bound
  // Datagrams the kernel dropped on our UDP sockets, their receive buffer full (udp_drops.h).
  std::uint64_t udp_receive_buffer = 0;
  CommandQueue::Stats commands;
  // Issue 17: what hostile or careless MQTT clients cost us.
  std::vector<std::pair<std::string, std::uint64_t>> commands_refused_by_reason;
  std::uint64_t retained_command = 0;   // retained commands and admin requests, not run
  std::uint64_t admin_refused = 0;      // admin API off, or the op not in [admin] allow
  std::uint64_t command_no_result = 0;  // refusals with no valid topic to answer on
  std::uint64_t publish_invalid_topic = 0;
  std::uint64_t publish_too_large = 0;
  std::uint64_t broker_disconnect = 0;
  std::uint64_t mqtt_incoming_full = 0;
  bool mqtt_connected = false;
  std::uint64_t mqtt_connects = 0;  // successful connects, the first one included
  std::uint64_t mqtt_publish_failed = 0;
  std::uint64_t mqtt_delivered = 0;
  std::uint64_t mqtt_qos0_dropped = 0;
  std::size_t outbox = 0;
  std::uint64_t outbox_dropped = 0;
  std::uint64_t outbox_write_failures = 0;
  // /ps (issue 20): publishes taken, and refused by reason (gateway/pubsub.h).
  std::uint64_t ps_published = 0;
  std::uint64_t ps_denied = 0;
  std::uint64_t ps_bad_path = 0;
  std::uint64_t ps_too_large = 0;
  std::uint64_t ps_slots_full = 0;
  std::uint64_t ps_topics_full = 0;
  std::uint64_t ps_notify_dropped = 0;
  std::uint64_t ps_queue_dropped = 0;
  std::uint64_t ps_queue_expired = 0;
};

// Every reason a message, request or answer is dropped, with its count: bridge/info's
// "dropped" object and coap2mqtt_dropped_total{reason=...} both come from this one list.
std::vector<std::pair<const char*, std::uint64_t>> droppedByReason(const StatsSnapshot& s);

class Stats {
 public:
  using Json = nlohmann::json;

  Stats(const GatewayConfig& config, const Devices& devices, const Observer& observer,
        const ValuePublisher& values, const CommandRouter& commands, const RdSource& rd,
        const MulticastSource& multicast, const CoapLink& coap, const MqttLink& mqtt,
        const AdminApi& admin);

  // /ps, built after the Stats: set once it exists.
  void setPubSub(const PubSub& pubsub) { pubsub_ = &pubsub; }

  StatsSnapshot snapshot() const;
  // The few counts systemd's STATUS= shows, read every few seconds (no per-device lists).
  ServiceStatus serviceStatus() const;

  // bridge/info "stats" and the log line
  static Json statsJson(const StatsSnapshot& s);
  // bridge/info, admin "info"
  Json infoJson() const;
  // admin "health_check"
  static Json healthJson(const StatsSnapshot& s);

 private:
  const GatewayConfig& config_;
  const Devices& devices_;
  const Observer& observer_;
  const ValuePublisher& values_;
  const CommandRouter& commands_;
  const RdSource& rd_;
  const MulticastSource& multicast_;
  const CoapLink& coap_;
  const MqttLink& mqtt_;
  const AdminApi& admin_;
  const PubSub* pubsub_ = nullptr;
  const std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
  // udpDropsOfThisProcess() asks each of our sockets (10,000 at 10,000 devices): at most every 5 s.
  mutable std::uint64_t udp_drops_ = 0;
  mutable std::chrono::steady_clock::time_point udp_drops_at_{};
};

}  // namespace coap2mqtt::gateway
