#include "gateway/metrics_server.h"

#include <sys/socket.h>

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <vector>

#include <httplib.h>
#include <spdlog/spdlog.h>

#include "gateway/event_loop.h"
#include "gateway/http_pool.h"
#include "gateway/metrics.h"

namespace coap2mqtt::gateway {

namespace {

constexpr http::ServerLimits kMetricsLimits{.threads = 2,
                                            .max_waiting = 8,
                                            .io_timeout = std::chrono::seconds(2),
                                            .keep_alive_requests = 10,
                                            .keep_alive_idle = std::chrono::seconds(2),
                                            .max_body = 4096};
// How long stop() waits for the HTTP threads before leaving them to end on their own.
constexpr std::chrono::seconds kMetricsStopWait{3};

}  // namespace

// What the HTTP threads and the loop thread share; kept alive by whichever of them ends last.
struct MetricsServer::Shared {
  std::mutex mutex;
  std::condition_variable changed;
  EventLoop* loop = nullptr;  // null once stop() began: no more tasks are posted
  std::function<StatsSnapshot()> snapshot;
  std::optional<StatsSnapshot> latest;
  std::chrono::steady_clock::time_point latest_at;
  std::uint64_t generation = 0;
  bool pending = false;  // a snapshot task is queued on the loop

  // HTTP thread. nullopt: the loop did not answer in time, or we are stopping.
  std::optional<StatsSnapshot> fetch(const std::shared_ptr<Shared>& self) {
    std::unique_lock<std::mutex> lock(mutex);
    if (latest && std::chrono::steady_clock::now() - latest_at < kSnapshotReuse) return latest;
    if (loop == nullptr) return std::nullopt;
    const std::uint64_t seen = generation;
    if (!pending) {
      pending = true;
      loop->post([self] { self->takeSnapshot(); });
    }
    changed.wait_for(lock, kSnapshotWait, [&] { return generation != seen || loop == nullptr; });
    if (generation == seen) return std::nullopt;
    return latest;
  }

  // Loop thread.
  void takeSnapshot() {
    {
      std::lock_guard<std::mutex> lock(mutex);
      if (loop == nullptr) {
        pending = false;
        return;
      }
    }
    StatsSnapshot s = snapshot();
    s.per_device.clear();  // not exposed: a label per device would be unbounded
    std::lock_guard<std::mutex> lock(mutex);
    latest = std::move(s);
    latest_at = std::chrono::steady_clock::now();
    ++generation;
    pending = false;
    changed.notify_all();
  }
};

MetricsServer::MetricsServer(EventLoop& loop, std::function<StatsSnapshot()> snapshot)
    : loop_(loop), snapshot_(std::move(snapshot)) {}

MetricsServer::~MetricsServer() {
  stop();
}

void MetricsServer::start(const std::string& listen) {
  if (thread_) return;
  shared_ = std::make_shared<Shared>();
  shared_->loop = &loop_;
  shared_->snapshot = snapshot_;

  auto server = http::makeServer(kMetricsLimits);
  std::weak_ptr<Shared> weak = shared_;
  server->Get("/metrics", [weak](const httplib::Request&, httplib::Response& res) {
    const std::shared_ptr<Shared> shared = weak.lock();
    std::optional<StatsSnapshot> s;
    if (shared) s = shared->fetch(shared);
    if (!s) {
      res.status = 503;
      res.set_content("the gateway's loop did not answer in time\n", "text/plain");
      return;
    }
    res.set_content(metrics::render(metrics::gatewayFamilies(*s, metrics::readProcessStats())),
                    metrics::kContentType);
  });
  // Anything but GET (or HEAD) /metrics is answered 404 before a body is read.
  server->set_pre_routing_handler([](const httplib::Request& req, httplib::Response& res) {
    if ((req.method == "GET" || req.method == "HEAD") && req.path == "/metrics") {
      return httplib::Server::HandlerResponse::Unhandled;
    }
    res.status = 404;
    return httplib::Server::HandlerResponse::Handled;
  });
  server->set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (res.status == 404) res.set_content("not found: only GET /metrics\n", "text/plain");
  });
  http::answerExceptions(*server, "metrics", [](httplib::Response& res) {
    res.status = 500;
    res.set_content("internal error\n", "text/plain");
  });
  thread_ = std::make_unique<http::Listener>(server, listen, "metrics");
  spdlog::info("metrics: serving GET http://{}/metrics", listen);
}

void MetricsServer::stop() {
  if (!thread_) return;
  {
    std::lock_guard<std::mutex> lock(shared_->mutex);
    shared_->loop = nullptr;
    shared_->changed.notify_all();
  }
  thread_->stop(kMetricsStopWait);
  thread_.reset();
}

}  // namespace coap2mqtt::gateway
