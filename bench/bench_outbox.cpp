// MQTT outbox benchmark (medians of 5 runs, or of 7 alternating QoS 0 / QoS 1 pairs):
//  1. The outbox alone, on disk: append + group commit + remove with a window of 100
//     unacknowledged (as under a live broker), append + commit of everything (as during
//     an outage: every message reaches the file), and bursts of 20,000 written, then read
//     back 100 at a time and removed.
//  2. End to end through the real MqttLink to a real mosquitto on loopback: N messages
//     published back to back at QoS 0 and at QoS 1 (outbox on disk, deleted on PUBACK),
//     timed until a separate subscriber has received all of them.
//  3. paho-mqtt-cpp alone to the same mosquitto, QoS 0 and QoS 1 (with the link's window
//     and without one): what the library itself allows, the ceiling for (2).
//  4. If built with libmosquitto: the same through libmosquitto, driven from one thread
//     (no network threads, PUBACKs read in the publishing thread), with the same window.
//     Paho hands every message and every acknowledgement between three threads under
//     process-wide mutexes; this shows what a client without that costs.
//
//   bench_outbox [DIR]   DIR: where the outbox files go (default: a new dir in /tmp).
//   C2M_BENCH_INFLIGHT=N sets mqtt.max_inflight for the QoS 1 runs (default 100).
//   C2M_BENCH_SKIP_OUTBOX=1 skips (1).
//   C2M_BENCH_COUNTER=own|in: only that subscriber placement (see CounterMode; default both).
//   C2M_BENCH_ONLY=outbox|link0|link1|paho0|paho1|mosq0|mosq1 runs only that part, e.g.
//   under perf.
#include <fcntl.h>
#include <mqtt/async_client.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#if defined(C2M_BENCH_LIBMOSQUITTO)
#include <mosquitto.h>
#endif

#include "bench/bench_util.h"
#include "gateway/config.h"
#include "gateway/event_loop.h"
#include "gateway/mqtt_link.h"
#include "gateway/outbox.h"
#include "tests/integration/harness.h"

namespace {

using coap2mqtt::bench::median;
using coap2mqtt::gateway::EventLoop;
using coap2mqtt::gateway::MqttConfig;
using coap2mqtt::gateway::MqttLink;
using coap2mqtt::gateway::Outbox;
using SteadyClock = std::chrono::steady_clock;

constexpr int kRuns = 5;
constexpr int kPairs = 7;
constexpr int kOutboxMessages = 100000;
constexpr int kLinkMessages = 20000;

std::string payloadFor(int i) {
  return "{\"seq\":" + std::to_string(i) + ",\"device\":\"node-17\",\"t\":21.37}";
}

// Messages per second of `n` messages, median over kRuns runs of `run` (which returns the
// elapsed seconds).
// CPU time by thread name ("bench_outbox" is the loop / publishing thread; paho's are
// MQTTAsync_send and MQTTAsync_rcv) plus the broker's, from /proc/.../schedstat (ns). Wall
// time on a shared 2-core machine is noisy; CPU per message much less so.
using CpuByName = std::map<std::string, std::uint64_t>;

std::uint64_t schedNs(const std::string& dir) {
  std::ifstream in(dir + "/schedstat");
  std::uint64_t ns = 0;
  in >> ns;
  return ns;
}

std::string commOf(const std::string& dir) {
  std::ifstream in(dir + "/comm");
  std::string name;
  std::getline(in, name);
  return name;
}

// Our threads, and every child named "mosquitto" as "broker".
CpuByName cpuNow() {
  CpuByName cpu;
  for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
    const std::string d = task.path().string();
    cpu[commOf(d)] += schedNs(d);
  }
  const std::string self = std::to_string(::getpid());
  for (const auto& proc : std::filesystem::directory_iterator("/proc")) {
    const std::string name = proc.path().filename().string();
    if (name.empty() || !std::isdigit(static_cast<unsigned char>(name[0]))) continue;
    std::ifstream stat(proc.path() / "stat");
    std::string line;
    std::getline(stat, line);
    // pid (comm) state ppid ...
    const auto close = line.rfind(')');
    if (close == std::string::npos || line.find("(mosquitto)") == std::string::npos) continue;
    std::istringstream rest(line.substr(close + 2));
    std::string state;
    std::string ppid;
    rest >> state >> ppid;
    if (ppid == self) cpu["broker"] += schedNs(proc.path().string());
  }
  return cpu;
}

// Per-run CPU µs per message by name, collected by the runs into whatever this points to.
using CpuRuns = std::map<std::string, std::vector<double>>;
CpuRuns* g_cpu_us = nullptr;

void noteCpu(const CpuByName& before, const CpuByName& after, int messages) {
  double total = 0;
  for (const auto& [name, ns] : after) {
    const auto it = before.find(name);
    const std::uint64_t was = it == before.end() ? 0 : it->second;
    const double us = static_cast<double>(ns - std::min(ns, was)) / 1000.0 / messages;
    if (g_cpu_us != nullptr) (*g_cpu_us)[name].push_back(us);
    total += us;
  }
  if (g_cpu_us != nullptr) (*g_cpu_us)["total"].push_back(total);
}

void printRuns(const std::vector<double>& rates, const CpuRuns& cpu_runs) {
  std::string runs;
  for (double v : rates) {
    runs += ' ';  // not `" " + std::to_string(...)`: GCC 12's -Wrestrict false positive
    runs += std::to_string(static_cast<long>(v));
  }
  std::printf("    runs (msg/s):%s\n", runs.c_str());
  std::string cpu;
  for (const auto& [name, us] : cpu_runs) {
    if (us.size() != rates.size()) continue;  // not in every run
    char item[80];
    std::snprintf(item, sizeof item, " %s %.2f", name.c_str(), median(us));
    cpu += item;
  }
  if (!cpu.empty()) std::printf("    CPU us/msg (median):%s\n", cpu.c_str());
}

// The individual runs are printed too: on a shared machine their spread says how far
// to trust the median.
double rate(int n, const std::function<double(int)>& run) {
  std::vector<double> rates;
  CpuRuns cpu;
  g_cpu_us = &cpu;
  for (int r = 0; r < kRuns; ++r) rates.push_back(n / run(r));
  g_cpu_us = nullptr;
  printRuns(rates, cpu);
  return median(rates);
}

// The thread (or the broker) with the most CPU per message, by median.
std::pair<std::string, double> busiestThread(const CpuRuns& cpu) {
  std::pair<std::string, double> busiest{"", 0.0};
  for (const auto& [name, us] : cpu) {
    if (name == "total" || us.empty()) continue;
    const double m = median(us);
    if (m > busiest.second) busiest = {name, m};
  }
  return busiest;
}

struct Paired {
  double rate0;  // medians, msg/s
  double rate1;
  double ratio;  // median of the per-pair rate1 / rate0
};

// QoS 0 and QoS 1 runs taken in pairs, the order alternating (0 1, 1 0, 0 1, ...), so that
// a change in the shared machine's load falls on both alike; the ratio is the median of
// the pairs' ratios, not the ratio of two medians taken minutes apart.
Paired paired(int n, const char* label0, const std::function<double(int)>& run0, const char* label1,
              const std::function<double(int)>& run1) {
  std::vector<double> rates0;
  std::vector<double> rates1;
  std::vector<double> ratios;
  CpuRuns cpu0;
  CpuRuns cpu1;
  for (int r = 0; r < kPairs; ++r) {
    double r0 = 0;
    double r1 = 0;
    auto take0 = [&] {
      g_cpu_us = &cpu0;
      r0 = n / run0(r);
    };
    auto take1 = [&] {
      g_cpu_us = &cpu1;
      r1 = n / run1(r);
    };
    if (r % 2 == 0) {
      take0();
      take1();
    } else {
      take1();
      take0();
    }
    g_cpu_us = nullptr;
    rates0.push_back(r0);
    rates1.push_back(r1);
    ratios.push_back(r1 / r0);
  }
  const Paired p{median(rates0), median(rates1), median(ratios)};
  std::printf("  %-32s : %10.0f msg/s\n", label0, p.rate0);
  printRuns(rates0, cpu0);
  std::printf("  %-32s : %10.0f msg/s\n", label1, p.rate1);
  printRuns(rates1, cpu1);
  std::string pairs;
  for (double v : ratios) {
    char item[16];
    std::snprintf(item, sizeof item, " %.2f", v);
    pairs += item;
  }
  std::printf("  %-32s : %10.2f (pairs:%s)\n", "QoS 1 / QoS 0", p.ratio, pairs.c_str());
  // With a core for each of the four busy threads (a Raspberry Pi has four; this box two),
  // the busiest one sets the rate: its CPU per message is a projection of that ratio.
  const auto [busy0, us0] = busiestThread(cpu0);
  const auto [busy1, us1] = busiestThread(cpu1);
  if (us0 > 0 && us1 > 0) {
    std::printf("  %-32s : %10.2f (busiest: QoS 0 %s %.2f us, QoS 1 %s %.2f us)\n",
                "projected, a core per thread", us0 / us1, busy0.c_str(), us0, busy1.c_str(), us1);
  }
  return p;
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

// A burst bigger than the send window, as MqttLink sees it when many devices report at
// once: 20,000 appended (and group-committed) before the first acknowledgement, then read
// back 100 at a time through forEach, as the link hands them to paho, and removed.
double outboxBurst(const std::string& dir, int run) {
  const std::string path = dir + "/burst-" + std::to_string(run) + ".db";
  Outbox box(path, {});
  constexpr int kBurst = 20000;
  std::uint64_t sent_bytes = 0;
  const auto t0 = SteadyClock::now();
  for (int round = 0; round < kOutboxMessages / kBurst; ++round) {
    for (int i = 0; i < kBurst; ++i) {
      box.append("coap2mqtt/node-17/sensors/temp", payloadFor(i), 1, false);
      if (box.flushDue(Outbox::Clock::now())) box.flush();
    }
    std::uint64_t cursor = box.firstSeq().value_or(box.nextSeq());
    while (cursor < box.nextSeq()) {
      std::vector<std::uint64_t> window;
      box.forEach(cursor, 100, [&](const coap2mqtt::gateway::OutboxMessageView& m) {
        sent_bytes += m.payload.size();  // what handing it to paho reads
        window.push_back(m.seq);
        return true;
      });
      if (window.empty()) break;
      cursor = window.back() + 1;
      for (std::uint64_t seq : window) box.remove(seq);
      if (box.flushDue(Outbox::Clock::now())) box.flush();
    }
  }
  box.flush();
  const double s = seconds(t0);
  if (box.size() != 0 || sent_bytes == 0) std::printf("    burst run %d: not drained\n", run);
  std::filesystem::remove(path);
  return s;
}

// A subscriber that only counts; `on_count(n)` runs on paho's thread after each message.
class Counter {
 public:
  Counter(int port, std::function<void(int)> on_count = {})
      : on_count_(std::move(on_count)),
        client_("tcp://127.0.0.1:" + std::to_string(port), "bench-counter") {
    client_.set_message_callback([this](mqtt::const_message_ptr) {
      const int n = ++count_;
      if (on_count_) on_count_(n);
    });
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
  int count() const { return count_; }

 private:
  std::atomic<int> count_{0};
  std::function<void(int)> on_count_;
  mqtt::async_client client_;
};

// `bench_outbox --count PORT N`: a Counter in a process of its own. Writes "ready\n" to
// stdout once subscribed and "done\n" at the N-th message; exits when stdin closes.
int counterMain(int port, int n) {
  Counter counter(port, [n](int count) {
    if (count == n) [[maybe_unused]]
      auto w = ::write(STDOUT_FILENO, "done\n", 5);
  });
  [[maybe_unused]] auto w = ::write(STDOUT_FILENO, "ready\n", 6);
  char buf[64];
  while (::read(STDIN_FILENO, buf, sizeof buf) > 0) {
  }
  return 0;
}

// Where the counting subscriber runs. Paho C runs one receive thread and one send thread
// for all clients of a process, under one global mutex: a subscriber inside the process
// shares them with the client under test (at QoS 1 the same thread reads the PUBACKs and
// the subscriber's 20000 messages). A gateway never has its subscribers inside it, so the
// main figures use a separate process; the in-process variant is kept for comparison.
enum class CounterMode { InProcess, OwnProcess };

class Subscriber {
 public:
  Subscriber(int port, int n, CounterMode mode) : n_(n) {
    if (mode == CounterMode::InProcess) {
      counter_ = std::make_unique<Counter>(port);
      return;
    }
    int to_child[2];
    int from_child[2];
    if (::pipe2(to_child, O_CLOEXEC) != 0 || ::pipe2(from_child, O_CLOEXEC) != 0) {
      throw std::runtime_error("pipe2 failed");
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, to_child[0], STDIN_FILENO);
    posix_spawn_file_actions_adddup2(&fa, from_child[1], STDOUT_FILENO);
    std::string exe = std::filesystem::read_symlink("/proc/self/exe");
    std::string port_arg = std::to_string(port);
    std::string n_arg = std::to_string(n);
    std::string flag = "--count";
    char* args[] = {exe.data(), flag.data(), port_arg.data(), n_arg.data(), nullptr};
    const int rc = ::posix_spawn(&pid_, exe.c_str(), &fa, nullptr, args, environ);
    posix_spawn_file_actions_destroy(&fa);
    ::close(to_child[0]);
    ::close(from_child[1]);
    to_child_ = to_child[1];
    from_child_ = from_child[0];
    if (rc != 0) throw std::runtime_error("posix_spawn failed");
    if (readLine(true) != "ready") throw std::runtime_error("counter process did not start");
    ::fcntl(from_child_, F_SETFL, O_NONBLOCK);
  }
  ~Subscriber() {
    if (pid_ <= 0) return;
    ::close(to_child_);
    int status = 0;
    for (int i = 0; i < 500 && ::waitpid(pid_, &status, WNOHANG) == 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (::waitpid(pid_, &status, WNOHANG) == 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status, 0);
    }
    ::close(from_child_);
  }
  Subscriber(const Subscriber&) = delete;
  Subscriber& operator=(const Subscriber&) = delete;

  // Non-blocking: has the subscriber received all n messages?
  bool reached() {
    if (counter_) return counter_->count() >= n_;
    if (!done_) done_ = readLine(false) == "done";
    return done_;
  }
  // For the give-up message (-1: not known, the count is in the other process).
  int count() const { return counter_ ? counter_->count() : -1; }

 private:
  std::string readLine(bool block) {
    char c = 0;
    while (true) {
      const ssize_t r = ::read(from_child_, &c, 1);
      if (r == 1) {
        if (c == '\n') return std::exchange(line_, {});
        line_ += c;
        continue;
      }
      if (r < 0 && errno == EINTR) continue;
      if (r < 0 && errno == EAGAIN && !block) return {};
      return {};  // EOF or error
    }
  }

  int n_;
  std::unique_ptr<Counter> counter_;
  pid_t pid_ = -1;
  int to_child_ = -1;
  int from_child_ = -1;
  std::string line_;
  bool done_ = false;
};

// The library's own ceiling: paho-mqtt-cpp alone, no outbox, no event loop. QoS 0 is
// published back to back; QoS 1 with at most `window` unacknowledged (0 = no limit),
// counted by a delivery listener like MqttLink's. Timed the same way as throughLink.
double pahoAlone(const coap2mqtt::test::Mosquitto& broker, CounterMode mode, int qos,
                 std::size_t window, int run) {
  Subscriber counter(broker.port(), kLinkMessages, mode);
  mqtt::create_options create(MQTTVERSION_3_1_1);
  create.set_send_while_disconnected(false);
  create.set_max_buffered_messages(65535);
  mqtt::async_client client("tcp://127.0.0.1:" + std::to_string(broker.port()), "bench-paho",
                            create, nullptr);
  mqtt::connect_options opts;
  opts.set_clean_session(true);
  client.connect(opts)->wait();

  class Acks : public mqtt::iaction_listener {
   public:
    void on_success(const mqtt::token&) override { done(); }
    void on_failure(const mqtt::token&) override { done(); }
    void waitBelow(std::size_t window) {
      std::unique_lock lock(mutex_);
      cv_.wait(lock, [&] { return outstanding_ < window; });
    }
    void sent() {
      std::lock_guard lock(mutex_);
      ++outstanding_;
    }

   private:
    void done() {
      {
        std::lock_guard lock(mutex_);
        --outstanding_;
      }
      cv_.notify_one();
    }
    std::mutex mutex_;
    std::condition_variable cv_;
    std::size_t outstanding_ = 0;
  } acks;

  const CpuByName cpu0 = cpuNow();
  const auto t0 = SteadyClock::now();
  for (int i = 0; i < kLinkMessages; ++i) {
    const std::string payload = payloadFor(i);
    auto msg = mqtt::make_message("bench/node-17/sensors/temp", payload.data(), payload.size(), qos,
                                  false);
    if (qos == 0) {
      client.publish(msg);
      continue;
    }
    if (window != 0) acks.waitBelow(window);
    acks.sent();
    client.publish(msg, nullptr, acks);
  }
  const auto deadline = SteadyClock::now() + std::chrono::seconds(60);
  while (!counter.reached() && SteadyClock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::microseconds(500));
  }
  double elapsed = seconds(t0);
  noteCpu(cpu0, cpuNow(), kLinkMessages);
  if (!counter.reached()) {
    std::printf("    paho run %d QoS %d: gave up after 60 s: received %d\n", run, qos,
                counter.count());
    elapsed = 1e9;
  }
  client.disconnect()->wait();
  return elapsed;
}

#if defined(C2M_BENCH_LIBMOSQUITTO)
// libmosquitto without its network thread: this thread publishes (each publish is written
// at once) and reads the PUBACKs itself (mosquitto_loop), at most `window` unacknowledged
// at QoS 1. Timed the same way as pahoAlone.
double mosquittoAlone(const coap2mqtt::test::Mosquitto& broker, CounterMode mode, int qos,
                      std::size_t window, int run) {
  Subscriber counter(broker.port(), kLinkMessages, mode);
  struct State {
    bool connected = false;
    int acked = 0;
  } state;
  mosquitto* m = mosquitto_new("bench-mosquitto", true, &state);
  if (m == nullptr) throw std::runtime_error("mosquitto_new failed");
  mosquitto_connect_callback_set(
      m, [](mosquitto*, void* s, int rc) { static_cast<State*>(s)->connected = rc == 0; });
  mosquitto_publish_callback_set(m,
                                 [](mosquitto*, void* s, int) { ++static_cast<State*>(s)->acked; });
  // Its own inflight bound (default 20) would queue inside the library: ours applies.
  mosquitto_max_inflight_messages_set(m, 0);
  auto wait = [&](const std::function<bool()>& done) {
    const auto deadline = SteadyClock::now() + std::chrono::seconds(60);
    while (!done() && SteadyClock::now() < deadline) mosquitto_loop(m, 1, 100);
    return done();
  };
  if (mosquitto_connect(m, "127.0.0.1", broker.port(), 60) != MOSQ_ERR_SUCCESS ||
      !wait([&] { return state.connected; })) {
    mosquitto_destroy(m);
    throw std::runtime_error("libmosquitto could not connect");
  }
  const CpuByName cpu0 = cpuNow();
  const auto t0 = SteadyClock::now();
  for (int i = 0; i < kLinkMessages; ++i) {
    if (qos == 1) {
      if (!wait([&] { return static_cast<std::size_t>(i - state.acked) < window; })) break;
    } else if (i % 100 == 0) {
      mosquitto_loop(m, 0, 100);  // writes what the socket did not take at once
    }
    const std::string payload = payloadFor(i);
    mosquitto_publish(m, nullptr, "bench/node-17/sensors/temp", static_cast<int>(payload.size()),
                      payload.data(), qos, false);
  }
  const bool all =
      wait([&] { return counter.reached() && (qos == 0 || state.acked == kLinkMessages); });
  double elapsed = seconds(t0);
  noteCpu(cpu0, cpuNow(), kLinkMessages);
  if (!all) {
    std::printf(
        "    libmosquitto run %d QoS %d: gave up after 60 s: received %d, acknowledged %d\n", run,
        qos, counter.count(), state.acked);
    elapsed = 1e9;
  }
  mosquitto_disconnect(m);
  mosquitto_loop(m, 10, 1);
  mosquitto_destroy(m);
  return elapsed;
}
#endif

double throughLink(const coap2mqtt::test::Mosquitto& broker, const std::string& dir,
                   CounterMode mode, int qos, int run) {
  Subscriber counter(broker.port(), kLinkMessages, mode);
  EventLoop loop;
  MqttConfig config;
  config.uri = broker.uri();
  config.client_id = "bench-gw";
  if (const char* w = std::getenv("C2M_BENCH_INFLIGHT")) config.max_inflight = std::stoul(w);
  const std::string state = dir + "/link-" + std::to_string(qos) + "-" + std::to_string(run);
  MqttLink link(loop, config, MqttLink::openOutbox(state, config), "bench-state/gw", "offline");
  SteadyClock::time_point t0;
  CpuByName cpu0;
  double elapsed = 0;
  link.setOnConnected([&] {
    loop.runAfter(std::chrono::milliseconds(0), [&] {
      cpu0 = cpuNow();
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
          run, qos, counter.count(), static_cast<unsigned long long>(link.stats().published.load()),
          static_cast<unsigned long long>(link.stats().publish_failed.load()),
          static_cast<unsigned long long>(link.stats().delivered.load()));
      elapsed = 1e9;
      link.stop("bench-state/gw", "offline");
      loop.stop();
      return;
    }
    if (t0 != SteadyClock::time_point{} && counter.reached()) {
      elapsed = seconds(t0);
      noteCpu(cpu0, cpuNow(), kLinkMessages);
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
  if (argc == 4 && std::string(argv[1]) == "--count") {
    return counterMain(std::stoi(argv[2]), std::stoi(argv[3]));
  }
#if defined(C2M_BENCH_LIBMOSQUITTO)
  mosquitto_lib_init();
#endif
  std::string dir;
  if (argc > 1) {
    dir = argv[1];
    std::filesystem::create_directories(dir);
  } else {
    char tmpl[] = "/tmp/c2m-bench-outbox-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) return 1;
    dir = tmpl;
  }
  const char* only_env = std::getenv("C2M_BENCH_ONLY");
  const std::string only = only_env != nullptr ? only_env : "";
  if (std::getenv("C2M_BENCH_SKIP_OUTBOX") == nullptr && (only.empty() || only == "outbox")) {
    std::printf("outbox (%d messages, median of %d runs, in %s)\n", kOutboxMessages, kRuns,
                dir.c_str());
    const double live = rate(kOutboxMessages, [&](int r) { return outboxLive(dir, r); });
    std::printf("  append+flush+remove, 100 unacked : %10.0f msg/s\n", live);
    const double outage = rate(kOutboxMessages, [&](int r) { return outboxOutage(dir, r); });
    std::printf("  append+flush, all written        : %10.0f msg/s\n", outage);
    const double burst = rate(kOutboxMessages, [&](int r) { return outboxBurst(dir, r); });
    std::printf("  bursts of 20k: write, read, remove: %8.0f msg/s\n", burst);
  }

  if (only == "outbox") return 0;
  coap2mqtt::test::Mosquitto broker;
  std::size_t window = MqttConfig{}.max_inflight;
  if (const char* w = std::getenv("C2M_BENCH_INFLIGHT")) window = std::stoul(w);
  std::vector<CounterMode> modes{CounterMode::OwnProcess, CounterMode::InProcess};
  if (const char* c = std::getenv("C2M_BENCH_COUNTER")) {
    modes = {std::string(c) == "in" ? CounterMode::InProcess : CounterMode::OwnProcess};
  }
  if (!only.empty()) {
    const CounterMode mode = modes.front();
    std::printf("%s only (%d messages, %d runs)\n", only_env, kLinkMessages, kRuns);
    if (only == "link0" || only == "link1") {
      const int qos = only == "link1" ? 1 : 0;
      rate(kLinkMessages, [&](int r) { return throughLink(broker, dir, mode, qos, r); });
    } else if (only == "paho0" || only == "paho1") {
      const int qos = only == "paho1" ? 1 : 0;
      rate(kLinkMessages, [&](int r) { return pahoAlone(broker, mode, qos, window, r); });
    }
#if defined(C2M_BENCH_LIBMOSQUITTO)
    if (only == "mosq0" || only == "mosq1") {
      const int qos = only == "mosq1" ? 1 : 0;
      rate(kLinkMessages, [&](int r) { return mosquittoAlone(broker, mode, qos, window, r); });
    }
#endif
    if (argc <= 1) std::filesystem::remove_all(dir);
    return 0;
  }

  std::string summary;
  for (const CounterMode mode : modes) {
    const char* where =
        mode == CounterMode::OwnProcess ? "subscriber in its own process" : "subscriber in-process";
    std::printf("through MqttLink to mosquitto (%d messages, %d pairs of runs, %s)\n",
                kLinkMessages, kPairs, where);
    const Paired link = paired(
        kLinkMessages, "QoS 0", [&](int r) { return throughLink(broker, dir, mode, 0, r); },
        "QoS 1 (outbox on disk)", [&](int r) { return throughLink(broker, dir, mode, 1, r); });

    std::printf("paho-mqtt-cpp alone to mosquitto (%d messages, %d pairs of runs, %s)\n",
                kLinkMessages, kPairs, where);
    const std::string p1_label = "QoS 1, " + std::to_string(window) + " unacknowledged";
    const Paired paho = paired(
        kLinkMessages, "QoS 0", [&](int r) { return pahoAlone(broker, mode, 0, 0, r); },
        p1_label.c_str(), [&](int r) { return pahoAlone(broker, mode, 1, window, r); });
    char line[200];
    std::snprintf(line, sizeof line,
                  "  %-30s: link %6.0f / %6.0f, ratio %.2f; paho alone %6.0f / %6.0f, ratio %.2f\n",
                  where, link.rate1, link.rate0, link.ratio, paho.rate1, paho.rate0, paho.ratio);
    summary += line;
#if defined(C2M_BENCH_LIBMOSQUITTO)
    std::printf(
        "libmosquitto alone, one thread, to mosquitto (%d messages, %d pairs of runs, %s)\n",
        kLinkMessages, kPairs, where);
    const Paired mosq = paired(
        kLinkMessages, "QoS 0", [&](int r) { return mosquittoAlone(broker, mode, 0, 0, r); },
        p1_label.c_str(), [&](int r) { return mosquittoAlone(broker, mode, 1, window, r); });
    std::snprintf(line, sizeof line, "  %-30s  libmosquitto alone %6.0f / %6.0f, ratio %.2f\n", "",
                  mosq.rate1, mosq.rate0, mosq.ratio);
    summary += line;
#endif
  }
  std::printf(
      "summary (QoS 1 / QoS 0 msg/s, medians; ratio: median of pairs; target >= 0.5; "
      "window %zu):\n%s",
      window, summary.c_str());
  if (argc <= 1) std::filesystem::remove_all(dir);
  return 0;
}
