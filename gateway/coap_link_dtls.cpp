// CoapLink: DTLS to devices (coaps://). A session with a pre-shared key per device
// (coap_new_client_session_psk2, libcoap 4.3.1's coap_dtls_cpsk_t version 1), and
// libcoap's session events: a handshake that fails is said once per device and reason, with
// the device, its URI and why (OpenSSL's alert, from libcoap's log), never the key.
#include <arpa/inet.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <memory>
#include <string_view>
#include <utility>

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

int commonNameTrampoline(const char* cn, const std::uint8_t* /*asn1_public_cert*/,
                         std::size_t /*asn1_length*/, coap_session_t* session, unsigned depth,
                         int /*validated*/, void* arg) noexcept {
  if (depth > 0) return 1;  // a CA's name: the chain is OpenSSL's to check
  try {
    return static_cast<CoapLink::Impl*>(arg)->certificateNameMatches(cn, session) ? 1 : 0;
  } catch (const std::exception& e) {
    spdlog::error("coap: certificate name check failed: {}", e.what());
    return 0;
  }
}

// Certificates checked alike on both sides: the peer's must chain to pki.ca_file (at most
// 3 deep), be valid now, and not be self-signed; no CRLs. pki's paths are used as they are
// (the caller keeps `pki` alive during libcoap's call).
coap_dtls_pki_t pkiSetup(const PkiCredentials& pki) {
  coap_dtls_pki_t setup;
  std::memset(&setup, 0, sizeof setup);
  setup.version = COAP_DTLS_PKI_SETUP_VERSION;
  setup.verify_peer_cert = 1;  // the peer's certificate is checked...
  setup.check_common_ca = 1;   // ...against ca_file
  setup.allow_self_signed = 0;
  setup.allow_expired_certs = 0;
  setup.cert_chain_validation = 1;
  setup.cert_chain_verify_depth = 3;
  setup.check_cert_revocation = 0;  // no CRLs configured
  setup.allow_no_crl = 1;
  setup.allow_expired_crl = 1;
  setup.pki_key.key_type = COAP_PKI_KEY_PEM;
  setup.pki_key.key.pem.ca_file = pki.ca_file.c_str();
  setup.pki_key.key.pem.public_cert = pki.cert_file.c_str();
  setup.pki_key.key.pem.private_key = pki.key_file.c_str();
  return setup;
}

bool sameHostName(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

}  // namespace

bool CoapLink::Impl::certificateNameMatches(const char* cn, coap_session_t* session) {
  Device* device = deviceBySession(session);
  if (device == nullptr) return false;
  const std::string_view name = cn == nullptr ? std::string_view{} : std::string_view(cn);
  if (sameHostName(name, device->host)) return true;
  std::string shown;
  for (char c : name.substr(0, 64)) shown.push_back(c >= 0x20 && c < 0x7f ? c : '?');
  device->name_mismatch = "the device's certificate names \"" + shown + "\", not \"" +
                          device->host + "\" (pki.check_name)";
  return false;
}

const coap_dtls_cpsk_info_t* CoapLink::Impl::onIdentityHint(coap_session_t* session) {
  Device* device = deviceBySession(session);
  if (device == nullptr || !device->credentials.psk) return nullptr;  // fails the handshake
  const PskCredentials& psk = *device->credentials.psk;
  device->dtls_hello = true;
  device->psk_info.identity = coap_bin_const_t{
      psk.identity.size(), reinterpret_cast<const std::uint8_t*>(psk.identity.data())};
  device->psk_info.key =
      coap_bin_const_t{psk.key.size(), reinterpret_cast<const std::uint8_t*>(psk.key.data())};
  return &device->psk_info;
}

std::string CoapLink::Impl::stalledHandshake(const Device& device) {
  if (device.credentials.pki) {
    return "the handshake did not complete (no DTLS answer, or the device refused our "
           "certificate without an alert)";
  }
  return device.dtls_hello
             ? "the device answered but did not accept our Finished message: wrong key, or an "
               "identity it does not know (PSK identity \"" +
                   device.credentials.psk->identity + "\")"
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

CoapSessionPtr CoapLink::Impl::newPskSession(coap_context_t* context, const coap_address_t& address,
                                             const std::string& uri, const PskCredentials& psk,
                                             std::string* error) {
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
      coap_new_client_session_psk2(context, nullptr, &address, COAP_PROTO_DTLS, &setup));
  if (!session) *error = "cannot create a DTLS session to " + uri;
  return session;
}

CoapSessionPtr CoapLink::Impl::newPkiSession(coap_context_t* context, const coap_address_t& address,
                                             const std::string& uri, const PkiCredentials& pki,
                                             std::string* error) {
  if (coap_dtls_is_supported() == 0) {
    *error = "this libcoap has no DTLS (install libcoap3 with OpenSSL): cannot reach " + uri;
    return nullptr;
  }
  coap_dtls_pki_t setup = pkiSetup(pki);  // the device's certificate checked against ca_file
  if (pki.check_name) {
    setup.validate_cn_call_back = &commonNameTrampoline;
    setup.cn_call_back_arg = this;
  }
  // Not a local: libcoap keeps the pointer and uses it again for a later handshake of the
  // session (a retry after a failed one read freed memory: "SSL_set_tlsext_host_name: set
  // 'A' failed", DtlsSim.WithCaTheSimulatorRefusesAGatewayCertificateFromAnotherCa).
  const std::string& sni = *pki_sni_.insert(uriHost(uri)).first;
  setup.client_sni = sni.empty() ? nullptr : const_cast<char*>(sni.c_str());  // only read
  CoapSessionPtr session(
      coap_new_client_session_pki(context, nullptr, &address, COAP_PROTO_DTLS, &setup));
  if (!session) {
    *error = "cannot create a DTLS session to " + uri + " (are " + pki.cert_file + " and " +
             pki.key_file + " a certificate and its key?)";
  }
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
      if (device == nullptr || !device->credentials.any()) return;
      std::string reason = std::exchange(device->name_mismatch, {});
      const std::string tls = takeLibcoapTlsReason();
      if (reason.empty()) reason = tls;
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

bool CoapLink::Impl::setupServerPki(std::string* error) {
  if (server_pki_ready_ || !config_.listen_pki) return true;
  if (coap_dtls_is_supported() == 0) {
    *error = "this libcoap has no DTLS: cannot listen on coaps://";
    return false;
  }
  const PkiCredentials& pki = *config_.listen_pki;  // config_ outlives the context
  // A client shows a certificate that chains to ca_file. Any name the CA signed gets a
  // session; what it may do there is the RD's to decide ([[coap.cert_client]] endpoints).
  coap_dtls_pki_t setup = pkiSetup(pki);
  if (coap_context_set_pki(context_.get(), &setup) == 0) {
    *error = "cannot set up DTLS with certificates (are " + pki.cert_file + " and " + pki.key_file +
             " a certificate and its key, and " + pki.ca_file + " a CA?)";
    return false;
  }
  server_pki_ready_ = true;
  return true;
}

std::string peerCertificateName(const coap_session_t* session) {
  coap_tls_library_t library = COAP_TLS_LIBRARY_NOTLS;
  void* tls = coap_session_get_tls(session, &library);
  if (tls == nullptr || library != COAP_TLS_LIBRARY_OPENSSL) return {};
  // Verified in the handshake (verify_peer_cert): no session exists otherwise.
  std::unique_ptr<X509, decltype(&X509_free)> cert(
      SSL_get1_peer_certificate(static_cast<SSL*>(tls)), &X509_free);
  if (!cert) return {};
  std::string name;
  if (auto* sans = static_cast<GENERAL_NAMES*>(
          X509_get_ext_d2i(cert.get(), NID_subject_alt_name, nullptr, nullptr))) {
    for (int i = 0; i < sk_GENERAL_NAME_num(sans) && name.empty(); ++i) {
      const GENERAL_NAME* san = sk_GENERAL_NAME_value(sans, i);
      if (san->type != GEN_DNS) continue;
      name.assign(reinterpret_cast<const char*>(ASN1_STRING_get0_data(san->d.dNSName)),
                  static_cast<std::size_t>(ASN1_STRING_length(san->d.dNSName)));
    }
    GENERAL_NAMES_free(sans);
  }
  if (name.empty()) {
    X509_NAME* subject = X509_get_subject_name(cert.get());
    const int index = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
    if (index >= 0) {
      unsigned char* utf8 = nullptr;
      const int length =
          ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, index)));
      if (length > 0) name.assign(reinterpret_cast<const char*>(utf8), length);
      OPENSSL_free(utf8);
    }
  }
  return name;
}

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
