#pragma once
// The rule "one loop thread owns libcoap and the links' state; paho's threads only post()
// to it", asserted at the links' public entry points.
//
// Which thread is the loop's: the one that runs the first task the checker posts. Until
// then (the set-up before EventLoop::run(), which may happen on another thread than the
// loop's: the tests build a link on one thread and run its loop on a second) every thread
// passes; from then on any other thread aborts with the entry point's name. Destructors
// are not checked: a link may be destroyed after its loop thread was joined.
//
// Always on, in every build type: a relaxed atomic load, pthread_self() and a compare
// (about 1 ns, against microseconds of work per message on either link), so release
// builds keep the check that catches a callback calling in from paho's threads.
#include <atomic>
#include <memory>
#include <source_location>
#include <thread>

namespace coap2mqtt::gateway {

class EventLoop;

class LoopThreadChecker {
 public:
  explicit LoopThreadChecker(EventLoop& loop);

  void check(std::source_location where = std::source_location::current()) const {
    const std::thread::id owner = owner_->load(std::memory_order_relaxed);
    if (owner != std::thread::id() && owner != std::this_thread::get_id()) [[unlikely]] {
      fail(where, owner);
    }
  }

 private:
  [[noreturn]] static void fail(const std::source_location& where, std::thread::id owner);

  // Shared with the binding task, which may outlive the checker in the loop's queue.
  std::shared_ptr<std::atomic<std::thread::id>> owner_ =
      std::make_shared<std::atomic<std::thread::id>>();
};

}  // namespace coap2mqtt::gateway
