// CoapLink: datagrams and libcoap's timer work, paced. libcoap's own loop step
// (coap_io_process) walks every session before and after each batch of reads; here the
// reads are batched and the timer walk runs only when something may be due.
#include <sys/epoll.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <system_error>

#include <spdlog/spdlog.h>

#include "gateway/coap_link_internal.h"

namespace coap2mqtt::gateway {

// What coap_io_process(NO_WAIT) does, without its own coap_io_prepare_epoll before the
// reads: that walks every session. (libcoap 4.3.1's coap_io_do_epoll still ends with one,
// so each batch of datagrams costs one walk of every session: with 4,000 devices at
// 1,000 msg/s, a third of the gateway's CPU in 2026-12-04's profile.)
void CoapLink::Impl::processIo() {
  const auto now = std::chrono::steady_clock::now();
  const auto gap = CoapTimerPacing::batchGap(devices_.size());
  if (now < last_batch_ + gap) {
    // Too soon after the last batch: leave the datagrams in the socket until it is time.
    if (batch_timer_ == 0) {
      loop_.pauseFd(fd_, true);
      batch_timer_ = loop_.runAfter(
          std::chrono::ceil<std::chrono::milliseconds>(last_batch_ + gap - now), [this] {
            batch_timer_ = 0;
            loop_.pauseFd(fd_, false);
            processIo();
          });
    }
    return;
  }
  last_batch_ = now;
  constexpr int kEvents = 32;
  std::array<epoll_event, kEvents> events{};
  int n = 0;
  do {
    n = ::epoll_wait(fd_, events.data(), kEvents, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      spdlog::error("coap: epoll_wait: {}", std::system_category().message(errno));
      break;
    }
    coap_io_do_epoll(context_.get(), events.data(), static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i) {
      // libcoap's timerfd carries a null pointer; prepare re-arms it (until then it stays
      // readable and would wake the loop again and again).
      if (events[static_cast<std::size_t>(i)].data.ptr == nullptr) timer_pacing_.noteTimerFired();
    }
  } while (n == kEvents);
  timer_pacing_.noteIo(CoapTimerPacing::Clock::now());
}

unsigned CoapLink::Impl::runTimers() {
  const auto now = CoapTimerPacing::Clock::now();
  if (timer_pacing_.due(now)) {
    coap_tick_t ticks;
    coap_ticks(&ticks);
    // Sends due retransmissions, pings and DTLS timeouts; says when the next is due.
    timer_pacing_.prepared(now, coap_io_prepare_epoll(context_.get(), ticks));
  }
  return timer_pacing_.waitMs(now);
}

}  // namespace coap2mqtt::gateway
