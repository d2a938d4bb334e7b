// CoapLink: DTLS to devices (coaps://). A session with a pre-shared key per device
// (coap_new_client_session_psk2, libcoap 4.3.1's coap_dtls_cpsk_t version 1), and
// libcoap's session events: a handshake that fails is said once per device and reason, with
// the device, its URI and why (OpenSSL's alert, from libcoap's log), never the key.
#include <arpa/inet.h>

#include <cstring>

#include <spdlog/spdlog.h>

#include "gateway/coap_link_internal.h"

namespace coap2mqtt::gateway {
namespace {

const coap_dtls_cpsk_info_t* identityHintTrampoline(coap_str_const_t* /*hint*/,
                                                    coap_session_t* session, void* arg) noexcept {
  try {
    return static_cast<CoapLink::Impl*>(arg)->onIdentityHint(session);
  } catch (const std::exception& e) {
    spdlog::error("coap: identity hint handler failed: {}", e.what());
    return nullptr;
  }
}

}  // namespace

const coap_dtls_cpsk_info_t* CoapLink::Impl::onIdentityHint(coap_session_t* session) {
  Device* device = deviceBySession(session);
  if (device == nullptr || !device->psk) return nullptr;  // fails the handshake
  device->dtls_hello = true;
  device->psk_info.identity =
      coap_bin_const_t{device->psk->identity.size(),
                       reinterpret_cast<const std::uint8_t*>(device->psk->identity.data())};
  device->psk_info.key = coap_bin_const_t{
      device->psk->key.size(), reinterpret_cast<const std::uint8_t*>(device->psk->key.data())};
  return &device->psk_info;
}

std::string CoapLink::Impl::stalledHandshake(const Device& device) {
  return device.dtls_hello
             ? "the device answered but did not accept our Finished message: wrong key, or an "
               "identity it does not know (PSK identity \"" +
                   device.psk->identity + "\")"
             : "no DTLS answer from the device (nothing listens there, it speaks no DTLS, or it "
               "is down)";
}

std::string CoapLink::Impl::dtlsFailed(Device& device, std::string reason) {
  ++stats_.dtls_failures;
  // Once per device and reason: retries that fail the same way are not news.
  const auto level = reason == device.dtls_failure ? spdlog::level::debug : spdlog::level::warn;
  spdlog::log(level, "coap: device {} ({}): DTLS handshake failed: {}", device.name, device.uri,
              reason);
  device.dtls_failure = reason;
  return "DTLS handshake failed: " + reason;
}

CoapSessionPtr CoapLink::Impl::newPskSession(const coap_address_t& address, const std::string& uri,
                                             const PskCredentials& psk, std::string* error) {
  if (coap_dtls_is_supported() == 0) {
    *error = "this libcoap has no DTLS (install libcoap3 with OpenSSL): cannot reach " + uri;
    return nullptr;
  }
  coap_dtls_cpsk_t setup;
  std::memset(&setup, 0, sizeof setup);
  setup.version = COAP_DTLS_CPSK_SETUP_VERSION;
  // The identity hint callback only notes that the device answered the handshake; the
  // device's hint never chooses our key.
  setup.validate_ih_call_back = &identityHintTrampoline;
  setup.ih_call_back_arg = this;
  setup.psk_info.identity.s = reinterpret_cast<const std::uint8_t*>(psk.identity.data());
  setup.psk_info.identity.length = psk.identity.size();
  setup.psk_info.key.s = reinterpret_cast<const std::uint8_t*>(psk.key.data());
  setup.psk_info.key.length = psk.key.size();
  // libcoap copies identity and key into the session (coap_session_refresh_psk_*): `psk`
  // need not outlive the call.
  CoapSessionPtr session(
      coap_new_client_session_psk2(context_.get(), nullptr, &address, COAP_PROTO_DTLS, &setup));
  if (!session) *error = "cannot create a DTLS session to " + uri;
  return session;
}

void CoapLink::Impl::onEvent(coap_session_t* session, coap_event_t event) {
  switch (event) {
    case COAP_EVENT_DTLS_CONNECTED: {
      ++stats_.dtls_handshakes;
      Device* device = deviceBySession(session);
      if (device == nullptr) return;
      if (!device->dtls_failure.empty()) {
        spdlog::info("coap: device {} ({}): DTLS session established", device->name, device->uri);
        device->dtls_failure.clear();
      } else {
        spdlog::debug("coap: device {} ({}): DTLS session established", device->name, device->uri);
      }
      takeLibcoapTlsReason();  // nothing earlier explains anything now
      return;
    }
    case COAP_EVENT_DTLS_ERROR:
    case COAP_EVENT_SESSION_FAILED: {
      Device* device = deviceBySession(session);
      if (device == nullptr || !device->psk) return;
      std::string reason = takeLibcoapTlsReason();
      if (reason.empty()) reason = stalledHandshake(*device);
      dtlsFailed(*device, std::move(reason));
      return;
    }
    default:
      return;
  }
}

}  // namespace coap2mqtt::gateway

namespace coap2mqtt::gateway {
namespace {

const coap_bin_const_t* identityTrampoline(coap_bin_const_t* identity, coap_session_t* session,
                                           void* arg) noexcept {
  try {
    return static_cast<CoapLink::Impl*>(arg)->serverKey(identity, session);
  } catch (const std::exception& e) {
    spdlog::error("coap: PSK identity check failed: {}", e.what());
    return nullptr;
  }
}

// An identity for a log line: printable ASCII, at most 64 characters (it is the peer's).
std::string printable(const coap_bin_const_t* identity) {
  std::string out;
  if (identity == nullptr) return out;
  for (std::size_t i = 0; i < identity->length && out.size() < 64; ++i) {
    const char c = static_cast<char>(identity->s[i]);
    out.push_back(c >= 0x20 && c < 0x7f ? c : '?');
  }
  return out;
}

}  // namespace

bool CoapLink::Impl::setupServerPsk(std::string* error) {
  if (server_psk_ready_) return true;
  if (coap_dtls_is_supported() == 0) {
    *error = "this libcoap has no DTLS: cannot listen on coaps://";
    return false;
  }
  for (const PskClient& client : config_.psk_clients) {
    server_keys_[client.identity] = coap_bin_const_t{
        client.key.size(), reinterpret_cast<const std::uint8_t*>(client.key.data())};
  }
  coap_dtls_spsk_t setup;
  std::memset(&setup, 0, sizeof setup);
  setup.version = COAP_DTLS_SPSK_SETUP_VERSION;
  setup.validate_id_call_back = &identityTrampoline;
  setup.id_call_back_arg = this;
  // No default key: a client whose identity is not configured fails the handshake.
  if (coap_context_set_psk2(context_.get(), &setup) == 0) {
    *error = "cannot set up DTLS with pre-shared keys";
    return false;
  }
  server_psk_ready_ = true;
  return true;
}

const coap_bin_const_t* CoapLink::Impl::serverKey(const coap_bin_const_t* identity,
                                                  coap_session_t* session) {
  if (identity != nullptr) {
    const std::string_view id(reinterpret_cast<const char*>(identity->s), identity->length);
    auto it = server_keys_.find(id);
    if (it != server_keys_.end()) return &it->second;
  }
  ++unknown_identities_;
  const auto now = std::chrono::steady_clock::now();
  if (now - unknown_identity_logged_ >= std::chrono::seconds(10)) {
    const coap_address_t* remote = coap_session_get_addr_remote(session);
    char host[INET6_ADDRSTRLEN] = {};
    if (remote->addr.sa.sa_family == AF_INET6) {
      inet_ntop(AF_INET6, &remote->addr.sin6.sin6_addr, host, sizeof host);
    } else {
      inet_ntop(AF_INET, &remote->addr.sin.sin_addr, host, sizeof host);
    }
    spdlog::warn(
        "coap: DTLS client {} refused: unknown PSK identity \"{}\" ({} since the last "
        "report)",
        host, printable(identity), unknown_identities_);
    unknown_identities_ = 0;
    unknown_identity_logged_ = now;
  }
  return nullptr;
}

}  // namespace coap2mqtt::gateway
