// The queue of a sleeping /ps subscriber (issue 20, acceptance 4): order, once, the bound and
// the expiry, counted. Time is passed in.
#include <gtest/gtest.h>

#include "gateway/pubsub_queue.h"

namespace coap2mqtt::gateway {
namespace {

using namespace std::chrono_literals;
using Clock = MessageQueue::Clock;

TEST(MessageQueue, HandsOutEachMessageOnceInOrder) {
  MessageQueue q(8, 1h);
  const Clock::time_point t0{};
  for (int i = 1; i <= 5; ++i) q.push("m" + std::to_string(i), t0 + i * 1s);
  for (int i = 1; i <= 5; ++i) EXPECT_EQ(q.pop(t0 + 10s), "m" + std::to_string(i));
  EXPECT_EQ(q.pop(t0 + 10s), std::nullopt);
  EXPECT_EQ(q.dropped(), 0u);
  EXPECT_EQ(q.expired(), 0u);
}

TEST(MessageQueue, TheBoundDropsTheOldestCounted) {
  MessageQueue q(3, 1h);
  const Clock::time_point t0{};
  for (int i = 1; i <= 5; ++i) q.push("m" + std::to_string(i), t0);
  EXPECT_EQ(q.size(), 3u);
  EXPECT_EQ(q.dropped(), 2u);
  EXPECT_EQ(q.pop(t0), "m3");
  EXPECT_EQ(q.pop(t0), "m4");
  EXPECT_EQ(q.pop(t0), "m5");
  MessageQueue none(0, 1h);
  none.push("x", t0);
  EXPECT_EQ(none.pop(t0), std::nullopt);
  EXPECT_EQ(none.dropped(), 1u);
}

TEST(MessageQueue, WhatIsTooOldExpiresCounted) {
  MessageQueue q(8, 10s);
  const Clock::time_point t0{};
  q.push("old1", t0);
  q.push("old2", t0 + 1s);
  q.push("new", t0 + 9s);
  EXPECT_EQ(q.pop(t0 + 10500ms), "old2");  // old1 is 10.5 s old: gone
  EXPECT_EQ(q.expired(), 1u);
  q.push("newer", t0 + 30s);  // "new" expires as this one comes
  EXPECT_EQ(q.expired(), 2u);
  EXPECT_EQ(q.pop(t0 + 30s), "newer");
  EXPECT_EQ(q.pop(t0 + 30s), std::nullopt);
}

}  // namespace
}  // namespace coap2mqtt::gateway
