// CoapLink: when CON notifications get their ACK. Held back until what the notification
// queued is durable (setHoldAck/releaseHeldAcks), and sent again while a device stays quiet
// after one (libcoap 4.3.1 does not ACK a retransmission: see Device in
// coap_link_internal.h).
#include <algorithm>
#include <utility>

#include <spdlog/spdlog.h>

#include "gateway/coap_link_internal.h"

namespace coap2mqtt::gateway {

bool CoapLink::Impl::holdAck(coap_session_t* session, coap_mid_t mid) {
  if (!hold_ack_ || responding_device_.empty() || !hold_ack_()) return false;
  // The response handler ran for this device's exchange; name the session it came on. On
  // a session the device no longer has (id 0, never a device's) it is held and dropped.
  const Device* device = deviceOn(responding_device_, session);
  held_acks_.push_back(HeldAck{responding_device_, device ? device->session_id : 0, mid});
  return true;
}

void CoapLink::Impl::releaseHeldAcks() {
  for (const HeldAck& held : std::exchange(held_acks_, {})) {
    // A new session (a reset, the device removed): the device retransmits to it instead.
    if (Device* device = deviceOn(held.device, held.session_id)) {
      sendEmptyReply(device->session.get(), held.mid, false);
    }
  }
  releaseDeferred();
}

void CoapLink::Impl::noteConNotification(Device& device, coap_mid_t mid) {
  device.con_pace.note(std::chrono::steady_clock::now());
  device.last_con_mid = mid;
  device.last_con_rejected = false;
  device.reacks = 0;
  if (device.reack_timer == 0) armReack(device);
}

void CoapLink::Impl::forgetConNotification(Device& device) {
  if (device.reack_timer != 0) loop_.cancel(device.reack_timer);
  device.reack_timer = 0;
  device.last_con_mid.reset();
  device.last_con_rejected = false;
  device.con_pace.reset();
  device.reacks = 0;
}

std::chrono::steady_clock::duration CoapLink::Impl::reackDelay(const Device& device) const {
  // Every twice the device's pace (at least 1 s) while it stays quiet: a device that is
  // merely slower than usual gets no extra ACK, a stalled one gets one soon, whatever the
  // point of its retransmission schedule (an ACK ends it at any point).
  const std::chrono::steady_clock::duration interval =
      std::max<std::chrono::steady_clock::duration>(std::chrono::seconds(1),
                                                    device.con_pace.pace() * 2);
  return interval * (device.reacks + 1);
}

void CoapLink::Impl::armReack(Device& device) {
  // MAX_TRANSMIT_SPAN (RFC 7252 §4.8.2): after that the device has given up on its
  // notification; re-registration takes over from there.
  const auto span = std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      config_.ack_timeout * (((1u << config_.max_retransmit) - 1) * config_.ack_random_factor));
  const auto delay = reackDelay(device);
  if (delay > span) return;
  const auto wait = std::max<std::chrono::steady_clock::duration>(
      std::chrono::steady_clock::duration::zero(),
      device.con_pace.last() + delay - std::chrono::steady_clock::now());
  device.reack_timer = loop_.runAfter(
      std::chrono::ceil<std::chrono::milliseconds>(wait), [this, name = device.name] {
        auto it = devices_.find(name);
        if (it == devices_.end()) return;
        Device& d = *it->second;
        d.reack_timer = 0;
        if (!d.last_con_mid) return;
        // A newer notification moved the deadline: nothing to do yet.
        if (std::chrono::steady_clock::now() >= d.con_pace.last() + reackDelay(d)) {
          spdlog::debug("coap: {} quiet since CON notification mid {}: {} again", d.name,
                        *d.last_con_mid, d.last_con_rejected ? "RST" : "ACK");
          sendEmptyReply(d.session.get(), *d.last_con_mid, d.last_con_rejected);
          ++d.reacks;
          ++stats_.extra_acks;
        }
        armReack(d);
      });
}

void CoapLink::Impl::sendEmptyReply(coap_session_t* session, coap_mid_t mid, bool reset) {
  // coap_send_ack() / coap_send_rst() answer a CON with an empty ACK / RST of the same
  // message id; a stand-in CON carrying that id is all they read (they do not take it).
  CoapPduPtr stand_in(coap_pdu_init(COAP_MESSAGE_CON, COAP_EMPTY_CODE, mid, 0));
  if (!stand_in) return;
  const coap_mid_t sent =
      reset ? coap_send_rst(session, stand_in.get()) : coap_send_ack(session, stand_in.get());
  if (sent == COAP_INVALID_MID) {
    spdlog::debug("coap: could not send the {} for mid {}", reset ? "RST" : "ACK", mid);
  }
}

}  // namespace coap2mqtt::gateway
