#pragma once
// RFC 7641 §3.4: is a notification newer than the last one accepted for an observation?
// libcoap 4.3.1 hands stale and reordered notifications to the application; this is ours.
#include <chrono>
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

}  // namespace coap2mqtt::gateway
