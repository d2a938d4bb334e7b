#include "gateway/observe_freshness.h"

namespace coap2mqtt::gateway {

bool ObserveFreshness::isFresh(std::uint32_t v1, Clock::time_point t1, std::uint32_t v2,
                               Clock::time_point t2) {
  v1 %= kModulus;
  v2 %= kModulus;
  return (v1 < v2 && v2 - v1 < kHalf) || (v1 > v2 && v1 - v2 > kHalf) || (t2 > t1 + kMaxAge);
}

bool ObserveFreshness::accept(std::uint32_t seq, Clock::time_point now) {
  if (last_ && !isFresh(last_->seq, last_->at, seq, now)) return false;
  last_ = Last{seq % kModulus, now};
  return true;
}

}  // namespace coap2mqtt::gateway
