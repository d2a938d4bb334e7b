#pragma once
// Devices that register themselves: our Resource Directory (RFC 9176) served on the CoAP
// listeners (/rd, /rd-lookup/ep, /rd-lookup/res), its registrations kept across restarts,
// and each registration mapped to a device (registered, updated, expired, removed).
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "bridge/glob.h"
#include "gateway/coap_link.h"
#include "gateway/config.h"
#include "gateway/device_credentials.h"
#include "gateway/events.h"
#include "gateway/repeated_failure.h"
#include "registry/resource_directory.h"

namespace coap2mqtt::gateway {

class CoapLink;
class Devices;
class EventLoop;
class Observer;

class RdSource {
 public:
  RdSource(const GatewayConfig& config, EventLoop& loop, CoapLink& coap, Devices& devices,
           Observer& observer, Events& events);

  // Serves the RD on the link's listeners (when there are any and it is on).
  void serve();
  // Registrations of the last run: their lifetimes kept running (wall clock).
  void restore();
  std::uint64_t refusedCount() const { return refused_; }

 private:
  CoapServerResponse onRequest(const CoapServerRequest& r);
  std::optional<CoapServerResponse> refused(const CoapServerRequest& r,
                                            const registry::RdQuery& query) const;
  bool admitsNewEndpoint(const CoapServerRequest& r, const registry::RdQuery& query);
  void onEvent(const registry::RdEvent& e);
  void persist(const registry::RdEvent& e);
  void scheduleExpiry();
  DtlsCredentials credentialsFor(const registry::RdRegistration& reg) const;
  // Whether `identity` ("psk:<identity>" or "cert:<name>", see principal()) may register
  // `ep` ([[coap.psk_client]] and [[coap.cert_client]] endpoints); `claimed`: some
  // identity's endpoints match it (then only those identities may).
  bool identityMay(std::string_view identity, std::string_view ep, bool* claimed) const;

  const GatewayConfig& config_;
  EventLoop& loop_;
  CoapLink& coap_;
  Devices& devices_;
  Observer& observer_;
  Events& events_;
  registry::ResourceDirectory rd_;
  // Each with the endpoint names it may register (the PSK ones first, in their order).
  std::vector<ListenerClient> clients_;
  std::uint64_t expiry_timer_ = 0;
  std::uint64_t refused_ = 0;    // requests refused by the security policy
  RepeatedFailure refusal_log_;  // a flood of them is one log line per interval
};

}  // namespace coap2mqtt::gateway
