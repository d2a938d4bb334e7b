// Store-and-forward on real parts: 20 simulated devices stream /sensors/counter at QoS 1
// through the gateway into mosquitto while the broker goes away for a minute (and, in the
// second test, the gateway is SIGKILLed and restarted during the outage; in the third, the
// state dir is a tmpfs too small for the outbox).
//
// Why the check is not lucky: the probe holds a persistent session (clean_session false)
// on a broker with persistence and unlimited queues, so the broker keeps queueing for it
// from the moment it is back, whether the gateway or the probe reconnects first. The
// simulator's counters go up by one per tick on every device, so a missing value is a gap
// in `seq`, and a value seen for the first time must be larger than every value before it.
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>
#include <thread>

#include "gateway/outbox.h"
#include "tests/integration/gateway_process.h"
#include "tests/integration/harness.h"

namespace coap2mqtt::test {
namespace {

constexpr int kDevices = 20;
constexpr int kIntervalMs = 250;
constexpr auto kOutage = std::chrono::seconds(60);
// Values a device produces during the outage, plus a margin: once a device's newest value
// is this far past its last value before the outage, the values of the outage are behind.
constexpr long kPastOutage = kOutage / std::chrono::milliseconds(kIntervalMs) + 12;

std::string counterTopic(int device) {
  return "c2m/dev" + std::to_string(device) + "/sensors/counter";
}

long seqOf(const std::string& payload) {
  const auto pos = payload.find("\"seq\":");
  if (pos == std::string::npos) return -1;
  return std::stol(payload.substr(pos + 6));
}

struct DeviceReport {
  std::set<long> seen;
  long first = -1;
  long max = -1;
  std::size_t duplicates = 0;
  std::size_t reordered = 0;                // a new value smaller than one seen before
  std::vector<std::pair<long, long>> gaps;  // missing [from, to]
  std::size_t never_sent = 0;               // values the simulator skipped (SKIP lines)
};

// `never_sent`: values the device never sent (see simSkippedValues); not gaps.
DeviceReport analyze(const std::vector<MqttMessage>& msgs, const std::set<long>& never_sent) {
  DeviceReport r;
  for (const auto& m : msgs) {
    const long seq = seqOf(m.payload);
    if (seq < 0) continue;
    if (!r.seen.insert(seq).second) {
      ++r.duplicates;
      continue;
    }
    if (seq < r.max) ++r.reordered;
    r.max = std::max(r.max, seq);
  }
  if (!r.seen.empty()) r.first = *r.seen.begin();
  long prev = -1;
  for (long s : r.seen) {
    if (prev >= 0 && s != prev + 1) {
      long from = prev + 1;
      for (long v = prev + 1; v <= s; ++v) {  // split the gap around values never sent
        if (v < s && never_sent.count(v) == 0) continue;
        if (v > from) r.gaps.emplace_back(from, v - 1);
        if (v < s) ++r.never_sent;
        from = v + 1;
      }
    }
    prev = s;
  }
  return r;
}

// `sim` null: every value counts (the simulator's SKIP lines are not read).
std::map<int, DeviceReport> analyzeAll(const MqttProbe& probe, const Process* sim) {
  const auto skipped = sim != nullptr ? simSkippedValues(*sim) : decltype(simSkippedValues(*sim)){};
  std::map<int, DeviceReport> out;
  for (int d = 0; d < kDevices; ++d) {
    const auto it = skipped.find("dev" + std::to_string(d));
    out[d] = analyze(probe.messagesOn(counterTopic(d)),
                     it != skipped.end() ? it->second : std::set<long>{});
  }
  return out;
}

std::string describe(const std::map<int, DeviceReport>& reports) {
  std::string s;
  for (const auto& [d, r] : reports) {
    s += "dev" + std::to_string(d) + ": " + std::to_string(r.seen.size()) + " values " +
         std::to_string(r.first) + ".." + std::to_string(r.max) + ", duplicates " +
         std::to_string(r.duplicates) + ", reordered " + std::to_string(r.reordered) +
         ", never sent " + std::to_string(r.never_sent) + ", gaps";
    for (const auto& [a, b] : r.gaps) s += " [" + std::to_string(a) + "-" + std::to_string(b) + "]";
    s += "\n";
  }
  return s;
}

std::string config(const Mosquitto& broker, const TempDir& dir, int port,
                   const std::string& state_dir = {}) {
  std::string base = baseConfig(broker, dir);
  if (!state_dir.empty()) {
    const std::string key = "state_dir = \"" + dir.path() + "\"";
    base.replace(base.find(key), key.size(), "state_dir = \"" + state_dir + "\"");
  }
  // reconnect_max keeps the back-off short so the test does not wait on it.
  return base + "reconnect_max = \"2s\"\n\n" + simDevices(port, kDevices) +
         "[[rule]]\nname = \"counter\"\nmatch = { path = \"/sensors/counter\" }\n"
         "topic = \"c2m/{device}/{path}\"\nqos = 1\n";
}

// A tmpfs of `bytes` at `path` (root only), unmounted again at the end.
class SmallTmpfs {
 public:
  SmallTmpfs(const std::string& path, std::size_t bytes) : path_(path) {
    std::filesystem::create_directories(path);
    const std::string options = "size=" + std::to_string(bytes) + ",mode=0777";
    if (::mount("c2m-full", path.c_str(), "tmpfs", 0, options.c_str()) != 0) {
      error_ = std::strerror(errno);
    }
  }
  ~SmallTmpfs() {
    if (error_.empty()) ::umount2(path_.c_str(), MNT_DETACH);
  }
  SmallTmpfs(const SmallTmpfs&) = delete;
  SmallTmpfs& operator=(const SmallTmpfs&) = delete;
  const std::string& error() const { return error_; }  // empty: mounted
  // Room again, as when the operator frees space.
  bool grow(std::size_t bytes) {
    const std::string options = "size=" + std::to_string(bytes);
    return ::mount("c2m-full", path_.c_str(), "tmpfs", MS_REMOUNT, options.c_str()) == 0;
  }

 private:
  std::string path_;
  std::string error_;
};

struct Streaming {
  // state_dir_bytes > 0: the gateway's state dir is a tmpfs of that size (root only).
  explicit Streaming(std::size_t state_dir_bytes = 0) {
    std::string state_dir;
    if (state_dir_bytes > 0) {
      state_dir = dir.file("state");
      tmpfs = std::make_unique<SmallTmpfs>(state_dir, state_dir_bytes);
      if (!tmpfs->error().empty()) return;  // the test skips itself
    }
    gateway = startGateway(dir, config(broker, dir, port, state_dir));
  }

  TempDir dir;
  Mosquitto broker{Mosquitto::Options{true, ""}};
  MqttProbe probe{broker.port(), "c2m/+/sensors/counter", MqttProbe::Options{"c2m-outage-probe"}};
  int port = freeUdpPortRange(kDevices);
  std::unique_ptr<Process> sim = startSim(dir, port, kDevices, std::to_string(kIntervalMs));
  std::unique_ptr<SmallTmpfs> tmpfs;
  std::unique_ptr<Process> gateway;

  // Every device streaming; returns each device's newest value.
  std::map<int, long> warmUp() {
    std::map<int, long> last;
    for (int d = 0; d < kDevices; ++d) {
      EXPECT_TRUE(probe.waitForCount(counterTopic(d), 3, 30s)) << counterTopic(d) << "\n"
                                                               << gateway->output();
    }
    for (const auto& [d, r] : analyzeAll(probe, sim.get())) last[d] = r.max;
    return last;
  }

  // Waits until every device's newest value is past the outage.
  bool awaitPastOutage(const std::map<int, long>& before, std::chrono::seconds timeout) {
    return waitUntil(
        [&] {
          for (const auto& [d, r] : analyzeAll(probe, sim.get())) {
            if (r.max < before.at(d) + kPastOutage) return false;
          }
          return true;
        },
        timeout);
  }
};

TEST(MqttOutage, BrokerAwayForAMinuteLosesNothingAndKeepsOrder) {
  Streaming s;
  const auto before = s.warmUp();
  const auto t0 = std::chrono::steady_clock::now();
  s.broker.stop();
  ASSERT_TRUE(s.gateway->waitForOutput("mqtt: connection to", 15s)) << s.gateway->output();
  std::this_thread::sleep_until(t0 + kOutage);  // the outage itself
  s.broker.start();
  EXPECT_TRUE(s.gateway->waitForOutput("stored message(s)", 30s)) << s.gateway->output();
  const bool caught_up = s.awaitPastOutage(before, 90s);
  const auto reports = analyzeAll(s.probe, s.sim.get());
  const std::string summary = describe(reports);
  ASSERT_TRUE(caught_up) << summary << s.gateway->output();
  std::size_t duplicates = 0;
  for (const auto& [d, r] : reports) {
    EXPECT_TRUE(r.gaps.empty()) << "dev" << d << " lost values\n" << summary;
    EXPECT_EQ(r.reordered, 0u) << "dev" << d << " out of order\n" << summary;
    EXPECT_LE(r.first, before.at(d)) << summary;
    duplicates += r.duplicates;
  }
  RecordProperty("duplicates", static_cast<int>(duplicates));
  std::printf("outage of %llds: %zu duplicate(s) over %d devices\n%s",
              static_cast<long long>(kOutage.count()), duplicates, kDevices, summary.c_str());
}

TEST(MqttOutage, GatewayKilledDuringTheOutageLosesNothingItHadStored) {
  Streaming s;
  const auto before = s.warmUp();
  const auto t0 = std::chrono::steady_clock::now();
  s.broker.stop();
  ASSERT_TRUE(s.gateway->waitForOutput("mqtt: connection to", 15s)) << s.gateway->output();
  std::this_thread::sleep_until(t0 + 20s);
  ASSERT_EQ(s.gateway->stop(SIGKILL, 5s), 128 + SIGKILL);
  std::filesystem::rename(s.dir.file("gateway.log"), s.dir.file("gateway-killed.log"));

  // What the dead gateway had made durable: every one of these must arrive.
  std::map<int, std::set<long>> stored;
  std::size_t stored_count = 0;
  {
    gateway::Outbox outbox(s.dir.file("outbox.db"), {});
    for (const auto& m : outbox.read(0, 1u << 30)) {
      for (int d = 0; d < kDevices; ++d) {
        if (m.topic == counterTopic(d)) {
          stored[d].insert(seqOf(m.payload));
          ++stored_count;
        }
      }
    }
  }
  ASSERT_GT(stored_count, 20u * kDevices) << "20 s of outage should have filled the outbox";

  std::this_thread::sleep_for(3s);  // the gateway is down: these values are never received
  s.gateway = startGateway(s.dir, config(s.broker, s.dir, s.port));
  EXPECT_TRUE(s.gateway->waitForOutput("from the last run wait in the outbox", 10s))
      << s.gateway->output();
  std::this_thread::sleep_until(t0 + kOutage);
  s.broker.start();
  const bool caught_up = s.awaitPastOutage(before, 90s);
  const auto reports = analyzeAll(s.probe, s.sim.get());
  const std::string summary = describe(reports);
  ASSERT_TRUE(caught_up) << summary << s.gateway->output();

  std::size_t duplicates = 0;
  for (const auto& [d, r] : reports) {
    duplicates += r.duplicates;
    for (long seq : stored[d]) {
      EXPECT_TRUE(r.seen.count(seq))
          << "dev" << d << " value " << seq << " was in the outbox but never arrived\n"
          << summary;
    }
    EXPECT_EQ(r.reordered, 0u) << "dev" << d << " out of order\n" << summary;
    // The one allowed gap: values after the last one the gateway had stored (produced
    // while it was dead, or in its last uncommitted batch) up to its restart.
    const long last_stored = stored[d].empty() ? before.at(d) : *stored[d].rbegin();
    ASSERT_LE(r.gaps.size(), 1u) << "dev" << d << "\n" << summary;
    if (!r.gaps.empty()) {
      EXPECT_GT(r.gaps[0].first, last_stored) << "dev" << d << "\n" << summary;
      EXPECT_LT(r.gaps[0].second - r.gaps[0].first, 80)
          << "dev" << d << ": more missing than 20 s of values\n"
          << summary;
    }
  }
  RecordProperty("duplicates", static_cast<int>(duplicates));
  RecordProperty("stored_at_kill", static_cast<int>(stored_count));
  std::printf("gateway killed: %zu value(s) were stored, %zu duplicate(s)\n%s", stored_count,
              duplicates, summary.c_str());
}

// A full disk (here a 1 MiB tmpfs as the state dir, with the broker away for a minute) is
// not a crash and not a loss: the outbox keeps what it cannot write in memory, says so
// once in a while with a count, and delivers it in order when the broker is back.
TEST(MqttOutage, FullDiskKeepsMessagesInMemoryAndDeliversThem) {
  if (::geteuid() != 0) GTEST_SKIP() << "mounting a tmpfs needs root";
  Streaming s(std::size_t{1} << 20);
  if (!s.tmpfs->error().empty()) GTEST_SKIP() << "cannot mount a tmpfs: " << s.tmpfs->error();
  const auto before = s.warmUp();
  const auto t0 = std::chrono::steady_clock::now();
  s.broker.stop();
  ASSERT_TRUE(s.gateway->waitForOutput("mqtt: connection to", 15s)) << s.gateway->output();
  EXPECT_TRUE(s.gateway->waitForOutput("mqtt: cannot write the outbox", 50s))
      << "the outage should have filled 1 MiB\n"
      << s.gateway->output();
  std::this_thread::sleep_until(t0 + kOutage);
  ASSERT_TRUE(s.gateway->running()) << s.gateway->output();
  // While the disk stays full, the failure is reported once per 10 s, not per message.
  EXPECT_LE(s.gateway->countInOutput("mqtt: cannot write the outbox"), 8u) << s.gateway->output();
  EXPECT_LE(s.gateway->countInOutput("registry: flush failed"), 8u) << s.gateway->output();

  s.broker.start();
  MqttProbe info(s.broker.port(), "c2m/bridge/info");  // retained, renewed on every connect
  const bool caught_up = s.awaitPastOutage(before, 90s);
  const auto reports = analyzeAll(s.probe, s.sim.get());
  const std::string summary = describe(reports);
  ASSERT_TRUE(caught_up) << summary << s.gateway->output();
  for (const auto& [d, r] : reports) {
    EXPECT_TRUE(r.gaps.empty()) << "dev" << d << " lost values\n" << summary;
    EXPECT_EQ(r.reordered, 0u) << "dev" << d << " out of order\n" << summary;
  }
  EXPECT_TRUE(info.waitFor(
      [](const std::vector<MqttMessage>& msgs) {
        for (const auto& m : msgs) {
          const std::string key = "\"outbox_write_failures\":";
          const auto pos = m.payload.find(key);
          if (pos != std::string::npos && m.payload[pos + key.size()] != '0') return true;
        }
        return false;
      },
      10s))
      << "bridge/info counts the failed writes";

  // Space again: both stores write again, and what the broker acknowledged leaves the file.
  ASSERT_TRUE(s.tmpfs->grow(std::size_t{64} << 20)) << std::strerror(errno);
  EXPECT_TRUE(s.gateway->waitForOutput("mqtt: writing the outbox again", 10s))
      << s.gateway->output();
  EXPECT_TRUE(s.gateway->waitForOutput("registry: writing again", 10s)) << s.gateway->output();
  ASSERT_TRUE(s.gateway->running()) << s.gateway->output();
  ASSERT_EQ(s.gateway->stop(SIGTERM, 10s), 0) << s.gateway->output();
  gateway::Outbox outbox(s.dir.file("state/outbox.db"), {});
  EXPECT_LT(outbox.size(), 100u) << "delivered messages are deleted once the disk has room";
}

}  // namespace
}  // namespace coap2mqtt::test
