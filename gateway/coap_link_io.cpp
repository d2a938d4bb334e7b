// CoapLink: datagrams and libcoap's timer work, per context. libcoap's own loop step
// (coap_io_process) walks every session of its context before and after each batch of
// reads; here the reads are batched per context and the timer walk runs only for a context
// where something may be due. The devices' sessions are spread over shard contexts
// (coap_shards.h), so the walk that libcoap 4.3.1's coap_io_do_epoll still ends every batch
// with covers one shard, not every device.
#include <sys/epoll.h>

#include <array>
#include <cerrno>
#include <system_error>

#include <spdlog/spdlog.h>

#include "gateway/coap_link_internal.h"

namespace coap2mqtt::gateway {

// What coap_io_process(NO_WAIT) does, without its own coap_io_prepare_epoll before the
// reads: that walks every session of the context.
std::size_t CoapLink::Impl::processIo(std::size_t paced) {
  coap_context_t* context = paced == kOwnContext ? context_.get() : shardContext(paced - 1);
  const int fd = paced == kOwnContext ? fd_ : shards_[paced - 1].fd;
  constexpr int kEvents = 32;
  std::array<epoll_event, kEvents> events{};
  int n = 0;
  bool walked = false;
  std::size_t handled = 0;
  do {
    n = ::epoll_wait(fd, events.data(), kEvents, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      spdlog::error("coap: epoll_wait: {}", std::system_category().message(errno));
      break;
    }
    // Reads the datagrams (and libcoap's timerfd, when it fired), then walks the context's
    // sessions (coap_io_prepare_epoll: retransmissions, DTLS timeouts, the timerfd
    // re-armed).
    coap_io_do_epoll(context, events.data(), static_cast<std::size_t>(n));
    walked = true;
    handled += static_cast<std::size_t>(n);
  } while (n == kEvents);
  if (walked) pacing_.walked(paced);
  return handled;
}

// libcoap reads one datagram per ready socket per batch: after a long loop iteration a
// socket may hold many. Reads until none is ready (each round costs an epoll_wait on the
// context) or max_rounds.
void CoapLink::Impl::drainIo(std::size_t paced, unsigned max_rounds) {
  for (unsigned round = 0; round < max_rounds; ++round) {
    if (processIo(paced) == 0) return;
  }
}

unsigned CoapLink::Impl::runTimers() {
  return pacing_.run(CoapTimerPacing::Clock::now(), [this](std::size_t paced) {
    coap_context_t* context = paced == kOwnContext ? context_.get() : shardContext(paced - 1);
    coap_tick_t ticks;
    coap_ticks(&ticks);
    // Sends due retransmissions, pings and DTLS timeouts; says when the next is due.
    return coap_io_prepare_epoll(context, ticks);
  });
}

}  // namespace coap2mqtt::gateway
