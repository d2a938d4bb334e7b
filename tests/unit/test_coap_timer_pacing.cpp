// When the gateway runs libcoap's timer work (coap_io_prepare_epoll): not per datagram.
#include "gateway/coap_timer_pacing.h"

#include <gtest/gtest.h>

namespace coap2mqtt::gateway {
namespace {

using namespace std::chrono_literals;
using Clock = CoapTimerPacing::Clock;

TEST(CoapTimerPacing, IdleWithNothingPendingNeverWakes) {
  CoapTimerPacing p;
  const Clock::time_point t0{};
  EXPECT_FALSE(p.due(t0));
  p.prepared(t0, 0);
  EXPECT_FALSE(p.due(t0 + 1h));
  EXPECT_EQ(p.waitMs(t0 + 1h), 0u);
}

TEST(CoapTimerPacing, TheAnsweredDeadlineIsKept) {
  CoapTimerPacing p;
  const Clock::time_point t0{};
  p.prepared(t0, 2000);  // a retransmission in 2 s
  EXPECT_FALSE(p.due(t0 + 1999ms));
  EXPECT_EQ(p.waitMs(t0 + 500ms), 1500u);
  EXPECT_TRUE(p.due(t0 + 2000ms));
  // Close to it, the wait never reads as "none".
  EXPECT_EQ(p.waitMs(t0 + 1999ms + 999us), 1u);
  EXPECT_EQ(p.waitMs(t0 + 3s), 1u);
}

TEST(CoapTimerPacing, DatagramsRunItAtMostOncePerInterval) {
  CoapTimerPacing p(10ms);
  const Clock::time_point t0{};
  p.prepared(t0, 30000);
  int prepares = 0;
  // 1,000 datagrams over 100 ms, each followed by the loop asking.
  for (int i = 0; i < 1000; ++i) {
    const auto now = t0 + std::chrono::microseconds(100 * i);
    p.noteIo(now);
    if (p.due(now)) {
      p.prepared(now, 30000);
      ++prepares;
      EXPECT_EQ(p.waitMs(now), 30000u) << i;  // nothing new since
    } else {
      EXPECT_LE(p.waitMs(now), 10u) << i;  // the datagram's follow-up within 10 ms
    }
  }
  EXPECT_GE(prepares, 9);
  EXPECT_LE(prepares, 10);
}

TEST(CoapTimerPacing, LibcoapsTimerFiringIsDueAtOnce) {
  CoapTimerPacing p;
  const Clock::time_point t0{};
  p.prepared(t0, 30000);
  // A request sent meanwhile made libcoap arm its timerfd earlier; it fired.
  p.noteTimerFired();
  EXPECT_TRUE(p.due(t0 + 1ms));
  EXPECT_EQ(p.waitMs(t0 + 1ms), 1u);
  p.prepared(t0 + 1ms, 3000);
  EXPECT_FALSE(p.due(t0 + 2ms));
  EXPECT_EQ(p.waitMs(t0 + 1ms), 3000u);
}

TEST(CoapTimerPacing, IoDoesNotPostponeAnEarlierDeadline) {
  CoapTimerPacing p(10ms);
  const Clock::time_point t0{};
  p.prepared(t0, 5);
  p.noteIo(t0 + 1ms);
  EXPECT_EQ(p.waitMs(t0 + 1ms), 4u);
  EXPECT_TRUE(p.due(t0 + 5ms));
}

TEST(CoapTimerPacing, BatchesOfDatagramsAreSpacedByTheNumberOfDevices) {
  using std::chrono::microseconds;
  EXPECT_EQ(CoapTimerPacing::batchGap(0), microseconds(0));
  EXPECT_EQ(CoapTimerPacing::batchGap(999), microseconds(0));  // the tests' and most homes'
  EXPECT_EQ(CoapTimerPacing::batchGap(1000), microseconds(1000));
  EXPECT_EQ(CoapTimerPacing::batchGap(4000), microseconds(4000));
  EXPECT_EQ(CoapTimerPacing::batchGap(100000), microseconds(5000));  // the latency bound
}

}  // namespace
}  // namespace coap2mqtt::gateway
