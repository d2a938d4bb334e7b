#pragma once
// What the gateway knows about the world: devices, where they are, their resources.
// Touched only from the loop thread.
#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace coap2mqtt::registry {

// Pushed: a device that published to the gateway's /ps before it was known otherwise
// (issue 20); it is not discovered, probed or observed, only heard.
enum class Source { Static, Multicast, ResourceDirectory, Pushed };
const char* toString(Source);

struct Resource {
  std::string path;  // always starts with '/'
  std::vector<std::string> rt;
  std::vector<std::string> ifs;
  std::vector<unsigned> ct;
  bool obs = false;
  std::optional<std::size_t> sz;
  std::optional<std::string> title;
};

struct Device {
  std::string name;  // stable, unique; used in topics
  std::string uri;   // base URI, e.g. "coap://127.0.0.1:5683"
  Source source = Source::Static;
  bool online = false;
  std::vector<Resource> resources;
  std::chrono::system_clock::time_point first_seen{};
  std::chrono::system_clock::time_point last_seen{};
  std::string friendly_name;  // free text a user may set; empty = none

  const Resource* findResource(std::string_view path) const;
};

// In-memory registry, with no I/O of its own. Its durable copy is registry::Store
// (store.h: SQLite, <state_dir>/registry.db): the gateway fills the registry from the store
// at start and records every change in the store.
class Registry {
 public:
  // Inserts or replaces by name; returns the stored device.
  const Device& upsert(Device device);
  const Device* find(std::string_view name) const;
  // The device at `uri` (discovery answers and RD registrations name the address, not the
  // device). Without a linear scan: an answer from each of 1,000 devices asks once each.
  // `uri` is compared in its canonical form (canonicalUri): "coap://192.0.2.10" and
  // "COAP://192.0.2.10:5683/" are one endpoint, so one device.
  const Device* findByUri(std::string_view uri) const;
  // Devices whose address is `host` (canonical, as uriHost returns it): what one host may
  // hold is bounded (the gateway's [coap.limits]).
  std::size_t countAtHost(std::string_view host) const;
  Device* findMutable(std::string_view name);
  bool remove(std::string_view name);
  std::vector<const Device*> all() const;
  std::size_t size() const { return devices_.size(); }

 private:
  void unindex(const Device& device);

  std::map<std::string, Device, std::less<>> devices_;
  std::map<std::string, std::string, std::less<>> names_by_uri_;   // canonical uri -> name
  std::map<std::string, std::size_t, std::less<>> count_by_host_;  // canonical host -> devices
};

// The one spelling of a CoAP endpoint, so that identity never depends on how a URI was
// written: scheme and host lower-cased, an IPv6 address in its RFC 5952 form (zone kept),
// the default port (5683, coaps 5684) written out, a trailing '/' dropped:
// "coap://[FE80::0:1%eth0]/" -> "coap://[fe80::1%eth0]:5683". Text that is not
// scheme://authority is returned unchanged (it can then only equal itself).
std::string canonicalUri(std::string_view uri);
// The host of canonicalUri(uri), without brackets: "192.0.2.10", "fe80::1%eth0".
std::string uriHost(std::string_view uri);

}  // namespace coap2mqtt::registry
