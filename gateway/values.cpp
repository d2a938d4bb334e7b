#include "gateway/values.h"

#include <chrono>

#include <spdlog/spdlog.h>

#include "gateway/coap_link.h"
#include "gateway/mqtt_link.h"

namespace coap2mqtt::gateway {
namespace {

std::int64_t nowEpochMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

ValuePublisher::ValuePublisher(const GatewayConfig& config, Timers& timers, MqttLink& mqtt,
                               Events& events)
    : config_(config), timers_(timers), mqtt_(mqtt) {
  events.on<ValueReceived>([this](const ValueReceived& v) {
    publish(v.slot, v.response.content_format, v.response.payload);
  });
}

void ValuePublisher::publish(ValueSlot& slot, std::optional<unsigned> content_format,
                             const std::string& payload) {
  slot.last_value.assign(payload);
  slot.last_ct = content_format;
  slot.last_time_ms = nowEpochMs();
  slot.have_value = true;
  route(slot, slot.rules);
}

// Routes the slot's latest value to `rule_indices` and publishes what comes out now.
void ValuePublisher::route(ValueSlot& slot, const std::vector<std::size_t>& rule_indices) {
  bridge::Notification n{slot.device, slot.path, slot.last_ct, slot.last_value, slot.rt};
  n.time_ms = slot.last_time_ms;
  scratch_.clear();
  const auto bad_before = stats_.bad_payload + stats_.bad_topic;
  bridge::route(config_.rules, config_.name, rule_indices, n, scratch_, stats_, &slot.route_state);
  if (stats_.bad_payload + stats_.bad_topic != bad_before) {
    spdlog::warn("{}{}: value dropped: {}", slot.device, slot.path, stats_.last_error);
  }
  send();
  armFlush(slot);
}

void ValuePublisher::send() {
  for (const auto& p : scratch_) mqtt_.publish(p.topic, p.payload, p.qos, p.retain);
}

// min_interval holds values back; the latest one goes out when its interval ends.
void ValuePublisher::armFlush(ValueSlot& slot) {
  const auto due = slot.route_state.nextDue();
  if (!due) return;
  if (slot.flush_timer != 0) timers_.cancel(slot.flush_timer);
  const auto wait = std::chrono::milliseconds(std::max<std::int64_t>(0, *due - nowEpochMs()));
  slot.flush_timer = timers_.runAfter(wait, [this, &slot] {
    slot.flush_timer = 0;
    scratch_.clear();
    slot.route_state.flushDue(nowEpochMs(), scratch_, stats_);
    send();
    armFlush(slot);
  });
}

void ValuePublisher::dropHeldBack(ValueSlot& slot) {
  if (!slot.route_state.nextDue()) return;
  if (slot.flush_timer != 0) timers_.cancel(slot.flush_timer);
  slot.flush_timer = 0;
  slot.route_state.clear();
  slot.reroute = true;
}

void ValuePublisher::reroute(ValueSlot& slot) {
  if (!slot.reroute) return;
  slot.reroute = false;
  if (!slot.have_value) return;
  std::vector<std::size_t> limited;
  for (std::size_t index : slot.rules) {
    if (config_.rules.rules[index].min_interval.count() > 0) limited.push_back(index);
  }
  if (!limited.empty()) route(slot, limited);
}

}  // namespace coap2mqtt::gateway
