#pragma once
// What a DTLS device's session carries after requests on it timed out, so that a timeout
// costs no handshake while the device's DTLS state lives (issue 18). Pure bookkeeping, no
// libcoap: CoapLink (coap_link_keep.cpp) sends the probe, sets libcoap's NSTART and
// MAX_RETRANSMIT from nstart() and maxRetransmit(), and renews the session when told to.
//
// libcoap 4.3.1 keeps retransmitting a CON we gave up on and, with NSTART = 1, holds every
// newer CON of the session behind it; it has no call that drops one queued CON. So:
//  - a timed-out request's token is "abandoned": libcoap may hold its CON until it is
//    answered, nacked, or until `until` (its longest retransmission schedule) has passed;
//  - while any is held, NSTART is raised by their number (and by one for a probe in flight),
//    so new CONs go out at once, and MAX_RETRANSMIT is 1 (libcoap refuses 0): an abandoned
//    CON is sent at most once more, then dropped at its next retransmission time;
//  - the first timeout starts a probe (an empty CON on the session). Its answer (RST) means
//    the device still has our DTLS session: it is kept, and the requests that timed out
//    meanwhile are reported as timed out. No answer means the DTLS state is gone (a reboot)
//    or the device is unreachable: the caller renews the session (reset()).
// Bounded: at most kMaxAbandoned abandoned at once; one more asks for a renewal.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <vector>

namespace coap2mqtt::gateway {

class SessionKeeper {
 public:
  using Clock = std::chrono::steady_clock;
  using Token = std::uint64_t;
  static constexpr std::size_t kMaxAbandoned = 16;

  // `max_retransmit`: the session's own value, restored when nothing is abandoned.
  explicit SessionKeeper(unsigned max_retransmit = 4) : max_retransmit_(max_retransmit) {}

  enum class Timeout {
    Probe,   // the first: send a probe now (probing() is true)
    Joined,  // a probe is out already: its verdict covers this request too
    Renew,   // too many abandoned at once: renew the session instead (nothing recorded)
  };
  // A request timed out; libcoap may hold its CON until `until` at most.
  Timeout timedOut(Token token, Clock::time_point until);

  // The probe was answered: the session stays. Returns the requests that timed out while it
  // was out (to be reported as timed out now); they stay abandoned until settled or expired.
  std::vector<Token> kept();
  // The session is renewed (or gone): forgets everything. Returns every token it held.
  std::vector<Token> reset();

  // libcoap is done with `token` (answered or nacked). True when it was abandoned.
  bool settle(Token token);
  // Forgets the abandoned CONs whose bound is past; returns their tokens.
  std::vector<Token> expire(Clock::time_point now);
  // The earliest bound of those held, if any.
  std::optional<Clock::time_point> nextExpiry() const;

  bool probing() const { return probing_; }
  // Timed out while the probe is out: not reported yet.
  bool awaitingVerdict(Token token) const;
  std::size_t held() const { return abandoned_.size(); }
  // What libcoap's session is to have now.
  std::uint16_t nstart() const {
    return static_cast<std::uint16_t>(1 + abandoned_.size() + (probing_ ? 1 : 0));
  }
  // The session's own MAX_RETRANSMIT (given to the constructor).
  unsigned sessionMaxRetransmit() const { return max_retransmit_; }
  std::uint16_t maxRetransmit() const {
    return static_cast<std::uint16_t>(abandoned_.empty() ? max_retransmit_ : 1);
  }

 private:
  struct Abandoned {
    Clock::time_point until;
    bool awaiting_verdict = false;  // timed out while the probe was out
  };
  unsigned max_retransmit_;
  std::map<Token, Abandoned> abandoned_;
  bool probing_ = false;
};

}  // namespace coap2mqtt::gateway
