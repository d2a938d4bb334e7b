// Issue 19, acceptance 4: the real gateway under a notify socket of the test's own, as
// systemd would run it (Type=notify, WatchdogSec=): READY=1 once started, STATUS= lines,
// WATCHDOG=1 at half the interval from the event loop (none while the loop is stalled on
// purpose), RELOADING=1/READY=1 around SIGHUP, STOPPING=1 at SIGTERM.
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <optional>
#include <regex>
#include <thread>

#include "tests/integration/gateway_process.h"
#include "tests/integration/harness.h"

namespace coap2mqtt::test {
namespace {

using Clock = std::chrono::steady_clock;

// What systemd's notify socket would receive: one entry per datagram, in order.
class NotifySocket {
 public:
  struct Message {
    std::string text;
    Clock::time_point received;
  };

  explicit NotifySocket(const std::string& path) : path_(path) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      throw std::runtime_error("notify socket " + path + ": " + std::strerror(errno));
    }
    reader_ = std::thread([this] { read(); });
  }
  ~NotifySocket() {
    stop_ = true;
    reader_.join();
    ::close(fd_);
    ::unlink(path_.c_str());
  }

  std::vector<Message> messages() const {
    std::lock_guard lock(mutex_);
    return messages_;
  }
  // Index of the first message at or after `from` that contains `needle`, if any.
  std::optional<std::size_t> find(const std::string& needle, std::size_t from = 0) const {
    const auto all = messages();
    for (std::size_t i = from; i < all.size(); ++i) {
      if (all[i].text.find(needle) != std::string::npos) return i;
    }
    return std::nullopt;
  }
  std::optional<std::size_t> await(const std::string& needle, std::size_t from,
                                   std::chrono::milliseconds timeout) const {
    std::optional<std::size_t> at;
    waitUntil([&] { return (at = find(needle, from)).has_value(); }, timeout);
    return at;
  }
  bool awaitMatch(const std::regex& re, std::size_t from, std::chrono::milliseconds timeout) const {
    return waitUntil(
        [&] {
          const auto all = messages();
          for (std::size_t i = from; i < all.size(); ++i) {
            if (std::regex_search(all[i].text, re)) return true;
          }
          return false;
        },
        timeout);
  }
  std::size_t count(const std::string& exact, std::size_t from = 0) const {
    const auto all = messages();
    std::size_t n = 0;
    for (std::size_t i = from; i < all.size(); ++i) n += all[i].text == exact ? 1 : 0;
    return n;
  }
  std::string dump() const {
    std::string out;
    for (const auto& m : messages()) out += "[" + m.text + "] ";
    return out;
  }

 private:
  void read() {
    char buf[4096];
    while (!stop_) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) continue;
      std::lock_guard lock(mutex_);
      messages_.push_back({std::string(buf, std::size_t(n)), Clock::now()});
    }
  }

  std::string path_;
  int fd_ = -1;
  std::atomic<bool> stop_{false};
  mutable std::mutex mutex_;
  std::vector<Message> messages_;
  std::thread reader_;
};

// Sets environment variables for the processes this test starts; restores them after.
class ScopedEnv {
 public:
  void set(const std::string& name, const std::string& value) {
    remember(name);
    ::setenv(name.c_str(), value.c_str(), 1);
  }
  void unset(const std::string& name) {
    remember(name);
    ::unsetenv(name.c_str());
  }
  ~ScopedEnv() {
    for (const auto& [name, value] : saved_) {
      if (value) {
        ::setenv(name.c_str(), value->c_str(), 1);
      } else {
        ::unsetenv(name.c_str());
      }
    }
  }

 private:
  void remember(const std::string& name) {
    const char* v = std::getenv(name.c_str());
    saved_.emplace_back(name, v ? std::optional<std::string>(v) : std::nullopt);
  }
  std::vector<std::pair<std::string, std::optional<std::string>>> saved_;
};

constexpr auto kWatchdog = 1000ms;  // WATCHDOG_USEC: the gateway pings every 500 ms
constexpr auto kStall = 3000ms;

TEST(Service, ReadyStatusWatchdogStallReloadAndStopping) {
  TempDir dir;
  Mosquitto broker;
  const int port = freeUdpPortRange(1);
  auto sim = startSim(dir, port, 1);
  NotifySocket notify(dir.file("notify.sock"));
  ScopedEnv env;
  env.set("NOTIFY_SOCKET", dir.file("notify.sock"));
  env.set("WATCHDOG_USEC", std::to_string(std::chrono::microseconds(kWatchdog).count()));
  env.unset("WATCHDOG_PID");  // unset: sd_watchdog_enabled() accepts any process
  env.set("COAP2MQTT_TEST_STALL_ON_SIGUSR1", std::to_string(kStall.count()));
  auto gateway = startGateway(
      dir, baseConfig(broker, dir) + simDevices(port, 1) + "[[rule]]\nname = \"all\"\n");

  // READY=1 after the start, carrying a status line.
  const auto ready = notify.await("READY=1", 0, 15s);
  ASSERT_TRUE(ready) << notify.dump() << gateway->output();
  EXPECT_NE(notify.messages()[*ready].text.find("STATUS="), std::string::npos);

  // STATUS= follows what happens: the broker connects, the device comes online, its
  // resources are observed.
  EXPECT_TRUE(notify.awaitMatch(
      std::regex("STATUS=1/1 devices online, [1-9][0-9]* observations, broker connected"), *ready,
      20s))
      << notify.dump();

  // WATCHDOG=1 at about half of WATCHDOG_USEC: six pings span five intervals (2.5 s).
  const std::size_t from = notify.messages().size();
  ASSERT_TRUE(waitUntil([&] { return notify.count("WATCHDOG=1", from) >= 6; }, 10s))
      << notify.dump();
  {
    std::vector<Clock::time_point> pings;
    const auto all = notify.messages();
    for (std::size_t i = from; i < all.size(); ++i) {
      if (all[i].text == "WATCHDOG=1") pings.push_back(all[i].received);
    }
    const auto span = pings[5] - pings[0];
    EXPECT_GT(span, 5 * kWatchdog / 2 / 2) << "pinging far too often";
    EXPECT_LT(span, 5 * kWatchdog) << "pinging far too rarely";
  }

  // The loop stalls: the marker STATUS= is its last word until the stall ends, and the
  // next WATCHDOG=1 comes only then (a ping from another thread would come in between).
  ASSERT_EQ(::kill(gateway->pid(), SIGUSR1), 0);
  const auto stalled = notify.await("stalled on purpose", from, 5s);
  ASSERT_TRUE(stalled) << notify.dump() << gateway->output();
  const auto resumed = notify.await("WATCHDOG=1", *stalled + 1, kStall + 10s);
  ASSERT_TRUE(resumed) << "the watchdog must resume after the stall: " << notify.dump();
  {
    const auto all = notify.messages();
    const auto quiet = all[*resumed].received - all[*stalled].received;
    EXPECT_GT(quiet, kStall - 1000ms) << "WATCHDOG=1 while the loop was stalled";
  }
  EXPECT_TRUE(gateway->waitForOutput("stall over", 5s));

  // SIGHUP: RELOADING=1, then READY=1 again.
  const std::size_t before_reload = notify.messages().size();
  ASSERT_EQ(::kill(gateway->pid(), SIGHUP), 0);
  const auto reloading = notify.await("RELOADING=1", before_reload, 10s);
  ASSERT_TRUE(reloading) << notify.dump();
  EXPECT_TRUE(notify.await("READY=1", *reloading + 1, 10s)) << notify.dump();

  // SIGTERM: STOPPING=1 (sent before the gateway exits, so it is there once it has).
  const std::size_t before_stop = notify.messages().size();
  EXPECT_FALSE(notify.find("STOPPING=1"));
  EXPECT_EQ(gateway->stop(SIGTERM, 10s), 0);
  EXPECT_TRUE(notify.await("STOPPING=1", before_stop, 5s)) << notify.dump();
}

// sd_watchdog_enabled(): WATCHDOG_PID naming another process (a parent that set up the
// watchdog for itself) means no watchdog for us. And READY=1 also comes when the first
// broker attempt failed: systemd must not wait for a broker that may be down for hours.
TEST(Service, ReadyWithTheBrokerDownAndNoWatchdogForAnotherPid) {
  TempDir dir;
  NotifySocket notify(dir.file("notify.sock"));
  ScopedEnv env;
  env.set("NOTIFY_SOCKET", dir.file("notify.sock"));
  env.set("WATCHDOG_USEC", "200000");
  env.set("WATCHDOG_PID", std::to_string(::getpid()));
  const int closed_port = freeTcpPort();
  auto gateway = startGateway(
      dir, "[gateway]\nname = \"test-gw\"\nstate_dir = \"" + dir.path() +
               "\"\n[mqtt]\nuri = \"mqtt://127.0.0.1:" + std::to_string(closed_port) + "\"\n");
  const auto ready = notify.await("READY=1", 0, 15s);
  ASSERT_TRUE(ready) << notify.dump() << gateway->output();
  EXPECT_NE(notify.messages()[*ready].text.find("broker not connected"), std::string::npos)
      << notify.dump();
  // With a watchdog the first WATCHDOG=1 goes out before READY=1 (at the loop's start).
  EXPECT_EQ(notify.count("WATCHDOG=1"), 0u) << notify.dump();
  EXPECT_EQ(gateway->stop(SIGTERM, 10s), 0);
  EXPECT_TRUE(notify.await("STOPPING=1", 0, 5s)) << notify.dump();
  EXPECT_EQ(notify.count("WATCHDOG=1"), 0u) << notify.dump();
}

}  // namespace
}  // namespace coap2mqtt::test
