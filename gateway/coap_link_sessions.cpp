// CoapLink: one unicast client session per device (libcoap 4.3.1 overwrites a multicast
// session's remote address with the last responder's), renewed when a request times out.
// coaps:// devices get a DTLS session (coap_link_dtls.cpp), renewed after a timeout only when
// a probe finds the device's DTLS state gone (coap_link_keep.cpp).
#include <netdb.h>
#include <sys/socket.h>

#include <cstring>
#include <utility>

#include <spdlog/spdlog.h>

#include "gateway/coap_link_internal.h"

namespace coap2mqtt::gateway {
namespace {

bool resolve(const std::string& uri, coap_address_t* out, bool* dtls, std::string* error) {
  coap_uri_t parsed;
  if (coap_split_uri(reinterpret_cast<const std::uint8_t*>(uri.data()), uri.size(), &parsed) != 0) {
    *error = "not a CoAP URI: " + uri;
    return false;
  }
  if (parsed.scheme != COAP_URI_SCHEME_COAP && parsed.scheme != COAP_URI_SCHEME_COAPS) {
    *error = "only coap:// and coaps:// are supported: " + uri;
    return false;
  }
  *dtls = parsed.scheme == COAP_URI_SCHEME_COAPS;  // libcoap's default port is then 5684
  std::string host(reinterpret_cast<const char*>(parsed.host.s), parsed.host.length);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* result = nullptr;
  std::string port = std::to_string(parsed.port);
  if (int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &result); rc != 0) {
    *error = "cannot resolve '" + host + "': " + gai_strerror(rc);
    return false;
  }
  coap_address_init(out);
  out->size = result->ai_addrlen;
  std::memcpy(&out->addr, result->ai_addr, result->ai_addrlen);
  freeaddrinfo(result);
  return true;
}

// resolve(), and a coaps:// URI needs credentials.
bool resolveDevice(const std::string& uri, const DtlsCredentials& credentials, coap_address_t* out,
                   bool* dtls, std::string* error) {
  if (!resolve(uri, out, dtls, error)) return false;
  if (*dtls && !credentials.any()) {
    *error = "coaps:// needs credentials (psk or pki) for " + uri;
    return false;
  }
  return true;
}

}  // namespace

std::string uriHost(const std::string& uri) {
  coap_uri_t parsed;
  if (coap_split_uri(reinterpret_cast<const std::uint8_t*>(uri.data()), uri.size(), &parsed) != 0) {
    return {};
  }
  return std::string(reinterpret_cast<const char*>(parsed.host.s), parsed.host.length);
}

CoapSessionPtr CoapLink::Impl::newSession(std::size_t shard, const std::string& uri,
                                          const DtlsCredentials& credentials, std::string* error) {
  coap_address_t address;
  bool dtls = false;
  if (!resolveDevice(uri, credentials, &address, &dtls, error)) return nullptr;
  coap_context_t* context = shardContext(shard);
  CoapSessionPtr session;
  if (!dtls) {
    session.reset(coap_new_client_session(context, nullptr, &address, COAP_PROTO_UDP));
  } else if (credentials.psk) {
    session = newPskSession(context, address, uri, *credentials.psk, error);
  } else {
    session = newPkiSession(context, address, uri, *credentials.pki, error);
  }
  if (!session) {
    if (dtls) return nullptr;  // *error says why
    *error = "cannot create a CoAP session to " + uri;
    return nullptr;
  }
  coap_session_set_app_data(session.get(), this);
  auto fixed = [](double seconds) {
    const auto ms = static_cast<unsigned>(seconds * 1000.0 + 0.5);
    return coap_fixed_point_t{static_cast<std::uint16_t>(ms / 1000),
                              static_cast<std::uint16_t>(ms % 1000)};
  };
  coap_session_set_ack_timeout(session.get(), fixed(config_.ack_timeout.count() / 1000.0));
  coap_session_set_ack_random_factor(session.get(), fixed(config_.ack_random_factor));
  coap_session_set_max_retransmit(session.get(), config_.max_retransmit);
  noteIo(pacedOf(shard));  // a DTLS handshake started: its timeouts only prepare sets
  return session;
}

bool CoapLink::Impl::addDevice(const std::string& name, const std::string& uri, std::string* error,
                               const DtlsCredentials& credentials) {
  auto device = std::make_unique<Device>();
  device->name = name;
  device->uri = uri;
  device->host = uriHost(uri);
  device->credentials = credentials;
  coap_address_t address;
  bool dtls = false;
  if (!resolveDevice(uri, credentials, &address, &dtls, error)) return false;
  // A device added again (a new URI) keeps its shard and slot; a new one takes a free slot.
  const auto existing = devices_.find(name);
  const bool again = existing != devices_.end();
  if (again) {
    device->shard = existing->second->shard;
  } else if (auto shard = shardForNewDevice(error)) {
    device->shard = *shard;
  } else {
    return false;
  }
  CoapSessionPtr session;
  // A DTLS session starts its handshake as it is made: it is made at the device's first
  // exchange (ensureSession), so that handshakes come when its requests do (spread at
  // start-up like them), not all at once as the devices are added.
  if (!dtls) {
    // From the device's own copy: libcoap may keep pointers to the certificate file names.
    session = newSession(device->shard, uri, device->credentials, error);
    if (!session) return false;
  }
  if (again) {
    existing->second->holds_slot = false;  // its successor's now
    removeDevice(name);
  } else {
    slots_.take(device->shard);
  }
  device->session = std::move(session);
  device->session_id = next_session_id_++;
  devices_[name] = std::move(device);
  return true;
}

bool CoapLink::Impl::ensureSession(Device& device, std::string* error) {
  if (device.session) return true;
  device.session = newSession(device.shard, device.uri, device.credentials, error);
  if (!device.session) return false;
  device.session_id = next_session_id_++;
  device.dtls_hello = false;
  return true;
}

// libcoap 4.3.1 sends one CON at a time per session (NSTART=1) and keeps retransmitting a
// request we have given up on for up to a minute: every newer request (a ping, a new
// registration) waits behind it, and after a partition the whole backlog arrives at once,
// its answers unknown to us. A fresh session (new socket, empty queues) starts clean.
void CoapLink::Impl::resetSession(const std::string& name, const std::string& reason) {
  auto it = devices_.find(name);
  if (it == devices_.end() || !it->second->session) return;  // no session made yet
  std::string why = reason;
  if (it->second->credentials.any() &&
      coap_session_get_state(it->second->session.get()) != COAP_SESSION_STATE_ESTABLISHED) {
    // Not a lost request: the DTLS handshake never completed (DTLS drops a Finished it cannot
    // verify, so a wrong key shows as silence, not as an alert).
    why = dtlsFailed(*it->second, stalledHandshake(*it->second));
  }
  std::string error;
  CoapSessionPtr fresh =
      newSession(it->second->shard, it->second->uri, it->second->credentials, &error);
  if (!fresh) {
    spdlog::warn("coap: cannot renew the session of {}: {}", name, error);
    return;
  }
  forgetKept(*it->second);  // the fresh session holds nothing abandoned
  CoapSessionPtr old = std::exchange(it->second->session, std::move(fresh));
  it->second->session_id = next_session_id_++;
  it->second->dtls_hello = false;
  forgetConNotification(*it->second);  // its message id belonged to the old session
  std::vector<std::function<void(bool)>> pings = takePings(name);
  const std::vector<std::uint64_t> tokens = it->second->exchanges;  // fail() changes it
  ++stats_.session_resets;
  spdlog::debug("coap: new session for {} ({}); {} exchange(s) dropped", name, why, tokens.size());
  for (std::uint64_t token : tokens) fail(token, why);
  for (auto& done : pings) done(false);
  discardSession(std::move(old));
}

void CoapLink::Impl::discardSession(CoapSessionPtr session) {
  if (!session) return;  // a DTLS device's that was never needed
  // Releasing alone is not enough: libcoap's send queue holds a reference and would keep
  // retransmitting what was queued (an abandoned registration reaching a device that came
  // back would replace the current one there). Disconnecting empties the queue; its nack
  // callbacks find no exchange left. Then `session` releases ours.
  coap_session_disconnected(session.get(), COAP_NACK_NOT_DELIVERABLE);
}

void CoapLink::Impl::removeDevice(const std::string& name) {
  auto it = devices_.find(name);
  if (it == devices_.end()) return;
  for (std::uint64_t token : it->second->exchanges) {
    auto e = exchanges_.find(token);
    if (e == exchanges_.end()) continue;
    if (e->second->timer != 0) loop_.cancel(e->second->timer);
    exchanges_.erase(e);  // not takeExchange: the device and its list go next
  }
  it->second->exchanges.clear();
  forgetConNotification(*it->second);
  forgetKept(*it->second);
  CoapSessionPtr session = std::move(it->second->session);
  if (it->second->holds_slot) slots_.release(it->second->shard);
  devices_.erase(it);
  discardSession(std::move(session));
  for (auto& done : takePings(name)) done(false);
}

CoapLink::Impl::Device* CoapLink::Impl::deviceBySession(const coap_session_t* session) {
  // Only on session events (a handshake done or failed), never per message.
  for (auto& [name, device] : devices_) {
    if (device->session.get() == session) return device.get();
  }
  return nullptr;
}

CoapLink::Impl::Device* CoapLink::Impl::deviceOn(std::string_view name,
                                                 const coap_session_t* session) {
  auto it = devices_.find(name);
  return it != devices_.end() && it->second->session.get() == session ? it->second.get() : nullptr;
}

CoapLink::Impl::Device* CoapLink::Impl::deviceOn(std::string_view name, std::uint64_t session_id) {
  auto it = devices_.find(name);
  return it != devices_.end() && it->second->session_id == session_id ? it->second.get() : nullptr;
}

}  // namespace coap2mqtt::gateway
