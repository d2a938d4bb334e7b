// MQTT outbox benchmark (median of 5 runs each):
//  1. The outbox alone, on disk: append + group commit + remove with a window of 100
//     unacknowledged (as under a live broker), and append + commit of everything (as
//     during an outage: every message reaches the file).
//  2. End to end through the real MqttLink to a real mosquitto on loopback: N messages
//     published back to back at QoS 0 and at QoS 1 (outbox on disk, deleted on PUBACK),
//     timed until a separate subscriber has received all of them.
//
//   bench_outbox [DIR]   DIR: where the outbox files go (default: a new dir in /tmp).
//   C2M_BENCH_INFLIGHT=N sets mqtt.max_inflight for the QoS 1 runs (default 100).
#include <mqtt/async_client.h>
#include <stdlib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "gateway/config.h"
#include "gateway/event_loop.h"
#include "gateway/mqtt_link.h"
#include "registry/outbox.h"
#include "tests/integration/harness.h"

namespace {

using coap2mqtt::gateway::EventLoop;
using coap2mqtt::gateway::MqttConfig;
using coap2mqtt::gateway::MqttLink;
using coap2mqtt::registry::Outbox;
using SteadyClock = std::chrono::steady_clock;

constexpr int kRuns = 5;
constexpr int kOutboxMessages = 100000;
constexpr int kLinkMessages = 20000;

std::string payloadFor(int i) {
  return "{\"seq\":" + std::to_string(i) + ",\"device\":\"node-17\",\"t\":21.37}";
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Messages per second of `n` messages, median over kRuns runs of `run` (which returns the
// elapsed seconds).
double rate(int n, const std::function<double(int)>& run) {
  std::vector<double> rates;
  for (int r = 0; r < kRuns; ++r) rates.push_back(n / run(r));
  return median(rates);
}

double seconds(SteadyClock::time_point since) {
  return std::chrono::duration<double>(SteadyClock::now() - since).count();
}

double outboxLive(const std::string& dir, int run) {
  const std::string path = dir + "/live-" + std::to_string(run) + ".db";
  Outbox box(path, {});
  std::deque<std::uint64_t> unacked;
  const auto t0 = SteadyClock::now();
  for (int i = 0; i < kOutboxMessages; ++i) {
    unacked.push_back(box.append("coap2mqtt/node-17/sensors/temp", payloadFor(i), 1, false));
    if (unacked.size() > 100) {
      box.remove(unacked.front());
      unacked.pop_front();
    }
    if (box.flushDue(Outbox::Clock::now())) box.flush();
  }
  box.flush();
  const double s = seconds(t0);
  std::filesystem::remove(path);
  return s;
}

double outboxOutage(const std::string& dir, int run) {
  const std::string path = dir + "/outage-" + std::to_string(run) + ".db";
  Outbox box(path, {});
  const auto t0 = SteadyClock::now();
  for (int i = 0; i < kOutboxMessages; ++i) {
    box.append("coap2mqtt/node-17/sensors/temp", payloadFor(i), 1, false);
    if (box.flushDue(Outbox::Clock::now())) box.flush();
  }
  box.flush();
  const double s = seconds(t0);
  std::printf("    outage run %d: %llu commits for %d messages\n", run,
              static_cast<unsigned long long>(box.stats().commits), kOutboxMessages);
  std::filesystem::remove(path);
  return s;
}

// A subscriber that only counts.
class Counter {
 public:
  explicit Counter(int port) : client_("tcp://127.0.0.1:" + std::to_string(port), "bench-counter") {
    client_.set_message_callback([this](mqtt::const_message_ptr) { ++count_; });
    mqtt::connect_options opts;
    opts.set_clean_session(true);
    client_.connect(opts)->wait();
    client_.subscribe("bench/#", 0)->wait();  // QoS 0 to us: measures our side only
  }
  ~Counter() {
    try {
      client_.disconnect()->wait();
    } catch (...) {
    }
  }
  std::atomic<int>& count() { return count_; }

 private:
  std::atomic<int> count_{0};
  mqtt::async_client client_;
};

double throughLink(const coap2mqtt::test::Mosquitto& broker, const std::string& dir, int qos,
                   int run) {
  Counter counter(broker.port());
  EventLoop loop;
  MqttConfig config;
  config.uri = broker.uri();
  config.client_id = "bench-gw";
  if (const char* w = std::getenv("C2M_BENCH_INFLIGHT")) config.max_inflight = std::stoul(w);
  const std::string state = dir + "/link-" + std::to_string(qos) + "-" + std::to_string(run);
  MqttLink link(loop, config, MqttLink::openOutbox(state, config), "bench-state/gw", "offline");
  SteadyClock::time_point t0;
  double elapsed = 0;
  link.setOnConnected([&] {
    loop.runAfter(std::chrono::milliseconds(0), [&] {
      t0 = SteadyClock::now();
      for (int i = 0; i < kLinkMessages; ++i) {
        link.publish("bench/node-17/sensors/temp", payloadFor(i), qos, false);
      }
    });
  });
  const auto deadline = SteadyClock::now() + std::chrono::seconds(60);
  std::function<void()> poll = [&] {
    if (SteadyClock::now() > deadline) {
      std::printf(
          "    run %d QoS %d: gave up after 60 s: received %d, published %llu, failed %llu, "
          "delivered %llu\n",
          run, qos, counter.count().load(),
          static_cast<unsigned long long>(link.stats().published.load()),
          static_cast<unsigned long long>(link.stats().publish_failed.load()),
          static_cast<unsigned long long>(link.stats().delivered.load()));
      elapsed = 1e9;
      link.stop("bench-state/gw", "offline");
      loop.stop();
      return;
    }
    if (t0 != SteadyClock::time_point{} && counter.count() >= kLinkMessages) {
      elapsed = seconds(t0);
      link.stop("bench-state/gw", "offline");
      loop.stop();
      return;
    }
    loop.runAfter(std::chrono::milliseconds(1), poll);
  };
  loop.runAfter(std::chrono::milliseconds(1), poll);
  link.start();
  loop.run();
  std::filesystem::remove_all(state);
  return elapsed;
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir;
  if (argc > 1) {
    dir = argv[1];
    std::filesystem::create_directories(dir);
  } else {
    char tmpl[] = "/tmp/c2m-bench-outbox-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) return 1;
    dir = tmpl;
  }
  std::printf("outbox (%d messages, median of %d runs, in %s)\n", kOutboxMessages, kRuns,
              dir.c_str());
  const double live = rate(kOutboxMessages, [&](int r) { return outboxLive(dir, r); });
  std::printf("  append+flush+remove, 100 unacked : %10.0f msg/s\n", live);
  const double outage = rate(kOutboxMessages, [&](int r) { return outboxOutage(dir, r); });
  std::printf("  append+flush, all written        : %10.0f msg/s\n", outage);

  coap2mqtt::test::Mosquitto broker;
  std::printf("through MqttLink to mosquitto (%d messages, median of %d runs)\n", kLinkMessages,
              kRuns);
  const double q0 = rate(kLinkMessages, [&](int r) { return throughLink(broker, dir, 0, r); });
  std::printf("  QoS 0                            : %10.0f msg/s\n", q0);
  const double q1 = rate(kLinkMessages, [&](int r) { return throughLink(broker, dir, 1, r); });
  std::printf("  QoS 1 (outbox on disk)           : %10.0f msg/s\n", q1);
  std::printf("  QoS 1 / QoS 0                    : %10.2f (target >= 0.5)\n", q1 / q0);
  if (argc <= 1) std::filesystem::remove_all(dir);
  return 0;
}
