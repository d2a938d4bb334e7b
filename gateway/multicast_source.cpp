#include "gateway/multicast_source.h"

#include <spdlog/spdlog.h>

#include "gateway/device_names.h"
#include "gateway/devices.h"
#include "gateway/event_loop.h"
#include "gateway/multicast_discovery.h"
#include "registry/link_format.h"

namespace coap2mqtt::gateway {

MulticastSource::MulticastSource(const GatewayConfig& config, EventLoop& loop, Devices& devices)
    : config_(config), loop_(loop), devices_(devices) {}

MulticastSource::~MulticastSource() = default;

void MulticastSource::start() {
  if (config_.coap.discovery.multicast.empty()) return;
  discovery_ = std::make_unique<MulticastDiscovery>(loop_, config_.coap.discovery.port);
  discovery_->setMaxAnswers(config_.coap.limits.max_answers_per_round);
  runRound(nullptr);
  scheduleRounds();
}

std::uint64_t MulticastSource::answersOverLimit() const {
  return discovery_ ? discovery_->stats().over_limit : 0;
}

void MulticastSource::scheduleRounds() {
  loop_.runAfter(config_.coap.discovery.interval, [this] {
    if (stopping_) return;
    runRound(nullptr);
    scheduleRounds();
  });
}

void MulticastSource::runRound(std::function<void(const std::vector<std::string>&)> done) {
  if (!discovery_) {
    if (done) done({});
    return;
  }
  std::vector<MulticastDiscovery::Target> targets;
  const auto& d = config_.coap.discovery;
  for (const auto& group : d.multicast) {
    if (d.interfaces.empty()) {
      targets.push_back({group, ""});
    } else {
      for (const auto& ifname : d.interfaces) targets.push_back({group, ifname});
    }
  }
  auto answered = std::make_shared<std::vector<std::string>>();
  const bool started = discovery_->start(
      targets, d.window, d.query,
      [this, answered](const DiscoveryAnswer& a) {
        std::string name = onAnswer(a);
        if (!name.empty()) answered->push_back(std::move(name));
      },
      [this, answered, done](std::size_t count) {
        spdlog::info("discovery: {} device(s) answered", count);
        devices_.flushStore();
        if (done) done(*answered);
      });
  if (!started && done) done({});
}

std::string MulticastSource::onAnswer(const DiscoveryAnswer& answer) {
  // [[coap.credentials]] may say that the device is reached over DTLS (on another port): the
  // name made from its address chooses the entry.
  const DeviceReach reach =
      devices_.reach(deviceNameForAddress(answer.host, answer.port), answer.uri);
  std::string name = devices_.nameForUri(reach.uri);  // one device per endpoint, however spelt
  if (const registry::Device* known = devices_.registry().find(name);
      known != nullptr && known->source != registry::Source::Multicast) {
    // A configured device's resources come from its own /.well-known/core, a registered
    // one's from its registration: a multicast answer, which anyone can forge with the
    // device's source address, changes neither (nor vouches that it is alive).
    return name;
  }
  auto links =
      answer.complete ? registry::parseLinkFormat(answer.payload) : registry::LinkFormatResult{};
  const bool usable = answer.complete && links.ok();
  if (name.empty()) {
    if (!devices_.admits(answer.uri, "multicast")) return {};
    registry::Device d;
    d.name = devices_.uniqueName(deviceNameForAddress(answer.host, answer.port));
    d.uri = reach.uri;
    d.source = registry::Source::Multicast;
    if (usable) d.resources = resourcesFrom(links.links);
    name = d.name;
    std::string error;
    if (devices_.add(std::move(d), &error, reach.credentials) == nullptr) {
      spdlog::warn("discovery: {}: {}", reach.uri, error);
      return name;
    }
    spdlog::info("discovery: new device {} at {}", name, reach.uri);
  }
  devices_.heard(name);
  if (usable) {
    devices_.updateResources(name, resourcesFrom(links.links), false);
  } else {
    devices_.discover(name);  // partial (Block2) or unparsable answer: ask the device directly
  }
  return name;
}

}  // namespace coap2mqtt::gateway
