#pragma once
// When to run libcoap's timer work. coap_io_prepare_epoll() sends due retransmissions,
// pings and DTLS timeouts and re-arms libcoap's timerfd, but it walks every session of its
// context on each call: with thousands of devices it was two thirds of the gateway's CPU,
// called twice per wake-up (issue 21). Retransmissions do not need it per datagram:
// libcoap's own timerfd (in the epoll set we watch) fires when the earliest one is due, and
// libcoap 4.3.1's coap_io_do_epoll, which reads it with the datagrams, ends every batch
// with that walk itself (walked()). So besides, it runs only
//  - when the deadline prepare last answered has come,
//  - and at most `after_io` after I/O of ours outside a batch (a request sent, a session
//    made, a response released), which may have started what only prepare times (a DTLS
//    handshake, a blockwise transfer, a server session's expiry).
// Pure bookkeeping with the clock passed in; CoapLink does the libcoap calls.
#include <algorithm>
#include <chrono>
#include <cstddef>
#include <optional>
#include <vector>

namespace coap2mqtt::gateway {

class CoapTimerPacing {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr std::chrono::milliseconds kAfterIo{10};

  explicit CoapTimerPacing(std::chrono::milliseconds after_io = kAfterIo) : after_io_(after_io) {}

  void noteIo(Clock::time_point now) {
    if (!io_since_) io_since_ = now;
  }

  bool due(Clock::time_point now) const {
    const auto at = nextDue();
    return at && now >= *at;
  }

  // When it is due next (nullopt: nothing pending).
  std::optional<Clock::time_point> nextDue() const {
    std::optional<Clock::time_point> at = deadline_;
    if (io_since_) at = at ? std::min(*at, *io_since_ + after_io_) : *io_since_ + after_io_;
    return at;
  }

  // After coap_io_prepare_epoll answered `next_ms` (0: nothing pending) at `now`.
  void prepared(Clock::time_point now, unsigned next_ms) {
    io_since_.reset();
    deadline_.reset();
    if (next_ms > 0) deadline_ = now + std::chrono::milliseconds(next_ms);
  }

  // libcoap walked the context on its own (the end of coap_io_do_epoll): what our I/O
  // left pending is done, and libcoap's timerfd is re-armed for the rest. The deadline we
  // were last told stays (at worst one walk too many).
  void walked() { io_since_.reset(); }

  // The loop's extra wake-up in ms, 0 for none (the loop's convention): never 0 while
  // something is pending, however close.
  unsigned waitMs(Clock::time_point now) const { return waitMs(nextDue(), now); }

  static unsigned waitMs(std::optional<Clock::time_point> at, Clock::time_point now) {
    if (!at) return 0;
    const auto ms = std::chrono::ceil<std::chrono::milliseconds>(*at - now).count();
    return static_cast<unsigned>(std::max<decltype(ms)>(ms, 1));
  }

 private:
  std::chrono::milliseconds after_io_;
  std::optional<Clock::time_point> io_since_;  // the first I/O since the last prepare
  std::optional<Clock::time_point> deadline_;
};

// One CoapTimerPacing per libcoap context (the gateway's own and each shard of device
// sessions, see coap_shards.h): only a context that is due is walked, and the loop asks
// in O(1) while none is. `next_` is never later than the earliest context's due time, so
// the contexts are looked at only when one may be due: after I/O at most once per
// `after_io`, not per datagram.
class CoapContextPacing {
 public:
  using Clock = CoapTimerPacing::Clock;

  explicit CoapContextPacing(std::chrono::milliseconds after_io = CoapTimerPacing::kAfterIo)
      : after_io_(after_io) {}

  // A new context; its index (from 0, in order).
  std::size_t add() {
    contexts_.emplace_back(after_io_);
    return contexts_.size() - 1;
  }
  std::size_t size() const { return contexts_.size(); }

  void noteIo(std::size_t context, Clock::time_point now) {
    contexts_[context].noteIo(now);
    lower(contexts_[context].nextDue());
  }
  void walked(std::size_t context) { contexts_[context].walked(); }

  // Calls prepare(i) (coap_io_prepare_epoll's answer: ms to its next timer, 0 for none) for
  // every context that is due at `now`; returns the loop's extra wake-up (waitMs).
  template <class Prepare>
  unsigned run(Clock::time_point now, Prepare&& prepare) {
    if (!next_ || now < *next_) return CoapTimerPacing::waitMs(next_, now);
    next_.reset();
    // By index: prepare's callbacks may add a context (a device on a new shard).
    for (std::size_t i = 0; i < contexts_.size(); ++i) {
      if (contexts_[i].due(now)) {
        const unsigned next_ms = prepare(i);
        contexts_[i].prepared(now, next_ms);
      }
      lower(contexts_[i].nextDue());
    }
    return CoapTimerPacing::waitMs(next_, now);
  }

 private:
  void lower(std::optional<Clock::time_point> at) {
    if (at && (!next_ || *at < *next_)) next_ = at;
  }

  std::chrono::milliseconds after_io_;
  std::vector<CoapTimerPacing> contexts_;
  std::optional<Clock::time_point> next_;  // when the earliest may be due (nullopt: none)
};

}  // namespace coap2mqtt::gateway
