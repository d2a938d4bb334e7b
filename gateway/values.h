#pragma once
// Where a notification becomes a publish: a watched resource's value goes through the
// rules that want it (bridge::route: topic template, payload transform, min_interval,
// only_changes) and out to MQTT. One ValueSlot per watched resource keeps what the rules
// remember between values.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "bridge/bridge.h"
#include "gateway/config.h"
#include "gateway/events.h"
#include "gateway/timers.h"

namespace coap2mqtt::gateway {

class MqttLink;

// One watched resource as the publishing side sees it. Owned by the Observer (one per
// watch, carried over when a watch is restarted); its flush timer ends with it.
struct ValueSlot {
  ValueSlot(Timers& timers, std::string device, std::string path)
      : timers(timers), device(std::move(device)), path(std::move(path)) {}
  ~ValueSlot() {
    if (flush_timer != 0) timers.cancel(flush_timer);
  }
  ValueSlot(const ValueSlot&) = delete;
  ValueSlot& operator=(const ValueSlot&) = delete;

  Timers& timers;
  const std::string device;
  const std::string path;
  std::string rt;                   // first rt, for {rt}
  std::vector<std::size_t> rules;   // indices into RuleSet::rules
  bridge::RouteState route_state;   // min_interval / only_changes of its rules
  Timers::TimerId flush_timer = 0;  // publishes what min_interval held back
  // The latest value received (not necessarily published), for a reload that drops what
  // min_interval held back under the old rules.
  std::string last_value;
  std::optional<unsigned> last_ct;
  std::int64_t last_time_ms = 0;
  bool have_value = false;
  bool reroute = false;  // route last_value again under the new rules (reload)
};

class ValuePublisher {
 public:
  ValuePublisher(const GatewayConfig& config, Timers& timers, MqttLink& mqtt, Events& events);

  // A value of the slot's resource: routed now (ValueReceived calls it).
  void publish(ValueSlot& slot, std::optional<unsigned> content_format, const std::string& payload);

  // Reload, before the rules change: forgets what min_interval holds back (it was routed
  // with the old rules; the held-back messages carry the old topics, qos and retain) and
  // marks the slot for routing its latest value again. Slots with nothing held back keep
  // their state.
  void dropHeldBack(ValueSlot& slot);
  // Reload, after the rules changed and the watches were re-planned: the latest value of a
  // marked slot goes through the new rules that rate-limit (the others published it).
  void reroute(ValueSlot& slot);
  // After a slot was carried over to a new watch: re-arms what it holds back.
  void armFlush(ValueSlot& slot);

  const bridge::RouteStats& stats() const { return stats_; }

 private:
  void route(ValueSlot& slot, const std::vector<std::size_t>& rule_indices);
  void send();

  const GatewayConfig& config_;
  Timers& timers_;
  MqttLink& mqtt_;
  bridge::RouteStats stats_;
  std::vector<bridge::Publish> scratch_;  // reused per value: no allocation churn
};

}  // namespace coap2mqtt::gateway
