#include "gateway/device_credentials.h"

#include "gateway/config_values.h"
#include "registry/registry.h"

namespace coap2mqtt::gateway {

CredentialRules::CredentialRules(const std::vector<CredentialsRule>& rules) : owned_(rules) {
  rules_.reserve(owned_.size());
  for (std::size_t i = 0; i < owned_.size(); ++i) {
    const CredentialsRule& rule = owned_[i];
    std::string error;
    auto device = bridge::Glob::compile(rule.device, bridge::Glob::Kind::Name, &error);
    auto address = bridge::Glob::compile(rule.address, bridge::Glob::Kind::Name, &error);
    if (!device || !address) continue;
    rules_.push_back(Compiled{std::move(*device), std::move(*address), i});
  }
}

const CredentialsRule* CredentialRules::find(std::string_view name, std::string_view uri) const {
  if (rules_.empty()) return nullptr;
  const std::string host = registry::uriHost(uri);
  for (const Compiled& c : rules_) {
    if (c.device.matches(name) && c.address.matches(host)) return &owned_[c.index];
  }
  return nullptr;
}

DeviceReach CredentialRules::reach(std::string_view name, const std::string& uri) const {
  const CredentialsRule* rule = find(name, uri);
  if (rule == nullptr) return DeviceReach{uri, {}};
  if (isCoapsUri(uri)) return DeviceReach{uri, rule->credentials()};
  const std::string host = registry::uriHost(uri);
  const bool v6 = host.find(':') != std::string::npos;
  const std::string port = std::to_string(rule->port.value_or(kCoapsPort));
  return DeviceReach{"coaps://" + (v6 ? "[" + host + "]" : host) + ":" + port, rule->credentials()};
}

std::vector<ListenerClient> listenerClients(const CoapConfig& coap) {
  std::vector<ListenerClient> out;
  const auto add = [&out](std::string id, std::string name, const std::vector<std::string>& eps) {
    ListenerClient client{std::move(id), std::move(name), {}};
    for (const std::string& ep : eps) {
      std::string error;  // checked when the configuration was loaded
      if (auto glob = bridge::Glob::compile(ep, bridge::Glob::Kind::Name, &error)) {
        client.endpoints.push_back(std::move(*glob));
      }
    }
    out.push_back(std::move(client));
  };
  for (const PskClient& c : coap.psk_clients) add("psk:" + c.identity, c.identity, c.endpoints);
  for (const CertClient& c : coap.cert_clients) add("cert:" + c.name, c.name, c.endpoints);
  return out;
}

}  // namespace coap2mqtt::gateway
