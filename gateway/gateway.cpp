#include "gateway/gateway.h"

#include <csignal>
#include <filesystem>
#include <map>

#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include "bridge/bridge.h"
#include "gateway/admin_api.h"
#include "gateway/coap_link.h"
#include "gateway/command_queue.h"
#include "gateway/commands.h"
#include "gateway/device_names.h"
#include "gateway/event_loop.h"
#include "gateway/mqtt_link.h"
#include "gateway/multicast_discovery.h"
#include "gateway/observe_freshness.h"
#include "gateway/repeated_failure.h"
#include "registry/link_format.h"
#include "registry/registry.h"
#include "registry/resource_directory.h"
#include "registry/store.h"

namespace coap2mqtt::gateway {
namespace {

using Json = nlohmann::json;
using SteadyClock = std::chrono::steady_clock;
using SystemClock = std::chrono::system_clock;

constexpr auto kShutdownFlush = std::chrono::milliseconds(300);
constexpr auto kStoreFlushInterval = std::chrono::seconds(2);
constexpr auto kDevicesDebounce = std::chrono::milliseconds(200);
constexpr auto kMaxAgeMargin = std::chrono::seconds(2);
constexpr auto kStatsInterval = std::chrono::minutes(5);
constexpr auto kStartupSpacing = std::chrono::milliseconds(2);
constexpr int kSilentIntervals = 4;  // this many missed notifications = lost observation

std::string stateJson(const char* state) {
  return Json{{"state", state}}.dump();
}

std::int64_t epochMs(SystemClock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

// A device's resources from link-format, relative links only (anchored ones describe
// other things), without /.well-known/core itself.
std::vector<registry::Resource> resourcesFrom(const std::vector<registry::Link>& links) {
  std::vector<registry::Resource> out;
  for (const auto& link : links) {
    if (link.anchor) continue;
    auto path = registry::targetPath(link.target);
    if (!path || *path == "/.well-known/core") continue;
    registry::Resource r;
    r.path = std::move(*path);
    r.rt = link.rt;
    r.ifs = link.ifs;
    r.ct = link.ct;
    r.obs = link.obs;
    r.sz = link.sz;
    r.title = link.title;
    out.push_back(std::move(r));
  }
  return out;
}

bool sameResources(const std::vector<registry::Resource>& a,
                   const std::vector<registry::Resource>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (a[i].path != b[i].path || a[i].rt != b[i].rt || a[i].ifs != b[i].ifs ||
        a[i].ct != b[i].ct || a[i].obs != b[i].obs) {
      return false;
    }
  }
  return true;
}

Json deviceJson(const registry::Device& d) {
  Json resources = Json::array();
  for (const auto& r : d.resources) {
    Json res{{"path", r.path}, {"obs", r.obs}};
    if (!r.rt.empty()) res["rt"] = r.rt;
    if (!r.ifs.empty()) res["if"] = r.ifs;
    if (!r.ct.empty()) res["ct"] = r.ct;
    if (r.title) res["title"] = *r.title;
    resources.push_back(std::move(res));
  }
  Json j{{"name", d.name},
         {"uri", d.uri},
         {"source", registry::toString(d.source)},
         {"online", d.online},
         {"resources", std::move(resources)}};
  if (!d.friendly_name.empty()) j["friendly_name"] = d.friendly_name;
  if (d.last_seen != SystemClock::time_point{}) j["last_seen"] = epochMs(d.last_seen);
  return j;
}

registry::RdQuery rdQuery(const std::vector<std::string>& options) {
  registry::RdQuery q;
  for (const auto& o : options) {
    auto eq = o.find('=');
    if (eq == std::string::npos) {
      q.emplace_back(o, "");
    } else {
      q.emplace_back(o.substr(0, eq), o.substr(eq + 1));
    }
  }
  return q;
}

CoapServerResponse fromRd(const registry::RdResult& r) {
  CoapServerResponse res;
  res.code = r.code;
  res.payload = r.payload;
  res.location = r.location;
  if (r.code == 205) res.content_format = r.content_format;
  return res;
}

}  // namespace

struct Gateway::Impl {
  struct DeviceState;
  // One watched resource: its plan and its live observation or poll timer.
  struct WatchState {
    bridge::Watch watch;
    std::string rt;  // first rt, for {rt}
    CoapLink::ObserveId observe_id = 0;
    CoapLink::RequestId poll_request = 0;
    EventLoop::TimerId timer = 0;
    EventLoop::TimerId max_age_timer = 0;  // re-register when notifications stop
    bridge::RouteState route_state;        // min_interval / only_changes of its rules
    EventLoop::TimerId flush_timer = 0;    // publishes what min_interval held back
    // The latest value received (not necessarily published), for a reload that drops what
    // min_interval held back under the old rules (see reload()).
    std::string last_value;
    std::optional<unsigned> last_ct;
    std::int64_t last_time_ms = 0;
    bool have_value = false;
    bool reroute = false;  // reload(): route last_value again under the new rules
    ObserveFreshness freshness;
    // While re-registering, the registration that went quiet is kept: under loss it is
    // often alive, merely waiting for a retransmission. Whichever answers first wins.
    CoapLink::ObserveId previous_id = 0;
    bool awaiting_first = false;   // the current registration has not answered yet
    bool retried_at_once = false;  // a failed re-registration was repeated without delay
    std::uint32_t max_age_s = 60;
    std::string last_payload;       // what was last published
    bool reregistered = false;      // the next response answers a re-registration
    NotificationPace pace;          // of notifications, for the silence timer
    DeviceState* device = nullptr;  // the owner (DeviceState::watches), for its counters
  };
  struct DeviceState {
    EventLoop::TimerId retry_timer = 0;
    bool discovering = false;
    bool probing = false;
    bool ever_online = false;
    SteadyClock::time_point last_heard{};
    std::vector<std::unique_ptr<WatchState>> watches;
    std::map<std::string, std::string> ha_configs;  // retained HA discovery: topic -> payload
    // Observe counters of this device (bridge/info "per_device").
    std::uint64_t notifications = 0;    // accepted (fresh) notifications
    std::uint64_t stale = 0;            // dropped by the RFC 7641 §3.4 rule
    std::uint64_t reregistrations = 0;  // registered again after going quiet
    std::uint64_t failures = 0;         // registrations that failed (timeout, error, RST)
  };

  GatewayConfig config;
  EventLoop loop;
  registry::Registry registry;
  std::unique_ptr<registry::Store> store;
  CoapLink coap;
  MqttLink mqtt;
  std::unique_ptr<MulticastDiscovery> multicast;
  registry::ResourceDirectory rd;
  EventLoop::TimerId rd_expiry_timer = 0;
  std::map<std::string, DeviceState, std::less<>> states;
  bridge::RouteStats route_stats;
  std::uint64_t stale_notifications = 0;  // dropped by the RFC 7641 §3.4 rule
  std::uint64_t reregistrations = 0;      // Max-Age ran out without a notification
  std::uint64_t commands_refused = 0;
  RepeatedFailure store_failures;      // registry flushes, logged once per interval
  CommandQueue commands{commandIo()};  // after coap and loop: its handlers use them
  const SteadyClock::time_point started = SteadyClock::now();
  std::vector<bridge::Publish> scratch;  // reused per notification: no allocation churn
  bool devices_publish_pending = false;
  bool stopping = false;
  int exit_code = 0;

  explicit Impl(GatewayConfig c)
      : config(std::move(c)),
        coap(loop, config.coap),
        mqtt(loop, config.mqtt, MqttLink::openOutbox(config.state_dir, config.mqtt),
             topic("bridge/state"), stateJson("offline")) {}

  std::string topic(const std::string& suffix) const {
    return config.mqtt.base_topic + "/" + suffix;
  }
  std::string availabilityTopic(const std::string& device) const {
    return topic(device + "/availability");
  }

  // ---- start-up -------------------------------------------------------------------------

  void start() {
    loop.handleSignals({SIGTERM, SIGINT, SIGHUP}, [this](int sig) { onSignal(sig); });
    openStore();
    mqtt.setSubscriptionsFile(config.state_dir + "/mqtt-subscriptions");
    mqtt.setOnConnected([this] { onMqttConnected(); });
    // A device forgets a notification once it has our ACK: the ACK of a CON waits for the
    // outbox's next group commit when the notification queued something for it (a commit
    // per CON message cost about 1.3 page writes per message under load).
    coap.setHoldAck([this] { return mqtt.flushPending(); });
    mqtt.setOnFlushed([this] { coap.releaseHeldAcks(); });
    mqtt.setMessageHandler(
        [this](const std::string& t, const std::string& payload, const MqttMessageMeta& meta) {
          onMqttMessage(t, payload, meta);
        });
    subscribeAll();
    mqtt.start();
    startServer();
    loadKnownDevices();
    restoreRdRegistrations();
    for (const auto& device : config.devices) addStaticDevice(device);
    startMulticast();
    scheduleLiveness();
    scheduleStoreFlush();
    scheduleStats();
    spdlog::info("gateway '{}' started: {} known device(s), {} rule(s), {} command(s)", config.name,
                 registry.size(), config.rules.rules.size(), config.rules.commands.size());
  }

  void openStore() {
    std::filesystem::create_directories(config.state_dir);
    store = std::make_unique<registry::Store>(config.state_dir + "/registry.db");
  }

  void subscribeAll() {
    for (const auto& command : config.rules.commands) {
      mqtt.subscribe(command.topic.subscriptionFilter(), command.qos);
    }
    mqtt.subscribe(topic("bridge/request/#"), 1);
  }

  // Devices from the last run: observed again at once, no discovery round needed.
  void loadKnownDevices() {
    std::size_t reobserved = 0;
    for (auto& stored : store->loadAll()) {
      const bool is_static = stored.source == registry::Source::Static;
      if (is_static && findStaticConfig(stored.name) == nullptr) {
        store->remove(stored.name);  // no longer in gateway.toml
        continue;
      }
      std::string error;
      if (!coap.addDevice(stored.name, stored.uri, &error)) {
        spdlog::warn("device {}: {}", stored.name, error);
        continue;
      }
      stored.online = false;
      const registry::Device& device = registry.upsert(std::move(stored));
      states[device.name];
      if (!device.resources.empty()) {
        // Spread the registrations (kStartupSpacing apart) so a thousand devices are not
        // all asked at once; each device's session sends one request at a time (NSTART=1).
        loop.runAfter(kStartupSpacing * static_cast<int>(reobserved), [this, name = device.name] {
          if (const registry::Device* d = registry.find(name)) {
            if (states[name].watches.empty()) applyPlan(*d);
          }
        });
        ++reobserved;
      } else {
        discover(device.name);  // stored before its resources were known
      }
    }
    if (registry.size() > 0) {
      spdlog::info("registry: {} known device(s), {} re-observed from the database",
                   registry.size(), reobserved);
    }
  }

  const StaticDevice* findStaticConfig(std::string_view name) const {
    for (const auto& d : config.devices) {
      if (d.name == name) return &d;
    }
    return nullptr;
  }

  void addStaticDevice(const StaticDevice& device) {
    const registry::Device* known = registry.find(device.name);
    if (known != nullptr && known->uri == device.uri && !known->resources.empty()) {
      return;  // loaded from the database and already watched
    }
    std::string error;
    if (!coap.addDevice(device.name, device.uri, &error)) {
      spdlog::error("device {}: {}", device.name, error);
      return;
    }
    registry::Device d;
    d.name = device.name;
    d.uri = device.uri;
    d.source = registry::Source::Static;
    d.first_seen = SystemClock::now();
    registry.upsert(std::move(d));
    states[device.name];
    discover(device.name);
  }

  // ---- discovery of one device's resources ----------------------------------------------

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
    auto state_it = states.find(name);
    if (state_it == states.end()) return;
    state_it->second.discovering = false;
    if (registry.find(name) == nullptr) return;
    std::string problem = error;
    registry::LinkFormatResult links;
    if (problem.empty()) {
      heard(name);
      if (!response->success()) problem = "/.well-known/core answered " + response->codeString();
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
      if (registry::Device* d = registry.findMutable(name); d != nullptr && !d->online) {
        setOnline(*d, false, true);
      }
      scheduleRediscovery(name);
      return;
    }
    updateResources(name, resourcesFrom(links.links), true);
  }

  // New resource list for a device: persist, re-plan when it changed (or `force`).
  void updateResources(const std::string& name, std::vector<registry::Resource> resources,
                       bool force) {
    registry::Device* device = registry.findMutable(name);
    if (device == nullptr) return;
    const bool changed = !sameResources(device->resources, resources);
    if (changed) {
      device->resources = std::move(resources);
      spdlog::info("device {}: {} resource(s)", name, device->resources.size());
      store->save(*device);
      publishEvent("device_updated", *device);
      scheduleDevicesPublish();
    }
    if (changed || force || states[name].watches.empty()) applyPlan(*device);
  }

  void scheduleRediscovery(const std::string& name) {
    DeviceState& state = states[name];
    if (state.retry_timer != 0 || stopping) return;
    state.retry_timer = loop.runAfter(config.coap.retry_interval, [this, name] {
      auto it = states.find(name);
      if (it == states.end()) return;
      it->second.retry_timer = 0;
      if (registry.find(name) != nullptr) discover(name);
    });
  }

  // ---- liveness -------------------------------------------------------------------------

  // Something came back from the device: it is alive.
  void heard(const std::string& name) {
    registry::Device* device = registry.findMutable(name);
    if (device == nullptr) return;
    DeviceState& state = states[name];
    state.last_heard = SteadyClock::now();
    device->last_seen = SystemClock::now();
    store->touch(name, device->last_seen, true);
    if (!device->online) {
      const bool was_offline = state.ever_online;
      setOnline(*device, true, false);
      // After a partition or reboot the device may have dropped our observations. Deferred:
      // we may be inside one of this device's watch handlers right now.
      if (was_offline && !state.discovering) {
        loop.post([this, name = device->name] {
          if (const registry::Device* d = registry.find(name); d != nullptr && d->online) {
            applyPlan(*d, true);
          }
        });
      }
    }
  }

  void setOnline(registry::Device& device, bool online, bool force_publish) {
    if (device.online == online && !force_publish) return;
    const bool changed = device.online != online;
    device.online = online;
    DeviceState& state = states[device.name];
    if (online) state.ever_online = true;
    store->touch(device.name, device.last_seen, online);
    mqtt.publish(availabilityTopic(device.name), online ? "online" : "offline", 1, true);
    if (changed) {
      spdlog::info("device {} is {}", device.name, online ? "online" : "offline");
      publishEvent(online ? "device_online" : "device_offline", device);
      scheduleDevicesPublish();
    }
  }

  void scheduleLiveness() {
    auto tick = std::max(std::chrono::milliseconds(250), config.coap.offline_after / 4);
    loop.runAfter(tick, [this] {
      checkLiveness();
      if (!stopping) scheduleLiveness();
    });
  }

  // Silent for half of offline_after: ping. Silent for all of it: offline.
  void checkLiveness() {
    const auto now = SteadyClock::now();
    for (const registry::Device* d : registry.all()) {
      if (!d->online) continue;
      DeviceState& state = states[d->name];
      const auto silent = now - state.last_heard;
      if (silent >= config.coap.offline_after) {
        setOnline(*registry.findMutable(d->name), false, false);
        scheduleRediscovery(d->name);
      } else if (silent >= config.coap.offline_after / 2 && !state.probing) {
        state.probing = true;
        std::string name = d->name;
        coap.ping(name, [this, name](bool answered) {
          auto it = states.find(name);
          if (it == states.end()) return;
          it->second.probing = false;
          if (answered) heard(name);
        });
      }
    }
  }

  void scheduleStoreFlush() {
    loop.runAfter(kStoreFlushInterval, [this] {
      flushStore();
      if (!stopping) scheduleStoreFlush();
    });
  }

  void flushStore() {
    try {
      store->flush();
      if (store_failures.failing()) {
        spdlog::info("registry: writing again, after {} failed flush(es)",
                     store_failures.succeeded());
      }
    } catch (const std::exception& e) {
      // Kept for the next flush. A full disk fails every one: said once per interval.
      if (store_failures.failed(SteadyClock::now())) {
        spdlog::error("registry: flush failed ({} failure(s) since the last report): {}",
                      store_failures.unreported(), e.what());
        store_failures.reported();
      }
    }
  }

  // ---- watching resources ---------------------------------------------------------------

  // `deregister`: tell the device (GET with Observe=1). Not when registering again at once:
  // libcoap 4.3.1 then swallows the new registration's notifications.
  void stopWatch(WatchState& w, bool deregister = true) {
    if (w.observe_id != 0) {
      if (deregister) {
        coap.cancelObserve(w.observe_id);
      } else {
        coap.cancelRequest(w.observe_id);
      }
    }
    if (w.previous_id != 0) coap.cancelRequest(w.previous_id);
    w.previous_id = 0;
    if (w.poll_request != 0) coap.cancelRequest(w.poll_request);
    if (w.timer != 0) loop.cancel(w.timer);
    if (w.max_age_timer != 0) loop.cancel(w.max_age_timer);
    if (w.flush_timer != 0) loop.cancel(w.flush_timer);
    w.observe_id = 0;
    w.poll_request = 0;
    w.timer = 0;
    w.max_age_timer = 0;
    w.flush_timer = 0;
  }

  void stopWatches(DeviceState& state) {
    for (auto& w : state.watches) stopWatch(*w);
    state.watches.clear();
  }

  // Brings the device's watches in line with the rules. Unchanged ones (same path, same
  // mode, same poll interval) keep their observation; only the rules they feed are
  // swapped. `restart` re-registers everything (after a partition or a reboot).
  void applyPlan(const registry::Device& device, bool restart = false) {
    DeviceState& state = states[device.name];
    std::vector<std::unique_ptr<WatchState>> next;
    std::vector<WatchState*> to_start;
    for (auto& watch : bridge::plan(config.rules, device)) {
      std::unique_ptr<WatchState> w;
      if (!restart) {
        for (auto& old : state.watches) {
          if (old && old->watch.path == watch.path && old->watch.mode == watch.mode &&
              old->watch.interval == watch.interval) {
            w = std::move(old);
            break;
          }
        }
      }
      const registry::Resource* resource = device.findResource(watch.path);
      if (w) {
        w->watch.rules = std::move(watch.rules);
      } else {
        w = std::make_unique<WatchState>();
        w->device = &state;
        w->watch = std::move(watch);
        to_start.push_back(w.get());
        // Restarted (the device came back): its current value may be the one already
        // published from the old registration.
        for (auto& old : state.watches) {
          if (!old || old->watch.path != w->watch.path) continue;
          if (!old->last_payload.empty()) {
            w->last_payload = old->last_payload;
            w->reregistered = true;
          }
          // What min_interval holds back (and only_changes remembers) goes on: the new
          // registration's first value is dropped as a repeat when it equals last_payload,
          // so a value held back here would otherwise never be published.
          w->route_state = std::move(old->route_state);
          if (old->have_value) {
            w->last_value = old->last_value;
            w->last_ct = old->last_ct;
            w->last_time_ms = old->last_time_ms;
            w->have_value = true;
          }
        }
      }
      w->rt = resource != nullptr && !resource->rt.empty() ? resource->rt.front() : std::string{};
      next.push_back(std::move(w));
    }
    for (auto& old : state.watches) {
      if (old) stopWatch(*old, !restart);
    }
    state.watches = std::move(next);
    publishHomeAssistant(device, state);
    for (WatchState* w : to_start) {
      armFlush(*w);  // for a RouteState carried over (the old watch's timer is cancelled)
      startWatch(*w);
    }
    spdlog::debug("device {}: watching {} resource(s), {} (re)started", device.name,
                  state.watches.size(), to_start.size());
  }

  void startWatch(WatchState& w) {
    if (w.watch.mode == bridge::Mode::Observe) {
      w.awaiting_first = true;
      // The handler learns which registration it serves (the id is known only after
      // observe() returns; an immediate failure reports 0, which is the current one).
      auto id = std::make_shared<CoapLink::ObserveId>(0);
      // A device that was delivering until a moment ago answers fast or the message was
      // lost: after two transmissions, start over on a fresh session rather than wait
      // out request_timeout while its notifications are missing.
      std::optional<std::chrono::milliseconds> timeout;
      if (w.reregistered) {
        timeout = std::min(config.coap.request_timeout,
                           std::chrono::ceil<std::chrono::milliseconds>(
                               config.coap.ack_timeout * config.coap.ack_random_factor * 1.5) +
                               std::chrono::milliseconds(500));
      }
      *id = coap.observe(
          w.watch.device, w.watch.path,
          [this, &w, id](const std::optional<CoapResponse>& response, const std::string& error) {
            onObserved(w, *id, response, error);
          },
          timeout);
      if (*id != 0) w.observe_id = *id;
    } else {
      poll(w);
    }
  }

  void retryWatch(WatchState& w) {
    w.timer = loop.runAfter(config.coap.retry_interval, [this, &w] {
      w.timer = 0;
      startWatch(w);
    });
  }

  void onObserved(WatchState& w, CoapLink::ObserveId id,
                  const std::optional<CoapResponse>& response, const std::string& error) {
    if (response) heard(w.watch.device);
    if (id != 0 && id != w.observe_id && id != w.previous_id) {
      // A registration this watch has since given up on: it must not count as current.
      coap.cancelRequest(id);
      return;
    }
    const bool delivers = response && response->success() && response->observe;
    // The answer to a registration is not a notification: it comes whenever we ask (every
    // few seconds while a device is stalled) and must not shorten the pace estimate.
    bool registration_answer = false;
    if (id != 0 && id == w.previous_id) {
      // The quiet registration spoke before the new one answered: it was alive after all.
      w.previous_id = 0;
      if (!delivers) return;
      coap.cancelRequest(w.observe_id);
      w.observe_id = id;
      w.awaiting_first = false;
      w.reregistered = false;
    } else if (w.awaiting_first && delivers) {
      registration_answer = true;
      w.awaiting_first = false;
      w.retried_at_once = false;
      if (w.previous_id != 0) coap.cancelRequest(w.previous_id);
      w.previous_id = 0;
      w.freshness.reset();  // a new registration may start a new sequence (a reboot)
    }
    if ((!response || !response->success()) && w.previous_id != 0) {
      // The re-registration failed; the old registration stays until it is quiet again.
      spdlog::debug("{}{}: registering again failed: {}", w.watch.device, w.watch.path,
                    response ? response->codeString() : error);
      w.observe_id = w.previous_id;
      w.previous_id = 0;
      w.awaiting_first = false;
      w.reregistered = false;
      armMaxAge(w, w.max_age_s, false);
      return;
    }
    if (!response || !response->success()) {
      w.observe_id = 0;
      ++w.device->failures;
      // Nothing to watch for silence until a registration answers again.
      if (w.max_age_timer != 0) loop.cancel(w.max_age_timer);
      w.max_age_timer = 0;
      if (w.reregistered && response) {
        // The device answered a re-registration with an error (e.g. 4.04 after a
        // reconfiguration): that is worth the usual back-off.
        w.reregistered = false;
      } else if (w.reregistered && !w.retried_at_once) {
        // It was delivering until a moment ago; the session has just been renewed
        // (see CoapLink::resetSession), so the next attempt goes out on a fresh one.
        spdlog::info("observe {}{} failed: {}; registering again at once", w.watch.device,
                     w.watch.path, error);
        w.retried_at_once = true;
        startWatch(w);
        return;
      }
      spdlog::warn("observe {}{} failed: {}; retrying in {} ms", w.watch.device, w.watch.path,
                   response ? response->codeString() : error, config.coap.retry_interval.count());
      retryWatch(w);
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
    if (!w.freshness.accept(*response->observe, SteadyClock::now())) {
      ++stale_notifications;
      ++w.device->stale;
      spdlog::debug("{}{}: stale notification {} dropped", w.watch.device, w.watch.path,
                    *response->observe);
      return;
    }
    ++w.device->notifications;
    w.max_age_s = response->max_age.value_or(60);
    armMaxAge(w, w.max_age_s, !registration_answer);
    // A re-registration answers with the current value, which we may have published
    // already from the old registration: the same value is not published twice.
    const bool repeat = w.reregistered && response->payload == w.last_payload;
    w.reregistered = false;
    if (repeat) return;
    w.last_payload = response->payload;
    publish(w, *response);
  }

  // RFC 7641 §3.3.1: a notification is fresh for Max-Age; if none follows by then the
  // device may have dropped us. libcoap 4.3.1 does not ACK a retransmitted CON
  // notification (libcoap#1306), so one lost ACK makes the device give up on us: waiting
  // for Max-Age alone would leave a long gap. A resource that has been notifying at a
  // steady pace is re-registered once it has been silent for several of its intervals.
  void armMaxAge(WatchState& w, std::uint32_t max_age_s, bool notified = true) {
    if (notified) w.pace.note(SteadyClock::now());
    if (w.max_age_timer != 0) loop.cancel(w.max_age_timer);
    auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::seconds(max_age_s) + kMaxAgeMargin);
    // Not before the device's first retransmission is due: a lost CON notification comes
    // again after ACK_TIMEOUT * ACK_RANDOM_FACTOR, and re-registering earlier only churns.
    const auto min_silence = std::chrono::ceil<std::chrono::milliseconds>(
                                 config.coap.ack_timeout * config.coap.ack_random_factor) +
                             std::chrono::seconds(1);
    const auto pace = std::chrono::ceil<std::chrono::milliseconds>(w.pace.pace());
    if (pace.count() > 0) wait = std::min(wait, std::max(pace * kSilentIntervals, min_silence));
    w.max_age_timer = loop.runAfter(wait, [this, &w, wait] {
      w.max_age_timer = 0;
      ++reregistrations;
      ++w.device->reregistrations;
      spdlog::info("{}{}: no notification for {} ms; registering again", w.watch.device,
                   w.watch.path, wait.count());
      // The quiet registration is kept until one of the two answers (see onObserved).
      if (w.previous_id == 0) {
        w.previous_id = w.observe_id;
      } else {
        coap.cancelRequest(w.observe_id);
      }
      w.observe_id = 0;
      w.reregistered = true;
      startWatch(w);
    });
  }

  void poll(WatchState& w) {
    w.poll_request = coap.request(
        w.watch.device, bridge::Method::Get, w.watch.path, {}, std::nullopt,
        [this, &w](const std::optional<CoapResponse>& response, const std::string& error) {
          w.poll_request = 0;
          if (response) heard(w.watch.device);
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

  void publish(WatchState& w, const CoapResponse& response) {
    w.last_value.assign(response.payload);
    w.last_ct = response.content_format;
    w.last_time_ms = epochMs(SystemClock::now());
    w.have_value = true;
    routeLast(w, w.watch.rules);
  }

  // Routes the watch's latest value to `rule_indices` and publishes what comes out now.
  void routeLast(WatchState& w, const std::vector<std::size_t>& rule_indices) {
    bridge::Notification n{w.watch.device, w.watch.path, w.last_ct, w.last_value, w.rt};
    n.time_ms = w.last_time_ms;
    scratch.clear();
    const auto bad_before = route_stats.bad_payload + route_stats.bad_topic;
    bridge::route(config.rules, config.name, rule_indices, n, scratch, route_stats, &w.route_state);
    if (route_stats.bad_payload + route_stats.bad_topic != bad_before) {
      spdlog::warn("{}{}: value dropped: {}", w.watch.device, w.watch.path, route_stats.last_error);
    }
    for (const auto& p : scratch) mqtt.publish(p.topic, p.payload, p.qos, p.retain);
    armFlush(w);
  }

  // min_interval holds values back; the latest one goes out when its interval ends.
  void armFlush(WatchState& w) {
    const auto due = w.route_state.nextDue();
    if (!due) return;
    if (w.flush_timer != 0) loop.cancel(w.flush_timer);
    const auto wait =
        std::chrono::milliseconds(std::max<std::int64_t>(0, *due - epochMs(SystemClock::now())));
    w.flush_timer = loop.runAfter(wait, [this, &w] {
      w.flush_timer = 0;
      scratch.clear();
      w.route_state.flushDue(epochMs(SystemClock::now()), scratch, route_stats);
      for (const auto& p : scratch) mqtt.publish(p.topic, p.payload, p.qos, p.retain);
      armFlush(w);
    });
  }

  // ---- Home Assistant discovery ---------------------------------------------------------

  // The retained discovery configs of the device's watched resources, for rules that ask
  // for them; configs that no longer apply are cleared (an empty retained message).
  void publishHomeAssistant(const registry::Device& device, DeviceState& state) {
    std::map<std::string, std::string> next;
    const std::string availability = availabilityTopic(device.name);
    for (const auto& w : state.watches) {
      const std::string path = w->watch.path.substr(1);
      for (std::size_t index : w->watch.rules) {
        const bridge::Rule& rule = config.rules.rules[index];
        // Records rules name their topics after the records a device sends: not known here.
        if (!rule.homeassistant || rule.topic.usesName()) continue;
        auto state_topic = rule.topic.expand({config.name, device.name, path, w->rt});
        if (!state_topic) continue;
        bridge::HomeAssistantContext ctx;
        ctx.gateway = config.name;
        ctx.device = device.name;
        ctx.device_name = device.friendly_name;
        ctx.path = w->watch.path;
        ctx.state_topic = *state_topic;
        ctx.availability_topic = availability;
        if (auto message = bridge::homeAssistantConfig(rule, ctx)) {
          next[message->topic] = std::move(message->payload);
        }
      }
    }
    for (const auto& [t, payload] : state.ha_configs) {
      if (next.count(t) == 0) mqtt.publish(t, "", 1, true);
    }
    for (const auto& [t, payload] : next) {
      auto old = state.ha_configs.find(t);
      if (old == state.ha_configs.end() || old->second != payload)
        mqtt.publish(t, payload, 1, true);
    }
    state.ha_configs = std::move(next);
  }

  // ---- multicast discovery --------------------------------------------------------------

  void startMulticast() {
    if (config.coap.discovery.multicast.empty()) return;
    multicast = std::make_unique<MulticastDiscovery>(loop, config.coap.discovery.port);
    runDiscoveryRound(nullptr);
    scheduleDiscoveryRounds();
  }

  void scheduleDiscoveryRounds() {
    loop.runAfter(config.coap.discovery.interval, [this] {
      if (stopping) return;
      runDiscoveryRound(nullptr);
      scheduleDiscoveryRounds();
    });
  }

  std::vector<MulticastDiscovery::Target> discoveryTargets() const {
    std::vector<MulticastDiscovery::Target> targets;
    const auto& d = config.coap.discovery;
    for (const auto& group : d.multicast) {
      if (d.interfaces.empty()) {
        targets.push_back({group, ""});
      } else {
        for (const auto& ifname : d.interfaces) targets.push_back({group, ifname});
      }
    }
    return targets;
  }

  // `done` gets the names of the devices that answered.
  void runDiscoveryRound(std::function<void(const std::vector<std::string>&)> done) {
    if (!multicast) {
      if (done) done({});
      return;
    }
    auto answered = std::make_shared<std::vector<std::string>>();
    const bool started = multicast->start(
        discoveryTargets(), config.coap.discovery.window, config.coap.discovery.query,
        [this, answered](const DiscoveryAnswer& a) { answered->push_back(onMulticastAnswer(a)); },
        [this, answered, done](std::size_t count) {
          spdlog::info("discovery: {} device(s) answered", count);
          flushStore();
          if (done) done(*answered);
        });
    if (!started && done) done({});
  }

  std::string nameForUri(const std::string& uri) const {
    const registry::Device* d = registry.findByUri(uri);
    return d == nullptr ? std::string{} : d->name;
  }

  // Returns the device's name.
  std::string onMulticastAnswer(const DiscoveryAnswer& answer) {
    std::string name = nameForUri(answer.uri);
    auto links =
        answer.complete ? registry::parseLinkFormat(answer.payload) : registry::LinkFormatResult{};
    const bool usable = answer.complete && links.ok();
    if (name.empty()) {
      name = uniqueName(deviceNameForAddress(answer.host, answer.port));
      std::string error;
      if (!coap.addDevice(name, answer.uri, &error)) {
        spdlog::warn("discovery: {}: {}", answer.uri, error);
        return name;
      }
      registry::Device d;
      d.name = name;
      d.uri = answer.uri;
      d.source = registry::Source::Multicast;
      d.first_seen = SystemClock::now();
      // Stored together with its resources: a crash now leaves a device that can be
      // observed straight from the database.
      if (usable) d.resources = resourcesFrom(links.links);
      const registry::Device& added = registry.upsert(std::move(d));
      store->save(added);
      states[name];
      spdlog::info("discovery: new device {} at {}", name, answer.uri);
      publishEvent("device_joined", added);
      scheduleDevicesPublish();
    }
    heard(name);
    if (usable) {
      updateResources(name, resourcesFrom(links.links), false);
    } else {
      discover(name);  // partial (Block2) or unparsable answer: ask the device directly
    }
    return name;
  }

  std::string uniqueName(const std::string& base) const {
    if (registry.find(base) == nullptr) return base;
    for (int i = 2;; ++i) {
      std::string candidate = base + "-" + std::to_string(i);
      if (registry.find(candidate) == nullptr) return candidate;
    }
  }

  // ---- Resource Directory ---------------------------------------------------------------

  void startServer() {
    for (const auto& address : config.coap.listen) {
      std::string error;
      if (!coap.listen(address, &error)) throw std::runtime_error("coap: " + error);
      spdlog::info("coap: listening on {}", address);
    }
    if (config.coap.listen.empty() || !config.coap.resource_directory) return;
    coap.serve("rd", {{"rt", "\"core.rd\""}, {"ct", "40"}},
               [this](const CoapServerRequest& r) { return onRdRequest(r); });
    coap.serve("rd-lookup/ep", {{"rt", "\"core.rd-lookup-ep\""}, {"ct", "40"}},
               [this](const CoapServerRequest& r) {
                 if (r.method != bridge::Method::Get) return CoapServerResponse{405, {}, {}, {}};
                 return fromRd(rd.lookupEndpoints(rdQuery(r.query)));
               });
    coap.serve("rd-lookup/res", {{"rt", "\"core.rd-lookup-res\""}, {"ct", "40"}},
               [this](const CoapServerRequest& r) {
                 if (r.method != bridge::Method::Get) return CoapServerResponse{405, {}, {}, {}};
                 return fromRd(rd.lookupResources(rdQuery(r.query)));
               });
    coap.serveUnknown([this](const CoapServerRequest& r) { return onRdRequest(r); });
  }

  CoapServerResponse onRdRequest(const CoapServerRequest& r) {
    std::vector<registry::RdEvent> events;
    registry::RdResult result;
    const auto now = SteadyClock::now();
    if (r.path == "/rd") {
      if (r.method != bridge::Method::Post) return CoapServerResponse{405, {}, {}, {}};
      result =
          rd.registerEndpoint(rdQuery(r.query), r.payload, r.content_format, r.source, now, events);
    } else if (r.path.rfind("/rd/", 0) == 0) {
      switch (r.method) {
        case bridge::Method::Post:
          result = rd.update(r.path, rdQuery(r.query), r.payload, now, events);
          break;
        case bridge::Method::Delete:
          result = rd.remove(r.path, events);
          break;
        case bridge::Method::Get:
          result = rd.read(r.path);
          break;
        default:
          return CoapServerResponse{405, {}, {}, {}};
      }
    } else {
      return CoapServerResponse{404, {}, {}, {}};
    }
    for (const auto& e : events) onRdEvent(e);
    scheduleRdExpiry();
    return fromRd(result);
  }

  // Registrations outlive a restart: their lifetimes keep running (wall clock) and their
  // locations keep answering updates.
  void restoreRdRegistrations() {
    std::vector<registry::SkippedRdRegistration> skipped;
    const auto now_system = SystemClock::now();
    const auto now_steady = SteadyClock::now();
    std::size_t restored = 0;
    for (auto& stored : store->loadRdRegistrations(&skipped)) {
      registry::RdRegistration r = std::move(stored.registration);
      r.expires = now_steady +
                  std::chrono::duration_cast<SteadyClock::duration>(stored.expires_at - now_system);
      rd.restore(std::move(r));
      ++restored;
    }
    for (const auto& bad : skipped) {
      spdlog::warn("rd: dropping stored registration {}: {}", bad.location, bad.reason);
      store->removeRdRegistration(bad.location);
    }
    if (restored > 0) spdlog::info("rd: {} registration(s) restored", restored);
    scheduleRdExpiry();
  }

  void persistRdEvent(const registry::RdEvent& e) {
    try {
      if (e.kind == registry::RdEvent::Kind::Registered ||
          e.kind == registry::RdEvent::Kind::Updated) {
        const auto left = e.registration.expires - SteadyClock::now();
        store->saveRdRegistration(
            e.registration,
            SystemClock::now() + std::chrono::duration_cast<SystemClock::duration>(left));
      } else {
        store->removeRdRegistration(e.registration.location);
      }
    } catch (const std::exception& ex) {
      spdlog::warn("rd: cannot store registration {}: {}", e.registration.location, ex.what());
    }
  }

  void scheduleRdExpiry() {
    if (rd_expiry_timer != 0) loop.cancel(rd_expiry_timer);
    rd_expiry_timer = 0;
    auto next = rd.nextExpiry();
    if (!next) return;
    auto delay = std::chrono::duration_cast<std::chrono::milliseconds>(*next - SteadyClock::now());
    rd_expiry_timer = loop.runAfter(std::max(delay, std::chrono::milliseconds(0)), [this] {
      rd_expiry_timer = 0;
      std::vector<registry::RdEvent> events;
      rd.expire(SteadyClock::now(), events);
      for (const auto& e : events) onRdEvent(e);
      scheduleRdExpiry();
    });
  }

  void onRdEvent(const registry::RdEvent& e) {
    persistRdEvent(e);
    const auto& reg = e.registration;
    // A device already known at that address keeps its name (a configured name wins);
    // else the endpoint name, unless another (non-RD) device has it.
    std::string name = nameForUri(reg.base);
    if (name.empty()) {
      const std::string wanted = deviceNameFromEndpoint(reg.ep);
      const registry::Device* holder = registry.find(wanted);
      name = holder == nullptr || holder->source == registry::Source::ResourceDirectory
                 ? wanted
                 : uniqueName(wanted);
    }
    switch (e.kind) {
      case registry::RdEvent::Kind::Registered:
      case registry::RdEvent::Kind::Updated: {
        registry::Device* existing = registry.findMutable(name);
        // A known device at a new address: its old session and observations are gone.
        const bool moved = existing != nullptr && existing->uri != reg.base;
        if (existing == nullptr || existing->uri != reg.base) {
          std::string error;
          if (!coap.addDevice(name, reg.base, &error)) {
            spdlog::warn("rd: {}: {}", reg.ep, error);
            return;
          }
          registry::Device d;
          if (existing != nullptr) d = *existing;  // keeps online state, history, resources
          d.name = name;
          d.uri = reg.base;
          if (existing == nullptr) {
            d.source = registry::Source::ResourceDirectory;
            d.first_seen = SystemClock::now();
          }
          const registry::Device& added = registry.upsert(std::move(d));
          store->save(added);
          if (existing == nullptr) {
            spdlog::info("rd: {} registered as {} at {}", reg.ep, name, reg.base);
            publishEvent("device_joined", added);
          }
          scheduleDevicesPublish();
        }
        heard(name);
        updateResources(name, resourcesFrom(reg.links), false);
        if (moved) {
          if (const registry::Device* d = registry.find(name)) applyPlan(*d, true);
        }
        break;
      }
      case registry::RdEvent::Kind::Expired:
        if (registry::Device* d = registry.findMutable(name)) {
          spdlog::info("rd: registration of {} expired", reg.ep);
          stopWatches(states[name]);
          setOnline(*d, false, true);
        }
        break;
      case registry::RdEvent::Kind::Removed:
        if (const registry::Device* d = registry.find(name)) {
          spdlog::info("rd: {} deregistered", reg.ep);
          publishEvent("device_left", *d);
          removeDevice(name);
        }
        break;
    }
  }

  void removeDevice(const std::string& name) {
    auto it = states.find(name);
    if (it != states.end()) {
      stopWatches(it->second);
      for (const auto& [t, payload] : it->second.ha_configs) mqtt.publish(t, "", 1, true);
      if (it->second.retry_timer != 0) loop.cancel(it->second.retry_timer);
      states.erase(it);
    }
    coap.removeDevice(name);
    registry.remove(name);
    store->remove(name);
    mqtt.publish(availabilityTopic(name), "", 1, true);  // clears the retained state
    scheduleDevicesPublish();
  }

  // ---- MQTT -----------------------------------------------------------------------------

  void publishEvent(const char* type, const registry::Device& device) {
    Json data{
        {"name", device.name}, {"source", registry::toString(device.source)}, {"uri", device.uri}};
    mqtt.publish(topic("bridge/event"), Json{{"type", type}, {"data", std::move(data)}}.dump(), 1,
                 false);
  }

  void scheduleDevicesPublish() {
    if (devices_publish_pending) return;
    devices_publish_pending = true;
    loop.runAfter(kDevicesDebounce, [this] {
      devices_publish_pending = false;
      publishDevices();
    });
  }

  void publishDevices() {
    // One device's JSON at a time: a document of 1,000 devices would be megabytes of
    // nodes at its peak, and the heap keeps that high-water mark as RSS.
    std::string list = "[";
    for (const registry::Device* d : registry.all()) {
      if (list.size() > 1) list += ',';
      list += deviceJson(*d).dump();
    }
    list += ']';
    mqtt.publish(topic("bridge/devices"), list, 1, true);
  }

  Json statsJson() const {
    const CoapStats& c = coap.stats();
    std::size_t online = 0;
    std::size_t observed = 0;
    for (const registry::Device* d : registry.all()) online += d->online ? 1 : 0;
    for (const auto& [name, state] : states) {
      for (const auto& w : state.watches) observed += w->observe_id != 0 ? 1 : 0;
    }
    return Json{{"devices", registry.size()},
                {"devices_online", online},
                {"observations", observed},
                {"coap",
                 {{"requests", c.requests_sent},
                  {"responses", c.responses},
                  {"notifications", c.notifications},
                  {"failures", c.failures},
                  {"unknown_token", c.unknown_token},
                  {"session_resets", c.session_resets},
                  {"extra_acks", c.extra_acks}}},
                {"dropped",
                 {{"stale_notification", stale_notifications},
                  {"bad_payload", route_stats.bad_payload},
                  {"bad_topic", route_stats.bad_topic},
                  {"command_refused", commands_refused}}},
                {"commands",
                 {{"submitted", commands.stats().submitted},
                  {"answered", commands.stats().answered},
                  {"failed", commands.stats().failed},
                  {"timed_out", commands.stats().timed_out},
                  {"queue_full", commands.stats().queue_full},
                  {"rate_limited", commands.stats().rate_limited}}},
                {"reregistrations", reregistrations},
                {"published", route_stats.published},
                {"mqtt",
                 {{"publish_failed", mqtt.stats().publish_failed.load()},
                  {"delivered", mqtt.stats().delivered.load()},
                  {"qos0_dropped", mqtt.stats().qos0_dropped.load()},
                  {"outbox", mqtt.outboxSize()},
                  {"outbox_dropped", mqtt.outboxStats().dropped},
                  {"outbox_write_failures", mqtt.stats().outbox_write_failures.load()}}}};
  }

  // Retained: who we are and how we are doing (refreshed every kStatsInterval).
  void publishInfo() { mqtt.publish(topic("bridge/info"), infoJson().dump(), 1, true); }

  Json infoJson() const {
    return Json{{"version", COAP2MQTT_VERSION},
                {"gateway", config.name},
                {"rules", config.rules.rules.size()},
                {"commands", config.rules.commands.size()},
                {"stats", statsJson()},
                {"per_device", perDeviceJson()}};
  }

  // Observe counters of every device that has any.
  Json perDeviceJson() const {
    Json out = Json::object();
    for (const auto& [name, st] : states) {
      if (st.notifications + st.stale + st.reregistrations + st.failures == 0) continue;
      out[name] = Json{{"notifications", st.notifications},
                       {"stale", st.stale},
                       {"reregistrations", st.reregistrations},
                       {"failures", st.failures}};
    }
    return out;
  }

  void scheduleStats() {
    loop.runAfter(kStatsInterval, [this] {
      spdlog::info("stats: {}", statsJson().dump());
      publishInfo();
      if (!stopping) scheduleStats();
    });
  }

  void onMqttConnected() {
    mqtt.publish(topic("bridge/state"), stateJson("online"), 1, true);
    publishInfo();
    // Brokers lose retained messages: say again where every device stands.
    for (const registry::Device* device : registry.all()) {
      if (states[device->name].ever_online || !device->online) {
        mqtt.publish(availabilityTopic(device->name), device->online ? "online" : "offline", 1,
                     true);
      }
    }
    publishDevices();
    for (const auto& [name, state] : states) {
      for (const auto& [t, payload] : state.ha_configs) mqtt.publish(t, payload, 1, true);
    }
  }

  void onMqttMessage(const std::string& t, const std::string& payload,
                     const MqttMessageMeta& meta) {
    const std::string request_prefix = topic("bridge/request/");
    if (t.rfind(request_prefix, 0) == 0) {
      onAdminRequest(t.substr(request_prefix.size()), payload);
      return;
    }
    onCommand(t, payload, meta.response_topic, meta.correlation_data);
  }

  // ---- admin API (<base>/bridge/request/<op>) --------------------------------------------

  void respond(const admin::Request& request, const admin::Json& data, const std::string& error) {
    mqtt.publish(topic("bridge/response/" + request.op), admin::response(request, data, error), 1,
                 false);
  }

  void onAdminRequest(const std::string& op, const std::string& payload) {
    admin::Request request = admin::parseRequest(op, payload);
    if (request.error) {
      respond(request, admin::Json::object(), *request.error);
      return;
    }
    std::string error;
    if (op == "discover") {
      if (!multicast) {
        respond(request, admin::Json::object(),
                "multicast discovery is off (coap.discovery.multicast is empty)");
        return;
      }
      runDiscoveryRound([this, request](const std::vector<std::string>& names) {
        respond(request, Json{{"devices", names}}, "");
      });
    } else if (op == "device/rename") {
      auto from = admin::stringField(request, "from", &error);
      auto to = from ? admin::stringField(request, "to", &error) : std::nullopt;
      if (from && to) error = rename(*from, *to);
      respond(request, Json{{"from", from.value_or("")}, {"to", to.value_or("")}}, error);
    } else if (op == "device/remove") {
      auto name = admin::stringField(request, "device", &error);
      if (name) error = forget(*name);
      respond(request, name ? Json{{"device", *name}} : Json::object(), error);
    } else if (op == "device/read") {
      adminRead(request);
    } else if (op == "rules/reload") {
      error = reload();
      respond(request,
              error.empty() ? Json{{"rules", config.rules.rules.size()},
                                   {"commands", config.rules.commands.size()}}
                            : Json::object(),
              error);
    } else if (op == "health_check") {
      respond(request, healthJson(), "");
    } else if (op == "info") {
      respond(request, infoJson(), "");
    } else {
      respond(request, admin::Json::object(), admin::unknownOperation(op));
    }
  }

  Json healthJson() const {
    std::size_t online = 0;
    for (const registry::Device* d : registry.all()) online += d->online ? 1 : 0;
    const bool mqtt_up = mqtt.connected();
    return Json{
        {"healthy", mqtt_up},
        {"mqtt_connected", mqtt_up},
        {"devices", registry.size()},
        {"devices_online", online},
        {"uptime_s",
         std::chrono::duration_cast<std::chrono::seconds>(SteadyClock::now() - started).count()}};
  }

  // device/read {"device","path"}: a CoAP GET now, through the device's command queue.
  void adminRead(const admin::Request& request) {
    std::string error;
    auto device = admin::stringField(request, "device", &error);
    auto path = device ? admin::stringField(request, "path", &error) : std::nullopt;
    if (path && path->front() != '/') *path = "/" + *path;
    if (device && path && registry.find(*device) == nullptr) {
      error = "unknown device '" + *device + "'";
    }
    if (!error.empty()) {
      Json data = Json::object();
      if (device) data["device"] = *device;
      if (path) data["path"] = *path;
      respond(request, data, error);
      return;
    }
    CommandRequest get{*device, *path, bridge::Method::Get, {}, std::nullopt};
    CommandLimits limits;
    limits.timeout = config.coap.request_timeout;
    commands.submit(
        std::move(get), limits,
        [this, request, device = *device, path = *path](const CommandOutcome& o) {
          Json data{{"device", device}, {"path", path}, {"latency_ms", o.latency.count()}};
          std::string problem;
          if (o.kind == CommandOutcome::Kind::Answered) {
            heard(device);
            data["code"] = coapCodeString(o.reply.code);
            data["payload"] = Json::parse(
                responsePayloadJson(o.reply.content_format, o.reply.payload), nullptr, false);
            if (o.reply.code / 100 != 2)
              problem = "device answered " + data["code"].get<std::string>();
          } else {
            problem = o.error;
          }
          respond(request, data, problem);
        });
  }

  // device/remove: forget a discovered or registered device (a configured one stays).
  std::string forget(const std::string& name) {
    const registry::Device* device = registry.find(name);
    if (device == nullptr) return "unknown device '" + name + "'";
    if (device->source == registry::Source::Static) {
      return "'" + name + "' is configured in " + config.file + "; remove it there";
    }
    publishEvent("device_left", *device);
    commands.dropDevice(name, "device removed");
    removeDevice(name);  // stops watches, cancels observations, clears retained availability
    spdlog::info("device {} removed on request", name);
    return {};
  }

  std::string rename(const std::string& from, const std::string& to) {
    const registry::Device* device = registry.find(from);
    if (device == nullptr) return "unknown device '" + from + "'";
    if (!isValidDeviceName(to)) return "invalid name '" + to + "': use [A-Za-z0-9_.-]";
    if (registry.find(to) != nullptr) return "name '" + to + "' is taken";
    if (device->source == registry::Source::Static) {
      return "'" + from + "' is configured in " + config.file + "; rename it there";
    }
    registry::Device renamed = *device;
    renamed.name = to;
    std::string error;
    commands.dropDevice(from, "device renamed to '" + to + "'");
    removeDevice(from);  // stops watches, clears retained availability of the old name
    if (!coap.addDevice(to, renamed.uri, &error)) return error;
    const registry::Device& added = registry.upsert(std::move(renamed));
    store->save(added);
    states[to];
    if (added.online) {
      states[to].ever_online = true;
      states[to].last_heard = SteadyClock::now();
      mqtt.publish(availabilityTopic(to), "online", 1, true);
    }
    applyPlan(added);
    publishEvent("device_renamed", added);
    spdlog::info("device {} renamed to {}", from, to);
    return {};
  }

  // ---- commands (MQTT -> CoAP) -----------------------------------------------------------

  CommandQueue::Io commandIo() {
    CommandQueue::Io io;
    io.now = [] { return SteadyClock::now(); };
    io.send = [this](const CommandRequest& r, CommandQueue::ReplyHandler reply) {
      return coap.request(r.device, r.method, r.path, r.payload, r.content_format,
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
    io.cancel = [this](std::uint64_t id) { coap.cancelRequest(id); };
    io.runAfter = [this](std::chrono::milliseconds d, std::function<void()> f) {
      return loop.runAfter(d, std::move(f));
    };
    io.cancelTimer = [this](std::uint64_t id) { loop.cancel(id); };
    return io;
  }

  // The result goes to the MQTT 5 Response Topic with its Correlation Data when the command
  // had them, else to the rule's result topic.
  void publishResult(const std::string& result_topic, const std::string& response_topic,
                     const std::string& correlation, const std::string& payload) {
    const std::string& to = response_topic.empty() ? result_topic : response_topic;
    mqtt.publish(to, payload, 1, false, correlation);
  }

  void onCommand(const std::string& t, const std::string& payload,
                 const std::string& response_topic, const std::string& correlation) {
    auto planned = planCommand(config.rules, registry, config.name, t, payload);
    if (!planned) return;  // not a command topic (e.g. our own publications)
    if (auto* refused = std::get_if<RefusedCommand>(&*planned)) {
      ++commands_refused;
      spdlog::warn("command on {} refused: {}", t, refused->error);
      publishResult(refused->context.result_topic, response_topic, correlation,
                    commandRefusedJson(*refused));
      return;
    }
    auto& command = std::get<PlannedCommand>(*planned);
    spdlog::debug("command {} {}{} ({} bytes)", bridge::toString(command.request.method),
                  command.request.device, command.request.path, command.request.payload.size());
    commands.submit(std::move(command.request), command.limits,
                    [this, context = std::move(command.context), response_topic,
                     correlation](const CommandOutcome& outcome) {
                      if (outcome.kind == CommandOutcome::Kind::Answered) {
                        heard(context.device);
                      } else {
                        spdlog::warn("command {} {}{}: {}", bridge::toString(context.method),
                                     context.device, context.path, outcome.error);
                      }
                      publishResult(context.result_topic, response_topic, correlation,
                                    commandResultJson(context, outcome));
                    });
  }

  // ---- signals, reload, shutdown --------------------------------------------------------

  void onSignal(int sig) {
    if (sig == SIGHUP) {
      reload();
      return;
    }
    spdlog::info("signal {}: shutting down", sig);
    shutdown();
  }

  // Empty on success, else what was wrong (the old rules stay).
  std::string reload() {
    try {
      GatewayConfig fresh = loadConfig(config.file);
      dropHeldBack();
      config.rules = std::move(fresh.rules);
    } catch (const bridge::ConfigErrors& e) {
      spdlog::error("reload failed, keeping the old rules:\n{}", e.what());
      return e.what();
    } catch (const std::exception& e) {
      spdlog::error("reload failed, keeping the old rules: {}", e.what());
      return e.what();
    }
    mqtt.unsubscribeAll();
    subscribeAll();
    for (const registry::Device* device : registry.all()) applyPlan(*device);
    // Held back under the old rules: the held-back messages carry the old topics, qos and
    // retain, so they must not go out any more. The latest value goes through the new rules
    // that rate-limit instead (rules without min_interval published it already).
    for (auto& [name, state] : states) {
      for (auto& w : state.watches) {
        if (!w->reroute) continue;
        w->reroute = false;
        if (!w->have_value) continue;
        std::vector<std::size_t> limited;
        for (std::size_t index : w->watch.rules) {
          if (config.rules.rules[index].min_interval.count() > 0) limited.push_back(index);
        }
        if (!limited.empty()) routeLast(*w, limited);
      }
    }
    spdlog::info("rules reloaded: {} rule(s), {} command(s)", config.rules.rules.size(),
                 config.rules.commands.size());
    return {};
  }

  // Before the rules change: forgets what min_interval holds back (it was routed with the
  // old rules) and marks those watches for routing their latest value again (see reload()).
  // The rest of their RouteState goes too; only_changes then publishes the next value even
  // if unchanged. Watches with nothing held back keep theirs.
  void dropHeldBack() {
    for (auto& [name, state] : states) {
      for (auto& w : state.watches) {
        if (!w->route_state.nextDue()) continue;
        if (w->flush_timer != 0) loop.cancel(w->flush_timer);
        w->flush_timer = 0;
        w->route_state.clear();
        w->reroute = true;
      }
    }
  }

  void shutdown() {
    if (stopping) return;
    stopping = true;
    for (auto& [name, state] : states) {
      if (state.retry_timer != 0) loop.cancel(state.retry_timer);
      state.retry_timer = 0;
      stopWatches(state);  // sends the observe cancellations
    }
    spdlog::info("stats: {}", statsJson().dump());
    // While we are down nobody vouches for the devices: the database says so.
    for (const registry::Device* d : registry.all()) store->touch(d->name, d->last_seen, false);
    flushStore();
    // Let the cancellations leave before the context goes away.
    loop.runAfter(kShutdownFlush, [this] {
      mqtt.stop(topic("bridge/state"), stateJson("offline"));
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
