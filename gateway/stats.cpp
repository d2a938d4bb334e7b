#include "gateway/stats.h"

#include "gateway/admin.h"
#include "gateway/command_router.h"
#include "gateway/devices.h"
#include "gateway/mqtt_link.h"
#include "gateway/multicast_source.h"
#include "gateway/pubsub.h"
#include "gateway/rd_source.h"
#include "gateway/udp_drops.h"
#include "gateway/values.h"

namespace coap2mqtt::gateway {

Stats::Stats(const GatewayConfig& config, const Devices& devices, const Observer& observer,
             const ValuePublisher& values, const CommandRouter& commands, const RdSource& rd,
             const MulticastSource& multicast, const CoapLink& coap, const MqttLink& mqtt,
             const AdminApi& admin)
    : config_(config),
      devices_(devices),
      observer_(observer),
      values_(values),
      commands_(commands),
      rd_(rd),
      multicast_(multicast),
      coap_(coap),
      mqtt_(mqtt),
      admin_(admin) {}

StatsSnapshot Stats::snapshot() const {
  StatsSnapshot s;
  s.devices = devices_.registry().size();
  s.devices_online = devices_.onlineCount();
  s.observations = observer_.observations();
  s.uptime_s =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - started_)
          .count();
  s.coap = coap_.stats();
  s.observe = observer_.totals();
  s.per_device = observer_.perDevice();
  const bridge::RouteStats& route = values_.stats();
  s.published = route.published;
  s.published_by_qos = route.published_by_qos;
  s.bad_payload = route.bad_payload;
  s.bad_topic = route.bad_topic;
  s.commands_refused = commands_.refused();
  s.rd_refused = rd_.refusedCount();
  s.bad_response_topic = commands_.badResponseTopics();
  s.device_limit = devices_.deviceLimitDrops();
  s.discovery_answers = multicast_.answersOverLimit();
  const auto now = std::chrono::steady_clock::now();
  if (udp_drops_at_ == std::chrono::steady_clock::time_point{} ||
      now - udp_drops_at_ >= std::chrono::seconds(5)) {
    udp_drops_ = udpDropsOfThisProcess();
    udp_drops_at_ = now;
  }
  s.udp_receive_buffer = udp_drops_;
  s.commands = commands_.stats();
  for (const auto& [reason, n] : commands_.refusedByReason()) {
    s.commands_refused_by_reason.emplace_back(reason, n);
  }
  s.retained_command = commands_.retainedIgnored() + admin_.retainedIgnored();
  s.admin_refused = admin_.refused();
  s.command_no_result = commands_.resultsUndeliverable();
  s.publish_invalid_topic = mqtt_.stats().invalid_topic.load();
  s.publish_too_large = mqtt_.stats().too_large.load();
  s.broker_disconnect = mqtt_.stats().broker_disconnects.load();
  s.mqtt_incoming_full = mqtt_.stats().incoming_queue_full.load();
  s.mqtt_connected = mqtt_.connected();
  s.mqtt_connects = mqtt_.stats().connects.load();
  s.mqtt_publish_failed = mqtt_.stats().publish_failed.load();
  s.mqtt_delivered = mqtt_.stats().delivered.load();
  s.mqtt_qos0_dropped = mqtt_.stats().qos0_dropped.load();
  s.outbox = mqtt_.outboxSize();
  s.outbox_dropped = mqtt_.outboxStats().dropped;
  s.outbox_write_failures = mqtt_.stats().outbox_write_failures.load();
  if (pubsub_ != nullptr) {
    const PubSub::Counters& ps = pubsub_->counters();
    s.ps_published = ps.published;
    s.ps_denied = ps.denied;
    s.ps_bad_path = ps.bad_path;
    s.ps_too_large = ps.too_large;
    s.ps_slots_full = ps.slots_full;
    s.ps_topics_full = ps.topics_full;
    s.ps_notify_dropped = ps.notify_dropped;
    s.ps_queue_dropped = ps.queue_dropped;
    s.ps_queue_expired = ps.queue_expired;
  }
  return s;
}

ServiceStatus Stats::serviceStatus() const {
  ServiceStatus s;
  s.devices = devices_.registry().size();
  s.devices_online = devices_.onlineCount();
  s.observations = observer_.observations();
  s.mqtt_connected = mqtt_.connected();
  s.outbox = mqtt_.outboxSize();
  return s;
}

namespace {

Stats::Json refusedByReason(const StatsSnapshot& s) {
  Stats::Json out = Stats::Json::object();
  for (const auto& [reason, n] : s.commands_refused_by_reason) out[reason] = n;
  return out;
}

}  // namespace

std::vector<std::pair<const char*, std::uint64_t>> droppedByReason(const StatsSnapshot& s) {
  return {{"stale_notification", s.observe.stale},
          {"bad_payload", s.bad_payload},
          {"bad_topic", s.bad_topic},
          {"command_refused", s.commands_refused},
          {"rd_refused", s.rd_refused},
          {"bad_response_topic", s.bad_response_topic},
          {"retained_command", s.retained_command},
          {"admin_refused", s.admin_refused},
          {"command_no_result", s.command_no_result},
          {"publish_invalid_topic", s.publish_invalid_topic},
          {"publish_too_large", s.publish_too_large},
          {"broker_disconnect", s.broker_disconnect},
          {"mqtt_incoming_full", s.mqtt_incoming_full},
          {"device_limit", s.device_limit},
          {"body_too_large", s.coap.body_too_large},
          {"malformed_coap", s.coap.malformed},
          {"upload_refused", s.coap.block1_refused},
          {"udp_receive_buffer", s.udp_receive_buffer},
          {"discovery_answers", s.discovery_answers},
          {"ps_denied", s.ps_denied},
          {"ps_bad_path", s.ps_bad_path},
          {"ps_too_large", s.ps_too_large},
          {"ps_slots_full", s.ps_slots_full},
          {"ps_topics_full", s.ps_topics_full},
          {"ps_notify_dropped", s.ps_notify_dropped},
          {"ps_queue_dropped", s.ps_queue_dropped},
          {"ps_queue_expired", s.ps_queue_expired}};
}

Stats::Json Stats::statsJson(const StatsSnapshot& s) {
  const CoapStats& c = s.coap;
  Json dropped = Json::object();
  for (const auto& [reason, n] : droppedByReason(s)) dropped[reason] = n;
  return Json{{"devices", s.devices},
              {"devices_online", s.devices_online},
              {"observations", s.observations},
              {"coap",
               {{"requests", c.requests_sent},
                {"responses", c.responses},
                {"notifications", c.notifications},
                {"failures", c.failures},
                {"unknown_token", c.unknown_token},
                {"session_resets", c.session_resets},
                {"extra_acks", c.extra_acks},
                {"dtls_handshakes", c.dtls_handshakes},
                {"dtls_failures", c.dtls_failures},
                {"dtls_sessions_kept", c.dtls_sessions_kept}}},
              {"dropped", std::move(dropped)},
              {"commands",
               {{"submitted", s.commands.submitted},
                {"answered", s.commands.answered},
                {"failed", s.commands.failed},
                {"timed_out", s.commands.timed_out},
                {"queue_full", s.commands.queue_full},
                {"rate_limited", s.commands.rate_limited},
                {"refused", refusedByReason(s)}}},
              {"reregistrations", s.observe.reregistrations},
              {"published", s.published},
              {"ps_published", s.ps_published},
              {"mqtt",
               {{"publish_failed", s.mqtt_publish_failed},
                {"delivered", s.mqtt_delivered},
                {"qos0_dropped", s.mqtt_qos0_dropped},
                {"outbox", s.outbox},
                {"outbox_dropped", s.outbox_dropped},
                {"outbox_write_failures", s.outbox_write_failures}}}};
}

Stats::Json Stats::infoJson() const {
  const StatsSnapshot s = snapshot();
  Json per_device = Json::object();
  for (const auto& [name, c] : s.per_device) {
    per_device[name] = Json{{"notifications", c.notifications},
                            {"stale", c.stale},
                            {"reregistrations", c.reregistrations},
                            {"failures", c.failures}};
  }
  return Json{{"version", COAP2MQTT_VERSION},
              {"gateway", config_.name},
              {"rules", config_.rules.rules.size()},
              {"commands", config_.rules.commands.size()},
              {"inbound", config_.rules.inbound.size()},
              {"stats", statsJson(s)},
              {"per_device", std::move(per_device)}};
}

Stats::Json Stats::healthJson(const StatsSnapshot& s) {
  return Json{{"healthy", s.mqtt_connected},
              {"mqtt_connected", s.mqtt_connected},
              {"devices", s.devices},
              {"devices_online", s.devices_online},
              {"uptime_s", s.uptime_s}};
}

}  // namespace coap2mqtt::gateway
