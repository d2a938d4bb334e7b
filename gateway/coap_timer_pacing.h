#pragma once
// When to run libcoap's timer work. coap_io_prepare_epoll() sends due retransmissions,
// pings and DTLS timeouts and re-arms libcoap's timerfd, but it walks every session on
// each call: with thousands of devices it was two thirds of the gateway's CPU, called twice
// per wake-up (issue 21). Retransmissions do not need it per datagram: libcoap's own
// timerfd (in the epoll set we watch) fires when the earliest one is due. So it runs
//  - when that timer fired (until prepare re-arms it, the timerfd stays readable),
//  - when the deadline prepare last answered has come,
//  - and at most `after_io` after I/O, which may have started what only prepare times
//    (a DTLS handshake, a blockwise transfer, a server session's expiry).
// Pure bookkeeping with the clock passed in; CoapLink does the libcoap calls.
#include <algorithm>
#include <chrono>
#include <cstddef>
#include <optional>

namespace coap2mqtt::gateway {

class CoapTimerPacing {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr std::chrono::milliseconds kAfterIo{10};

  // The least time between two batches of datagrams handed to libcoap. libcoap 4.3.1's
  // coap_io_do_epoll ends each batch with coap_io_prepare_epoll, a walk of every session
  // (~23 ns each): with 4,000 devices at 1,000 msg/s, one or two datagrams per batch, that
  // walk was a third of the gateway's CPU. From 1,000 devices on, batches are at least
  // 1 us per device apart, at most 5 ms (the latency a datagram may wait for its batch).
  static std::chrono::microseconds batchGap(std::size_t devices) {
    if (devices < 1000) return std::chrono::microseconds(0);
    return std::chrono::microseconds(std::min<std::size_t>(devices, 5000));
  }

  explicit CoapTimerPacing(std::chrono::milliseconds after_io = kAfterIo) : after_io_(after_io) {}

  void noteIo(Clock::time_point now) {
    if (!io_since_) io_since_ = now;
  }
  void noteTimerFired() { timer_fired_ = true; }

  bool due(Clock::time_point now) const {
    return timer_fired_ || (deadline_ && now >= *deadline_) ||
           (io_since_ && now >= *io_since_ + after_io_);
  }

  // After coap_io_prepare_epoll answered `next_ms` (0: nothing pending) at `now`.
  void prepared(Clock::time_point now, unsigned next_ms) {
    timer_fired_ = false;
    io_since_.reset();
    deadline_.reset();
    if (next_ms > 0) deadline_ = now + std::chrono::milliseconds(next_ms);
  }

  // The loop's extra wake-up in ms, 0 for none (the loop's convention): never 0 while
  // something is pending, however close.
  unsigned waitMs(Clock::time_point now) const {
    std::optional<Clock::time_point> at = deadline_;
    if (io_since_) at = at ? std::min(*at, *io_since_ + after_io_) : *io_since_ + after_io_;
    if (timer_fired_) at = now;
    if (!at) return 0;
    const auto ms = std::chrono::ceil<std::chrono::milliseconds>(*at - now).count();
    return static_cast<unsigned>(std::max<decltype(ms)>(ms, 1));
  }

 private:
  std::chrono::milliseconds after_io_;
  bool timer_fired_ = false;
  std::optional<Clock::time_point> io_since_;  // the first I/O since the last prepare
  std::optional<Clock::time_point> deadline_;
};

}  // namespace coap2mqtt::gateway
