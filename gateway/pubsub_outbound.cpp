// PubSub, the way out to devices (issue 20): GET /ps/<topic> answers the last message seen or
// retained on the MQTT topic <topic> (4.04 if none), GET with Observe subscribes the device to
// it (each MQTT message a notification, in order; NON with every fifth CON, as libcoap does for
// RFC 7641 §4.5; ended by deregistration, RST or the device going quiet, which libcoap sees),
// and GET ?queue hands a sleeping device what was published since it last asked, one message
// per GET, oldest first (4.04 when none is left; the first such GET starts the queue).
#include <algorithm>

#include <spdlog/spdlog.h>

#include "gateway/mqtt_link.h"
#include "gateway/pubsub.h"

namespace coap2mqtt::gateway {
namespace {

CoapServerResponse reply(unsigned code, std::string payload = {}) {
  CoapServerResponse res;
  res.code = code;
  res.payload = std::move(payload);
  return res;
}

bool hasQueueQuery(const CoapServerRequest& r) {
  return std::find(r.query.begin(), r.query.end(), "queue") != r.query.end();
}

}  // namespace

const PubSub::Counters& PubSub::counters() const {
  totals_ = counters_;
  for (const auto& [key, q] : queues_) {
    totals_.queue_dropped += q.dropped();
    totals_.queue_expired += q.expired();
  }
  return totals_;
}

void PubSub::subscribe() {
  if (config_.coap.listen.empty() || config_.coap.pubsub.root.empty()) return;
  std::vector<std::string> filters;
  for (const bridge::InboundRule& rule : config_.rules.inbound) {
    if (!rule.get) continue;
    std::string filter = bridge::mqttFilterFor(rule.allow_path);
    if (std::find(filters.begin(), filters.end(), filter) == filters.end()) {
      filters.push_back(std::move(filter));
    }
  }
  for (const std::string& f : filters) mqtt_.subscribe(f, 1);
}

PubSub::Topic* PubSub::topic(const std::string& topic_path) {
  if (auto it = topics_.find(topic_path); it != topics_.end()) return &it->second;
  if (topics_.size() >= kMaxTopics) {
    ++counters_.topics_full;
    return nullptr;
  }
  return &topics_[topic_path];
}

void PubSub::onMessage(const std::string& topic_path, const std::string& payload, bool retained) {
  if (config_.rules.inbound.empty()) return;
  const std::string path = "/" + topic_path;
  const bool wanted = std::any_of(
      config_.rules.inbound.begin(), config_.rules.inbound.end(),
      [&](const bridge::InboundRule& rule) { return rule.get && rule.allow_path.matches(path); });
  if (!wanted) return;
  if (payload.size() > config_.coap.pubsub.max_payload) {
    ++counters_.too_large;
    return;
  }
  Topic* t = topic(topic_path);
  if (t == nullptr) return;
  t->last = payload;
  t->have_last = true;
  // A retained message comes because we (re)subscribed: the topic's state, not news.
  if (retained) return;
  const auto now = std::chrono::steady_clock::now();
  for (const std::string& device : t->queued_for) {
    if (auto q = queues_.find({device, topic_path}); q != queues_.end()) {
      q->second.push(payload, now);
    }
  }
  if (!coap_.serves(config_.coap.pubsub.root + "/" + topic_path)) return;
  if (t->pending.size() >= kMaxPending) {
    t->pending.pop_front();
    ++counters_.notify_dropped;
  }
  t->pending.push_back(payload);
  if (t->pump == 0) pumpOne(topic_path);
}

// One message to the topic's observers, then a gap before the next, so that each one is
// notified (libcoap tells observers of the resource's state, not of every change).
void PubSub::pumpOne(const std::string& topic_path) {
  auto it = topics_.find(topic_path);
  if (it == topics_.end()) return;
  Topic& t = it->second;
  t.pump = 0;
  if (t.pending.empty()) return;
  t.current = std::move(t.pending.front());
  t.pending.pop_front();
  t.have_current = true;
  coap_.notifyObservers(config_.coap.pubsub.root + "/" + topic_path);
  t.pump = timers_.runAfter(kNotifyGap, [this, topic_path] { pumpOne(topic_path); });
}

CoapServerResponse PubSub::get(const CoapServerRequest& r, const std::string& device,
                               const std::string& topic_path) {
  if (hasQueueQuery(r)) return queueGet(device, topic_path);
  const std::string resource = config_.coap.pubsub.root + "/" + topic_path;
  if (r.observe && *r.observe == 0) {
    if (!coap_.serves(resource)) {
      // libcoap registers observers only on a resource of their own: made now, and the
      // request handled again by it.
      if (topic(topic_path) == nullptr) {
        return refuse(503, counters_.slots_full, r, "too many topics observed; try later");
      }
      coap_.serveObservable(resource,
                            [this](const CoapServerRequest& req) { return onRequest(req); });
      spdlog::debug("coap: /{} observed by {}", resource, device);
      CoapServerResponse res;
      res.redispatch = true;
      return res;
    }
    // The registration, and each notification: what observers were last told of.
    const Topic* t = topic(topic_path);
    CoapServerResponse res = reply(205);
    if (t != nullptr && t->have_current) {
      res.payload = t->current;
    } else if (t != nullptr && t->have_last) {
      res.payload = t->last;
    }
    return res;
  }
  auto it = topics_.find(topic_path);
  if (it == topics_.end() || !it->second.have_last) return reply(404);
  return reply(205, it->second.last);
}

CoapServerResponse PubSub::queueGet(const std::string& device, const std::string& topic_path) {
  auto key = std::make_pair(device, topic_path);
  auto q = queues_.find(key);
  if (q == queues_.end()) {
    Topic* t = topic(topic_path);
    if (t == nullptr || queues_.size() >= kMaxQueues) {
      ++counters_.slots_full;
      return reply(503, "too many queues; try later");
    }
    queues_.emplace(key, MessageQueue(config_.coap.pubsub.queue,
                                      std::chrono::duration_cast<MessageQueue::Clock::duration>(
                                          config_.coap.pubsub.queue_expiry)));
    t->queued_for.push_back(device);
    spdlog::debug("coap: {} queues /{}/{}", device, config_.coap.pubsub.root, topic_path);
    return reply(404);  // nothing yet: what comes from now on waits for it
  }
  if (auto message = q->second.pop(std::chrono::steady_clock::now())) {
    return reply(205, std::move(*message));
  }
  return reply(404);
}

}  // namespace coap2mqtt::gateway
