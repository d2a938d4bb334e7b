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
#include <thread>

namespace coap2mqtt::gateway {

class EventLoop;

class LoopThreadChecker {
 public:
  explicit LoopThreadChecker(EventLoop& loop);

  // The caller's place by the compilers' builtins rather than std::source_location, which
  // clang 14 (Debian 12; CI's ASan+UBSan tree) lacks with libstdc++ 12.
  void check(const char* file = __builtin_FILE(), int line = __builtin_LINE(),
             const char* function = __builtin_FUNCTION()) const {
    const std::thread::id owner = owner_->load(std::memory_order_relaxed);
    if (owner != std::thread::id() && owner != std::this_thread::get_id()) [[unlikely]] {
      fail(file, line, function, owner);
    }
  }

 private:
  [[noreturn]] static void fail(const char* file, int line, const char* function,
                                std::thread::id owner);

  // Shared with the binding task, which may outlive the checker in the loop's queue.
  std::shared_ptr<std::atomic<std::thread::id>> owner_ =
      std::make_shared<std::atomic<std::thread::id>>();
};

}  // namespace coap2mqtt::gateway
