#include "gateway/observer.h"

#include <spdlog/spdlog.h>

#include "gateway/coap_link.h"
#include "gateway/devices.h"
#include "gateway/event_loop.h"

namespace coap2mqtt::gateway {

// The watches' transport is the device's CoAP session.
class Observer::Transport : public WatchTransport {
 public:
  explicit Transport(CoapLink& coap) : coap_(coap) {}
  Id observe(const std::string& device, const std::string& path, Handler handler,
             std::optional<std::chrono::milliseconds> timeout) override {
    return coap_.observe(device, path, std::move(handler), timeout);
  }
  Id get(const std::string& device, const std::string& path, Handler handler) override {
    return coap_.request(device, bridge::Method::Get, path, {}, std::nullopt, std::move(handler));
  }
  void cancel(Id id) override { coap_.cancelRequest(id); }
  void deregister(Id id) override { coap_.cancelObserve(id); }

 private:
  CoapLink& coap_;
};

Observer::Observer(const GatewayConfig& config, EventLoop& loop, CoapLink& coap, Devices& devices,
                   Events& events)
    : config_(config),
      loop_(loop),
      devices_(devices),
      events_(events),
      transport_(std::make_unique<Transport>(coap)) {
  events.on<DeviceResources>([this](const DeviceResources& e) {
    auto it = watched_.find(e.device.name);
    const bool none = it == watched_.end() || it->second.watches.empty();
    if (e.changed || e.replan || none) applyPlan(e.device, false);
  });
  events.on<DeviceAvailability>([this](const DeviceAvailability& e) {
    if (!e.came_back) return;
    // Deferred: we may be inside one of this device's watch handlers right now.
    loop_.post([this, name = e.device.name] {
      const registry::Device* d = devices_.registry().find(name);
      if (d != nullptr && d->online) applyPlan(*d, true);
    });
  });
  events.on<DeviceMoved>([this](const DeviceMoved& e) { applyPlan(e.device, true); });
  events.on<DeviceRemoved>([this](const DeviceRemoved& e) {
    auto it = watched_.find(e.device.name);
    if (it == watched_.end()) return;
    for (auto& w : it->second.watches) w.watch->stop();
    watched_.erase(it);
  });
}

Observer::~Observer() = default;

void Observer::stop() {
  for (auto& [name, dw] : watched_) {
    for (auto& w : dw.watches) w.watch->stop();  // sends the observe cancellations
  }
}

void Observer::stopDevice(const std::string& name) {
  auto it = watched_.find(name);
  if (it == watched_.end()) return;
  for (auto& w : it->second.watches) w.watch->stop();
  it->second.watches.clear();
}

void Observer::replanAll() {
  for (const registry::Device* device : devices_.registry().all()) applyPlan(*device, false);
}

void Observer::forEachSlot(const std::function<void(ValueSlot&)>& f) {
  for (auto& [name, dw] : watched_) {
    for (auto& w : dw.watches) f(*w.slot);
  }
}

std::size_t Observer::observations() const {
  std::size_t n = 0;
  for (const auto& [name, dw] : watched_) {
    for (const auto& w : dw.watches) n += w.watch->observing() ? 1 : 0;
  }
  return n;
}

std::vector<std::pair<std::string, Observer::Counters>> Observer::perDevice() const {
  std::vector<std::pair<std::string, Counters>> out;
  for (const auto& [name, dw] : watched_) {
    const Counters& c = dw.counters;
    if (c.notifications + c.stale + c.reregistrations + c.failures == 0) continue;
    out.emplace_back(name, c);
  }
  return out;
}

void Observer::count(DeviceWatches& dw, Watch::Count what) {
  switch (what) {
    case Watch::Count::Notification:
      ++dw.counters.notifications;
      ++totals_.notifications;
      break;
    case Watch::Count::Stale:
      ++dw.counters.stale;
      ++totals_.stale;
      break;
    case Watch::Count::Reregistration:
      ++dw.counters.reregistrations;
      ++totals_.reregistrations;
      break;
    case Watch::Count::Failure:
      ++dw.counters.failures;
      ++totals_.failures;
      break;
  }
}

// Brings the device's watches in line with the rules. Unchanged ones (same path, same
// mode, same poll interval) keep their observation; only the rules they feed are
// swapped. `restart` registers everything again (after a partition or a reboot).
void Observer::applyPlan(const registry::Device& device, bool restart) {
  DeviceWatches& dw = watched_[device.name];
  std::vector<Watched> next;
  std::vector<std::size_t> to_start;
  const WatchSettings settings = WatchSettings::from(config_.coap);
  for (auto& plan : bridge::plan(config_.rules, device)) {
    Watched w;
    if (!restart) {
      for (auto& old : dw.watches) {
        if (old.watch && old.watch->plan().path == plan.path && old.watch->mode() == plan.mode &&
            old.watch->plan().interval == plan.interval) {
          w = std::move(old);
          break;
        }
      }
    }
    const registry::Resource* resource = device.findResource(plan.path);
    if (w.watch) {
      w.watch->setRules(plan.rules);
    } else {
      // A watch replacing one on the same resource (restarted, or its mode changed) goes
      // on from it: what min_interval holds back, only_changes' memory, the latest value,
      // and what it last published (not published twice).
      Watched* old = nullptr;
      for (auto& candidate : dw.watches) {
        if (candidate.watch && candidate.watch->plan().path == plan.path) old = &candidate;
      }
      w.slot = old != nullptr ? std::move(old->slot)
                              : std::make_unique<ValueSlot>(loop_, device.name, plan.path);
      ValueSlot* slot = w.slot.get();
      Watch::Listener listener;
      listener.heard = [this, name = device.name] { devices_.heard(name); };
      listener.value = [this, slot](const CoapResponse& r) {
        events_.emit(ValueReceived{*slot, r});
      };
      listener.counted = [this, &dw](Watch::Count what) { count(dw, what); };
      w.watch = std::make_unique<Watch>(plan, *transport_, loop_, settings, std::move(listener));
      if (old != nullptr) w.watch->continueFrom(*old->watch);
      to_start.push_back(next.size());
    }
    w.slot->rules = std::move(plan.rules);
    w.slot->rt =
        resource != nullptr && !resource->rt.empty() ? resource->rt.front() : std::string{};
    next.push_back(std::move(w));
  }
  for (auto& old : dw.watches) {
    if (old.watch) old.watch->stop(!restart);
  }
  dw.watches = std::move(next);
  std::vector<const ValueSlot*> slots;
  slots.reserve(dw.watches.size());
  for (const auto& w : dw.watches) slots.push_back(w.slot.get());
  events_.emit(WatchesPlanned{device, slots});
  for (std::size_t i : to_start) dw.watches[i].watch->start();
  spdlog::debug("device {}: watching {} resource(s), {} (re)started", device.name,
                dw.watches.size(), to_start.size());
}

}  // namespace coap2mqtt::gateway
