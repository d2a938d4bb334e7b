// When the gateway runs libcoap's timer work (coap_io_prepare_epoll): not per datagram.
#include "gateway/coap_timer_pacing.h"

#include <gtest/gtest.h>

#include <vector>

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

TEST(CoapTimerPacing, LibcoapsOwnWalkTakesWhatIoLeftPending) {
  CoapTimerPacing p(10ms);
  const Clock::time_point t0{};
  p.prepared(t0, 30000);
  p.noteIo(t0 + 1ms);  // a request sent
  EXPECT_EQ(p.waitMs(t0 + 1ms), 10u);
  // A batch of datagrams came: coap_io_do_epoll walked the context at its end.
  p.walked();
  EXPECT_FALSE(p.due(t0 + 11ms));
  EXPECT_EQ(p.waitMs(t0 + 11ms), 29989u);  // the deadline we were told stays
}

TEST(CoapTimerPacing, IoDoesNotPostponeAnEarlierDeadline) {
  CoapTimerPacing p(10ms);
  const Clock::time_point t0{};
  p.prepared(t0, 5);
  p.noteIo(t0 + 1ms);
  EXPECT_EQ(p.waitMs(t0 + 1ms), 4u);
  EXPECT_TRUE(p.due(t0 + 5ms));
}

// The gateway's own context and the shards of device sessions, each paced alone.
TEST(CoapContextPacing, OnlyTheContextsThatAreDueAreWalked) {
  CoapContextPacing p(10ms);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(p.add(), static_cast<std::size_t>(i));
  const Clock::time_point t0{};
  std::vector<std::size_t> walked;
  auto prepare = [&](std::size_t i) {
    walked.push_back(i);
    return i == 3 ? 500u : 0u;  // context 3 has a retransmission in 500 ms
  };
  // Nothing pending anywhere: nothing walked, no wake-up.
  EXPECT_EQ(p.run(t0, prepare), 0u);
  EXPECT_TRUE(walked.empty());
  p.noteIo(3, t0);
  p.noteIo(1, t0 + 4ms);
  EXPECT_EQ(p.run(t0 + 1ms, prepare), 9u);
  EXPECT_TRUE(walked.empty());
  EXPECT_EQ(p.run(t0 + 10ms, prepare), 4u);  // context 1's turn comes at 14 ms
  EXPECT_EQ(walked, (std::vector<std::size_t>{3}));
  walked.clear();
  EXPECT_EQ(p.run(t0 + 14ms, prepare), 496u);  // then context 3's deadline
  EXPECT_EQ(walked, (std::vector<std::size_t>{1}));
  walked.clear();
  EXPECT_EQ(p.run(t0 + 510ms, prepare), 500u);
  EXPECT_EQ(walked, (std::vector<std::size_t>{3}));
}

TEST(CoapContextPacing, BatchesOfDatagramsCostNoWalkOfTheirOwn) {
  CoapContextPacing p(10ms);
  constexpr std::size_t kContexts = 80;  // 10,000 devices in shards of 128
  for (std::size_t i = 0; i < kContexts; ++i) p.add();
  const Clock::time_point t0{};
  std::vector<Clock::time_point> sent(kContexts);
  int prepares = 0;
  Clock::time_point now = t0;
  auto prepare = [&](std::size_t i) {
    ++prepares;
    EXPECT_LE(now - sent[i], 10ms) << i;  // a request's walk within 10 ms of it
    return 0u;
  };
  // 10,000 batches of datagrams over a second, on the odd shards, each walked by libcoap
  // at its end; a request every 10 ms on an even shard.
  for (int i = 0; i < 10000; ++i) {
    now = t0 + std::chrono::microseconds(100 * i);
    if (i % 100 == 0) {
      const std::size_t even = static_cast<std::size_t>(i / 100) % (kContexts / 2) * 2;
      sent[even] = now;
      p.noteIo(even, now);
    }
    p.walked(static_cast<std::size_t>(i) % (kContexts / 2) * 2 + 1);
    EXPECT_LE(p.run(now, prepare), 10u);
  }
  now = t0 + 1s;  // the last request's turn
  EXPECT_EQ(p.run(now, prepare), 0u);
  // One walk per request; none for the batches.
  EXPECT_EQ(prepares, 100);
}

TEST(CoapContextPacing, AContextAddedWhileWalkingIsPacedToo) {
  CoapContextPacing p(10ms);
  p.add();
  const Clock::time_point t0{};
  p.noteIo(0, t0);
  // Walking context 0 calls back into the link, which adds a shard and sends on it.
  std::vector<std::size_t> walked;
  EXPECT_EQ(p.run(t0 + 10ms,
                  [&](std::size_t i) {
                    walked.push_back(i);
                    if (i == 0) p.noteIo(p.add(), t0 + 10ms);
                    return 0u;
                  }),
            10u);
  EXPECT_EQ(walked, (std::vector<std::size_t>{0}));
  EXPECT_EQ(p.size(), 2u);
  EXPECT_EQ(p.run(t0 + 20ms,
                  [&](std::size_t i) {
                    walked.push_back(i);
                    return 0u;
                  }),
            0u);
  EXPECT_EQ(walked, (std::vector<std::size_t>{0, 1}));
}

}  // namespace
}  // namespace coap2mqtt::gateway
