#include "gateway/gateway.h"

#include <csignal>
#include <map>

#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include "bridge/bridge.h"
#include "gateway/coap_link.h"
#include "gateway/event_loop.h"
#include "gateway/mqtt_link.h"
#include "registry/link_format.h"
#include "registry/registry.h"

namespace coap2mqtt::gateway {
namespace {

constexpr auto kShutdownFlush = std::chrono::milliseconds(300);

std::string stateJson(const char* state) {
  return nlohmann::json{{"state", state}}.dump();
}

registry::Resource toResource(const registry::Link& link, std::string path) {
  registry::Resource r;
  r.path = std::move(path);
  r.rt = link.rt;
  r.ifs = link.ifs;
  r.ct = link.ct;
  r.obs = link.obs;
  r.sz = link.sz;
  r.title = link.title;
  return r;
}

}  // namespace

struct Gateway::Impl {
  // One watched resource: its plan and its live observation or poll timer.
  struct WatchState {
    bridge::Watch watch;
    std::string rt;  // first rt, for {rt}
    CoapLink::ObserveId observe_id = 0;
    CoapLink::RequestId poll_request = 0;
    EventLoop::TimerId timer = 0;
  };
  struct DeviceState {
    EventLoop::TimerId retry_timer = 0;
    bool discovering = false;
    std::vector<std::unique_ptr<WatchState>> watches;
  };

  GatewayConfig config;
  EventLoop loop;
  registry::Registry registry;
  CoapLink coap;
  MqttLink mqtt;
  std::map<std::string, DeviceState, std::less<>> states;
  bridge::RouteStats route_stats;
  std::uint64_t commands_refused = 0;
  std::vector<bridge::Publish> scratch;  // reused per notification: no allocation churn
  int exit_code = 0;

  explicit Impl(GatewayConfig c)
      : config(std::move(c)),
        coap(loop, config.coap),
        mqtt(loop, config.mqtt, stateTopic(), stateJson("offline")) {}

  std::string stateTopic() const { return config.mqtt.base_topic + "/bridge/state"; }
  std::string availabilityTopic(const std::string& device) const {
    return config.mqtt.base_topic + "/" + device + "/availability";
  }

  void start() {
    loop.handleSignals({SIGTERM, SIGINT, SIGHUP}, [this](int sig) { onSignal(sig); });
    mqtt.setOnConnected([this] { onMqttConnected(); });
    mqtt.setMessageHandler([this](const std::string& topic, const std::string& payload) {
      onCommand(topic, payload);
    });
    for (const auto& command : config.rules.commands) {
      mqtt.subscribe(command.topic.subscriptionFilter(), command.qos);
    }
    mqtt.start();
    for (const auto& device : config.devices) addStaticDevice(device);
    spdlog::info("gateway '{}' started: {} device(s), {} rule(s), {} command(s)", config.name,
                 config.devices.size(), config.rules.rules.size(), config.rules.commands.size());
  }

  void addStaticDevice(const StaticDevice& device) {
    std::string error;
    if (!coap.addDevice(device.name, device.uri, &error)) {
      spdlog::error("device {}: {}", device.name, error);
      return;
    }
    registry::Device d;
    d.name = device.name;
    d.uri = device.uri;
    d.source = registry::Source::Static;
    registry.upsert(std::move(d));
    states[device.name];
    discover(device.name);
  }

  // GET /.well-known/core, then watch whatever the rules want.
  void discover(const std::string& name) {
    DeviceState& state = states[name];
    if (state.discovering) return;
    state.discovering = true;
    coap.request(name, bridge::Method::Get, "/.well-known/core", {}, std::nullopt,
                 [this, name](const std::optional<CoapResponse>& response,
                              const std::string& error) { onDiscovered(name, response, error); });
  }

  void onDiscovered(const std::string& name, const std::optional<CoapResponse>& response,
                    const std::string& error) {
    DeviceState& state = states[name];
    state.discovering = false;
    registry::Device* device = registry.findMutable(name);
    if (device == nullptr) return;
    std::string problem = error;
    registry::LinkFormatResult links;
    if (problem.empty() && !response->success()) {
      problem = "/.well-known/core answered " + response->codeString();
    }
    if (problem.empty()) {
      links = registry::parseLinkFormat(response->payload);
      if (!links.ok()) {
        problem = "bad link-format at byte " + std::to_string(links.error->offset) + ": " +
                  links.error->message;
      }
    }
    if (!problem.empty()) {
      spdlog::warn("device {}: discovery failed: {}; retrying in {} ms", name, problem,
                   config.coap.retry_interval.count());
      setOnline(*device, false);
      scheduleRediscovery(name);
      return;
    }
    device->resources.clear();
    for (const auto& link : links.links) {
      if (link.anchor) continue;  // describes another resource, not one of this device's
      auto path = registry::targetPath(link.target);
      if (!path || *path == "/.well-known/core") continue;
      device->resources.push_back(toResource(link, std::move(*path)));
    }
    spdlog::info("device {}: {} resource(s)", name, device->resources.size());
    setOnline(*device, true);
    applyPlan(*device);
  }

  void scheduleRediscovery(const std::string& name) {
    DeviceState& state = states[name];
    if (state.retry_timer != 0) return;
    state.retry_timer = loop.runAfter(config.coap.retry_interval, [this, name] {
      states[name].retry_timer = 0;
      if (registry.find(name) != nullptr) discover(name);
    });
  }

  void setOnline(registry::Device& device, bool online) {
    if (device.online == online && device.last_seen != std::chrono::system_clock::time_point{}) {
      return;
    }
    device.online = online;
    device.last_seen = std::chrono::system_clock::now();
    mqtt.publish(availabilityTopic(device.name), online ? "online" : "offline", 1, true);
  }

  void stopWatches(DeviceState& state) {
    for (auto& w : state.watches) {
      if (w->observe_id != 0) coap.cancelObserve(w->observe_id);
      if (w->poll_request != 0) coap.cancelRequest(w->poll_request);
      if (w->timer != 0) loop.cancel(w->timer);
    }
    state.watches.clear();
  }

  void applyPlan(const registry::Device& device) {
    DeviceState& state = states[device.name];
    stopWatches(state);
    for (auto& watch : bridge::plan(config.rules, device)) {
      auto w = std::make_unique<WatchState>();
      const registry::Resource* resource = device.findResource(watch.path);
      if (resource != nullptr && !resource->rt.empty()) w->rt = resource->rt.front();
      w->watch = std::move(watch);
      WatchState* raw = w.get();
      state.watches.push_back(std::move(w));
      startWatch(*raw);
    }
    spdlog::debug("device {}: watching {} resource(s)", device.name, state.watches.size());
  }

  void startWatch(WatchState& w) {
    if (w.watch.mode == bridge::Mode::Observe) {
      w.observe_id =
          coap.observe(w.watch.device, w.watch.path,
                       [this, &w](const std::optional<CoapResponse>& response,
                                  const std::string& error) { onObserved(w, response, error); });
    } else {
      poll(w);
    }
  }

  void onObserved(WatchState& w, const std::optional<CoapResponse>& response,
                  const std::string& error) {
    if (!response || !response->success()) {
      w.observe_id = 0;
      spdlog::warn("observe {}{} failed: {}; retrying in {} ms", w.watch.device, w.watch.path,
                   response ? response->codeString() : error, config.coap.retry_interval.count());
      w.timer = loop.runAfter(config.coap.retry_interval, [this, &w] {
        w.timer = 0;
        startWatch(w);
      });
      return;
    }
    if (!response->observe) {
      // The device answered but does not observe this resource: poll it instead.
      w.observe_id = 0;
      w.watch.mode = bridge::Mode::Poll;
      if (w.watch.interval.count() == 0) w.watch.interval = std::chrono::seconds(30);
      spdlog::info("{}{} is not observable; polling every {} ms", w.watch.device, w.watch.path,
                   w.watch.interval.count());
      publish(w, *response);
      w.timer = loop.runAfter(w.watch.interval, [this, &w] {
        w.timer = 0;
        poll(w);
      });
      return;
    }
    publish(w, *response);
  }

  void poll(WatchState& w) {
    w.poll_request = coap.request(
        w.watch.device, bridge::Method::Get, w.watch.path, {}, std::nullopt,
        [this, &w](const std::optional<CoapResponse>& response, const std::string& error) {
          w.poll_request = 0;
          if (response && response->success()) {
            publish(w, *response);
          } else {
            spdlog::warn("poll {}{} failed: {}", w.watch.device, w.watch.path,
                         response ? response->codeString() : error);
          }
          w.timer = loop.runAfter(w.watch.interval, [this, &w] {
            w.timer = 0;
            poll(w);
          });
        });
  }

  void publish(const WatchState& w, const CoapResponse& response) {
    bridge::Notification n{w.watch.device, w.watch.path, response.content_format, response.payload,
                           w.rt};
    scratch.clear();
    bridge::route(config.rules, config.name, w.watch.rules, n, scratch, route_stats);
    for (const auto& p : scratch) mqtt.publish(p.topic, p.payload, p.qos, p.retain);
  }

  void onMqttConnected() {
    mqtt.publish(stateTopic(), stateJson("online"), 1, true);
    // Brokers lose retained messages: say again where every device stands.
    for (const registry::Device* device : registry.all()) {
      if (device->last_seen != std::chrono::system_clock::time_point{}) {
        mqtt.publish(availabilityTopic(device->name), device->online ? "online" : "offline", 1,
                     true);
      }
    }
  }

  void onCommand(const std::string& topic, const std::string& payload) {
    auto routed = bridge::routeCommand(config.rules, registry, topic, payload);
    if (!routed) return;  // not a command topic (e.g. our own publications)
    if (auto* refused = std::get_if<bridge::CommandRefused>(&*routed)) {
      ++commands_refused;
      spdlog::warn("command on {} refused: {}", topic, refused->reason);
      return;
    }
    auto& request = std::get<bridge::CoapRequest>(*routed);
    spdlog::debug("command {} {}{} ({} bytes)", bridge::toString(request.method), request.device,
                  request.path, request.payload.size());
    coap.request(request.device, request.method, request.path, request.payload, std::nullopt,
                 [device = request.device, path = request.path](
                     const std::optional<CoapResponse>& response, const std::string& error) {
                   if (response && response->success()) {
                     spdlog::debug("command {}{}: {}", device, path, response->codeString());
                   } else {
                     spdlog::warn("command {}{} failed: {}", device, path,
                                  response ? response->codeString() : error);
                   }
                 });
  }

  void onSignal(int sig) {
    if (sig == SIGHUP) {
      reload();
      return;
    }
    spdlog::info("signal {}: shutting down", sig);
    shutdown();
  }

  void reload() {
    try {
      GatewayConfig fresh = loadConfig(config.file);
      config.rules = std::move(fresh.rules);
    } catch (const bridge::ConfigErrors& e) {
      spdlog::error("reload failed, keeping the old rules:\n{}", e.what());
      return;
    } catch (const std::exception& e) {
      spdlog::error("reload failed, keeping the old rules: {}", e.what());
      return;
    }
    mqtt.unsubscribeAll();
    for (const auto& command : config.rules.commands) {
      mqtt.subscribe(command.topic.subscriptionFilter(), command.qos);
    }
    for (const registry::Device* device : registry.all()) {
      if (device->online) applyPlan(*device);
    }
    spdlog::info("rules reloaded: {} rule(s), {} command(s)", config.rules.rules.size(),
                 config.rules.commands.size());
  }

  void shutdown() {
    for (auto& [name, state] : states) {
      if (state.retry_timer != 0) loop.cancel(state.retry_timer);
      state.retry_timer = 0;
      stopWatches(state);  // sends the observe cancellations
    }
    // Let the cancellations leave before the context goes away.
    loop.runAfter(kShutdownFlush, [this] {
      mqtt.stop(stateTopic(), stateJson("offline"));
      loop.stop();
    });
  }
};

Gateway::Gateway(GatewayConfig config) : impl_(std::make_unique<Impl>(std::move(config))) {}
Gateway::~Gateway() = default;

int Gateway::run() {
  impl_->start();
  impl_->loop.run();
  return impl_->exit_code;
}

}  // namespace coap2mqtt::gateway
