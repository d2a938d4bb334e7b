#pragma once
// What waits for a sleeping device (issue 20, queue mode): the MQTT messages of one topic
// published while the device slept, oldest first, until it next asks (GET ?queue). Bounded:
// beyond `capacity` the oldest goes (counted dropped); a message older than `expiry` when it
// would be handed out or pushed past is dropped (counted expired). Pure, time passed in.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>

namespace coap2mqtt::gateway {

class MessageQueue {
 public:
  using Clock = std::chrono::steady_clock;

  MessageQueue(std::size_t capacity, Clock::duration expiry)
      : capacity_(capacity), expiry_(expiry) {}

  void push(std::string payload, Clock::time_point now) {
    expire(now);
    if (capacity_ == 0) {
      ++dropped_;
      return;
    }
    while (items_.size() >= capacity_) {
      items_.pop_front();
      ++dropped_;
    }
    items_.push_back(Item{std::move(payload), now});
  }

  // The oldest message still fresh, taken; nullopt when none is left.
  std::optional<std::string> pop(Clock::time_point now) {
    expire(now);
    if (items_.empty()) return std::nullopt;
    std::string out = std::move(items_.front().payload);
    items_.pop_front();
    return out;
  }

  std::size_t size() const { return items_.size(); }
  std::uint64_t dropped() const { return dropped_; }
  std::uint64_t expired() const { return expired_; }

 private:
  struct Item {
    std::string payload;
    Clock::time_point at;
  };
  void expire(Clock::time_point now) {
    while (!items_.empty() && now - items_.front().at > expiry_) {
      items_.pop_front();
      ++expired_;
    }
  }

  std::size_t capacity_;
  Clock::duration expiry_;
  std::deque<Item> items_;
  std::uint64_t dropped_ = 0;
  std::uint64_t expired_ = 0;
};

}  // namespace coap2mqtt::gateway
