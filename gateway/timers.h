#pragma once
// The clock and timers a component runs on. EventLoop is the real one; unit tests drive a
// fake one (tests/unit/fake_timers.h) and move time by hand, so a state machine that waits
// for seconds is tested in microseconds.
#include <chrono>
#include <cstdint>
#include <functional>

namespace coap2mqtt::gateway {

class Timers {
 public:
  using Clock = std::chrono::steady_clock;
  using TimerId = std::uint64_t;  // 0 is never a timer

  virtual ~Timers() = default;
  virtual Clock::time_point now() const = 0;
  // Runs `task` once, `delay` from now(), on the caller's (loop) thread.
  virtual TimerId runAfter(std::chrono::milliseconds delay, std::function<void()> task) = 0;
  // Unknown or already fired ids are ignored.
  virtual void cancel(TimerId id) = 0;
};

}  // namespace coap2mqtt::gateway
