// RFC 7641 §3.4 freshness, at the exact boundaries.
#include <gtest/gtest.h>

#include "gateway/observe_freshness.h"

namespace coap2mqtt::gateway {
namespace {

using Clock = ObserveFreshness::Clock;
using std::chrono::seconds;

const Clock::time_point t0{};

struct Case {
  std::uint32_t v1;
  std::uint32_t v2;
  Clock::duration elapsed;
  bool fresh;
};

TEST(ObserveFreshness, Section34Table) {
  const std::uint32_t half = 1u << 23;
  const std::uint32_t top = (1u << 24) - 1;
  const Case cases[] = {
      {10, 11, seconds(0), true},       // next one
      {11, 10, seconds(0), false},      // reordered: older
      {10, 10, seconds(0), false},      // duplicate
      {0, half - 1, seconds(0), true},  // just under 2^23 ahead
      {0, half, seconds(0), false},     // exactly 2^23 ahead is not fresh
      {half, 0, seconds(0), false},     // exactly 2^23 behind is not fresh either
      {half + 1, 0, seconds(0), true},  // more than 2^23 behind: wrapped, fresh
      {top, 0, seconds(0), true},       // wrap-around 2^24-1 -> 0
      {top, 5, seconds(0), true},
      {5, top, seconds(0), false},                                 // the other way round is old
      {11, 10, seconds(128), false},                               // 128 s exactly: not yet
      {11, 10, seconds(128) + std::chrono::nanoseconds(1), true},  // later than 128 s: fresh
      {10, 10, seconds(200), true},                                // long silence: anything goes
  };
  for (const auto& c : cases) {
    EXPECT_EQ(ObserveFreshness::isFresh(c.v1, t0, c.v2, t0 + c.elapsed), c.fresh)
        << "V1=" << c.v1 << " V2=" << c.v2 << " after "
        << std::chrono::duration_cast<std::chrono::milliseconds>(c.elapsed).count() << " ms";
  }
}

TEST(ObserveFreshness, ReorderedNotificationIsDroppedAndNewerOnesStillPass) {
  ObserveFreshness f;
  EXPECT_TRUE(f.accept(9, t0));
  EXPECT_TRUE(f.accept(11, t0 + seconds(1)));
  EXPECT_FALSE(f.accept(10, t0 + seconds(1)));  // seq 10 after 11: stale
  EXPECT_FALSE(f.accept(11, t0 + seconds(1)));  // duplicate of 11
  EXPECT_TRUE(f.accept(12, t0 + seconds(2)));
}

TEST(ObserveFreshness, ResetAcceptsARestartedSequence) {
  ObserveFreshness f;
  EXPECT_TRUE(f.accept(5000, t0));
  EXPECT_FALSE(f.accept(2, t0 + seconds(1)));  // a rebooted device counting again
  f.reset();                                   // ... which a re-registration accepts
  EXPECT_TRUE(f.accept(2, t0 + seconds(1)));
  EXPECT_TRUE(f.accept(3, t0 + seconds(2)));
}

TEST(ObserveFreshness, ValuesAreTakenModulo24Bits) {
  ObserveFreshness f;
  EXPECT_TRUE(f.accept((1u << 24) + 7, t0));  // only the low 24 bits count
  EXPECT_FALSE(f.accept(7, t0));
  EXPECT_TRUE(f.accept(8, t0));
}

TEST(NotificationPace, ZeroUntilTwoNotifications) {
  NotificationPace pace;
  EXPECT_EQ(pace.pace().count(), 0);
  const Clock::time_point t0{};
  pace.note(t0 + seconds(1));
  EXPECT_EQ(pace.pace().count(), 0);
  pace.note(t0 + seconds(1) + std::chrono::milliseconds(500));
  EXPECT_EQ(pace.pace(), std::chrono::milliseconds(500));
}

TEST(NotificationPace, StallsDoNotRaiseItButAFasterDeviceLowersIt) {
  NotificationPace pace;
  Clock::time_point t{};
  const auto step = [&](int ms) { pace.note(t += std::chrono::milliseconds(ms)); };
  step(1000);
  for (int ms : {500, 2500, 500, 7000, 2600}) step(ms);
  EXPECT_EQ(pace.pace(), std::chrono::milliseconds(500));
  step(300);
  EXPECT_EQ(pace.pace(), std::chrono::milliseconds(300));
}

TEST(NotificationPace, ForgetsGapsOlderThanTheWindow) {
  NotificationPace pace;
  Clock::time_point t{};
  pace.note(t);
  pace.note(t += std::chrono::milliseconds(100));
  for (std::size_t i = 0; i < NotificationPace::kWindow; ++i) pace.note(t += seconds(2));
  EXPECT_EQ(pace.pace(), seconds(2));  // the device slowed down for good
}

}  // namespace
}  // namespace coap2mqtt::gateway
