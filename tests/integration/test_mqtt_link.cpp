// MqttLink on its own against a real mosquitto: the delivery bookkeeping that the gateway
// tests only see from outside. The link runs on an EventLoop in a thread of the test; every
// call into it is posted there.
#include <MQTTAsync.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <functional>
#include <future>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "gateway/config.h"
#include "gateway/event_loop.h"
#include "gateway/mqtt_link.h"
#include "gateway/outbox.h"
#include "tests/integration/harness.h"

namespace coap2mqtt::test {
namespace {

using gateway::EventLoop;
using gateway::MqttConfig;
using gateway::MqttLink;

// A link on its own loop thread, connected to `broker`.
class LinkRunner {
 public:
  LinkRunner(const Mosquitto& broker, const TempDir& dir, std::size_t max_inflight,
             std::size_t max_messages = gateway::MqttBufferConfig{}.max_messages,
             const std::function<void(MqttConfig&)>& configure = {}) {
    config_.uri = broker.uri();
    config_.client_id = "link-test";
    config_.max_inflight = max_inflight;
    config_.buffer.max_messages = max_messages;
    if (configure) configure(config_);
    link_ =
        std::make_unique<MqttLink>(loop_, config_, MqttLink::openOutbox(dir.file("state"), config_),
                                   "link-test/state", "offline");
    link_->setSubscriptionsFile(dir.file("state") + "/subscriptions");
    link_->setOnConnected([this] { connected_ = true; });
    link_->setMessageHandler([this](const std::string& topic, const std::string& payload,
                                    const gateway::MqttMessageMeta&) {
      std::lock_guard<std::mutex> lock(received_mutex_);
      received_.push_back(topic + " " + payload);
    });
    thread_ = std::thread([this] {
      link_->start();
      loop_.run();
      link_->stop("link-test/state", "offline");
    });
  }
  ~LinkRunner() {
    loop_.stop();
    thread_.join();
  }
  bool waitConnected() {
    return waitUntil([&] { return connected_.load(); }, 10s);
  }
  // The link's counters, from any thread (atomics).
  const gateway::MqttStats& linkStats() const { return link_->stats(); }
  // Runs `f` on the loop thread without waiting for it.
  void post(std::function<void()> f) { loop_.post(std::move(f)); }
  // Every message the link received, as "topic payload", in order.
  std::vector<std::string> received() const {
    std::lock_guard<std::mutex> lock(received_mutex_);
    return received_;
  }
  // Runs `f` on the loop thread and waits for it.
  template <typename F>
  auto onLoop(F f) {
    std::packaged_task<decltype(f(std::declval<MqttLink&>()))(MqttLink&)> task(std::move(f));
    auto result = task.get_future();
    loop_.post([&] { task(*link_); });
    return result.get();
  }

 private:
  EventLoop loop_;
  MqttConfig config_;
  std::unique_ptr<MqttLink> link_;
  std::atomic<bool> connected_{false};
  mutable std::mutex received_mutex_;
  std::vector<std::string> received_;
  std::thread thread_;
};

// A broker, a probe subscribed to `topic` and a link on a window of `window`.
struct LinkUnderTest {
  LinkUnderTest(const std::string& topic, std::size_t window)
      : probe(broker.port(), topic), runner(broker, dir, window) {}
  Mosquitto broker;
  TempDir dir;
  MqttProbe probe;
  LinkRunner runner;
};

std::string payloadOf(int i) {
  return "value " + std::to_string(i);
}

// Messages published one at a time with nothing waiting behind them: no acknowledgement
// wakes the loop (see MqttLink::paceAcks), yet every delivered message leaves the outbox
// soon after its PUBACK, with no further traffic to carry the news.
TEST(MqttLink, AcknowledgedMessagesLeaveTheOutboxWithoutFurtherTraffic) {
  LinkUnderTest t("link-test/values", 100);
  auto& probe = t.probe;
  auto& runner = t.runner;
  ASSERT_TRUE(runner.waitConnected());
  for (int i = 0; i < 10; ++i) {
    runner.onLoop([i](MqttLink& link) {
      link.publish("link-test/values", payloadOf(i), 1, false);
      return 0;
    });
    ASSERT_TRUE(probe.waitForCount("link-test/values", std::size_t(i) + 1, 5s));
  }
  EXPECT_TRUE(waitUntil(
      [&] {
        return runner.onLoop(
            [](MqttLink& link) { return link.outboxSize() == 0 && link.stats().delivered == 10; });
      },
      5s))
      << "outbox " << runner.onLoop([](MqttLink& link) { return link.outboxSize(); })
      << ", delivered " << runner.onLoop([](MqttLink& link) {
           return static_cast<std::uint64_t>(link.stats().delivered);
         });
}

// A burst many times the window: paho's thread wakes the loop once per quarter of the
// window, the window refills, and everything arrives once, in order, and leaves the outbox.
TEST(MqttLink, BurstFarBeyondTheWindowArrivesInOrderAndEmptiesTheOutbox) {
  Mosquitto broker;
  TempDir dir;
  MqttProbe probe(broker.port(), "link-test/burst");
  constexpr int kMessages = 3000;
  for (const std::size_t window : {std::size_t(1), std::size_t(3), std::size_t(40)}) {
    SCOPED_TRACE("max_inflight " + std::to_string(window));
    TempDir state;
    LinkRunner runner(broker, state, window);
    ASSERT_TRUE(runner.waitConnected());
    const std::size_t before = probe.messagesOn("link-test/burst").size();
    runner.onLoop([](MqttLink& link) {
      for (int i = 0; i < kMessages; ++i) link.publish("link-test/burst", payloadOf(i), 1, false);
      return 0;
    });
    ASSERT_TRUE(probe.waitForCount("link-test/burst", before + kMessages, 60s))
        << probe.messagesOn("link-test/burst").size() - before << " of " << kMessages;
    const auto got = probe.messagesOn("link-test/burst");
    for (int i = 0; i < kMessages; ++i) {
      ASSERT_EQ(got[before + std::size_t(i)].payload, payloadOf(i)) << "at " << i;
    }
    EXPECT_TRUE(waitUntil(
        [&] { return runner.onLoop([](MqttLink& link) { return link.outboxSize() == 0; }); }, 5s));
    EXPECT_EQ(runner.onLoop([](MqttLink& link) {
      return static_cast<std::uint64_t>(link.stats().delivered);
    }),
              std::uint64_t(kMessages));
  }
}

// One loop task that runs long (as under a flood of notifications, when one iteration can
// take tens of milliseconds) while the broker acknowledges the whole window: the next
// publish takes those acknowledgements and goes out at once. Before, the window refilled
// only from the drain posted behind the task, so QoS 1 managed one window per iteration,
// and the backlog made iterations longer still: 20k notifications/s offered, 2k/s out.
TEST(MqttLink, AcknowledgementsThatCameDuringALongTaskRefillTheWindowAtOnce) {
  constexpr std::size_t kWindow = 20;
  LinkUnderTest t("link-test/long", kWindow);
  auto& probe = t.probe;
  auto& runner = t.runner;
  ASSERT_TRUE(runner.waitConnected());
  struct Counts {
    std::uint64_t first = 0;   // handed to paho by the first kWindow publishes
    bool all_acked = false;    // paho reported all their PUBACKs within the task
    std::uint64_t second = 0;  // handed to paho by the next 10
  };
  const Counts c = runner.onLoop([](MqttLink& link) {
    Counts out;
    const std::uint64_t start = link.stats().published;
    const std::uint64_t delivered_before = link.stats().delivered;
    for (std::size_t i = 0; i < kWindow; ++i)
      link.publish("link-test/long", payloadOf(int(i)), 1, false);
    out.first = link.stats().published - start;
    // Still inside the task: the loop cannot run a posted drain meanwhile. On a slow run
    // (sanitizers, a loaded box) the publishes outlast the 5 ms batch interval and the flush
    // inside one of them applies the PUBACKs already in (by design): those count as well.
    out.all_acked = waitUntil(
        [&] {
          return link.acknowledgementsWaiting() + (link.stats().delivered - delivered_before) >=
                 kWindow;
        },
        10s);
    for (int i = 0; i < 10; ++i)
      link.publish("link-test/long", payloadOf(int(kWindow) + i), 1, false);
    out.second = link.stats().published - start - out.first;
    return out;
  });
  EXPECT_EQ(c.first, kWindow);
  ASSERT_TRUE(c.all_acked);
  EXPECT_EQ(c.second, 10u) << "the window stayed full of acknowledged messages";
  ASSERT_TRUE(probe.waitForCount("link-test/long", kWindow + 10, 10s));
  const auto got = probe.messagesOn("link-test/long");
  for (std::size_t i = 0; i < kWindow + 10; ++i) EXPECT_EQ(got[i].payload, payloadOf(int(i)));
  EXPECT_TRUE(waitUntil(
      [&] { return runner.onLoop([](MqttLink& link) { return link.outboxSize() == 0; }); }, 5s));
}

// A flush takes the PUBACKs that are waiting first: what they acknowledge is never written.
TEST(MqttLink, AFlushAfterThePubacksWritesNothing) {
  LinkUnderTest t("link-test/flush", 100);
  auto& probe = t.probe;
  auto& runner = t.runner;
  ASSERT_TRUE(runner.waitConnected());
  struct Result {
    bool all_acked = false;
    std::uint64_t written = 0;
    std::size_t left = 0;
  };
  const Result r = runner.onLoop([](MqttLink& link) {
    Result out;
    const std::uint64_t delivered_before = link.stats().delivered;
    for (int i = 0; i < 10; ++i) link.publish("link-test/flush", payloadOf(i), 1, false);
    // A slow run (sanitizers, a busy box) may pass the batch interval while publishing: that
    // flush writes what is not acknowledged yet, rightly. Counted from here, nothing is.
    const std::uint64_t before = link.outboxStats().written;
    // Inside one task: no sweep and no timer can take the PUBACKs before the flush does.
    out.all_acked = waitUntil(
        [&] {
          return link.acknowledgementsWaiting() + (link.stats().delivered - delivered_before) >= 10;
        },
        10s);
    link.flushOutbox();
    out.written = link.outboxStats().written - before;
    out.left = link.outboxSize();
    return out;
  });
  ASSERT_TRUE(r.all_acked);
  EXPECT_EQ(r.written, 0u) << "acknowledged messages were written to the file";
  EXPECT_EQ(r.left, 0u);
  EXPECT_TRUE(probe.waitForCount("link-test/flush", 10, 10s));
}

// Stored messages that smaller bounds drop when the link opens its outbox are deleted from
// the file by themselves, with no broker and no other traffic to trigger a flush (an ACK
// held back for the next flush would otherwise wait for one too).
TEST(MqttLink, MessagesDroppedBySmallerBoundsAtStartAreDeletedWithoutTraffic) {
  Mosquitto broker;
  broker.stop();
  TempDir dir;
  {
    std::filesystem::create_directories(dir.file("state"));
    gateway::Outbox box(dir.file("state") + "/outbox.db", {});
    for (int i = 0; i < 10; ++i) box.append("link-test/stored", payloadOf(i), 1, false);
    box.flush();
  }
  {
    LinkRunner runner(broker, dir, 100, 4);
    EXPECT_TRUE(waitUntil(
        [&] {
          return runner.onLoop([](MqttLink& link) { return link.outboxStats().commits >= 1; });
        },
        5s));
    EXPECT_EQ(runner.onLoop([](MqttLink& link) { return link.outboxSize(); }), 4u);
  }
  gateway::Outbox reopened(dir.file("state") + "/outbox.db", {});
  const auto left = reopened.read(0, 100);
  ASSERT_EQ(left.size(), 4u);
  EXPECT_EQ(left.front().payload, payloadOf(6));
}

// LinkRunner's configure: MQTT 5 with a session the broker keeps (clean_session = false).
void persistent(MqttConfig& c) {
  c.protocol = gateway::MqttProtocol::V5;
  c.clean_session = false;
}

// MQTT 5 with clean_session = false: the broker keeps the session after the link goes, so
// a QoS 1 command sent meanwhile reaches the link when it is back. Without a Session Expiry
// Interval an MQTT 5 session ends with its connection and the command would be gone.
TEST(MqttLink, Mqtt5PersistentSessionKeepsCommandsSentWhileAway) {
  Mosquitto broker;
  TempDir dir;
  {
    LinkRunner runner(broker, dir, 100, gateway::MqttBufferConfig{}.max_messages, persistent);
    ASSERT_TRUE(runner.waitConnected());
    runner.onLoop([](MqttLink& link) {
      link.subscribe("link-test/cmd/#", 1);
      return 0;
    });
    // The subscription is in place once a command goes through.
    MqttProbe sender(broker.port(), "link-test/none");
    ASSERT_TRUE(waitUntil(
        [&] {
          sender.publish("link-test/cmd/a", "before", 1);
          return waitUntil([&] { return !runner.received().empty(); }, 200ms);
        },
        10s));
  }
  {
    MqttProbe sender(broker.port(), "link-test/none");
    ASSERT_TRUE(waitUntil([&] { return sender.connected(); }, 5s));
    sender.publish("link-test/cmd/a", "while away", 1);
  }
  LinkRunner again(broker, dir, 100, gateway::MqttBufferConfig{}.max_messages, persistent);
  ASSERT_TRUE(again.waitConnected());
  EXPECT_TRUE(waitUntil(
      [&] {
        const auto r = again.received();
        return std::find(r.begin(), r.end(), "link-test/cmd/a while away") != r.end();
      },
      10s));
}

// A persistent session outlives the gateway: a filter the configuration no longer has (a
// command rule removed before the restart) is unsubscribed, and what is sent to it does
// not reach the link any more.
TEST(MqttLink, APersistentSessionDropsFiltersTheNextRunNoLongerHas) {
  Mosquitto broker;
  TempDir dir;
  MqttProbe sender(broker.port(), "link-test/none");
  {
    LinkRunner runner(broker, dir, 100, gateway::MqttBufferConfig{}.max_messages, persistent);
    ASSERT_TRUE(runner.waitConnected());
    runner.onLoop([](MqttLink& link) {
      link.subscribe("link-test/old/#", 1);
      return 0;
    });
    ASSERT_TRUE(waitUntil(
        [&] {
          sender.publish("link-test/old/a", "probe", 1);
          return waitUntil([&] { return !runner.received().empty(); }, 200ms);
        },
        10s));
  }
  LinkRunner again(broker, dir, 100, gateway::MqttBufferConfig{}.max_messages, persistent);
  again.onLoop([](MqttLink& link) {
    link.subscribe("link-test/new/#", 1);
    return 0;
  });
  ASSERT_TRUE(again.waitConnected());
  const auto got = [&](const std::string& message) {
    const auto r = again.received();
    return std::find(r.begin(), r.end(), message) != r.end();
  };
  // The link unsubscribes the old filter before it subscribes the new one: once the new one
  // delivers, the broker has dropped the old one.
  ASSERT_TRUE(waitUntil(
      [&] {
        sender.publish("link-test/new/a", "ready", 1);
        return waitUntil([&] { return got("link-test/new/a ready"); }, 200ms);
      },
      10s));
  // In order from one publisher: "old" would have come before "new".
  sender.publish("link-test/old/a", "after", 1);
  sender.publish("link-test/new/a", "after", 1);
  ASSERT_TRUE(waitUntil([&] { return got("link-test/new/a after"); }, 5s));
  EXPECT_FALSE(got("link-test/old/a after"));
}

std::atomic<int> g_fine_traces{0};

// Paho's default trace level records every call of its own functions, which costs CPU on
// every message: once a link exists, paho traces nothing below errors. (The callback sees
// paho's output level; TRACE_ERROR sets it and the recording level alike, while FATAL
// would set only the output one: this test would not tell FATAL from ERROR.)
std::uint64_t linkStat(LinkRunner& runner, std::atomic<std::uint64_t> gateway::MqttStats::*stat) {
  return runner.onLoop(
      [stat](MqttLink& link) { return static_cast<std::uint64_t>((link.stats().*stat).load()); });
}

// Issue 17, finding 4: a publish to '#' made mosquitto close the connection; the message
// stayed first in the outbox and was sent again after every reconnect, so nothing behind
// it ever arrived. Now it is refused before the outbox, counted.
TEST(MqttLink, AnInvalidTopicIsRefusedAndWhatFollowsIsDelivered) {
  LinkUnderTest t("link-test/values", 100);
  ASSERT_TRUE(t.runner.waitConnected());
  t.runner.onLoop([](MqttLink& link) {
    link.publish("link-test/#", "poison", 1, false);
    link.publish("link-test//empty-level", "poison", 1, false);
    for (int i = 0; i < 3; ++i) link.publish("link-test/values", payloadOf(i), 1, false);
    return 0;
  });
  EXPECT_TRUE(t.probe.waitForCount("link-test/values", 3, 10s));
  EXPECT_EQ(linkStat(t.runner, &gateway::MqttStats::invalid_topic), 2u);
  EXPECT_EQ(linkStat(t.runner, &gateway::MqttStats::connects), 1u) << "never disconnected";
}

// Issue 17, finding 4: a message the broker refuses by closing the connection (here: over
// its max_packet_size, which a 3.1.1 client is not told) must not block the ones behind
// it. It is sent alone after the first loss, and dropped after three losses in a row.
TEST(MqttLink, AMessageTheBrokerDisconnectsForIsDroppedAndTheRestDelivered) {
  Mosquitto::Options options;
  options.extra_conf = "max_packet_size 2000\n";
  Mosquitto broker(options);
  TempDir dir;
  MqttProbe probe(broker.port(), "link-test/#");
  LinkRunner runner(broker, dir, 100);
  ASSERT_TRUE(runner.waitConnected());
  runner.onLoop([](MqttLink& link) {
    link.publish("link-test/before", "fine", 1, false);
    link.publish("link-test/big", std::string(5000, 'x'), 1, false);
    for (int i = 0; i < 3; ++i) link.publish("link-test/after", payloadOf(i), 1, false);
    return 0;
  });
  // The outbox empties: before, the big one was sent again after every reconnect, forever.
  ASSERT_TRUE(waitUntil(
      [&] { return runner.onLoop([](MqttLink& link) { return link.outboxSize() == 0; }); }, 30s))
      << "connects " << linkStat(runner, &gateway::MqttStats::connects);
  EXPECT_EQ(linkStat(runner, &gateway::MqttStats::broker_disconnects), 1u);
  EXPECT_TRUE(probe.waitForCount("link-test/after", 3, 10s));
  EXPECT_GE(probe.messagesOn("link-test/before").size(), 1u);  // at least once
  EXPECT_TRUE(probe.messagesOn("link-test/big").empty());
  // And the link works on: a new message is delivered at once.
  runner.onLoop([](MqttLink& link) {
    link.publish("link-test/later", "fine", 1, false);
    return 0;
  });
  EXPECT_TRUE(probe.waitForCount("link-test/later", 1, 10s));
}

// Issue 17, finding 11: messages from paho's thread waited for the loop without bound. A
// flood while the loop is busy is now cut at the bound, and every message is either
// handled or counted as dropped.
TEST(MqttLink, IncomingMessagesWaitingForTheLoopAreBounded) {
  Mosquitto broker;
  TempDir dir;
  MqttProbe probe(broker.port(), "link-test/none");
  LinkRunner runner(broker, dir, 100);
  ASSERT_TRUE(runner.waitConnected());
  runner.onLoop([](MqttLink& link) {
    link.subscribe("link-test/flood", 0);
    return 0;
  });
  // The subscription is in place once a message on it comes back.
  ASSERT_TRUE(waitUntil(
      [&] {
        probe.publish("link-test/flood", "ready", 0);
        return !runner.received().empty();
      },
      10s));
  const std::uint64_t before = linkStat(runner, &gateway::MqttStats::received);
  constexpr std::uint64_t kFlood = 15000;
  std::atomic<bool> released{false};
  // The loop is busy until paho has taken the whole flood.
  runner.post([&] {
    waitUntil([&] { return runner.linkStats().received.load() >= before + kFlood; }, 60s);
    released = true;
  });
  for (std::uint64_t i = 0; i < kFlood; ++i) probe.publish("link-test/flood", "x", 0);
  ASSERT_TRUE(waitUntil([&] { return released.load(); }, 70s));
  std::uint64_t handled = 0;
  std::uint64_t dropped = 0;
  EXPECT_TRUE(waitUntil(
      [&] {
        handled = runner.received().size();
        dropped = linkStat(runner, &gateway::MqttStats::incoming_queue_full);
        return handled + dropped >= linkStat(runner, &gateway::MqttStats::received);
      },
      20s))
      << handled << " handled, " << dropped << " dropped";
  EXPECT_LE(handled, gateway::kMaxIncomingWaiting + 100u)
      << "the bound, plus what came before the flood";
  EXPECT_GE(dropped, kFlood - gateway::kMaxIncomingWaiting);
}

TEST(MqttLink, PahoTracesNothingBelowErrorsWhileALinkRuns) {
  MQTTAsync_setTraceLevel(MQTTASYNC_TRACE_MINIMUM);  // paho's default
  MQTTAsync_setTraceCallback([](enum MQTTASYNC_TRACE_LEVELS level, char*) {
    if (level < MQTTASYNC_TRACE_ERROR) ++g_fine_traces;
  });
  struct Untrace {
    ~Untrace() { MQTTAsync_setTraceCallback(nullptr); }
  } untrace;
  LinkUnderTest t("link-test/trace", 100);
  ASSERT_TRUE(t.runner.waitConnected());
  g_fine_traces = 0;
  for (int i = 0; i < 10; ++i) {
    t.runner.onLoop([i](MqttLink& link) {
      link.publish("link-test/trace", payloadOf(i), 1, false);
      return 0;
    });
  }
  ASSERT_TRUE(t.probe.waitForCount("link-test/trace", 10, 10s));
  EXPECT_EQ(g_fine_traces.load(), 0);
}

// Posts from many threads at once: each task runs once, and one thread's tasks in order
// (a post behind a waiting one does not wake the loop again, but is not lost either).
TEST(EventLoopPost, ConcurrentPostsAllRunInOrderPerThread) {
  EventLoop loop;
  constexpr int kThreads = 4;
  constexpr int kPosts = 20000;
  std::vector<int> last(kThreads, -1);
  std::atomic<int> out_of_order{0};
  std::atomic<int> ran{0};
  std::thread loop_thread([&] { loop.run(); });
  std::vector<std::thread> posters;
  for (int t = 0; t < kThreads; ++t) {
    posters.emplace_back([&, t] {
      for (int i = 0; i < kPosts; ++i) {
        loop.post([&, t, i] {
          if (last[std::size_t(t)] != i - 1) ++out_of_order;
          last[std::size_t(t)] = i;
          ++ran;
        });
      }
    });
  }
  for (auto& p : posters) p.join();
  EXPECT_TRUE(waitUntil([&] { return ran.load() == kThreads * kPosts; }, 10s)) << ran.load();
  loop.stop();
  loop_thread.join();
  EXPECT_EQ(out_of_order.load(), 0);
}

}  // namespace
}  // namespace coap2mqtt::test
