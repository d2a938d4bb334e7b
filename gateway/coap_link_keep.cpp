// CoapLink: a request that times out on a DTLS device's established session does not renew
// the session (a new handshake) while the device still has its DTLS state. The request is
// abandoned on the session (SessionKeeper: libcoap 4.3.1 may still retransmit it; NSTART is
// raised so that it holds nothing back, MAX_RETRANSMIT lowered so that it goes soon), and an
// empty CON probes the session: a RST keeps it, silence renews it (the device rebooted and
// lost its DTLS state, or it is unreachable). Plain CoAP sessions are renewed at once as
// before: there a renewal costs nothing and drops what libcoap still holds.
#include <algorithm>
#include <utility>

#include <spdlog/spdlog.h>

#include "gateway/coap_link_internal.h"

namespace coap2mqtt::gateway {

void CoapLink::Impl::onExchangeTimeout(std::uint64_t token) {
  auto it = exchanges_.find(token);
  if (it == exchanges_.end()) return;
  it->second->timer = 0;
  const std::string name = it->second->device;
  auto d = devices_.find(name);
  if (d == devices_.end()) return;  // removeDevice took its exchanges: not reached
  // After a long loop iteration its answer and the device's notifications may wait unread on
  // the socket a renewal throws away: read the device's shard first.
  drainIo(pacedOf(d->second->shard), kDrainRounds);
  it = exchanges_.find(token);
  if (it == exchanges_.end() || it->second->established) return;  // answered meanwhile
  d = devices_.find(name);
  if (d == devices_.end()) return;
  Device& device = *d->second;
  if (!device.credentials.any() || !device.session ||
      coap_session_get_state(device.session.get()) != COAP_SESSION_STATE_ESTABLISHED) {
    // Plain CoAP (a fresh session is free and drops what libcoap still holds), or a DTLS
    // handshake that never completed (resetSession says why).
    resetSession(name, "timeout");
    fail(token, "timeout");  // still there only when no new session could be made
    return;
  }
  if (device.keeper.held() == 0 && !device.keeper.probing()) {
    // What the session retransmits when nothing is abandoned (config, or libcoap's default).
    device.keeper = SessionKeeper(coap_session_get_max_retransmit(device.session.get()));
  }
  const auto until = std::chrono::steady_clock::now() + holdBound(device);
  switch (device.keeper.timedOut(token, until)) {
    case SessionKeeper::Timeout::Renew:
      resetSession(name, "timeout (" + std::to_string(SessionKeeper::kMaxAbandoned) +
                             " requests already abandoned on the session)");
      fail(token, "timeout");  // as above
      return;
    case SessionKeeper::Timeout::Joined:
      abandoned_[token] = name;
      applyKeeper(device);
      return;
    case SessionKeeper::Timeout::Probe:
      abandoned_[token] = name;
      applyKeeper(device);  // first: the probe must not wait behind the abandoned CON
      startProbe(device);
      return;
  }
}

void CoapLink::Impl::startProbe(Device& device) {
  const std::string name = device.name;
  const std::uint64_t id = device.session_id;
  spdlog::debug("coap: {}: request timed out; probing its DTLS session", name);
  device.probe_timer = loop_.runAfter(probeWait(), [this, name, id] {
    if (Device* d = deviceOn(name, id)) d->probe_timer = 0;
    probeAnswered(name, id, false);
  });
  const coap_mid_t mid = coap_session_send_ping(device.session.get());
  if (mid == COAP_INVALID_MID) {
    loop_.runAfter(std::chrono::milliseconds(0),
                   [this, name, id] { probeAnswered(name, id, false); });
    return;
  }
  noteIo(pacedOf(device.shard));
  CoapSessionPtr ref(coap_session_reference(device.session.get()));
  const coap_session_t* key = ref.get();
  pings_[{key, mid}] =
      Ping{name, std::move(ref), [this, name, id](bool answered) {
             // Not from inside libcoap's callback: a renewal disconnects
             // the session libcoap is dispatching on.
             loop_.runAfter(std::chrono::milliseconds(0),
                            [this, name, id, answered] { probeAnswered(name, id, answered); });
           }};
}

void CoapLink::Impl::probeAnswered(const std::string& name, std::uint64_t session_id,
                                   bool answered) {
  Device* device = deviceOn(name, session_id);
  if (device == nullptr || !device->keeper.probing()) return;  // decided, or a new session
  if (device->probe_timer != 0) loop_.cancel(device->probe_timer);
  device->probe_timer = 0;
  if (!answered) {
    // The device's DTLS state is gone, or the device is: one handshake on a new session.
    spdlog::debug("coap: {}: no answer to the probe; renewing its DTLS session", name);
    resetSession(name, "timeout");
    device = deviceOn(name, session_id);
    if (device == nullptr) return;
    // No new session could be made (resetSession said why): the old one stays, and so do
    // its abandoned requests; those waiting for this verdict time out now.
    const std::vector<std::uint64_t> timed_out = device->keeper.kept();
    applyKeeper(*device);
    for (std::uint64_t token : timed_out) fail(token, "timeout");
    return;
  }
  ++stats_.dtls_sessions_kept;
  const std::vector<std::uint64_t> timed_out = device->keeper.kept();
  spdlog::debug(
      "coap: {}: answered the probe; DTLS session kept ({} request(s) timed out, {} "
      "still held by libcoap)",
      name, timed_out.size(), device->keeper.held());
  applyKeeper(*device);
  // Last: the handlers may send, renew or remove the device.
  for (std::uint64_t token : timed_out) fail(token, "timeout");
}

void CoapLink::Impl::applyKeeper(Device& device) {
  coap_session_t* session = device.session.get();
  if (session == nullptr) return;
  // Both are read by libcoap 4.3.1 where they matter: NSTART at every send and delayqueue
  // flush (net.c coap_send_pdu, coap_session.c coap_session_connected), MAX_RETRANSMIT when
  // a CON's retransmission is due (net.c coap_retransmit).
  coap_session_set_nstart(session, device.keeper.nstart());
  coap_session_set_max_retransmit(session, device.keeper.maxRetransmit());
  if (device.expiry_timer != 0) loop_.cancel(device.expiry_timer);
  device.expiry_timer = 0;
  const auto next = device.keeper.nextExpiry();
  if (!next) return;
  const auto wait = std::max<std::chrono::steady_clock::duration>(
      std::chrono::steady_clock::duration::zero(), *next - std::chrono::steady_clock::now());
  device.expiry_timer = loop_.runAfter(
      std::chrono::ceil<std::chrono::milliseconds>(wait),
      [this, name = device.name, id = device.session_id] {
        Device* d = deviceOn(name, id);
        if (d == nullptr) return;
        d->expiry_timer = 0;
        // libcoap has given up on them by now, whether or not it said so (an empty ACK
        // ends a CON's retransmission without a callback).
        for (std::uint64_t token : d->keeper.expire(std::chrono::steady_clock::now())) {
          abandoned_.erase(token);
        }
        applyKeeper(*d);
      });
}

void CoapLink::Impl::settleAbandoned(std::uint64_t token, coap_session_t* session,
                                     bool observation) {
  auto it = abandoned_.find(token);
  if (it == abandoned_.end()) return;
  const std::string name = std::move(it->second);
  abandoned_.erase(it);
  auto d = devices_.find(name);
  if (d == devices_.end()) return;
  Device& device = *d->second;
  device.keeper.settle(token);
  applyKeeper(device);
  if (!observation || device.session.get() != session) return;
  // A registration answered after we gave up on it. The response handler's answer is a RST:
  // to a piggybacked ACK or a CON notification it ends the observation on a libcoap device
  // (the RST's message id is the registration's, or the notification's in its send queue),
  // to a NON notification not always. So it is also cancelled (a NON GET with Observe=1),
  // which ends libcoap's record of it too (an lg_crcv with observe_set, otherwise kept as
  // long as the session), once libcoap is done with this message.
  loop_.runAfter(std::chrono::milliseconds(0), [this, name, id = device.session_id, token] {
    Device* still = deviceOn(name, id);
    if (still == nullptr) return;
    std::uint8_t bytes[8];
    for (int i = 0; i < 8; ++i) bytes[i] = static_cast<std::uint8_t>(token >> (56 - 8 * i));
    coap_binary_t wire{sizeof bytes, bytes};
    coap_cancel_observe(still->session.get(), &wire, COAP_MESSAGE_NON);
    noteIo(pacedOf(still->shard));
  });
}

void CoapLink::Impl::forgetKept(Device& device) {
  if (device.probe_timer != 0) loop_.cancel(device.probe_timer);
  if (device.expiry_timer != 0) loop_.cancel(device.expiry_timer);
  device.probe_timer = 0;
  device.expiry_timer = 0;
  for (std::uint64_t token : device.keeper.reset()) abandoned_.erase(token);
}

std::chrono::milliseconds CoapLink::Impl::probeWait() const {
  // An empty CON is answered at once by a device that has our session: no handler runs. Half
  // of ACK_TIMEOUT (the time RFC 7252 expects an ACK within) and at least 250 ms: a device
  // that rebooted is handshaken again soon, and a lost probe costs one handshake.
  return std::max(std::chrono::milliseconds(250),
                  std::chrono::duration_cast<std::chrono::milliseconds>(config_.ack_timeout / 2));
}

std::chrono::steady_clock::duration CoapLink::Impl::holdBound(const Device& device) const {
  // MAX_TRANSMIT_WAIT (RFC 7252 §4.8.2) at the session's own MAX_RETRANSMIT: no CON sent
  // before now is retransmitted after this. A bound for when libcoap does not say it is
  // done; the nack or the answer usually comes much sooner (MAX_RETRANSMIT is 1 meanwhile).
  const unsigned retransmit = std::min(device.keeper.sessionMaxRetransmit(), 20u);
  return std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      config_.ack_timeout * (((1u << (retransmit + 1)) - 1) * config_.ack_random_factor));
}

}  // namespace coap2mqtt::gateway
