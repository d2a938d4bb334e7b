#pragma once
// Devices: the one owner of what the gateway knows about devices — the registry, each
// device's liveness and discovery state, and the SQLite store that outlives a restart.
// Sources of devices (static config, multicast, the Resource Directory) add them here;
// what changes is told to the rest as events (gateway/events.h). Loop thread only.
#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "gateway/coap_link.h"
#include "gateway/config.h"
#include "gateway/device_credentials.h"
#include "gateway/events.h"
#include "gateway/repeated_failure.h"
#include "registry/link_format.h"
#include "registry/registry.h"

namespace coap2mqtt::registry {
class Store;
}

namespace coap2mqtt::gateway {

class EventLoop;

class Devices {
 public:
  Devices(const GatewayConfig& config, EventLoop& loop, CoapLink& coap, Events& events);
  ~Devices();
  Devices(const Devices&) = delete;
  Devices& operator=(const Devices&) = delete;

  // Opens <state_dir>/registry.db. Never throws: a file that is not a usable database is
  // moved aside (registry.db.corrupt-<time>) and started afresh; one that cannot be opened
  // at all leaves an in-memory store for this run. Both are logged at error level.
  void open();
  // Devices of the last run, re-observed at once; then the configured ones; then the
  // liveness and store-flush timers.
  void start();
  // Cancels timers; records every device offline (nobody vouches for them while we are down).
  void stop();

  const registry::Registry& registry() const { return registry_; }
  registry::Store& store() { return *store_; }
  std::string nameForUri(const std::string& uri) const;
  // Where the discovered or registered device `name`, found at `uri`, is reached: over
  // DTLS when a [[coap.credentials]] entry matches it (see CredentialRules::reach).
  DeviceReach reach(std::string_view name, const std::string& uri) const {
    return credential_rules_.reach(name, uri);
  }
  // `base`, or `base-2`, `base-3`... whichever is free.
  std::string uniqueName(const std::string& base) const;
  bool everOnline(std::string_view name) const;
  std::size_t onlineCount() const;

  // Whether one more discovered or registered device at `uri` fits [coap.limits] (in total
  // and per host). When not, it is counted and logged (once per interval) with `from`, the
  // source that offered it ("multicast", "rd"). Configured devices never ask: they are
  // always bridged, and count towards the total.
  bool admits(std::string_view uri, std::string_view from);
  std::uint64_t deviceLimitDrops() const { return limit_drops_; }

  // A new device: its CoAP session, the registry, the store, DeviceJoined. nullptr (and
  // *error) when the link cannot reach `device.uri`.
  // `credentials`: its DTLS credentials when its URI is coaps:// (else a configured
  // device's).
  const registry::Device* add(registry::Device device, std::string* error,
                              const DtlsCredentials& credentials = {});
  // Points a known device at a new address (RD re-registration from elsewhere).
  const registry::Device* move(const std::string& name, const std::string& uri, std::string* error);
  // Something came back from the device: it is alive.
  void heard(const std::string& name);
  // Publishes availability (always when `force_publish`), events when it flips.
  void setOnline(const std::string& name, bool online, bool force_publish);
  // GET /.well-known/core; on failure retried after coap.retry_interval.
  void discover(const std::string& name);
  // A new resource list: stored, DeviceResources (replan when `replan` or changed).
  void updateResources(const std::string& name, std::vector<registry::Resource> resources,
                       bool replan);
  // Forgets a device entirely (session, registry, store, retained topics via the event).
  void remove(const std::string& name, bool announce, std::string_view reason);
  // The admin operations: empty on success, else why not.
  std::string forget(const std::string& name);
  std::string rename(const std::string& from, const std::string& to);

  // Writes what is buffered (liveness) and what failed before; logged once per interval.
  void flushStore();

 private:
  struct State {
    std::uint64_t retry_timer = 0;
    bool discovering = false;
    bool probing = false;
    bool ever_online = false;
    std::optional<std::size_t> bad_document;  // hash of the broken link-format last logged
    std::chrono::steady_clock::time_point last_heard{};
    unsigned failed_discoveries = 0;  // in a row; a DTLS device's retries back off with it
  };

  void loadKnown();
  void replaceUnusableStore(const std::string& why);
  void addStatic(const StaticDevice& device);
  // The delay of the next start-up request (the first at once), for a DTLS device or not.
  std::chrono::milliseconds startupSlot(bool dtls);
  const StaticDevice* findStaticConfig(std::string_view name) const;
  // The DTLS credentials of the device `name` at `uri` (a configured one's psk).
  DtlsCredentials credentialsFor(std::string_view name, std::string_view uri) const;
  bool configuredAt(std::string_view uri) const;
  void onDiscovered(const std::string& name, const std::optional<CoapResponse>& response,
                    const std::string& error);
  void scheduleRediscovery(const std::string& name);
  // How long until the next discovery of `name` (coap.retry_interval; backing off for DTLS).
  std::chrono::milliseconds retryDelay(const std::string& name);
  void scheduleLiveness();
  void checkLiveness();
  void scheduleStoreFlush();
  void save(const registry::Device& device);
  template <class Write>
  void write(const char* what, std::string_view name, Write&& write);
  State* state(std::string_view name);

  const GatewayConfig& config_;
  CredentialRules credential_rules_;  // [[coap.credentials]] (a change needs a restart)
  EventLoop& loop_;
  CoapLink& coap_;
  Events& events_;
  registry::Registry registry_;
  std::unique_ptr<registry::Store> store_;
  std::map<std::string, State, std::less<>> states_;  // exactly the registry's devices
  RepeatedFailure store_failures_;
  std::uint64_t limit_drops_ = 0;  // devices refused by [coap.limits]
  RepeatedFailure limit_log_;
  bool stopping_ = false;
  // When the next start-up request goes, from the start (kStartupSpacing apart).
  std::chrono::milliseconds startup_at_{0};
};

// A device's resources from link-format: relative links only (anchored ones describe
// other things), without /.well-known/core itself.
std::vector<registry::Resource> resourcesFrom(const std::vector<registry::Link>& links);

}  // namespace coap2mqtt::gateway
