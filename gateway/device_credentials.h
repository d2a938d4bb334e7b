#pragma once
// [[coap.credentials]] applied: which devices found by multicast or registered in the
// Resource Directory are reached over DTLS, where, and with which credentials. Pure: no
// sockets, no libcoap.
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "bridge/glob.h"
#include "gateway/config.h"

namespace coap2mqtt::gateway {

// The default port of coaps:// (RFC 7252 §6.2).
inline constexpr std::uint16_t kCoapsPort = 5684;

// Where a device is reached and with what (credentials empty: plain CoAP, as it was).
struct DeviceReach {
  std::string uri;
  DtlsCredentials credentials;
};

class CredentialRules {
 public:
  CredentialRules() = default;
  // The globs were checked when the configuration was loaded; one that does not compile
  // here matches nothing.
  explicit CredentialRules(const std::vector<CredentialsRule>& rules);

  // The first entry whose globs match the device `name` at `uri` (its host, without
  // brackets); nullptr when none does.
  const CredentialsRule* find(std::string_view name, std::string_view uri) const;

  // How the discovered or registered device `name` that answered or registered at `uri`
  // (coap:// or coaps://) is reached: with a matching entry, on coaps:// at the same host,
  // on the port of a coaps:// `uri`, else the entry's port, else 5684; without one, at
  // `uri` with no credentials.
  DeviceReach reach(std::string_view name, const std::string& uri) const;

  bool empty() const { return rules_.empty(); }

 private:
  struct Compiled {
    bridge::Glob device;
    bridge::Glob address;
    std::size_t index;  // into owned_
  };
  std::vector<CredentialsRule> owned_;
  std::vector<Compiled> rules_;
};

// A DTLS client of our coaps:// listeners and the names it speaks for: its `endpoints`
// (globs, compiled; one that does not compile here matches nothing).
struct ListenerClient {
  std::string id;    // "psk:<identity>" or "cert:<name>", as a listener's request names it
  std::string name;  // the identity, or the certificate's name
  std::vector<bridge::Glob> endpoints;
};

// [[coap.psk_client]] first, in their order, then [[coap.cert_client]].
std::vector<ListenerClient> listenerClients(const CoapConfig& coap);

}  // namespace coap2mqtt::gateway
