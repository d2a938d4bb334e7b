// The composition root: builds the components, starts them in order, stops them in
// reverse, and handles signals and reload. The components (see README "Development"):
//
//   EventLoop ── one thread: epoll, timers, signals; paho's threads only post() to it
//   CoapLink, MqttLink ── the only code that includes libcoap / paho
//   Devices ── registry + store + liveness + /.well-known/core of each device
//     ▲ MulticastSource, RdSource, [[coap.device]] ── where devices come from
//   Observer ── one Watch (observe/poll state machine) per planned resource
//     └─ ValueReceived ─► ValuePublisher ── rules → MQTT
//   BridgeTopics, HomeAssistant ── the gateway's own MQTT topics
//   CommandRouter ── MQTT commands → CoAP, through the allow-list; AdminApi ── bridge/request
//   Stats ── the one model every surface reads; ServiceNotifier ── systemd (sd_notify);
//   MetricsServer ── Prometheus GET /metrics on its own threads, snapshots via post()
//   WebApi, WebServer ── the web page: its API on the loop, HTTP on threads of its own
//
// They talk through typed events (gateway/events.h) where one thing has many listeners,
// and through direct calls where one component uses another.
#include "gateway/gateway.h"

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <thread>
#include <vector>

#include <spdlog/spdlog.h>

#include "gateway/admin.h"
#include "gateway/bridge_topics.h"
#include "gateway/coap_link.h"
#include "gateway/command_router.h"
#include "gateway/config_credentials.h"
#include "gateway/config_reload.h"
#include "gateway/devices.h"
#include "gateway/event_loop.h"
#include "gateway/events.h"
#include "gateway/home_assistant.h"
#include "gateway/metrics_server.h"
#include "gateway/mqtt_link.h"
#include "gateway/multicast_source.h"
#include "gateway/observer.h"
#include "gateway/pubsub.h"
#include "gateway/rd_source.h"
#include "gateway/service_notifier.h"
#include "gateway/stats.h"
#include "gateway/values.h"
#include "gateway/web_api.h"
#include "gateway/web_events.h"
#include "gateway/web_server.h"

namespace coap2mqtt::gateway {
namespace {

constexpr auto kShutdownFlush = std::chrono::milliseconds(300);

}  // namespace

std::chrono::milliseconds testStallOnSigusr1() {
  const char* value = std::getenv("COAP2MQTT_TEST_STALL_ON_SIGUSR1");
  if (value == nullptr) return std::chrono::milliseconds(0);
  return std::chrono::milliseconds(std::max(0L, std::strtol(value, nullptr, 10)));
}

struct Gateway::Impl {
  // Declaration order is construction order, and the order in which components subscribe
  // to events, which is the order their listeners run (BridgeTopics says a device changed
  // before the Observer re-plans it and Home Assistant configs follow; on connect, state and
  // availability go out before the Home Assistant configs).
  GatewayConfig config;
  EventLoop loop;
  CoapLink coap;
  MqttLink mqtt;
  Events events;
  Devices devices;
  Stats stats;  // holds references only: may name components declared below
  BridgeTopics topics;
  Observer observer;
  ValuePublisher values;
  PubSub pubsub;  // /ps: devices that publish (issue 20)
  HomeAssistant home_assistant;
  CommandRouter commands;
  MulticastSource multicast;
  RdSource rd;
  AdminApi admin;
  ServiceNotifier service;
  MetricsServer metrics;
  std::shared_ptr<WebEventHub> web_hub =
      std::make_shared<WebEventHub>(WebServer::kMaxStreams, WebServer::kStreamQueue);
  std::string last_reload_error;  // of the last failed reload, for the web page
  WebApi web_api;
  WebServer web;
  const std::chrono::milliseconds test_stall = testStallOnSigusr1();
  bool started = false;
  bool broker_attempted = false;  // the first connect attempt has ended, either way
  bool ready = false;
  bool stopping = false;

  explicit Impl(GatewayConfig c)
      : config(std::move(c)),
        coap(loop, config.coap),
        mqtt(loop, config.mqtt, MqttLink::openOutbox(config.state_dir, config.mqtt),
             config.mqtt.base_topic + "/bridge/state", bridgeStateJson("offline")),
        events([](const char* what) { spdlog::error("event listener failed: {}", what); }),
        devices(config, loop, coap, events),
        stats(config, devices, observer, values, commands, rd, multicast, coap, mqtt, admin),
        topics(config, loop, mqtt, devices, stats, events),
        observer(config, loop, coap, devices, events),
        values(config, loop, mqtt, events),
        pubsub(config, loop, coap, mqtt, devices, values, events),
        home_assistant(config, mqtt, events),
        commands(config, loop, coap, mqtt, devices, events),
        multicast(config, loop, devices),
        rd(config, loop, coap, devices, observer, events),
        admin(config, mqtt, devices, multicast, commands, stats, [this] { return reload(); }),
        service(
            loop, [this] { return stats.serviceStatus(); }, ServiceNotifier::systemdSend(),
            ServiceNotifier::systemdWatchdog()),
        metrics(loop, [this] { return stats.snapshot(); }),
        web_api(config, loop, devices, observer, values, stats, admin, commands, events, *web_hub,
                [this] { return last_reload_error; }),
        web(loop, web_api, web_hub) {
    stats.setPubSub(pubsub);
  }

  void start() {
    std::vector<int> signals{SIGTERM, SIGINT, SIGHUP};
    if (test_stall.count() > 0) signals.push_back(SIGUSR1);
    loop.handleSignals(signals, [this](int sig) { onSignal(sig); });
    for (const auto& warning : secretFileWarnings(config)) spdlog::warn("config: {}", warning);
    devices.open();
    mqtt.setSubscriptionsFile(config.state_dir + "/mqtt-subscriptions");
    mqtt.setOnConnected([this] {
      events.emit(MqttConnected{});
      brokerAttempted();
    });
    mqtt.setOnConnectFailed([this] { brokerAttempted(); });
    // A device forgets a notification once it has our ACK: the ACK of a CON waits for the
    // outbox's next group commit when the notification queued something for it (a commit
    // per CON message cost about 1.3 page writes per message under load).
    coap.setHoldAck([this] { return mqtt.flushPending(); });
    mqtt.setOnFlushed([this] { coap.releaseHeldAcks(); });
    mqtt.setMessageHandler(
        [this](const std::string& topic, const std::string& payload, const MqttMessageMeta& meta) {
          pubsub.onMessage(topic, payload, meta.retained);  // what devices may GET from /ps
          if (!admin.onMessage(topic, payload, meta)) commands.onMessage(topic, payload, meta);
        });
    subscribeAll();
    mqtt.start();
    for (const auto& address : config.coap.listen) {
      std::string error;
      if (!coap.listen(address, &error)) throw std::runtime_error("coap: " + error);
      spdlog::info("coap: listening on {}", address);
    }
    if (!config.metrics.listen.empty()) metrics.start(config.metrics.listen);
    if (!config.web.listen.empty()) {
      web.start(config.web.listen, config.web.token);
      web_api.start();
    }
    rd.serve();
    pubsub.serve();
    rd.restore();
    devices.start();
    multicast.start();
    topics.start();
    spdlog::info("gateway '{}' started: {} known device(s), {} rule(s), {} command(s)", config.name,
                 devices.registry().size(), config.rules.rules.size(),
                 config.rules.commands.size());
    service.start();
    started = true;
    maybeReady();
  }

  // systemd hears READY=1 once the config, the registry and the first broker attempt are
  // done: dependent units then start against a gateway that has tried its broker.
  void brokerAttempted() {
    broker_attempted = true;
    maybeReady();
  }

  void maybeReady() {
    if (ready || !started || !broker_attempted || stopping) return;
    ready = true;
    service.ready();
  }

  void subscribeAll() {
    commands.subscribe();
    pubsub.subscribe();
    if (admin.enabled()) mqtt.subscribe(admin.requestFilter(), 1);
  }

  void onSignal(int sig) {
    if (sig == SIGHUP) {
      service.reloading();
      reload();
      if (ready) service.ready();
      return;
    }
    if (sig == SIGUSR1) {
      stallForTest();
      return;
    }
    spdlog::info("signal {}: shutting down", sig);
    shutdown();
  }

  // The rules and commands are replaced; on error the old ones stay.
  AdminApi::ReloadResult reload() {
    std::vector<std::string> restart;
    try {
      GatewayConfig fresh = loadConfig(config.file);
      // Only the rules and commands change on a running gateway; say what else changed.
      restart = restartRequired(config, fresh);
      // What min_interval held back was routed with the old rules: it must not go out.
      observer.forEachSlot([this](ValueSlot& slot) { values.dropHeldBack(slot); });
      config.rules = std::move(fresh.rules);
    } catch (const bridge::ConfigErrors& e) {
      spdlog::error("reload failed, keeping the old rules:\n{}", e.what());
      last_reload_error = e.what();
      return {e.what(), admin::Json::object()};
    } catch (const std::exception& e) {
      spdlog::error("reload failed, keeping the old rules: {}", e.what());
      last_reload_error = e.what();
      return {e.what(), admin::Json::object()};
    }
    last_reload_error.clear();
    mqtt.unsubscribeAll();
    subscribeAll();
    observer.replanAll();
    observer.forEachSlot([this](ValueSlot& slot) { values.reroute(slot); });
    events.emit(RulesReplaced{});
    spdlog::info("rules reloaded: {} rule(s), {} command(s)", config.rules.rules.size(),
                 config.rules.commands.size());
    if (!restart.empty()) {
      std::string keys;
      for (const auto& key : restart) keys += (keys.empty() ? "" : ", ") + key;
      spdlog::warn("reload: these changes take effect only after a restart: {}", keys);
    }
    return {"", admin::Json{{"rules", config.rules.rules.size()},
                            {"commands", config.rules.commands.size()},
                            {"restart_required", restart}}};
  }

  // Only with COAP2MQTT_TEST_STALL_ON_SIGUSR1=<ms> (tests/integration/test_service.cpp):
  // blocks the loop thread as a hung handler would, to prove that the watchdog pings stop
  // with it. The STATUS= line marks the stall's start in the notify socket's own order.
  void stallForTest() {
    service.status("loop stalled on purpose for " + std::to_string(test_stall.count()) +
                   " ms (COAP2MQTT_TEST_STALL_ON_SIGUSR1)");
    spdlog::warn("stalling the loop for {} ms (COAP2MQTT_TEST_STALL_ON_SIGUSR1)",
                 test_stall.count());
    std::this_thread::sleep_for(test_stall);
    spdlog::warn("stall over");
  }

  void shutdown() {
    if (stopping) return;
    stopping = true;
    service.stopping();
    metrics.stop();
    web.stop();
    web_api.stop();
    multicast.stop();
    topics.stop();
    observer.stop();  // sends the observe cancellations
    spdlog::info("stats: {}", Stats::statsJson(stats.snapshot()).dump());
    devices.stop();  // while we are down nobody vouches for the devices: the store says so
    // Let the cancellations leave before the context goes away.
    loop.runAfter(kShutdownFlush, [this] {
      mqtt.stop(config.mqtt.base_topic + "/bridge/state", bridgeStateJson("offline"));
      loop.stop();
    });
  }
};

Gateway::Gateway(GatewayConfig config) : impl_(std::make_unique<Impl>(std::move(config))) {}
Gateway::~Gateway() = default;

int Gateway::run() {
  impl_->start();
  impl_->loop.run();
  return 0;
}

}  // namespace coap2mqtt::gateway
