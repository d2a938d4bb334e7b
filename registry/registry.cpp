#include "registry/registry.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cctype>
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
    case Source::Pushed:
      return "pushed";
  }
  return "unknown";  // only reachable through a bad cast; keep logging total
}

const Resource* Device::findResource(std::string_view path) const {
  const auto it = std::find_if(resources.begin(), resources.end(),
                               [&](const Resource& r) { return r.path == path; });
  return it == resources.end() ? nullptr : &*it;
}

const Device& Registry::upsert(Device device) {
  if (const auto old = devices_.find(device.name); old != devices_.end()) unindex(old->second);
  names_by_uri_.insert_or_assign(canonicalUri(device.uri), device.name);
  ++count_by_host_[uriHost(device.uri)];
  // Copy the key first: the argument is moved into the map in the same expression.
  std::string key = device.name;
  return devices_.insert_or_assign(std::move(key), std::move(device)).first->second;
}

void Registry::unindex(const Device& device) {
  const auto indexed = names_by_uri_.find(canonicalUri(device.uri));
  if (indexed != names_by_uri_.end() && indexed->second == device.name) {
    names_by_uri_.erase(indexed);
  }
  const auto counted = count_by_host_.find(uriHost(device.uri));
  if (counted != count_by_host_.end() && --counted->second == 0) count_by_host_.erase(counted);
}

const Device* Registry::findByUri(std::string_view uri) const {
  const auto it = names_by_uri_.find(canonicalUri(uri));
  return it == names_by_uri_.end() ? nullptr : find(it->second);
}

std::size_t Registry::countAtHost(std::string_view host) const {
  const auto it = count_by_host_.find(host);
  return it == count_by_host_.end() ? 0 : it->second;
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
  unindex(it->second);
  devices_.erase(it);
  return true;
}

std::vector<const Device*> Registry::all() const {
  std::vector<const Device*> out;
  out.reserve(devices_.size());
  for (const auto& [name, device] : devices_) out.push_back(&device);
  return out;  // ordered by name, which keeps logs and tests deterministic
}

namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

struct UriParts {
  std::string scheme;
  std::string host;  // without brackets
  bool ipv6 = false;
  std::string port;  // empty = the scheme's default
};

std::optional<UriParts> splitUri(std::string_view uri) {
  const auto sep = uri.find("://");
  if (sep == std::string_view::npos || sep == 0) return std::nullopt;
  UriParts p;
  p.scheme = lower(uri.substr(0, sep));
  std::string_view rest = uri.substr(sep + 3);
  if (!rest.empty() && rest.back() == '/') rest.remove_suffix(1);
  if (rest.find('/') != std::string_view::npos) return std::nullopt;  // a path: not a base
  std::string_view port;
  if (!rest.empty() && rest.front() == '[') {
    const auto close = rest.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    p.host = lower(rest.substr(1, close - 1));
    p.ipv6 = true;
    const auto after = rest.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return std::nullopt;
      port = after.substr(1);
    }
  } else {
    const auto colon = rest.find(':');
    p.host = lower(rest.substr(0, colon));
    if (colon != std::string_view::npos) port = rest.substr(colon + 1);
  }
  if (p.host.empty()) return std::nullopt;
  if (!port.empty()) {
    unsigned n = 0;
    for (char c : port) {
      if (c < '0' || c > '9' || n > 65535) return std::nullopt;
      n = n * 10 + static_cast<unsigned>(c - '0');
    }
    if (n > 65535) return std::nullopt;
    p.port = std::to_string(n);  // "05683" is 5683
  }
  if (p.ipv6) {
    const auto zone = p.host.find('%');
    const std::string addr = p.host.substr(0, zone);
    in6_addr a6{};
    char text[INET6_ADDRSTRLEN] = {};
    if (inet_pton(AF_INET6, addr.c_str(), &a6) != 1 ||
        inet_ntop(AF_INET6, &a6, text, sizeof text) == nullptr) {
      return std::nullopt;
    }
    p.host = text + (zone == std::string::npos ? std::string{} : p.host.substr(zone));
  }
  return p;
}

}  // namespace

std::string canonicalUri(std::string_view uri) {
  const auto p = splitUri(uri);
  if (!p) return std::string(uri);
  std::string port = p->port;
  if (port.empty()) port = p->scheme == "coaps" ? "5684" : "5683";
  return p->scheme + "://" + (p->ipv6 ? "[" + p->host + "]" : p->host) + ":" + port;
}

std::string uriHost(std::string_view uri) {
  const auto p = splitUri(uri);
  return p ? p->host : std::string{};
}

}  // namespace coap2mqtt::registry
