#include "registry/registry.h"

#include <algorithm>
#include <utility>

namespace coap2mqtt::registry {

const char* toString(Source source) {
  switch (source) {
    case Source::Static:
      return "static";
    case Source::Multicast:
      return "multicast";
    case Source::ResourceDirectory:
      return "rd";
  }
  return "unknown";  // only reachable through a bad cast; keep logging total
}

const Resource* Device::findResource(std::string_view path) const {
  const auto it = std::find_if(resources.begin(), resources.end(),
                               [&](const Resource& r) { return r.path == path; });
  return it == resources.end() ? nullptr : &*it;
}

const Device& Registry::upsert(Device device) {
  if (const auto old = devices_.find(device.name); old != devices_.end()) {
    const auto indexed = names_by_uri_.find(old->second.uri);
    if (indexed != names_by_uri_.end() && indexed->second == device.name) {
      names_by_uri_.erase(indexed);
    }
  }
  names_by_uri_.insert_or_assign(device.uri, device.name);
  // Copy the key first: the argument is moved into the map in the same expression.
  std::string key = device.name;
  return devices_.insert_or_assign(std::move(key), std::move(device)).first->second;
}

const Device* Registry::findByUri(std::string_view uri) const {
  const auto it = names_by_uri_.find(uri);
  return it == names_by_uri_.end() ? nullptr : find(it->second);
}

const Device* Registry::find(std::string_view name) const {
  const auto it = devices_.find(name);
  return it == devices_.end() ? nullptr : &it->second;
}

Device* Registry::findMutable(std::string_view name) {
  const auto it = devices_.find(name);
  return it == devices_.end() ? nullptr : &it->second;
}

bool Registry::remove(std::string_view name) {
  const auto it = devices_.find(name);
  if (it == devices_.end()) return false;
  const auto indexed = names_by_uri_.find(it->second.uri);
  if (indexed != names_by_uri_.end() && indexed->second == it->second.name) {
    names_by_uri_.erase(indexed);
  }
  devices_.erase(it);
  return true;
}

std::vector<const Device*> Registry::all() const {
  std::vector<const Device*> out;
  out.reserve(devices_.size());
  for (const auto& [name, device] : devices_) out.push_back(&device);
  return out;  // ordered by name, which keeps logs and tests deterministic
}

}  // namespace coap2mqtt::registry
