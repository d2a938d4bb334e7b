#include "gateway/event_loop.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <stdexcept>
#include <string>

#include <spdlog/spdlog.h>

namespace coap2mqtt::gateway {
namespace {

[[noreturn]] void throwErrno(const std::string& what) {
  throw std::runtime_error(what + ": " + std::strerror(errno));
}

void addToEpoll(int epoll_fd, int fd) {
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = fd;
  if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &ev) != 0) throwErrno("epoll_ctl");
}

}  // namespace

EventLoop::EventLoop() : loop_thread_(std::this_thread::get_id()) {
  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd_ < 0) throwErrno("epoll_create1");
  wake_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake_fd_ < 0) throwErrno("eventfd");
  addToEpoll(epoll_fd_, wake_fd_);
}

EventLoop::~EventLoop() {
  if (signal_fd_ >= 0) close(signal_fd_);
  if (wake_fd_ >= 0) close(wake_fd_);
  if (epoll_fd_ >= 0) close(epoll_fd_);
}

void EventLoop::watchFd(int fd, std::function<void()> on_readable) {
  addToEpoll(epoll_fd_, fd);
  fd_handlers_[fd] = std::move(on_readable);
}

void EventLoop::unwatchFd(int fd) {
  epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
  fd_handlers_.erase(fd);
}

void EventLoop::handleSignals(const std::vector<int>& signals, std::function<void(int)> on_signal) {
  sigset_t set;
  sigemptyset(&set);
  for (int s : signals) sigaddset(&set, s);
  // Blocked in this thread before any other thread starts, so every thread inherits it
  // and the signals only ever arrive through the signalfd.
  if (pthread_sigmask(SIG_BLOCK, &set, nullptr) != 0) throwErrno("pthread_sigmask");
  signal_fd_ = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
  if (signal_fd_ < 0) throwErrno("signalfd");
  addToEpoll(epoll_fd_, signal_fd_);
  on_signal_ = std::move(on_signal);
}

void EventLoop::setTimeoutProvider(std::function<unsigned()> provider) {
  timeout_provider_ = std::move(provider);
}

void EventLoop::post(Task task) {
  bool wake = false;
  {
    std::lock_guard lock(mutex_);
    // Tasks already waiting mean a wake-up is already on its way: the loop takes them all
    // at once (drainPosted swaps the queue after reading the eventfd).
    wake = posted_.empty();
    posted_.push_back(std::move(task));
  }
  if (!wake) return;
  std::uint64_t one = 1;
  // A full counter (EAGAIN) still means the loop will wake: nothing to handle.
  [[maybe_unused]] auto n = write(wake_fd_, &one, sizeof one);
}

EventLoop::TimerId EventLoop::runAfter(std::chrono::milliseconds delay, Task task) {
  TimerId id = next_timer_id_++;
  auto deadline = Clock::now() + delay;
  timers_.emplace(std::make_pair(deadline, id), std::move(task));
  timer_deadlines_.emplace(id, deadline);
  return id;
}

void EventLoop::cancel(TimerId id) {
  auto it = timer_deadlines_.find(id);
  if (it == timer_deadlines_.end()) return;
  timers_.erase(std::make_pair(it->second, id));
  timer_deadlines_.erase(it);
}

void EventLoop::stop() {
  post([this] { stop_requested_ = true; });
}

void EventLoop::drainPosted() {
  std::uint64_t count;
  [[maybe_unused]] auto n = read(wake_fd_, &count, sizeof count);
  std::vector<Task> tasks;
  {
    std::lock_guard lock(mutex_);
    tasks.swap(posted_);
  }
  for (auto& task : tasks) guarded("loop task", task);
}

template <class F>
void EventLoop::guarded(const char* what, F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    spdlog::error("{} failed: {}", what, e.what());
  } catch (...) {
    spdlog::error("{} failed: unknown exception", what);
  }
}

void EventLoop::fireTimers() {
  auto now = Clock::now();
  while (!timers_.empty() && timers_.begin()->first.first <= now) {
    auto node = timers_.extract(timers_.begin());
    timer_deadlines_.erase(node.key().second);
    guarded("timer task", node.mapped());
  }
}

int EventLoop::nextTimeoutMs(unsigned extra_ms) const {
  long timeout = extra_ms == 0 ? -1 : static_cast<long>(extra_ms);
  if (!timers_.empty()) {
    auto until = std::chrono::duration_cast<std::chrono::milliseconds>(
                     timers_.begin()->first.first - Clock::now())
                     .count();
    if (until < 0) until = 0;
    // Round up so we don't spin waking a fraction of a millisecond early.
    if (timers_.begin()->first.first > Clock::now() + std::chrono::milliseconds(until)) ++until;
    if (timeout < 0 || until < timeout) timeout = until;
  }
  return static_cast<int>(timeout);
}

void EventLoop::run() {
  loop_thread_ = std::this_thread::get_id();
  epoll_event events[kMaxEvents];
  while (!stop_requested_) {
    unsigned extra = timeout_provider_ ? timeout_provider_() : 0;
    int n = epoll_wait(epoll_fd_, events, kMaxEvents, nextTimeoutMs(extra));
    if (n < 0) {
      if (errno == EINTR) continue;
      throwErrno("epoll_wait");
    }
    dispatch(events, n);
    // Timers conclude that nothing came (a request's timeout, a device's silence). After a
    // long iteration (a batch of posted work on a loaded machine) the answer is often
    // already waiting on an fd: take what is there first. (A flood test under ASan lost a
    // device's observation to a 10 s request timeout whose answer had been read 0 s late.)
    if (!timers_.empty() && timers_.begin()->first.first <= Clock::now()) {
      n = epoll_wait(epoll_fd_, events, kMaxEvents, 0);
      if (n > 0) dispatch(events, n);
    }
    fireTimers();
  }
}

void EventLoop::dispatch(const epoll_event* events, int n) {
  for (int i = 0; i < n; ++i) {
    int fd = events[i].data.fd;
    if (fd == wake_fd_) {
      drainPosted();
    } else if (fd == signal_fd_) {
      signalfd_siginfo info{};
      while (read(signal_fd_, &info, sizeof info) == static_cast<ssize_t>(sizeof info)) {
        if (on_signal_)
          guarded("signal handler", [&] { on_signal_(static_cast<int>(info.ssi_signo)); });
      }
    } else if (auto it = fd_handlers_.find(fd); it != fd_handlers_.end()) {
      // What arrives on an fd comes from outside (a datagram, a multicast answer): a
      // handler that throws on it is logged, never the end of the daemon.
      guarded("fd handler", it->second);
    }
  }
}

}  // namespace coap2mqtt::gateway
