#pragma once
// What the HTTP listeners (metrics_server.cpp, web_server.cpp) share: a bounded worker pool
// for cpp-httplib, the listen address, the listener thread and the exception handler. Included only
// by those two files (httplib stays out of every other translation unit).
#include <sys/socket.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <httplib.h>
#include <spdlog/spdlog.h>

namespace coap2mqtt::gateway::http {

// httplib's ThreadPool queues every accepted connection however many wait. This one holds
// at most `max_waiting`: enqueue() (called by httplib's listener thread only) blocks until
// a worker takes one, so the listener stops accepting and the kernel's backlog fills.
class BoundedPool : public httplib::TaskQueue {
 public:
  BoundedPool(std::size_t threads, std::size_t max_waiting) : max_waiting_(max_waiting) {
    for (std::size_t i = 0; i < threads; ++i) workers_.emplace_back([this] { work(); });
  }
  ~BoundedPool() override { shutdown(); }

  void enqueue(std::function<void()> fn) override {
    std::unique_lock<std::mutex> lock(mutex_);
    space_.wait(lock, [this] { return jobs_.size() < max_waiting_ || shutdown_; });
    jobs_.push_back(std::move(fn));
    job_.notify_one();
  }

  // Runs what is queued (each job closes its connection), then joins the workers.
  void shutdown() override {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (shutdown_ && workers_.empty()) return;
      shutdown_ = true;
    }
    job_.notify_all();
    space_.notify_all();
    for (auto& t : workers_) t.join();
    workers_.clear();
  }

 private:
  void work() {
    for (;;) {
      std::function<void()> fn;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        job_.wait(lock, [this] { return !jobs_.empty() || shutdown_; });
        if (jobs_.empty()) return;  // shut down and nothing left
        fn = std::move(jobs_.front());
        jobs_.pop_front();
      }
      space_.notify_one();
      fn();
    }
  }

  const std::size_t max_waiting_;
  std::mutex mutex_;
  std::condition_variable job_;
  std::condition_variable space_;
  std::deque<std::function<void()>> jobs_;
  bool shutdown_ = false;
  std::vector<std::thread> workers_;
};

// "host:port" or "[v6]:port" (validated by the config) -> host, port.
inline std::pair<std::string, int> splitListen(const std::string& listen) {
  const auto colon = listen.rfind(':');
  if (colon == std::string::npos) throw std::runtime_error("bad address " + listen);
  std::string host = listen.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  return {host, std::stoi(listen.substr(colon + 1))};
}

// No SO_REUSEPORT (httplib's default sets it): a second gateway on the same port must fail
// to bind, not share the port with the first.
inline void socketOptions(int sock) {
  int yes = 1;
  ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
}

// What a listener allows a client, and how many threads serve it.
struct ServerLimits {
  std::size_t threads;
  std::size_t max_waiting;  // accepted connections waiting for a thread
  std::chrono::seconds io_timeout;
  std::size_t keep_alive_requests;
  std::chrono::seconds keep_alive_idle;
  std::size_t max_body;
};

// A server on a BoundedPool, with socketOptions and `limits`.
inline std::shared_ptr<httplib::Server> makeServer(const ServerLimits& limits) {
  auto server = std::make_shared<httplib::Server>();
  server->new_task_queue = [limits] { return new BoundedPool(limits.threads, limits.max_waiting); };
  server->set_socket_options(socketOptions);
  server->set_read_timeout(limits.io_timeout);
  server->set_write_timeout(limits.io_timeout);
  server->set_keep_alive_max_count(limits.keep_alive_requests);
  server->set_keep_alive_timeout(limits.keep_alive_idle.count());
  server->set_payload_max_length(limits.max_body);
  return server;
}

// A handler that throws is answered by `answer` (a 500); the first such failure of the
// process is logged under `who` ("web", "metrics"), the rest would only repeat it.
inline void answerExceptions(httplib::Server& server, const std::string& who,
                             std::function<void(httplib::Response&)> answer) {
  server.set_exception_handler([who, answer = std::move(answer)](const httplib::Request&,
                                                                 httplib::Response& res,
                                                                 const std::exception_ptr& ep) {
    static std::atomic<bool> logged{false};
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      if (!logged.exchange(true)) spdlog::error("{}: a request failed: {}", who, e.what());
    } catch (...) {
      if (!logged.exchange(true)) spdlog::error("{}: a request failed", who);
    }
    answer(res);
  });
}

// One server bound to `listen` and served by its own listener thread. The constructor
// returns once the server runs (stop() only stops a running server) and throws
// std::runtime_error "<who>: cannot listen on <listen>: <reason>" when it cannot bind.
class Listener {
 public:
  Listener(std::shared_ptr<httplib::Server> server, std::string listen, std::string who)
      : server_(std::move(server)), listen_(std::move(listen)), who_(std::move(who)) {
    const auto [host, port] = splitListen(listen_);
    errno = 0;
    if (!server_->bind_to_port(host, port)) {
      const int error = errno;
      throw std::runtime_error(
          who_ + ": cannot listen on " + listen_ +
          (error != 0 ? std::string(": ") + std::strerror(error) : std::string(": bind failed")));
    }
    std::promise<void> finished;
    done_ = finished.get_future();
    thread_ = std::thread([server = server_, finished = std::move(finished)]() mutable {
      server->listen_after_bind();
      finished.set_value();
    });
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (!server_->is_running() &&
           done_.wait_for(std::chrono::milliseconds(1)) != std::future_status::ready &&
           std::chrono::steady_clock::now() < deadline) {
    }
  }
  ~Listener() { stop(); }
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;

  // Stops accepting and waits up to `wait` for the running requests. A client trickling
  // its request holds its thread longer: the thread is left to end on its own (it owns
  // the server and what the handlers share, nothing of the caller's). Idempotent.
  void stop(std::chrono::seconds wait = std::chrono::seconds(3)) {
    if (!thread_.joinable()) return;
    server_->stop();
    if (done_.wait_for(wait) == std::future_status::ready) {
      thread_.join();
    } else {
      spdlog::warn("{}: a client is still connected; its HTTP thread ends on its own", who_);
      thread_.detach();
    }
    spdlog::info("{}: stopped listening on {}", who_, listen_);
  }

 private:
  std::shared_ptr<httplib::Server> server_;
  std::string listen_;
  std::string who_;
  std::future<void> done_;
  std::thread thread_;
};

}  // namespace coap2mqtt::gateway::http
