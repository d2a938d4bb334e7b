#pragma once
// RFC 7641 §3.4: is a notification newer than the last one accepted for an observation?
// libcoap 4.3.1 hands stale and reordered notifications to the application; this is ours.
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>

namespace coap2mqtt::gateway {

class ObserveFreshness {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr std::uint32_t kModulus = 1u << 24;  // Observe values are 24-bit
  static constexpr std::uint32_t kHalf = 1u << 23;
  static constexpr auto kMaxAge = std::chrono::seconds(128);

  // True when (seq, now) is fresh per §3.4 and must be delivered; it then becomes the
  // reference. A registration's first response is always fresh.
  bool accept(std::uint32_t seq, Clock::time_point now);
  // A new registration starts a new sequence (e.g. after the device rebooted).
  void reset() { last_.reset(); }

  // The §3.4 rule on its own: V1/T1 the reference, V2/T2 the incoming notification.
  static bool isFresh(std::uint32_t v1, Clock::time_point t1, std::uint32_t v2,
                      Clock::time_point t2);

 private:
  struct Last {
    std::uint32_t seq;
    Clock::time_point at;
  };
  std::optional<Last> last_;
};

// The usual time between notifications: the shortest of the last few gaps. Under loss most
// gaps are stalls (a lost message waits for its retransmission) and an average would grow
// with them, delaying the very timers that end stalls; a device never notifies faster than
// its pace, so the minimum stays put. Zero until two notifications have been seen.
class NotificationPace {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr std::size_t kWindow = 8;

  void note(Clock::time_point at) {
    if (last_ != Clock::time_point{}) {
      gaps_[next_] = at - last_;
      next_ = (next_ + 1) % kWindow;
      if (count_ < kWindow) ++count_;
    }
    last_ = at;
  }
  Clock::duration pace() const {
    Clock::duration shortest = Clock::duration::zero();
    for (std::size_t i = 0; i < count_; ++i) {
      if (i == 0 || gaps_[i] < shortest) shortest = gaps_[i];
    }
    return shortest;
  }
  Clock::time_point last() const { return last_; }
  void reset() { *this = NotificationPace{}; }

 private:
  std::array<Clock::duration, kWindow> gaps_{};
  std::size_t next_ = 0;
  std::size_t count_ = 0;
  Clock::time_point last_{};
};

}  // namespace coap2mqtt::gateway
