// SessionKeeper: what a DTLS session carries after requests on it timed out (abandoned CONs
// libcoap may still hold, the probe), and the NSTART / MAX_RETRANSMIT libcoap is to have.
#include "gateway/session_keeper.h"

#include <gtest/gtest.h>

#include <algorithm>

namespace {

using coap2mqtt::gateway::SessionKeeper;
using namespace std::chrono_literals;
using Timeout = SessionKeeper::Timeout;

const SessionKeeper::Clock::time_point t0{};

TEST(SessionKeeper, NothingAbandonedIsLibcoapsDefaults) {
  SessionKeeper k(4);
  EXPECT_EQ(k.nstart(), 1);
  EXPECT_EQ(k.maxRetransmit(), 4);
  EXPECT_FALSE(k.probing());
  EXPECT_EQ(k.held(), 0u);
  EXPECT_FALSE(k.nextExpiry());
  EXPECT_FALSE(k.settle(7)) << "not abandoned";
}

TEST(SessionKeeper, FirstTimeoutProbesAndMakesRoomForNewConsAndTheProbe) {
  SessionKeeper k(4);
  ASSERT_EQ(k.timedOut(1, t0 + 90s), Timeout::Probe);
  EXPECT_TRUE(k.probing());
  EXPECT_TRUE(k.awaitingVerdict(1));
  // The abandoned CON, the probe, and one more for the next request.
  EXPECT_EQ(k.nstart(), 3);
  EXPECT_EQ(k.maxRetransmit(), 1) << "abandoned CONs go at their next retransmission";
  // A second timeout while the probe is out joins its verdict: no second probe.
  ASSERT_EQ(k.timedOut(2, t0 + 95s), Timeout::Joined);
  EXPECT_EQ(k.nstart(), 4);
  EXPECT_EQ(k.held(), 2u);
  EXPECT_FALSE(k.nextExpiry()) << "those awaiting the verdict are the verdict's to report";
}

TEST(SessionKeeper, AnsweredProbeKeepsTheSessionAndReportsTheTimedOutOnes) {
  SessionKeeper k(4);
  ASSERT_EQ(k.timedOut(1, t0 + 90s), Timeout::Probe);
  ASSERT_EQ(k.timedOut(2, t0 + 80s), Timeout::Joined);
  ASSERT_EQ(k.timedOut(3, t0 + 85s), Timeout::Joined);
  // 3 was answered late, before the verdict: it is not reported as timed out.
  EXPECT_TRUE(k.settle(3));
  auto reported = k.kept();
  std::sort(reported.begin(), reported.end());
  EXPECT_EQ(reported, (std::vector<SessionKeeper::Token>{1, 2}));
  EXPECT_FALSE(k.probing());
  EXPECT_FALSE(k.awaitingVerdict(1));
  // Still held by libcoap until nacked, answered or past their bound.
  EXPECT_EQ(k.held(), 2u);
  EXPECT_EQ(k.nstart(), 3);
  EXPECT_EQ(k.maxRetransmit(), 1);
  EXPECT_EQ(k.nextExpiry(), t0 + 80s);
  EXPECT_TRUE(k.kept().empty()) << "reported once";
  // libcoap gives up on 1 (the nack); 2 goes silently (an empty ACK): its bound passes.
  EXPECT_TRUE(k.settle(1));
  EXPECT_FALSE(k.settle(1)) << "once";
  EXPECT_TRUE(k.expire(t0 + 79s).empty());
  EXPECT_EQ(k.expire(t0 + 80s), (std::vector<SessionKeeper::Token>{2}));
  // Back to the session's own values.
  EXPECT_EQ(k.nstart(), 1);
  EXPECT_EQ(k.maxRetransmit(), 4);
  EXPECT_FALSE(k.nextExpiry());
}

TEST(SessionKeeper, ANewTimeoutAfterAKeptSessionProbesAgain) {
  SessionKeeper k(3);
  ASSERT_EQ(k.timedOut(1, t0 + 40s), Timeout::Probe);
  k.kept();
  ASSERT_EQ(k.timedOut(2, t0 + 50s), Timeout::Probe) << "a new pause of the device";
  EXPECT_EQ(k.nstart(), 4);  // 1 and 2 held, the probe, one more
  // 1's bound passes while 2 awaits the verdict: only 1 goes.
  EXPECT_EQ(k.expire(t0 + 60s), (std::vector<SessionKeeper::Token>{1}));
  EXPECT_TRUE(k.awaitingVerdict(2));
  EXPECT_EQ(k.kept(), (std::vector<SessionKeeper::Token>{2}));
  EXPECT_EQ(k.nextExpiry(), t0 + 50s);
  EXPECT_EQ(k.expire(t0 + 60s), (std::vector<SessionKeeper::Token>{2}));
  EXPECT_EQ(k.maxRetransmit(), 3);
}

TEST(SessionKeeper, UnansweredProbeRenewsAndForgetsEverything) {
  SessionKeeper k(4);
  ASSERT_EQ(k.timedOut(1, t0 + 90s), Timeout::Probe);
  ASSERT_EQ(k.timedOut(2, t0 + 90s), Timeout::Joined);
  auto all = k.reset();
  std::sort(all.begin(), all.end());
  EXPECT_EQ(all, (std::vector<SessionKeeper::Token>{1, 2}));
  EXPECT_FALSE(k.probing());
  EXPECT_EQ(k.nstart(), 1);
  EXPECT_EQ(k.maxRetransmit(), 4);
  EXPECT_EQ(k.timedOut(3, t0 + 90s), Timeout::Probe) << "a fresh start";
}

TEST(SessionKeeper, TheSameTokenTimingOutTwiceCountsOnce) {
  SessionKeeper k(4);
  ASSERT_EQ(k.timedOut(1, t0 + 10s), Timeout::Probe);
  ASSERT_EQ(k.timedOut(1, t0 + 20s), Timeout::Joined);
  EXPECT_EQ(k.held(), 1u);
  k.kept();
  EXPECT_EQ(k.nextExpiry(), t0 + 20s) << "the later bound";
}

TEST(SessionKeeper, AtMostSixteenAbandonedThenRenew) {
  SessionKeeper k(4);
  for (SessionKeeper::Token t = 1; t <= SessionKeeper::kMaxAbandoned; ++t) {
    ASSERT_NE(k.timedOut(t, t0 + 90s), Timeout::Renew) << t;
    k.kept();
  }
  EXPECT_EQ(k.nstart(), 1 + SessionKeeper::kMaxAbandoned);
  EXPECT_EQ(k.timedOut(99, t0 + 90s), Timeout::Renew);
  EXPECT_EQ(k.held(), SessionKeeper::kMaxAbandoned) << "the refused one is not recorded";
  EXPECT_FALSE(k.probing());
  EXPECT_TRUE(k.settle(1));
  EXPECT_EQ(k.timedOut(99, t0 + 90s), Timeout::Probe) << "room again";
}

}  // namespace
