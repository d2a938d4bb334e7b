// EventLoop: whatever a handler throws is logged and the loop runs on (an fd handler sees
// outside input: one bad datagram must not end the daemon).
#include <unistd.h>

#include <chrono>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "gateway/event_loop.h"
#include "gateway/loop_thread.h"

namespace coap2mqtt::gateway {
namespace {

TEST(EventLoop, AThrowingFdHandlerDoesNotEndTheLoop) {
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  EventLoop loop;
  int reads = 0;
  loop.watchFd(fds[0], [&] {
    char c;
    ASSERT_EQ(read(fds[0], &c, 1), 1);
    ++reads;
    throw std::runtime_error("hostile datagram");
  });
  ASSERT_EQ(write(fds[1], "ab", 2), 2);
  bool timer_ran = false;
  loop.runAfter(std::chrono::milliseconds(50), [&] {
    timer_ran = true;
    loop.stop();
  });
  loop.run();  // would rethrow without the guard
  EXPECT_EQ(reads, 2);
  EXPECT_TRUE(timer_ran);
  loop.unwatchFd(fds[0]);
  close(fds[0]);
  close(fds[1]);
}

TEST(EventLoop, AThrowingTimerOrPostedTaskDoesNotEndTheLoop) {
  EventLoop loop;
  int after = 0;
  loop.post([] { throw std::runtime_error("posted"); });
  loop.runAfter(std::chrono::milliseconds(1), [] { throw std::logic_error("timer"); });
  loop.runAfter(std::chrono::milliseconds(20), [&] {
    ++after;
    loop.stop();
  });
  loop.run();
  EXPECT_EQ(after, 1);
}

// A timer that would conclude "no answer" runs after what already arrived: here a posted
// task runs past the timer's deadline while a byte arrives on a watched fd.
TEST(EventLoop, WhatArrivedDuringALongIterationIsReadBeforeTheTimersFire) {
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  EventLoop loop;
  std::vector<std::string> order;
  loop.watchFd(fds[0], [&] {
    char c;
    ASSERT_EQ(read(fds[0], &c, 1), 1);
    order.push_back("answer");
  });
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(20);
  loop.runAfter(std::chrono::milliseconds(20), [&] {
    order.push_back("timeout");
    loop.stop();
  });
  loop.post([&] {
    ASSERT_EQ(write(fds[1], "a", 1), 1);
    // Busy, as a loaded loop is, until past the timer's deadline.
    while (std::chrono::steady_clock::now() <= deadline + std::chrono::milliseconds(5)) {
    }
  });
  loop.run();
  EXPECT_EQ(order, (std::vector<std::string>{"answer", "timeout"}));
  loop.unwatchFd(fds[0]);
  close(fds[0]);
  close(fds[1]);
}

// The loop-thread rule: once the loop has run the checker's first task, a call from any
// other thread aborts and names the caller's file, line and function.
TEST(LoopThreadCheckerDeathTest, ACallFromAnotherThreadAbortsNamingItsCaller) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        EventLoop loop;
        LoopThreadChecker checker(loop);
        checker.check();  // before the loop ran: every thread passes
        std::thread runner([&] {
          loop.post([&] { loop.stop(); });
          loop.run();
        });
        runner.join();
        checker.check();
      },
      "TestBody \\(.*test_event_loop.cpp:[0-9]+\\) runs on the loop thread only");
}

}  // namespace
}  // namespace coap2mqtt::gateway
