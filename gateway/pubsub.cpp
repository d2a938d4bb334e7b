#include "gateway/pubsub.h"

#include <spdlog/spdlog.h>

#include "bridge/bridge.h"
#include "gateway/device_credentials.h"
#include "gateway/device_names.h"
#include "gateway/devices.h"
#include "gateway/mqtt_link.h"
#include "registry/registry.h"

namespace coap2mqtt::gateway {
namespace {

CoapServerResponse answer(unsigned code, std::string text = {}) {
  CoapServerResponse res;
  res.code = code;
  res.payload = std::move(text);
  if (!res.payload.empty()) res.content_format = 0;  // text/plain: a diagnostic payload
  return res;
}

std::optional<bridge::InboundMethod> inboundMethod(bridge::Method m) {
  switch (m) {
    case bridge::Method::Post:
      return bridge::InboundMethod::Post;
    case bridge::Method::Put:
      return bridge::InboundMethod::Put;
    case bridge::Method::Get:
      return bridge::InboundMethod::Get;
    case bridge::Method::Delete:
      return std::nullopt;
  }
  return std::nullopt;
}

}  // namespace

PubSub::PubSub(const GatewayConfig& config, Timers& timers, CoapLink& coap, MqttLink& mqtt,
               Devices& devices, ValuePublisher& values, Events& events)
    : config_(config),
      timers_(timers),
      coap_(coap),
      mqtt_(mqtt),
      devices_(devices),
      values_(values) {
  // Names a DTLS identity speaks for (its `endpoints`, which include the identity itself
  // unless it names others, and the identity itself): never taken by a sender over plain CoAP.
  for (ListenerClient& client : listenerClients(config_.coap)) {
    for (bridge::Glob& glob : client.endpoints) identity_names_.push_back(std::move(glob));
    std::string error;  // checked when the configuration was loaded
    if (auto own = bridge::Glob::compile(client.name, bridge::Glob::Kind::Name, &error)) {
      identity_names_.push_back(std::move(*own));
    }
  }
  // What the old rules matched (and held back) is forgotten with them.
  events.on<RulesReplaced>([this](const RulesReplaced&) {
    slots_.clear();
    slots_per_device_.clear();
  });
}

void PubSub::serve() {
  const std::string& root = config_.coap.pubsub.root;
  if (config_.coap.listen.empty() || root.empty()) return;
  // The root itself: what /.well-known/core advertises (draft-ietf-core-coap-pubsub).
  coap_.serve(root, {{"rt", "\"core.ps\""}, {"ct", "40"}}, [](const CoapServerRequest& r) {
    if (r.method != bridge::Method::Get) return answer(405);
    CoapServerResponse res;
    res.code = 205;
    res.content_format = 40;
    return res;
  });
  coap_.servePrefix(root, [this](const CoapServerRequest& r) { return onRequest(r); });
  spdlog::info("coap: /{} serves publishes of devices ({} [[inbound]] entr{})", root,
               config_.rules.inbound.size(), config_.rules.inbound.size() == 1 ? "y" : "ies");
}

std::string PubSub::senderName(const CoapServerRequest& r) const {
  if (!r.psk_identity.empty() && isValidDeviceName(r.psk_identity)) return r.psk_identity;
  if (!r.cert_name.empty() && isValidDeviceName(r.cert_name)) return r.cert_name;
  const registry::Registry& reg = devices_.registry();
  // Over plain CoAP (a source address anyone on the LAN can forge) the sender never takes
  // the name of a device reached over DTLS, nor a name a DTLS identity speaks for.
  const bool plain = r.source.rfind("coaps://", 0) != 0;
  const auto may = [&](const registry::Device& d) {
    if (!plain) return true;
    if (d.uri.rfind("coaps://", 0) == 0) return false;
    for (const bridge::Glob& glob : identity_names_) {
      if (glob.matches(d.name)) return false;
    }
    return true;
  };
  if (const registry::Device* d = reg.findByUri(r.source); d != nullptr && may(*d)) return d->name;
  const std::string host = registry::uriHost(r.source);
  // The one device the registry holds at that host (an RD registration names its port,
  // which a sleepy device's publishes need not come from).
  // (A walk of the registry, but only for a host that has a device, once per publish of a
  // device with a registration: the common sleepy device publishes from where it registered
  // or from a host with no registration at all.)
  if (reg.countAtHost(host) == 1) {
    for (const registry::Device* d : reg.all()) {
      if (registry::uriHost(d->uri) == host && may(*d)) return d->name;
    }
  }
  return deviceNameForAddress(host, 5683);
}

CoapServerResponse PubSub::refuse(unsigned code, std::uint64_t& counter, const CoapServerRequest& r,
                                  const std::string& why) {
  ++counter;
  if (refusal_log_.failed(RepeatedFailure::Clock::now())) {
    spdlog::warn("coap: {} {} from {} refused ({}.{:02}: {}){}", bridge::toString(r.method),
                 r.path.substr(0, 300), r.source, code / 100, code % 100, why,
                 refusal_log_.unreported() > 1
                     ? fmt::format("; {} refusals since the last line", refusal_log_.unreported())
                     : std::string());
    refusal_log_.reported();
  }
  return answer(code, why);
}

CoapServerResponse PubSub::onRequest(const CoapServerRequest& r) {
  // segments[0] is the root.
  std::vector<std::string> levels(r.segments.begin() + (r.segments.empty() ? 0 : 1),
                                  r.segments.end());
  std::string error;
  const auto topic_path = bridge::psTopicPath(levels, &error);
  if (!topic_path) return refuse(400, counters_.bad_path, r, error);
  const auto method = inboundMethod(r.method);
  if (!method) return answer(405);
  // Bounds before any work (a Block1 upload comes here whole, put together by the link).
  // (GET is handled above; a publish is POST or PUT.)
  if (r.payload.size() > config_.coap.pubsub.max_payload) {
    CoapServerResponse res =
        refuse(413, counters_.too_large, r,
               "payload larger than " + std::to_string(config_.coap.pubsub.max_payload) + " bytes");
    return res;
  }
  const std::string device = senderName(r);
  const std::string path = "/" + *topic_path;
  if (*method == bridge::InboundMethod::Get) {
    if (bridge::findInbound(config_.rules.inbound, device, path, *method) == nullptr) {
      return refuse(403, counters_.denied, r,
                    "no [[inbound]] entry allows GET of " + path + " by " + device);
    }
    return get(r, device, *topic_path);
  }
  const bridge::InboundRule* rule =
      bridge::findInbound(config_.rules.inbound, device, path, *method);
  if (rule == nullptr) {
    return refuse(403, counters_.denied, r,
                  "no [[inbound]] entry allows " + std::string(bridge::toString(*method)) + " of " +
                      path + " by " + device);
  }
  // The gateway's own topics and the broker's are nobody's to publish on.
  const std::string& base = config_.mqtt.base_topic;
  if (topic_path->front() == '$' || *topic_path == base + "/bridge" ||
      topic_path->rfind(base + "/bridge/", 0) == 0) {
    return refuse(403, counters_.denied, r, "reserved topic");
  }
  if (!heard(r, device)) return answer(503, "device limit reached");
  return publish(r, device, *topic_path, *rule);
}

bool PubSub::heard(const CoapServerRequest& r, const std::string& name) {
  if (devices_.registry().find(name) == nullptr) {
    if (!devices_.admits(r.source, "pushed")) return false;  // counted: device_limit
    registry::Device d;
    d.name = name;
    d.uri = r.source;
    d.source = registry::Source::Pushed;
    std::string error;
    if (devices_.add(std::move(d), &error) == nullptr) {
      // (A coaps:// sender the gateway holds no credentials for: its publishes still count.)
      if (add_log_.failed(RepeatedFailure::Clock::now())) {
        spdlog::warn("coap: {} publishes as {} but is not added as a device: {}", r.source, name,
                     error);
        add_log_.reported();
      }
      return true;
    }
  }
  devices_.heard(name);
  return true;
}

ValueSlot* PubSub::slotFor(const std::string& device, const std::string& path,
                           std::optional<unsigned> content_format) {
  auto key = std::make_pair(device, path);
  auto it = slots_.find(key);
  if (it == slots_.end()) {
    auto& per_device = slots_per_device_[device];
    if (slots_.size() >= kMaxSlots || per_device >= kMaxSlotsPerDevice) {
      if (per_device == 0) slots_per_device_.erase(device);
      return nullptr;
    }
    ++per_device;
    Slot slot;
    slot.value = std::make_unique<ValueSlot>(timers_, device, path);
    it = slots_.emplace(std::move(key), std::move(slot)).first;
    it->second.ct = content_format;
    it->second.value->rules.clear();
  } else if (it->second.ct == content_format) {
    return it->second.value.get();
  }
  // The rules that want (device, path) with this Content-Format, matched once per change.
  Slot& slot = it->second;
  slot.ct = content_format;
  slot.value->rules.clear();
  registry::Device d;
  if (const registry::Device* known = devices_.registry().find(device)) d = *known;
  d.name = device;
  registry::Resource resource;
  resource.path = path;
  if (content_format) resource.ct.push_back(*content_format);
  for (std::size_t i = 0; i < config_.rules.rules.size(); ++i) {
    if (bridge::ruleMatches(config_.rules.rules[i], d, resource)) slot.value->rules.push_back(i);
  }
  return slot.value.get();
}

CoapServerResponse PubSub::publish(const CoapServerRequest& r, const std::string& device,
                                   const std::string& topic_path, const bridge::InboundRule& rule) {
  ValueSlot* slot = slotFor(device, "/" + topic_path, r.content_format);
  if (slot == nullptr) {
    return refuse(503, counters_.slots_full, r, "too many topics held; try later");
  }
  if (slot->rules.empty()) {
    // No rule routes it: the topic is the topic path itself (EMQX's CoAP gateway).
    mqtt_.publish(topic_path, r.payload, rule.qos, rule.retain);
  } else {
    values_.publish(*slot, r.content_format, r.payload);
  }
  ++counters_.published;
  CoapServerResponse res;
  res.code = 204;
  // A QoS >= 1 message now waits for the outbox's next commit: the 2.04 waits with it.
  res.after_release = mqtt_.flushPending();
  return res;
}

}  // namespace coap2mqtt::gateway
