#pragma once
// Timers on a clock that moves only when the test says so: advance() fires every timer
// that falls due on the way, in deadline order (creation order for equal deadlines), each
// with now() at its own deadline. A timer armed by a firing one fires within the same
// advance() when it is due by its end; one cancelled by a firing one does not fire.
#include <algorithm>
#include <chrono>
#include <cstddef>
#include <functional>
#include <map>
#include <optional>
#include <utility>

#include "gateway/timers.h"

namespace coap2mqtt::gateway {

class FakeTimers : public Timers {
 public:
  // Not the clock's epoch: NotificationPace takes a zero time_point for "none yet".
  FakeTimers() = default;
  explicit FakeTimers(Clock::time_point start) : now_(start) {}

  Clock::time_point now() const override { return now_; }

  TimerId runAfter(std::chrono::milliseconds delay, std::function<void()> task) override {
    const TimerId id = next_id_++;
    const auto deadline = now_ + std::max(delay, std::chrono::milliseconds(0));
    tasks_.emplace(std::make_pair(deadline, id), std::move(task));
    deadlines_.emplace(id, deadline);
    return id;
  }

  void cancel(TimerId id) override {
    auto it = deadlines_.find(id);
    if (it == deadlines_.end()) return;
    tasks_.erase(std::make_pair(it->second, id));
    deadlines_.erase(it);
  }

  // Moves the clock forward by `by`, firing what falls due.
  void advance(std::chrono::milliseconds by) {
    const auto end = now_ + by;
    while (!tasks_.empty() && tasks_.begin()->first.first <= end) {
      auto node = tasks_.extract(tasks_.begin());
      deadlines_.erase(node.key().second);
      now_ = std::max(now_, node.key().first);
      node.mapped()();
    }
    now_ = end;
  }

  std::size_t pending() const { return tasks_.size(); }
  std::size_t made() const { return next_id_ - 1; }  // timers armed so far
  bool armed(TimerId id) const { return deadlines_.count(id) != 0; }
  // Time from now to the next timer, if any.
  std::optional<std::chrono::milliseconds> nextIn() const {
    if (tasks_.empty()) return std::nullopt;
    return std::chrono::duration_cast<std::chrono::milliseconds>(tasks_.begin()->first.first -
                                                                 now_);
  }

 private:
  Clock::time_point now_ = Clock::time_point{} + std::chrono::hours(1);
  std::map<std::pair<Clock::time_point, TimerId>, std::function<void()>> tasks_;
  std::map<TimerId, Clock::time_point> deadlines_;
  TimerId next_id_ = 1;
};

}  // namespace coap2mqtt::gateway
