// The systemd side without systemd: ServiceNotifier's pacing on fake timers, the STATUS=
// line, and the journald log format.
#include <gtest/gtest.h>
#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

#include <spdlog/details/log_msg.h>

#include "gateway/logging.h"
#include "gateway/service_notifier.h"
#include "tests/unit/fake_timers.h"

namespace {

using coap2mqtt::gateway::FakeTimers;
using coap2mqtt::gateway::ServiceNotifier;
using coap2mqtt::gateway::ServiceStatus;
using namespace std::chrono_literals;

struct Harness {
  FakeTimers timers;
  ServiceStatus status;
  std::vector<std::string> sent;
  ServiceNotifier notifier;

  explicit Harness(std::chrono::microseconds watchdog)
      : notifier(
            timers, [this] { return status; }, [this](const std::string& s) { sent.push_back(s); },
            watchdog) {}

  std::size_t count(const std::string& exact) const {
    std::size_t n = 0;
    for (const auto& s : sent) n += s == exact ? 1 : 0;
    return n;
  }
  std::vector<std::string> statuses() const {
    std::vector<std::string> out;
    for (const auto& s : sent) {
      if (s.rfind("STATUS=", 0) == 0) out.push_back(s.substr(7));
    }
    return out;
  }
};

TEST(ServiceStatusLine, SaysDevicesObservationsBrokerAndOutbox) {
  ServiceStatus s;
  s.devices = 3;
  s.devices_online = 2;
  s.observations = 4;
  s.outbox = 17;
  EXPECT_EQ(coap2mqtt::gateway::serviceStatusLine(s),
            "2/3 devices online, 4 observations, broker not connected, outbox 17");
  s.mqtt_connected = true;
  EXPECT_EQ(coap2mqtt::gateway::serviceStatusLine(s),
            "2/3 devices online, 4 observations, broker connected, outbox 17");
}

TEST(ServiceNotifier, PingsTheWatchdogAtHalfItsInterval) {
  Harness h(10s);
  h.notifier.start();
  EXPECT_EQ(h.count("WATCHDOG=1"), 1u);  // at once: the first interval starts at exec
  h.timers.advance(4999ms);
  EXPECT_EQ(h.count("WATCHDOG=1"), 1u);
  h.timers.advance(1ms);
  EXPECT_EQ(h.count("WATCHDOG=1"), 2u);
  h.timers.advance(60s);
  EXPECT_EQ(h.count("WATCHDOG=1"), 14u);
}

TEST(ServiceNotifier, NoWatchdogNoPings) {
  Harness h(0us);
  h.notifier.start();
  h.timers.advance(60s);
  EXPECT_EQ(h.count("WATCHDOG=1"), 0u);
}

TEST(ServiceNotifier, ReadyCarriesTheStatus) {
  Harness h(0us);
  h.status.devices = 1;
  h.notifier.start();
  h.notifier.ready();
  ASSERT_FALSE(h.sent.empty());
  EXPECT_EQ(h.sent.back(),
            "READY=1\nSTATUS=0/1 devices online, 0 observations, broker not connected, outbox 0");
}

TEST(ServiceNotifier, StatusIsSentWhenItChangesAtMostOncePerPeriod) {
  Harness h(0us);
  h.notifier.start();
  h.notifier.ready();
  const auto before = h.sent.size();
  h.timers.advance(10 * ServiceNotifier::kStatusPeriod);
  EXPECT_EQ(h.sent.size(), before) << "unchanged: nothing sent";

  // Many changes within one period: one line, the latest, at the period's end.
  for (int i = 1; i <= 100; ++i) h.status.outbox = std::size_t(i);
  h.status.mqtt_connected = true;
  h.timers.advance(ServiceNotifier::kStatusPeriod);
  ASSERT_EQ(h.statuses().size(), 1u);
  EXPECT_EQ(h.statuses().back(),
            "0/0 devices online, 0 observations, broker connected, outbox 100");
  h.status.outbox = 0;
  h.timers.advance(ServiceNotifier::kStatusPeriod - 1ms);
  EXPECT_EQ(h.statuses().size(), 1u);
  h.timers.advance(1ms);
  ASSERT_EQ(h.statuses().size(), 2u);
  EXPECT_EQ(h.statuses().back(), "0/0 devices online, 0 observations, broker connected, outbox 0");
}

TEST(ServiceNotifier, AnExplicitStatusIsReplacedByTheNextLine) {
  Harness h(0us);
  h.notifier.start();
  h.notifier.status("stalled");
  h.timers.advance(ServiceNotifier::kStatusPeriod);
  ASSERT_EQ(h.statuses().size(), 2u);
  EXPECT_EQ(h.statuses()[0], "stalled");
  EXPECT_EQ(h.statuses()[1], "0/0 devices online, 0 observations, broker not connected, outbox 0");
}

TEST(ServiceNotifier, ReloadingAndStopping) {
  Harness h(0us);
  h.notifier.reloading();
  h.notifier.stopping();
  ASSERT_EQ(h.sent.size(), 2u);
  EXPECT_EQ(h.sent[0].rfind("RELOADING=1\nMONOTONIC_USEC=", 0), 0u) << h.sent[0];
  EXPECT_EQ(h.sent[1], "STOPPING=1");
}

TEST(ServiceNotifier, DestructionCancelsItsTimers) {
  FakeTimers timers;
  {
    ServiceNotifier n(
        timers, [] { return ServiceStatus{}; }, [](const std::string&) {}, 2s);
    n.start();
    EXPECT_EQ(timers.pending(), 2u);
  }
  EXPECT_EQ(timers.pending(), 0u);
}

// ---- journald logs

std::string journalLine(spdlog::level::level_enum level, const std::string& text) {
  spdlog::details::log_msg msg("coap2mqtt", level, text);
  spdlog::memory_buf_t buf;
  coap2mqtt::gateway::journalFormatter()->format(msg, buf);
  return std::string(buf.data(), buf.size());
}

TEST(JournalLog, PriorityPrefixAndNoTimestamp) {
  EXPECT_EQ(journalLine(spdlog::level::warn, "mqtt: connection lost"),
            "<4>mqtt: connection lost\n");
  EXPECT_EQ(journalLine(spdlog::level::err, "x"), "<3>x\n");
  EXPECT_EQ(journalLine(spdlog::level::critical, "x"), "<2>x\n");
  EXPECT_EQ(journalLine(spdlog::level::info, "x"), "<6>x\n");
  EXPECT_EQ(journalLine(spdlog::level::debug, "x"), "<7>x\n");
  EXPECT_EQ(journalLine(spdlog::level::trace, "x"), "<7>x\n");
}

TEST(JournalLog, EveryLineOfAMultiLineMessageKeepsItsPriority) {
  EXPECT_EQ(journalLine(spdlog::level::err, "reload failed:\na.toml:1:2: bad\nb.toml:3:4: bad"),
            "<3>reload failed:\n<3>a.toml:1:2: bad\n<3>b.toml:3:4: bad\n");
}

TEST(JournalLog, JournalStreamMustNameOurStderr) {
  using coap2mqtt::gateway::isJournalStream;
  EXPECT_TRUE(isJournalStream("8:12345", dev_t(8), ino_t(12345)));
  EXPECT_FALSE(isJournalStream("8:12345", dev_t(8), ino_t(12346)));  // inherited, not ours
  EXPECT_FALSE(isJournalStream("9:12345", dev_t(8), ino_t(12345)));
  EXPECT_FALSE(isJournalStream(nullptr, dev_t(8), ino_t(12345)));
  EXPECT_FALSE(isJournalStream("", dev_t(0), ino_t(0)));
  EXPECT_FALSE(isJournalStream("8:", dev_t(8), ino_t(0)));
  EXPECT_FALSE(isJournalStream("8:12345x", dev_t(8), ino_t(12345)));
}

}  // namespace
