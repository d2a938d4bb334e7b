#include "gateway/devices.h"

#include <algorithm>
#include <filesystem>
#include <type_traits>

#include <spdlog/spdlog.h>

#include "bridge/glob.h"
#include "gateway/config_values.h"
#include "gateway/device_names.h"
#include "gateway/event_loop.h"
#include "registry/sqlite.h"
#include "registry/store.h"

namespace coap2mqtt::gateway {
namespace {

using SteadyClock = std::chrono::steady_clock;
using SystemClock = std::chrono::system_clock;

constexpr auto kStoreFlushInterval = std::chrono::seconds(2);
// Start-up requests, one per device: 1,000 devices a second (10,000 come up in ~10 s; faster
// gains nothing, the gateway spends about a millisecond of CPU on each device it learns), a
// DTLS device's 2 ms after the one before (its handshake comes with it, several times the work).
constexpr auto kStartupSpacing = std::chrono::milliseconds(1);
constexpr auto kStartupSpacingDtls = std::chrono::milliseconds(2);

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

}  // namespace

std::vector<registry::Resource> resourcesFrom(const std::vector<registry::Link>& links) {
  std::vector<registry::Resource> out;
  // Exactly as many as there may be: the registry keeps this vector for the device's life,
  // and growing it by doubling left 8 slots of 168 bytes for the usual 5 resources.
  out.reserve(links.size());
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

Devices::Devices(const GatewayConfig& config, EventLoop& loop, CoapLink& coap, Events& events)
    : config_(config),
      credential_rules_(config.coap.credentials),
      loop_(loop),
      coap_(coap),
      events_(events) {}

Devices::~Devices() = default;

// The registry is a cache of what was learned: a file that cannot be used must not keep the
// daemon down (systemd would restart it forever) nor cost the configured devices. One that
// is not a usable database is moved aside and replaced by a fresh one; one that cannot be
// opened at all (read-only, full disk, a directory) leaves a store in memory for this run.
void Devices::open() {
  const std::string path = config_.state_dir + "/registry.db";
  try {
    std::filesystem::create_directories(config_.state_dir);
    try {
      store_ = std::make_unique<registry::Store>(path);
    } catch (const registry::sqlite::Error& e) {
      if (!e.unusableFile()) throw;
      replaceUnusableStore(e.what());
    }
  } catch (const std::exception& e) {
    spdlog::error(
        "registry: {}; running with a registry in memory: configured devices are bridged, "
        "but what is learned is not kept across a restart",
        e.what());
    store_ = std::make_unique<registry::Store>(":memory:");
  }
}

void Devices::replaceUnusableStore(const std::string& why) {
  const std::string path = config_.state_dir + "/registry.db";
  store_.reset();
  const std::string aside = registry::sqlite::moveAside(path);
  spdlog::error("registry: {}; moved it aside to {} and starting with an empty registry", why,
                aside);
  store_ = std::make_unique<registry::Store>(path);
}

void Devices::start() {
  loadKnown();
  for (const auto& device : config_.devices) addStatic(device);
  scheduleLiveness();
  scheduleStoreFlush();
}

void Devices::stop() {
  stopping_ = true;
  for (auto& [name, state] : states_) {
    if (state.retry_timer != 0) loop_.cancel(state.retry_timer);
    state.retry_timer = 0;
  }
  for (const registry::Device* d : registry_.all()) {
    write("touch", d->name, [&] { store_->touch(d->name, d->last_seen, false); });
  }
  flushStore();
}

Devices::State* Devices::state(std::string_view name) {
  auto it = states_.find(name);
  return it == states_.end() ? nullptr : &it->second;
}

std::string Devices::nameForUri(const std::string& uri) const {
  const registry::Device* d = registry_.findByUri(uri);
  return d == nullptr ? std::string{} : d->name;
}

std::string Devices::uniqueName(const std::string& base) const {
  if (registry_.find(base) == nullptr) return base;
  for (int i = 2;; ++i) {
    std::string candidate = base + "-" + std::to_string(i);
    if (registry_.find(candidate) == nullptr) return candidate;
  }
}

bool Devices::everOnline(std::string_view name) const {
  auto it = states_.find(name);
  return it != states_.end() && it->second.ever_online;
}

std::size_t Devices::onlineCount() const {
  std::size_t online = 0;
  for (const registry::Device* d : registry_.all()) online += d->online ? 1 : 0;
  return online;
}

// A write the store could not make now is kept by the store for its next flush (or, if
// the database refused it, dropped alone); either way it is logged once per interval while
// it keeps failing, and never ends the daemon.
template <class Write>
void Devices::write(const char* what, std::string_view name, Write&& write) {
  std::string problem;
  try {
    if constexpr (std::is_void_v<decltype(write())>) {
      write();
    } else if (write() != registry::WriteResult::Written) {
      problem = store_->lastError();
    }
  } catch (const std::exception& e) {
    problem = e.what();
  }
  if (problem.empty()) return;
  if (store_failures_.failed(SteadyClock::now())) {
    spdlog::error("registry: {} of {} not written yet ({} failure(s) since the last report): {}",
                  what, name, store_failures_.unreported(), problem);
    store_failures_.reported();
  }
}

void Devices::save(const registry::Device& device) {
  write("save", device.name, [&] { store_->save(device); });
}

// ---- where devices come from ----------------------------------------------------------

// Devices from the last run: observed again at once, no discovery round needed.
void Devices::loadKnown() {
  std::size_t reobserved = 0;
  std::vector<registry::Device> known;
  try {
    known = store_->loadAll();
  } catch (const registry::sqlite::Error& e) {
    // Corruption past the header shows only when the pages are read.
    if (!e.unusableFile()) {
      spdlog::error("registry: cannot read the known devices: {}", e.what());
    } else {
      try {
        replaceUnusableStore(e.what());
      } catch (const std::exception& again) {
        spdlog::error("registry: {}; running with a registry in memory", again.what());
        store_ = std::make_unique<registry::Store>(":memory:");
      }
    }
  }
  for (auto& stored : known) {
    const bool is_static = stored.source == registry::Source::Static;
    if (is_static && findStaticConfig(stored.name) == nullptr) {
      write("remove", stored.name, [&] { store_->remove(stored.name); });  // not configured
      continue;
    }
    if (!is_static && configuredAt(stored.uri)) {
      // Learned at a configured device's endpoint (before URIs were compared canonically):
      // the configured device is that endpoint's one device.
      write("remove", stored.name, [&] { store_->remove(stored.name); });
      continue;
    }
    // A [[coap.credentials]] entry added since it was found: reached over DTLS from now on.
    if (!is_static && !isCoapsUri(stored.uri)) stored.uri = reach(stored.name, stored.uri).uri;
    std::string error;
    const DtlsCredentials credentials = credentialsFor(stored.name, stored.uri);
    if (!coap_.addDevice(stored.name, stored.uri, &error, credentials)) {
      spdlog::warn("device {}: {}", stored.name, error);
      continue;
    }
    stored.online = false;
    const registry::Device& device = registry_.upsert(std::move(stored));
    states_[device.name];
    if (!device.resources.empty()) {
      // Spread the registrations (kStartupSpacing apart) so a thousand devices are not
      // all asked at once; each device's session sends one request at a time (NSTART=1).
      // A DTLS device's handshake comes with its first request: spread alike.
      loop_.runAfter(startupSlot(credentials.any()), [this, name = device.name] {
        if (const registry::Device* d = registry_.find(name)) {
          events_.emit(DeviceResources{*d, false, false});
        }
      });
      ++reobserved;
    } else if (device.source != registry::Source::Pushed) {  // a pushing device is only heard
      discover(device.name);  // stored before its resources were known
    }
  }
  if (registry_.size() > 0) {
    spdlog::info("registry: {} known device(s), {} re-observed from the database", registry_.size(),
                 reobserved);
  }
}

bool Devices::configuredAt(std::string_view uri) const {
  const std::string canonical = registry::canonicalUri(uri);
  for (const auto& d : config_.devices) {
    if (registry::canonicalUri(d.uri) == canonical) return true;
  }
  return false;
}

DtlsCredentials Devices::credentialsFor(std::string_view name, std::string_view uri) const {
  const StaticDevice* configured = findStaticConfig(name);
  if (configured != nullptr) {
    return configured->uri == uri ? configured->credentials() : DtlsCredentials{};
  }
  // A device that registered over DTLS (in this run or before): the [[coap.psk_client]]
  // whose endpoints name it (RdSource gives the same at registration). Start-up only.
  if (!isCoapsUri(uri)) return {};
  for (const PskClient& client : config_.coap.psk_clients) {
    for (const std::string& ep : client.endpoints) {
      std::string error;
      auto glob = bridge::Glob::compile(ep, bridge::Glob::Kind::Name, &error);
      if (glob && glob->matches(name)) {
        return DtlsCredentials{PskCredentials{client.identity, client.key_file, client.key}, {}};
      }
    }
  }
  // Else the first [[coap.credentials]] entry for it (a device discovered or registered).
  const CredentialsRule* rule = credential_rules_.find(name, uri);
  return rule == nullptr ? DtlsCredentials{} : rule->credentials();
}

const StaticDevice* Devices::findStaticConfig(std::string_view name) const {
  for (const auto& d : config_.devices) {
    if (d.name == name) return &d;
  }
  return nullptr;
}

void Devices::addStatic(const StaticDevice& device) {
  const registry::Device* known = registry_.find(device.name);
  if (known != nullptr && known->uri == device.uri && !known->resources.empty()) {
    return;  // loaded from the database and already watched
  }
  std::string error;
  if (!coap_.addDevice(device.name, device.uri, &error, device.credentials())) {
    spdlog::error("device {}: {}", device.name, error);
    return;
  }
  registry::Device d;
  d.name = device.name;
  d.uri = device.uri;
  d.source = registry::Source::Static;
  d.first_seen = SystemClock::now();
  registry_.upsert(std::move(d));
  states_[device.name];
  // After the re-observed ones, kStartupSpacing apart like them (and so their handshakes).
  loop_.runAfter(startupSlot(device.credentials().any()),
                 [this, name = device.name] { discover(name); });
}

std::chrono::milliseconds Devices::startupSlot(bool dtls) {
  const auto at = startup_at_;
  startup_at_ += dtls ? kStartupSpacingDtls : kStartupSpacing;
  return at;
}

bool Devices::admits(std::string_view uri, std::string_view from) {
  const CoapLimits& limits = config_.coap.limits;
  const std::string host = registry::uriHost(uri);
  const char* full = nullptr;
  if (registry_.size() >= limits.max_devices) {
    full = "max_devices";
  } else if (registry_.countAtHost(host) >= limits.max_devices_per_host) {
    full = "max_devices_per_host";
  }
  if (full == nullptr) return true;
  ++limit_drops_;
  if (limit_log_.failed(SteadyClock::now())) {
    spdlog::warn(
        "devices: {} device at {} refused: [coap.limits] {} reached ({} device(s), {} at {}); "
        "{} refused since the last report",
        from, uri, full, registry_.size(), registry_.countAtHost(host), host,
        limit_log_.unreported());
    limit_log_.reported();
  }
  return false;
}

const registry::Device* Devices::add(registry::Device device, std::string* error,
                                     const DtlsCredentials& credentials) {
  if (!coap_.addDevice(device.name, device.uri, error,
                       credentials.any() ? credentials : credentialsFor(device.name, device.uri))) {
    return nullptr;
  }
  if (device.first_seen == SystemClock::time_point{}) device.first_seen = SystemClock::now();
  const registry::Device& added = registry_.upsert(std::move(device));
  states_[added.name];
  // Stored together with its resources: a crash now leaves a device that can be observed
  // straight from the database.
  save(added);
  events_.emit(DeviceJoined{added});
  return &added;
}

const registry::Device* Devices::move(const std::string& name, const std::string& uri,
                                      std::string* error) {
  registry::Device* existing = registry_.findMutable(name);
  if (existing == nullptr) return nullptr;
  if (!coap_.addDevice(name, uri, error, credentialsFor(name, uri))) return nullptr;
  registry::Device d = *existing;  // keeps online state, history, resources
  d.uri = uri;
  const registry::Device& moved = registry_.upsert(std::move(d));
  save(moved);
  return &moved;
}

// ---- one device's resources -----------------------------------------------------------

void Devices::discover(const std::string& name) {
  State* s = state(name);
  if (s == nullptr || s->discovering) return;
  s->discovering = true;
  coap_.request(name, bridge::Method::Get, "/.well-known/core", {}, std::nullopt,
                [this, name](const std::optional<CoapResponse>& response,
                             const std::string& error) { onDiscovered(name, response, error); });
}

void Devices::onDiscovered(const std::string& name, const std::optional<CoapResponse>& response,
                           const std::string& error) {
  State* s = state(name);
  if (s == nullptr) return;
  s->discovering = false;
  std::string problem = error;
  registry::LinkFormatResult links;
  if (problem.empty()) {
    heard(name);
    if (!response->success()) problem = "/.well-known/core answered " + response->codeString();
  }
  bool repeated = false;
  if (problem.empty()) {
    links = registry::parseLinkFormat(response->payload);
    if (!links.ok()) {
      problem = "bad link-format at byte " + std::to_string(links.error->offset) + ": " +
                links.error->message;
      // The same broken document at every retry is said once, until it changes.
      const std::size_t document = std::hash<std::string>{}(response->payload);
      repeated = s->bad_document == document;
      s->bad_document = document;
    } else {
      s->bad_document.reset();
    }
  }
  if (!problem.empty()) {
    ++s->failed_discoveries;
    // A DTLS failure the link has said already (once per device and reason).
    repeated = repeated || problem.rfind("DTLS handshake failed", 0) == 0;
    spdlog::log(repeated ? spdlog::level::debug : spdlog::level::warn,
                "device {}: discovery failed: {}; retrying in {} ms", name, problem,
                retryDelay(name).count());
    if (const registry::Device* d = registry_.find(name); d != nullptr && !d->online) {
      setOnline(name, false, true);
    }
    scheduleRediscovery(name);
    return;
  }
  s->failed_discoveries = 0;
  updateResources(name, resourcesFrom(links.links), true);
}

std::chrono::milliseconds Devices::retryDelay(const std::string& name) {
  const std::chrono::milliseconds base = config_.coap.retry_interval;
  const State* s = state(name);
  const registry::Device* d = registry_.find(name);
  if (s == nullptr || d == nullptr || !isCoapsUri(d->uri) || s->failed_discoveries <= 1) {
    return base;
  }
  // Each attempt at a DTLS device is a handshake (and a wrong key stays wrong until someone
  // fixes it): its retries double, up to 32 x retry_interval or 5 minutes, whichever is more.
  const std::chrono::milliseconds cap =
      std::max<std::chrono::milliseconds>(base, std::chrono::minutes(5));
  const unsigned shift = std::min(s->failed_discoveries - 1, 5u);
  return std::min(cap, base * (1 << shift));
}

void Devices::updateResources(const std::string& name, std::vector<registry::Resource> resources,
                              bool replan) {
  registry::Device* device = registry_.findMutable(name);
  if (device == nullptr) return;
  const bool changed = !sameResources(device->resources, resources);
  if (changed) {
    device->resources = std::move(resources);
    spdlog::info("device {}: {} resource(s)", name, device->resources.size());
    save(*device);
  }
  events_.emit(DeviceResources{*device, changed, replan});
}

void Devices::scheduleRediscovery(const std::string& name) {
  State* s = state(name);
  if (s == nullptr || s->retry_timer != 0 || stopping_) return;
  s->retry_timer = loop_.runAfter(retryDelay(name), [this, name] {
    State* st = state(name);
    if (st == nullptr) return;
    st->retry_timer = 0;
    discover(name);
  });
}

// ---- liveness -------------------------------------------------------------------------

void Devices::heard(const std::string& name) {
  registry::Device* device = registry_.findMutable(name);
  State* s = state(name);
  if (device == nullptr || s == nullptr) return;
  s->last_heard = SteadyClock::now();
  device->last_seen = SystemClock::now();
  write("touch", name, [&] { store_->touch(name, device->last_seen, true); });
  if (!device->online) {
    // After a partition or reboot the device may have dropped our observations (the
    // observer re-registers; not while discovery is about to re-plan anyway).
    const bool came_back = s->ever_online && !s->discovering;
    device->online = true;
    s->ever_online = true;
    spdlog::info("device {} is online", name);
    events_.emit(DeviceAvailability{*device, true, came_back});
  }
}

void Devices::setOnline(const std::string& name, bool online, bool force_publish) {
  registry::Device* device = registry_.findMutable(name);
  State* s = state(name);
  if (device == nullptr || s == nullptr) return;
  if (device->online == online && !force_publish) return;
  const bool changed = device->online != online;
  device->online = online;
  if (online) s->ever_online = true;
  write("touch", name, [&] { store_->touch(name, device->last_seen, online); });
  if (changed) spdlog::info("device {} is {}", name, online ? "online" : "offline");
  events_.emit(DeviceAvailability{*device, changed, false});
}

void Devices::scheduleLiveness() {
  auto tick = std::max(std::chrono::milliseconds(250), config_.coap.offline_after / 4);
  loop_.runAfter(tick, [this] {
    if (stopping_) return;
    checkLiveness();
    scheduleLiveness();
  });
}

// Silent for half of offline_after: ping. Silent for all of it: offline.
void Devices::checkLiveness() {
  const auto now = SteadyClock::now();
  for (const registry::Device* d : registry_.all()) {
    if (!d->online) continue;
    State& s = states_[d->name];
    const auto silent = now - s.last_heard;
    // A device that only publishes (/ps) sleeps between publishes: it is not probed.
    const bool pushed = d->source == registry::Source::Pushed;
    if (silent >= config_.coap.offline_after) {
      setOnline(d->name, false, false);
      if (!pushed) scheduleRediscovery(d->name);
    } else if (silent >= config_.coap.offline_after / 2 && !s.probing && !pushed) {
      s.probing = true;
      std::string name = d->name;
      coap_.ping(name, [this, name](bool answered) {
        State* st = state(name);
        if (st == nullptr) return;
        st->probing = false;
        if (answered) heard(name);
      });
    }
  }
}

// ---- removing and renaming ------------------------------------------------------------

void Devices::remove(const std::string& name, bool announce, std::string_view reason) {
  const registry::Device* device = registry_.find(name);
  if (device == nullptr) return;
  events_.emit(DeviceRemoved{*device, announce, reason});
  if (State* s = state(name); s != nullptr && s->retry_timer != 0) loop_.cancel(s->retry_timer);
  states_.erase(name);
  coap_.removeDevice(name);
  registry_.remove(name);
  write("remove", name, [&] { store_->remove(name); });
}

// device/remove: forget a discovered or registered device (a configured one stays).
std::string Devices::forget(const std::string& name) {
  const registry::Device* device = registry_.find(name);
  if (device == nullptr) return "unknown device '" + name + "'";
  if (device->source == registry::Source::Static) {
    return "'" + name + "' is configured in " + config_.file + "; remove it there";
  }
  remove(name, true, "device removed");
  spdlog::info("device {} removed on request", name);
  return {};
}

std::string Devices::rename(const std::string& from, const std::string& to) {
  const registry::Device* device = registry_.find(from);
  if (device == nullptr) return "unknown device '" + from + "'";
  if (isReservedDeviceName(to)) return "name '" + to + "' is reserved for the gateway's topics";
  if (!isValidDeviceName(to)) return "invalid name '" + to + "': use [A-Za-z0-9_.-]";
  if (registry_.find(to) != nullptr) return "name '" + to + "' is taken";
  if (device->source == registry::Source::Static) {
    return "'" + from + "' is configured in " + config_.file + "; rename it there";
  }
  registry::Device renamed = *device;
  renamed.name = to;
  remove(from, false, "device renamed to '" + to + "'");
  std::string error;
  if (!coap_.addDevice(to, renamed.uri, &error, credentialsFor(to, renamed.uri))) return error;
  const registry::Device& added = registry_.upsert(std::move(renamed));
  save(added);
  State& s = states_[to];
  if (added.online) {
    s.ever_online = true;
    s.last_heard = SteadyClock::now();
    events_.emit(DeviceAvailability{added, false, false});
  }
  events_.emit(DeviceResources{added, false, true});
  events_.emit(DeviceRenamed{from, added});
  spdlog::info("device {} renamed to {}", from, to);
  return {};
}

// ---- the store ------------------------------------------------------------------------

void Devices::scheduleStoreFlush() {
  loop_.runAfter(kStoreFlushInterval, [this] {
    if (stopping_) return;
    flushStore();
    scheduleStoreFlush();
  });
}

void Devices::flushStore() {
  try {
    store_->flush();
    if (store_failures_.failing()) {
      spdlog::info("registry: writing again, after {} failed write(s)",
                   store_failures_.succeeded());
    }
  } catch (const std::exception& e) {
    // Kept for the next flush. A full disk fails every one: said once per interval.
    if (store_failures_.failed(SteadyClock::now())) {
      spdlog::error("registry: flush failed ({} failure(s) since the last report): {}",
                    store_failures_.unreported(), e.what());
      store_failures_.reported();
    }
  }
}

}  // namespace coap2mqtt::gateway
