#pragma once
// The gateway's one loop thread: epoll over registered fds, a task queue other threads
// post() to (woken by an eventfd), timers, and signals via signalfd.
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "gateway/timers.h"

struct epoll_event;  // <sys/epoll.h>

namespace coap2mqtt::gateway {

class EventLoop : public Timers {
 public:
  using Task = std::function<void()>;

  EventLoop();
  ~EventLoop() override;
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  // Calls `on_readable` on the loop thread whenever `fd` is readable.
  void watchFd(int fd, std::function<void()> on_readable);
  void unwatchFd(int fd);
  // Blocks these signals process-wide and delivers them on the loop thread.
  void handleSignals(const std::vector<int>& signals, std::function<void(int)> on_signal);
  // Asks the loop to call `provider` once per iteration for an extra wake-up deadline
  // in milliseconds (0 = none); used for libcoap's retransmission timers.
  void setTimeoutProvider(std::function<unsigned()> provider);

  // Thread-safe: runs `task` on the loop thread soon.
  void post(Task task);
  // Loop thread only.
  Clock::time_point now() const override { return Clock::now(); }
  TimerId runAfter(std::chrono::milliseconds delay, Task task) override;
  void cancel(TimerId id) override;

  // Runs until stop(). Returns on the loop thread.
  void run();
  void stop();  // thread-safe
  bool inLoopThread() const { return std::this_thread::get_id() == loop_thread_; }

 private:
  template <class F>
  static void guarded(const char* what, F&& f);  // logs what f throws
  static constexpr int kMaxEvents = 32;
  void dispatch(const epoll_event* events, int n);  // one epoll_wait's events
  void drainPosted();
  void fireTimers();
  int nextTimeoutMs(unsigned extra_ms) const;

  int epoll_fd_ = -1;
  int wake_fd_ = -1;
  int signal_fd_ = -1;
  std::map<int, std::function<void()>> fd_handlers_;
  std::function<void(int)> on_signal_;
  std::function<unsigned()> timeout_provider_;

  std::mutex mutex_;
  std::vector<Task> posted_;
  bool stop_requested_ = false;

  // Keyed by (deadline, id) so timers with the same deadline fire in creation order.
  std::map<std::pair<Clock::time_point, TimerId>, Task> timers_;
  std::map<TimerId, Clock::time_point> timer_deadlines_;
  TimerId next_timer_id_ = 1;
  std::thread::id loop_thread_;
};

}  // namespace coap2mqtt::gateway
