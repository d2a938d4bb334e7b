// CoapLink: reachability probes ("CoAP ping", an empty CON that a device answers with a
// RST), each on a session of its own; for DTLS devices on the device's session, whose
// handshake it then costs nothing.
#include <utility>

#include "gateway/coap_link_internal.h"

namespace coap2mqtt::gateway {

void CoapLink::Impl::ping(const std::string& device, std::function<void(bool)> done) {
  auto it = devices_.find(device);
  if (it == devices_.end()) {
    done(false);
    return;
  }
  // On a session of its own: with NSTART=1 a ping on the device's session would hold back
  // every request behind it (a re-registration, a command) for as long as it goes
  // unanswered, which is exactly when the device is hard to reach.
  // A DTLS device's probe goes on its own session: a session of the probe's own would be a
  // full handshake per ping (and a device that lost its DTLS state answers nothing on the
  // old one, which is what a failed ping should say: a request's timeout then renews the
  // session, after its own probe, coap_link_keep.cpp).
  std::string error;
  CoapSessionPtr probe;
  if (it->second->credentials.any()) {
    if (!ensureSession(*it->second, &error)) {
      done(false);
      return;
    }
    probe.reset(coap_session_reference(it->second->session.get()));
  } else {
    probe = newSession(it->second->shard, it->second->uri, DtlsCredentials{}, &error);
  }
  if (!probe) {
    done(false);
    return;
  }
  const coap_mid_t mid = coap_session_send_ping(probe.get());
  if (mid == COAP_INVALID_MID) {
    done(false);
    return;
  }
  const coap_session_t* key = probe.get();
  pings_[{key, mid}] = Ping{device, std::move(probe), std::move(done)};
}

bool CoapLink::Impl::onPingAnswer(coap_session_t* session, coap_mid_t mid,
                                  coap_nack_reason_t reason) {
  // An RST means the device is there; running out of retries means it is not.
  auto it = pings_.find({session, mid});
  if (it == pings_.end()) return false;
  Ping ping = std::move(it->second);
  pings_.erase(it);
  releaseLater(std::move(ping.probe));
  ping.done(reason == COAP_NACK_RST);
  return true;
}

std::vector<std::function<void(bool)>> CoapLink::Impl::takePings(const std::string& device) {
  std::vector<std::function<void(bool)>> taken;
  for (auto p = pings_.begin(); p != pings_.end();) {
    if (p->second.device == device) {
      taken.push_back(std::move(p->second.done));
      releaseLater(std::move(p->second.probe));
      p = pings_.erase(p);
    } else {
      ++p;
    }
  }
  return taken;
}

void CoapLink::Impl::releaseLater(CoapSessionPtr session) {
  // Not from inside a libcoap callback that may still use the session.
  to_release_.push_back(std::move(session));
  if (release_timer_ != 0) return;
  release_timer_ = loop_.runAfter(std::chrono::milliseconds(0), [this] {
    release_timer_ = 0;
    to_release_.clear();
  });
}

}  // namespace coap2mqtt::gateway
