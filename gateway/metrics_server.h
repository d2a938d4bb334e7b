#pragma once
// The Prometheus endpoint, [metrics] listen: GET /metrics on cpp-httplib's threads; every
// other request is answered 404. The only file that includes httplib is metrics_server.cpp.
//
// Threads: the HTTP threads never read the components. A scrape posts one task to the loop
// thread, which takes Stats::snapshot() there and hands the copy back under a mutex; the
// HTTP thread then reads /proc and renders (gateway/metrics.h) on its own time. A scrape
// waits at most kSnapshotWait for the loop (a stalled loop answers 503, so Prometheus sees
// the stall), at most one such task is queued at a time, and a snapshot younger than
// kSnapshotReuse is served again: scrapers cannot make the loop do more than a few
// snapshots a second.
//
// Bounds against a hostile scraper: two HTTP threads, at most eight accepted connections
// waiting for them (the listener stops accepting until one frees up; the kernel's backlog
// holds the rest), 2 s read and write timeouts, keep-alive of at most 10 requests and 2 s
// idle, request bodies of at most 4 KiB.
#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "gateway/stats.h"

namespace coap2mqtt::gateway {

namespace http {
class Listener;
}

class EventLoop;

class MetricsServer {
 public:
  static constexpr std::chrono::milliseconds kSnapshotWait{2000};
  static constexpr std::chrono::milliseconds kSnapshotReuse{200};

  // `snapshot` runs on the loop thread.
  MetricsServer(EventLoop& loop, std::function<StatsSnapshot()> snapshot);
  ~MetricsServer();  // stop()
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  // Binds `listen` ("host:port", "[v6]:port") and starts serving. Throws
  // std::runtime_error saying what could not be bound.
  void start(const std::string& listen);
  // Stops accepting, lets running requests finish (waits up to a few seconds for a client
  // that trickles its request, then leaves its thread to end on its own) and unbinds.
  // Idempotent. Loop thread, before the loop stops.
  void stop();
  bool running() const { return thread_ != nullptr; }

 private:
  struct Shared;
  EventLoop& loop_;
  std::function<StatsSnapshot()> snapshot_;
  std::shared_ptr<Shared> shared_;
  std::unique_ptr<http::Listener> thread_;
};

}  // namespace coap2mqtt::gateway
