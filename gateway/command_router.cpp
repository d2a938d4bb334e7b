#include "gateway/command_router.h"

#include <algorithm>

#include <spdlog/spdlog.h>

#include "bridge/topic_template.h"
#include "gateway/coap_link.h"
#include "gateway/commands.h"
#include "gateway/devices.h"
#include "gateway/event_loop.h"
#include "gateway/mqtt_link.h"

namespace coap2mqtt::gateway {

CommandRouter::CommandRouter(const GatewayConfig& config, EventLoop& loop, CoapLink& coap,
                             MqttLink& mqtt, Devices& devices, Events& events)
    : config_(config), loop_(loop), coap_(coap), mqtt_(mqtt), devices_(devices), queue_(io()) {
  events.on<DeviceRemoved>(
      [this](const DeviceRemoved& e) { queue_.dropDevice(e.device.name, std::string(e.reason)); });
}

CommandQueue::Io CommandRouter::io() {
  CommandQueue::Io io;
  io.now = [] { return std::chrono::steady_clock::now(); };
  io.send = [this](const CommandRequest& r, CommandQueue::ReplyHandler reply) {
    return coap_.request(r.device, r.method, r.path, r.payload, r.content_format,
                         [reply = std::move(reply)](const std::optional<CoapResponse>& response,
                                                    const std::string& error) {
                           CommandReply out;
                           if (response) {
                             out.answered = true;
                             out.code = response->code;
                             out.content_format = response->content_format;
                             out.payload = response->payload;
                           } else {
                             out.error = error;
                           }
                           reply(out);
                         });
  };
  io.cancel = [this](std::uint64_t id) { coap_.cancelRequest(id); };
  io.runAfter = [this](std::chrono::milliseconds d, std::function<void()> f) {
    return loop_.runAfter(d, std::move(f));
  };
  io.cancelTimer = [this](std::uint64_t id) { loop_.cancel(id); };
  return io;
}

void CommandRouter::subscribe() {
  for (const auto& command : config_.rules.commands) {
    mqtt_.subscribe(command.topic.subscriptionFilter(), command.qos);
  }
}

// The result goes to the MQTT 5 Response Topic with its Correlation Data when the command
// had them, else to the rule's result topic.
bool CommandRouter::publishResult(const std::string& result_topic,
                                  const std::string& response_topic, const std::string& correlation,
                                  const std::string& payload, int qos) {
  const std::string& to = responseTopicUsable(response_topic) ? response_topic : result_topic;
  // A command topic with an empty level has no valid result topic.
  if (!bridge::isValidPublishTopic(to)) return false;
  mqtt_.publish(to, payload, qos, false, correlation);
  return true;
}

// A Response Topic is the sender's choice, so anyone's: one the broker refuses ('#') would
// cost us the connection, and one in our own namespace (<base>/...) would let a client
// make us publish onto bridge/state or into command topics. Such a result goes to the
// rule's result topic instead (counted as dropped.bad_response_topic).
bool CommandRouter::responseTopicUsable(const std::string& response_topic) {
  if (response_topic.empty()) return false;
  const std::string& base = config_.mqtt.base_topic;
  const bool ours = response_topic.compare(0, base.size(), base) == 0 &&
                    (response_topic.size() == base.size() || response_topic[base.size()] == '/');
  if (bridge::isValidPublishTopic(response_topic) && !ours) return true;
  ++bad_response_topics_;
  if (bad_response_log_.failed(std::chrono::steady_clock::now())) {
    spdlog::warn("command response topic refused ({} since the last report): {}",
                 bad_response_log_.unreported(),
                 ours ? "in the gateway's own namespace" : "not a valid publish topic");
    bad_response_log_.reported();
  }
  return false;
}

void CommandRouter::onMessage(const std::string& topic, const std::string& payload,
                              const MqttMessageMeta& meta) {
  handle(topic, payload, meta, nullptr);
}

void CommandRouter::submit(const std::string& topic, const std::string& payload, Done done) {
  handle(topic, payload, MqttMessageMeta{}, std::move(done));
}

void CommandRouter::handle(const std::string& topic, const std::string& payload,
                           const MqttMessageMeta& meta, Done done) {
  auto planned = planCommand(config_.rules, devices_.registry(), config_.name, topic, payload);
  if (!planned) {  // not a command topic (e.g. our own publications)
    if (done) done("");
    return;
  }
  if (meta.retained) {
    // The broker's stored copy, sent because we (re)subscribed: running it would act again
    // at every gateway start and reconnect.
    ++retained_ignored_;
    if (retained_log_.failed(std::chrono::steady_clock::now())) {
      spdlog::warn(
          "retained command on {} ignored ({} since the last report): commands must "
          "not be retained",
          topic, retained_log_.unreported());
      retained_log_.reported();
    }
    return;
  }
  if (auto* refused = std::get_if<RefusedCommand>(&*planned)) {
    refuse(topic, *refused, meta);
    if (done) done(commandRefusedJson(*refused));
    return;
  }
  auto& command = std::get<PlannedCommand>(*planned);
  spdlog::debug("command {} {}{} ({} bytes)", bridge::toString(command.request.method),
                command.request.device, command.request.path, command.request.payload.size());
  queue_.submit(
      std::move(command.request), command.limits,
      [this, context = std::move(command.context), response_topic = meta.response_topic,
       correlation = meta.correlation_data, done = std::move(done)](const CommandOutcome& outcome) {
        if (outcome.kind == CommandOutcome::Kind::Answered) {
          devices_.heard(context.device);
        } else if (RepeatedFailure& log = refused_log_[toString(outcome.kind)];
                   log.failed(std::chrono::steady_clock::now())) {
          // A flood against a rate limit or a full queue: one line per interval.
          spdlog::warn("command {} {}{}: {} ({} {} since the last report)",
                       bridge::toString(context.method), context.device, context.path,
                       outcome.error, log.unreported(), toString(outcome.kind));
          log.reported();
        }
        // Refused without CoAP traffic (rate limit, full queue): within the budget.
        const std::string result = commandResultJson(context, outcome);
        publishResult(context.result_topic, response_topic, correlation, result,
                      outcome.sent ? 1 : refusedResultQos());
        if (done) done(result);
      });
}

// Counted by reason, logged once per interval per reason (a flood of one kind does not
// hide another), answered: at QoS 1 within the refusal budget, else at QoS 0.
void CommandRouter::refuse(const std::string& topic, const RefusedCommand& refused,
                           const MqttMessageMeta& meta) {
  ++refused_;
  auto counted = refused_by_reason_.find(refused.reason);
  if (counted == refused_by_reason_.end()) {
    counted = refused_by_reason_.emplace(refused.reason, 0).first;
  }
  ++counted->second;
  RepeatedFailure& log = refused_log_[refused.reason];
  if (log.failed(std::chrono::steady_clock::now())) {
    spdlog::warn("command on {} refused ({} {} since the last report): {}", topic, log.unreported(),
                 refused.reason, refused.error);
    log.reported();
  }
  if (!publishResult(refused.context.result_topic, meta.response_topic, meta.correlation_data,
                     commandRefusedJson(refused), refusedResultQos())) {
    ++results_undeliverable_;
  }
}

int CommandRouter::refusedResultQos() {
  const auto now = std::chrono::steady_clock::now();
  const std::chrono::duration<double> elapsed = now - refused_tokens_at_;
  refused_tokens_at_ = now;
  refused_tokens_ =
      std::min(kRefusedResultsBurst, refused_tokens_ + elapsed.count() * kRefusedResultsPerSecond);
  if (refused_tokens_ < 1.0) return 0;
  refused_tokens_ -= 1.0;
  return 1;
}

void CommandRouter::read(CommandRequest get, std::function<void(const CommandOutcome&)> done) {
  CommandLimits limits;
  limits.timeout = config_.coap.request_timeout;
  const std::string device = get.device;
  queue_.submit(std::move(get), limits,
                [this, device, done = std::move(done)](const CommandOutcome& o) {
                  if (o.kind == CommandOutcome::Kind::Answered) devices_.heard(device);
                  done(o);
                });
}

}  // namespace coap2mqtt::gateway
