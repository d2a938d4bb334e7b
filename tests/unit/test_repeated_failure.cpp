// RepeatedFailure: a failure on every attempt is logged once per interval with a count.
#include "gateway/repeated_failure.h"

#include <gtest/gtest.h>

namespace {

using coap2mqtt::gateway::RepeatedFailure;
using namespace std::chrono_literals;

TEST(RepeatedFailure, LogsTheFirstThenOncePerIntervalWithTheCount) {
  RepeatedFailure f(10s);
  const RepeatedFailure::Clock::time_point t0{};  // also the clock's zero: not special
  EXPECT_FALSE(f.failing());
  ASSERT_TRUE(f.failed(t0)) << "the first failure of a run is logged";
  EXPECT_EQ(f.unreported(), 1u);
  f.reported();
  int logged = 0;
  for (int s = 1; s <= 25; ++s) {  // one attempt a second
    if (f.failed(t0 + std::chrono::seconds(s))) {
      ++logged;
      EXPECT_EQ(f.unreported(), 10u) << "at " << s << " s";
      f.reported();
    }
  }
  EXPECT_EQ(logged, 2) << "at 10 s and 20 s";
  EXPECT_TRUE(f.failing());
  EXPECT_EQ(f.succeeded(), 26u) << "the whole run, logged or not";
  EXPECT_FALSE(f.failing());
  EXPECT_EQ(f.succeeded(), 0u) << "nothing to say after a second success";
}

TEST(RepeatedFailure, ANewRunAfterASuccessIsLoggedAtOnce) {
  RepeatedFailure f(10s);
  const RepeatedFailure::Clock::time_point t0{};
  ASSERT_TRUE(f.failed(t0));
  f.reported();
  EXPECT_EQ(f.succeeded(), 1u);
  EXPECT_TRUE(f.failed(t0 + 1s)) << "within the interval, but a new run";
  EXPECT_EQ(f.unreported(), 1u);
}

}  // namespace
