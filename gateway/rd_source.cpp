#include "gateway/rd_source.h"

#include <random>

#include <spdlog/spdlog.h>

#include "gateway/coap_link.h"
#include "gateway/device_names.h"
#include "gateway/devices.h"
#include "gateway/event_loop.h"
#include "gateway/observer.h"
#include "registry/store.h"

namespace coap2mqtt::gateway {
namespace {

using SteadyClock = std::chrono::steady_clock;
using SystemClock = std::chrono::system_clock;

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

std::optional<std::string> queryValue(const registry::RdQuery& query, std::string_view key) {
  for (const auto& [k, v] : query) {
    if (k == key) return v;
  }
  return std::nullopt;
}

CoapServerResponse forbidden(std::string why) {
  return CoapServerResponse{403, std::move(why), 0, {}};
}

// Who a requester proved to be in its DTLS handshake: "psk:<identity>", "cert:<name in its
// certificate>"; "" over plain CoAP (or a certificate that names nothing).
std::string principal(const CoapServerRequest& r) {
  if (!r.psk_identity.empty()) return "psk:" + r.psk_identity;
  if (!r.cert_name.empty()) return "cert:" + r.cert_name;
  return {};
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

RdSource::RdSource(const GatewayConfig& config, EventLoop& loop, CoapLink& coap, Devices& devices,
                   Observer& observer, Events& events)
    : config_(config),
      loop_(loop),
      coap_(coap),
      devices_(devices),
      observer_(observer),
      events_(events),
      clients_(listenerClients(config.coap)) {
  rd_.setLocationIds([] {
    std::random_device random;  // the kernel's CSPRNG (getrandom) on Linux
    return (std::uint64_t{random()} << 32) | random();
  });
}

void RdSource::serve() {
  if (config_.coap.listen.empty() || !config_.coap.resource_directory) return;
  coap_.serve("rd", {{"rt", "\"core.rd\""}, {"ct", "40"}},
              [this](const CoapServerRequest& r) { return onRequest(r); });
  coap_.serve("rd-lookup/ep", {{"rt", "\"core.rd-lookup-ep\""}, {"ct", "40"}},
              [this](const CoapServerRequest& r) {
                if (r.method != bridge::Method::Get) return CoapServerResponse{405, {}, {}, {}};
                return fromRd(rd_.lookupEndpoints(rdQuery(r.query)));
              });
  coap_.serve("rd-lookup/res", {{"rt", "\"core.rd-lookup-res\""}, {"ct", "40"}},
              [this](const CoapServerRequest& r) {
                if (r.method != bridge::Method::Get) return CoapServerResponse{405, {}, {}, {}};
                return fromRd(rd_.lookupResources(rdQuery(r.query)));
              });
  coap_.serveUnknown([this](const CoapServerRequest& r) { return onRequest(r); });
}

// RFC 9176 §7 (security policies), for a directory on a LAN without DTLS: a registrant is
// known by its address. A registration names only its own host as base (else anyone could
// point the gateway at any host, and observe it at their wish: reflection); an endpoint
// registered from one host cannot be registered again from another; a registration is
// updated or deleted only from the host that made it. The host, not the port: a device's
// client port changes from request to request.
//
// Over DTLS the identity counts as well (issue 18): a [[coap.psk_client]] identity registers,
// updates and deletes only the endpoint names its `endpoints` allow, and an endpoint name
// some identity's `endpoints` match is registered by such an identity only (never over plain
// CoAP); a registration made over DTLS is changed over DTLS only.
bool RdSource::identityMay(std::string_view identity, std::string_view ep, bool* claimed) const {
  bool may = false;
  *claimed = false;
  for (const ListenerClient& client : clients_) {
    for (const bridge::Glob& glob : client.endpoints) {
      if (!glob.matches(ep)) continue;
      *claimed = true;
      if (client.id == identity) may = true;
    }
  }
  return may;
}

// A device that registered over DTLS is reached over DTLS with the same identity and key
// (as LwM2M does): the identity whose `endpoints` match its name.
DtlsCredentials RdSource::credentialsFor(const registry::RdRegistration& reg) const {
  if (reg.base.rfind("coaps://", 0) != 0) return {};
  for (std::size_t i = 0; i < config_.coap.psk_clients.size(); ++i) {
    for (const bridge::Glob& glob : clients_[i].endpoints) {
      if (!glob.matches(reg.ep)) continue;
      const PskClient& client = config_.coap.psk_clients[i];
      return DtlsCredentials{PskCredentials{client.identity, client.key_file, client.key}, {}};
    }
  }
  return {};
}

std::optional<CoapServerResponse> RdSource::refused(const CoapServerRequest& r,
                                                    const registry::RdQuery& query) const {
  const bool dtls = r.source.rfind("coaps://", 0) == 0;
  const std::string who = principal(r);
  const char* whom = r.psk_identity.empty() ? "certificate" : "PSK identity";
  if (r.path == "/rd" && r.method == bridge::Method::Post) {
    bool claimed = false;
    const auto ep = queryValue(query, "ep");
    const bool may = ep && identityMay(who, *ep, &claimed);
    if (dtls && !may) {
      return forbidden("this " + std::string(whom) + " may not register that endpoint");
    }
    if (!dtls && claimed) return forbidden("this endpoint registers over DTLS only");
  } else if (r.path.rfind("/rd/", 0) == 0 && r.method != bridge::Method::Get) {
    if (const registry::RdRegistration* existing = rd_.find(r.path)) {
      bool claimed = false;
      if (dtls && !identityMay(who, existing->ep, &claimed)) {
        return forbidden("registration of an endpoint this " + std::string(whom) +
                         " may not change");
      }
      if (!dtls && existing->base.rfind("coaps://", 0) == 0) {
        return forbidden("registration made over DTLS");
      }
    }
  }
  const std::string source = registry::uriHost(r.source);
  if (auto base = queryValue(query, "base"); base && registry::uriHost(*base) != source) {
    return forbidden("base must name the registering host");
  }
  const registry::RdRegistration* existing = nullptr;
  if (r.path == "/rd") {
    if (auto ep = queryValue(query, "ep")) {
      existing = rd_.findEndpoint(*ep, queryValue(query, "d").value_or(""));
    }
    if (existing != nullptr && registry::uriHost(existing->base) != source) {
      return forbidden("endpoint registered by another host");
    }
  } else if (r.method != bridge::Method::Get) {
    existing = rd_.find(r.path);
    if (existing != nullptr && registry::uriHost(existing->base) != source) {
      return forbidden("registration made by another host");
    }
  }
  return std::nullopt;
}

CoapServerResponse RdSource::onRequest(const CoapServerRequest& r) {
  const registry::RdQuery query = rdQuery(r.query);
  if (auto no = refused(r, query)) {
    ++refused_;
    if (refusal_log_.failed(SteadyClock::now())) {
      spdlog::warn("rd: {} {} from {} refused: {} ({} refusal(s) since the last report)",
                   bridge::toString(r.method), r.path, r.source, no->payload,
                   refusal_log_.unreported());
      refusal_log_.reported();
    }
    return *no;
  }
  std::vector<registry::RdEvent> events;
  registry::RdResult result;
  const auto now = SteadyClock::now();
  if (r.path == "/rd") {
    if (r.method != bridge::Method::Post) return CoapServerResponse{405, {}, {}, {}};
    if (!admitsNewEndpoint(r, query)) {
      // RFC 9176 §5.3 names 5.03 Service Unavailable for a registration the directory
      // cannot take now (4.13 would blame the payload's size, which is not the reason).
      return CoapServerResponse{503, "device limit reached", 0, {}};
    }
    result = rd_.registerEndpoint(query, r.payload, r.content_format, r.source, now, events);
  } else if (r.path.rfind("/rd/", 0) == 0) {
    switch (r.method) {
      case bridge::Method::Post:
        result = rd_.update(r.path, query, r.payload, now, events);
        break;
      case bridge::Method::Delete:
        result = rd_.remove(r.path, events);
        break;
      case bridge::Method::Get:
        result = rd_.read(r.path);
        break;
      default:
        return CoapServerResponse{405, {}, {}, {}};
    }
  } else {
    return CoapServerResponse{404, {}, {}, {}};
  }
  for (const auto& e : events) onEvent(e);
  scheduleExpiry();
  return fromRd(result);
}

// A registration that would create a device (a new endpoint at an address no device has)
// must fit [coap.limits]; Devices counts and logs a refusal.
bool RdSource::admitsNewEndpoint(const CoapServerRequest& r, const registry::RdQuery& query) {
  if (auto ep = queryValue(query, "ep");
      ep && rd_.findEndpoint(*ep, queryValue(query, "d").value_or("")) != nullptr) {
    return true;  // an update of a known registration
  }
  const std::string base = queryValue(query, "base").value_or(r.source);
  if (!devices_.nameForUri(base).empty()) return true;
  return devices_.admits(base, "rd");
}

void RdSource::restore() {
  std::vector<registry::SkippedRdRegistration> skipped;
  const auto now_system = SystemClock::now();
  const auto now_steady = SteadyClock::now();
  std::size_t restored = 0;
  registry::Store& store = devices_.store();
  for (auto& stored : store.loadRdRegistrations(&skipped)) {
    registry::RdRegistration r = std::move(stored.registration);
    r.expires = now_steady +
                std::chrono::duration_cast<SteadyClock::duration>(stored.expires_at - now_system);
    rd_.restore(std::move(r));
    ++restored;
  }
  for (const auto& bad : skipped) {
    spdlog::warn("rd: dropping stored registration {}: {}", bad.location, bad.reason);
    try {
      store.removeRdRegistration(bad.location);
    } catch (const std::exception& e) {
      spdlog::warn("rd: cannot remove stored registration {}: {}", bad.location, e.what());
    }
  }
  if (restored > 0) spdlog::info("rd: {} registration(s) restored", restored);
  scheduleExpiry();
}

void RdSource::persist(const registry::RdEvent& e) {
  registry::Store& store = devices_.store();
  registry::WriteResult result = registry::WriteResult::Written;
  try {
    if (e.kind == registry::RdEvent::Kind::Registered ||
        e.kind == registry::RdEvent::Kind::Updated) {
      const auto left = e.registration.expires - SteadyClock::now();
      result = store.saveRdRegistration(
          e.registration,
          SystemClock::now() + std::chrono::duration_cast<SystemClock::duration>(left));
    } else {
      result = store.removeRdRegistration(e.registration.location);
    }
  } catch (const std::exception& ex) {  // links that would not read back: never stored
    spdlog::warn("rd: cannot store registration {}: {}", e.registration.location, ex.what());
    return;
  }
  // Pending: the store writes it at its next flush (the registry's log says why it waits).
  if (result == registry::WriteResult::Rejected) {
    spdlog::warn("rd: registration {} not stored: {}", e.registration.location, store.lastError());
  }
}

void RdSource::scheduleExpiry() {
  if (expiry_timer_ != 0) loop_.cancel(expiry_timer_);
  expiry_timer_ = 0;
  auto next = rd_.nextExpiry();
  if (!next) return;
  auto delay = std::chrono::duration_cast<std::chrono::milliseconds>(*next - SteadyClock::now());
  expiry_timer_ = loop_.runAfter(std::max(delay, std::chrono::milliseconds(0)), [this] {
    expiry_timer_ = 0;
    std::vector<registry::RdEvent> events;
    rd_.expire(SteadyClock::now(), events);
    for (const auto& e : events) onEvent(e);
    scheduleExpiry();
  });
}

void RdSource::onEvent(const registry::RdEvent& e) {
  persist(e);
  const auto& reg = e.registration;
  // Reached as it registered (over DTLS with its [[coap.psk_client]] identity), or as the
  // first [[coap.credentials]] entry for its endpoint name says (coaps://, maybe another
  // port), or at its base over plain CoAP.
  DtlsCredentials credentials = credentialsFor(reg);
  std::string uri = reg.base;
  if (!credentials.any()) {
    DeviceReach reach = devices_.reach(deviceNameFromEndpoint(reg.ep), reg.base);
    uri = std::move(reach.uri);
    credentials = std::move(reach.credentials);
  }
  // A device already known at that address keeps its name (a configured name wins);
  // else the endpoint name, unless another (non-RD) device has it.
  std::string name = devices_.nameForUri(uri);
  if (name.empty()) {
    const std::string wanted = deviceNameFromEndpoint(reg.ep);
    const registry::Device* holder = devices_.registry().find(wanted);
    name = holder == nullptr || holder->source == registry::Source::ResourceDirectory
               ? wanted
               : devices_.uniqueName(wanted);
  }
  switch (e.kind) {
    case registry::RdEvent::Kind::Registered:
    case registry::RdEvent::Kind::Updated: {
      const registry::Device* existing = devices_.registry().find(name);
      // A known device at a new address: its old session and observations are gone.
      const bool moved = existing != nullptr &&
                         registry::canonicalUri(existing->uri) != registry::canonicalUri(uri);
      std::string error;
      if (existing == nullptr) {
        registry::Device d;
        d.name = name;
        d.uri = uri;
        d.source = registry::Source::ResourceDirectory;
        if (devices_.add(std::move(d), &error, credentials) == nullptr) {
          spdlog::warn("rd: {}: {}", reg.ep, error);
          return;
        }
        spdlog::info("rd: {} registered as {} at {}", reg.ep, name, uri);
      } else if (moved && devices_.move(name, uri, &error) == nullptr) {
        spdlog::warn("rd: {}: {}", reg.ep, error);
        return;
      }
      devices_.heard(name);
      devices_.updateResources(name, resourcesFrom(reg.links), false);
      if (moved) {
        if (const registry::Device* d = devices_.registry().find(name)) {
          events_.emit(DeviceMoved{*d});
        }
      }
      break;
    }
    case registry::RdEvent::Kind::Expired:
      if (const registry::Device* d = devices_.registry().find(name)) {
        spdlog::info("rd: registration of {} expired", reg.ep);
        if (d->source == registry::Source::ResourceDirectory) {
          // What the registration created goes with it: expired registrations must not pile
          // up as devices (and sessions, rows, retained topics) without end.
          devices_.remove(name, true, "registration expired");
        } else {
          observer_.stopDevice(name);  // a device known otherwise stays, unwatched, offline
          devices_.setOnline(name, false, true);
        }
      }
      break;
    case registry::RdEvent::Kind::Removed:
      if (devices_.registry().find(name) != nullptr) {
        spdlog::info("rd: {} deregistered", reg.ep);
        devices_.remove(name, true, "device deregistered");
      }
      break;
  }
}

}  // namespace coap2mqtt::gateway
