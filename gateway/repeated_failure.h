#pragma once
// A failure that repeats on every attempt (a full disk fails every commit) is logged once
// per interval with the count since the last line, not once per attempt; and when it
// stops, that is said once too. Pure bookkeeping: the caller logs, with its own words.
#include <chrono>
#include <cstdint>

namespace coap2mqtt::gateway {

class RepeatedFailure {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr Clock::duration kLogInterval = std::chrono::seconds(10);

  explicit RepeatedFailure(Clock::duration interval = kLogInterval) : interval_(interval) {}

  // Counts a failure. True when it is to be logged now: the first of a run of failures,
  // then at most once per interval. unreported() is then the count to name.
  bool failed(Clock::time_point now) {
    ++unreported_;
    ++in_run_;
    if (logged_ && now - last_log_ < interval_) return false;
    logged_ = true;
    last_log_ = now;
    return true;
  }
  // Failures counted since the last failed() that returned true, that one included.
  std::uint64_t unreported() const { return unreported_; }
  // Call after logging what failed() asked for.
  void reported() { unreported_ = 0; }

  // Counts a success. Non-zero (the failures of the run that just ended) when the caller
  // should say that it works again.
  std::uint64_t succeeded() {
    const std::uint64_t run = in_run_;
    in_run_ = 0;
    unreported_ = 0;
    logged_ = false;
    return run;
  }
  bool failing() const { return in_run_ > 0; }

 private:
  Clock::duration interval_;
  Clock::time_point last_log_{};
  bool logged_ = false;
  std::uint64_t unreported_ = 0;
  std::uint64_t in_run_ = 0;
};

}  // namespace coap2mqtt::gateway
