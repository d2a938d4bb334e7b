#include "gateway/loop_thread.h"

#include <cstdio>
#include <cstdlib>
#include <sstream>

#include "gateway/event_loop.h"

namespace coap2mqtt::gateway {

LoopThreadChecker::LoopThreadChecker(EventLoop& loop) {
  // Runs as the loop's first task (or the first after this one, when the loop already
  // runs): the thread that runs it is the loop's.
  loop.post([owner = owner_] { owner->store(std::this_thread::get_id()); });
}

void LoopThreadChecker::fail(const char* file, int line, const char* function,
                             std::thread::id owner) {
  std::ostringstream ids;
  ids << "called on thread " << std::this_thread::get_id() << ", the loop runs on " << owner;
  // No logger: this may be paho's thread, and the message must get out before the abort.
  std::fprintf(stderr,
               "coap2mqtt: %s (%s:%d) runs on the loop thread only (%s). Post it to the "
               "loop instead (EventLoop::post).\n",
               function, file, line, ids.str().c_str());
  std::fflush(stderr);
  std::abort();
}

}  // namespace coap2mqtt::gateway
