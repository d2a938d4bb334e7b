// The observe state machine (gateway/watch.h) on a fake clock and a fake transport: every
// registration, request, cancel and deregistration is recorded, and the test answers them
// by hand. No sockets, no sleeps.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "gateway/config.h"
#include "gateway/event_loop.h"
#include "gateway/watch.h"
#include "tests/unit/fake_timers.h"

namespace coap2mqtt::gateway {
namespace {

using std::chrono::milliseconds;
using Id = WatchTransport::Id;
using Count = Watch::Count;

class FakeTransport : public WatchTransport {
 public:
  enum class Kind { Observe, Get };
  struct Call {
    Kind kind;
    Id id;  // 0: failed at once
    std::string device;
    std::string path;
    std::optional<milliseconds> timeout;
    Handler handler;
  };

  Id observe(const std::string& device, const std::string& path, Handler handler,
             std::optional<milliseconds> timeout) override {
    return add(Kind::Observe, device, path, std::move(handler), timeout);
  }
  Id get(const std::string& device, const std::string& path, Handler handler) override {
    return add(Kind::Get, device, path, std::move(handler), std::nullopt);
  }
  void cancel(Id id) override { cancelled.push_back(id); }
  void deregister(Id id) override { deregistered.push_back(id); }

  // Calls the handler of `id` (whether or not it has been cancelled: a test decides what
  // the transport delivers).
  void respond(Id id, const CoapResponse& response) {
    Handler handler = call(id).handler;  // a copy: the handler may make new calls
    handler(response, {});
  }
  void fail(Id id, const std::string& error) {
    Handler handler = call(id).handler;
    handler(std::nullopt, error);
  }

  const Call& call(Id id) const {
    for (const auto& c : calls) {
      if (c.id == id && id != 0) return c;
    }
    throw std::out_of_range("no call with id " + std::to_string(id));
  }
  std::size_t count(Kind kind) const {
    std::size_t n = 0;
    for (const auto& c : calls) n += c.kind == kind ? 1 : 0;
    return n;
  }
  const Call& last(Kind kind) const {
    for (auto it = calls.rbegin(); it != calls.rend(); ++it) {
      if (it->kind == kind) return *it;
    }
    throw std::out_of_range("no such call");
  }
  std::size_t timesCancelled(Id id) const {
    return static_cast<std::size_t>(std::count(cancelled.begin(), cancelled.end(), id));
  }

  // The next observe() or get() fails at once: its handler is called before it returns 0.
  std::optional<std::string> fail_at_once;
  std::vector<Call> calls;
  std::vector<Id> cancelled;
  std::vector<Id> deregistered;

 private:
  Id add(Kind kind, const std::string& device, const std::string& path, Handler handler,
         std::optional<milliseconds> timeout) {
    if (fail_at_once) {
      const std::string error = *fail_at_once;
      fail_at_once.reset();
      calls.push_back(Call{kind, 0, device, path, timeout, handler});
      handler(std::nullopt, error);
      return 0;
    }
    const Id id = next_id_++;
    calls.push_back(Call{kind, id, device, path, timeout, std::move(handler)});
    return id;
  }
  Id next_id_ = 101;
};

using Kind = FakeTransport::Kind;

CoapResponse notification(std::uint32_t seq, std::string payload,
                          std::optional<std::uint32_t> max_age = std::nullopt) {
  CoapResponse r;
  r.code = 205;
  r.observe = seq;
  r.max_age = max_age;
  r.content_format = 0;
  r.payload = std::move(payload);
  return r;
}

CoapResponse plain(std::string payload) {  // a 2.05 without Observe
  CoapResponse r;
  r.code = 205;
  r.content_format = 0;
  r.payload = std::move(payload);
  return r;
}

CoapResponse errorResponse(unsigned code) {
  CoapResponse r;
  r.code = code;
  return r;
}

// With the settings below: min(30 s, ceil(2 s * 1.5 * 1.5) + 500 ms).
constexpr milliseconds kReregisterTimeout{5000};
// ceil(ack_timeout * ack_random_factor) + 1 s.
constexpr milliseconds kMinSilence{4000};
constexpr milliseconds kRetry{7000};
constexpr milliseconds kDefaultPoll{30000};

class WatchTest : public ::testing::Test {
 protected:
  WatchTest() { settings.retry_interval = kRetry; }

  std::unique_ptr<Watch> make(bridge::Mode mode = bridge::Mode::Observe,
                              milliseconds interval = milliseconds(0)) {
    bridge::Watch plan;
    plan.device = "node1";
    plan.path = "/temp";
    plan.mode = mode;
    plan.interval = interval;
    plan.rules = {0};
    Watch::Listener listener;
    listener.heard = [this] { ++heard; };
    listener.value = [this](const CoapResponse& r) {
      values.push_back(r.payload);
      if (on_value) on_value();
    };
    listener.counted = [this](Count c) {
      ++counts[c];
      if (on_count) on_count(c);
    };
    return std::make_unique<Watch>(plan, transport, timers, settings, listener);
  }

  // Starts `w` and answers its registration with seq 1 "v1", then notifies seq 2.."vN"
  // every `gap`: a steady pace of `gap`. Returns the registration.
  Id establish(Watch& w, milliseconds gap, std::uint32_t n,
               std::optional<std::uint32_t> max_age = std::nullopt) {
    w.start();
    const Id id = transport.last(Kind::Observe).id;
    transport.respond(id, notification(1, "v1", max_age));
    for (std::uint32_t seq = 2; seq <= n; ++seq) {
      timers.advance(gap);
      transport.respond(id, notification(seq, "v" + std::to_string(seq), max_age));
    }
    return id;
  }

  // establish() at a 2 s pace (v1..v5), then 8 s of silence: re-registered.
  // Returns {the quiet registration, the new one}.
  std::pair<Id, Id> goQuiet(Watch& w) {
    const Id old_id = establish(w, milliseconds(2000), 5);
    timers.advance(milliseconds(8000));
    EXPECT_EQ(transport.count(Kind::Observe), 2u);
    return {old_id, transport.last(Kind::Observe).id};
  }

  int count(Count c) const {
    auto it = counts.find(c);
    return it == counts.end() ? 0 : it->second;
  }

  WatchSettings settings;
  FakeTimers timers;
  FakeTransport transport;
  std::vector<std::string> values;
  std::map<Count, int> counts;
  int heard = 0;
  std::function<void()> on_value;       // after a value is recorded
  std::function<void(Count)> on_count;  // after a count is recorded
};

TEST(WatchFakeTimers, FiresInDeadlineOrderWithItsOwnNowAndTimersArmedWhileFiring) {
  FakeTimers t;
  const auto t0 = t.now();
  std::vector<std::pair<int, milliseconds>> fired;
  auto at = [&](int tag) {
    fired.emplace_back(tag, std::chrono::duration_cast<milliseconds>(t.now() - t0));
  };
  t.runAfter(milliseconds(30), [&] { at(3); });
  const auto cancelled = t.runAfter(milliseconds(25), [&] { at(99); });
  t.runAfter(milliseconds(10), [&] {
    at(1);
    t.cancel(cancelled);
    t.runAfter(milliseconds(5), [&] { at(2); });    // due at 15: within this advance
    t.runAfter(milliseconds(100), [&] { at(4); });  // due at 110: not yet
    t.runAfter(milliseconds(0), [&] { at(10); });   // due at once, after 1
  });
  t.advance(milliseconds(50));
  const std::vector<std::pair<int, milliseconds>> want{
      {1, milliseconds(10)}, {10, milliseconds(10)}, {2, milliseconds(15)}, {3, milliseconds(30)}};
  EXPECT_EQ(fired, want);
  EXPECT_EQ(t.now() - t0, milliseconds(50));
  EXPECT_EQ(t.pending(), 1u);
  EXPECT_EQ(t.nextIn(), milliseconds(60));
}

TEST(WatchEventLoop, IsTimersOnTheSteadyClock) {
  EventLoop loop;
  Timers& timers = loop;
  const auto before = std::chrono::steady_clock::now();
  const auto now = timers.now();
  EXPECT_GE(now, before);
  EXPECT_LE(now, std::chrono::steady_clock::now());
  const auto id = timers.runAfter(milliseconds(1000), [] {});
  EXPECT_NE(id, 0u);
  timers.cancel(id);
  timers.cancel(id);  // twice: ignored
}

TEST_F(WatchTest, SettingsComeFromTheCoapConfig) {
  CoapConfig coap;
  coap.retry_interval = milliseconds(1234);
  coap.request_timeout = milliseconds(4321);
  coap.ack_timeout = milliseconds(777);
  coap.ack_random_factor = 1.25;
  const auto s = WatchSettings::from(coap);
  EXPECT_EQ(s.retry_interval, milliseconds(1234));
  EXPECT_EQ(s.request_timeout, milliseconds(4321));
  EXPECT_EQ(s.ack_timeout, milliseconds(777));
  EXPECT_EQ(s.ack_random_factor, 1.25);
  EXPECT_EQ(s.default_poll_interval, kDefaultPoll);
}

TEST_F(WatchTest, RegistrationAnswerAndNotificationsAreEmittedInOrder) {
  auto w = make();
  w->start();
  ASSERT_EQ(transport.calls.size(), 1u);
  const auto& reg = transport.calls[0];
  EXPECT_EQ(reg.kind, Kind::Observe);
  EXPECT_EQ(reg.device, "node1");
  EXPECT_EQ(reg.path, "/temp");
  EXPECT_EQ(reg.timeout, std::nullopt);  // a first registration waits request_timeout
  EXPECT_TRUE(w->observing());
  EXPECT_TRUE(values.empty());

  transport.respond(reg.id, notification(7, "20.5"));
  transport.respond(reg.id, notification(8, "20.6"));
  transport.respond(reg.id, notification(9, "20.7"));
  EXPECT_EQ(values, (std::vector<std::string>{"20.5", "20.6", "20.7"}));
  EXPECT_EQ(count(Count::Notification), 3);
  EXPECT_EQ(count(Count::Stale), 0);
  EXPECT_EQ(heard, 3);
  EXPECT_TRUE(transport.cancelled.empty());
  EXPECT_EQ(w->mode(), bridge::Mode::Observe);
  // The same value again is a new notification and published (only a re-registration's
  // answer is compared with the last value).
  transport.respond(reg.id, notification(10, "20.7"));
  EXPECT_EQ(values.size(), 4u);
}

TEST_F(WatchTest, StaleAndReorderedNotificationsAreDroppedAndCounted) {
  auto w = make();
  w->start();
  const Id id = transport.last(Kind::Observe).id;
  transport.respond(id, notification(10, "a"));
  transport.respond(id, notification(12, "c"));
  transport.respond(id, notification(11, "b"));  // reordered: older than 12
  transport.respond(id, notification(12, "c"));  // duplicate
  transport.respond(id, notification(13, "d"));
  EXPECT_EQ(values, (std::vector<std::string>{"a", "c", "d"}));
  EXPECT_EQ(count(Count::Stale), 2);
  EXPECT_EQ(count(Count::Notification), 3);
  EXPECT_EQ(heard, 5);  // a stale notification is still the device speaking
}

TEST_F(WatchTest, SequenceWrapsAt24Bits) {
  auto w = make();
  w->start();
  const Id id = transport.last(Kind::Observe).id;
  transport.respond(id, notification(0xFFFFFE, "a"));
  transport.respond(id, notification(0xFFFFFF, "b"));
  transport.respond(id, notification(0, "c"));         // wrapped: newer
  transport.respond(id, notification(0xFFFFFF, "x"));  // before the wrap: stale
  transport.respond(id, notification(1, "d"));
  transport.respond(id, notification((1u << 23) + 1, "y"));  // exactly 2^23 ahead: not fresh
  EXPECT_EQ(values, (std::vector<std::string>{"a", "b", "c", "d"}));
  EXPECT_EQ(count(Count::Stale), 2);
}

TEST_F(WatchTest, SilenceAfterASteadyPaceReregistersAndKeepsTheQuietRegistration) {
  auto w = make();
  const Id old_id = establish(*w, milliseconds(2000), 5);  // pace 2 s: wait 4 x 2 s
  EXPECT_EQ(values.size(), 5u);
  timers.advance(milliseconds(7999));
  EXPECT_EQ(transport.count(Kind::Observe), 1u);
  EXPECT_EQ(count(Count::Reregistration), 0);
  timers.advance(milliseconds(1));
  ASSERT_EQ(transport.count(Kind::Observe), 2u);
  const auto& again = transport.last(Kind::Observe);
  EXPECT_NE(again.id, old_id);
  EXPECT_EQ(again.path, "/temp");
  EXPECT_EQ(again.timeout, kReregisterTimeout);
  EXPECT_EQ(count(Count::Reregistration), 1);
  // The quiet registration is neither cancelled nor deregistered yet.
  EXPECT_TRUE(transport.cancelled.empty());
  EXPECT_TRUE(transport.deregistered.empty());
  EXPECT_TRUE(w->observing());
}

// A notification moves the silence deadline without a timer of its own: the armed timer,
// when it fires, waits for the rest. 100 notifications 2 s apart arm a few dozen timers, not
// 100, and the deadline is still the last notification's plus the 8 s of silence allowed.
TEST_F(WatchTest, NotificationsMoveTheSilenceDeadlineWithoutATimerEach) {
  auto w = make();
  const Id id = establish(*w, milliseconds(2000), 5);  // pace 2 s: wait 4 x 2 s
  const std::size_t before = timers.made();
  for (std::uint32_t seq = 6; seq < 106; ++seq) {
    timers.advance(milliseconds(2000));
    transport.respond(id, notification(seq, "v" + std::to_string(seq)));
  }
  EXPECT_EQ(values.size(), 105u);
  // A firing timer waits for the rest, 8 s after the last notification, which came at most
  // 2 s before: one timer per 6 s at most (it was one per notification, 100).
  EXPECT_LE(timers.made() - before, 200u / 6u + 2u);
  timers.advance(milliseconds(7999));
  EXPECT_EQ(transport.count(Kind::Observe), 1u);
  timers.advance(milliseconds(1));
  EXPECT_EQ(transport.count(Kind::Observe), 2u);
  EXPECT_EQ(count(Count::Reregistration), 1);
}

TEST_F(WatchTest, SilenceIsNeverShorterThanTheFirstRetransmission) {
  auto w = make();
  establish(*w, milliseconds(500), 6);  // 4 x 500 ms = 2 s < 4 s
  timers.advance(kMinSilence - milliseconds(1));
  EXPECT_EQ(transport.count(Kind::Observe), 1u);
  timers.advance(milliseconds(1));
  EXPECT_EQ(transport.count(Kind::Observe), 2u);
}

TEST_F(WatchTest, MaxAgeCapsTheSilenceOfASlowPace) {
  auto w = make();
  establish(*w, milliseconds(20000), 3, 30);  // 4 x 20 s = 80 s > Max-Age 30 s + 2 s
  timers.advance(milliseconds(31999));
  EXPECT_EQ(transport.count(Kind::Observe), 1u);
  timers.advance(milliseconds(1));
  EXPECT_EQ(transport.count(Kind::Observe), 2u);
}

TEST_F(WatchTest, ReregistrationTimeoutIsCappedByTheRequestTimeout) {
  settings.request_timeout = milliseconds(3000);
  auto w = make();
  goQuiet(*w);
  EXPECT_EQ(transport.last(Kind::Observe).timeout, milliseconds(3000));
}

// The quiet registration's notification may come after the re-registration was sent: it
// left the device before the new registration arrived there, and a device that got the new
// one has replaced the quiet one with it (RFC 7641 §4.1; libcoap's coap_add_observer keys
// them by session and request, not by token). Its value is published, but the new
// registration stays the one awaited: given up, its answer would be reset and the device
// would end it too, leaving nothing until the next silence (issue 17: a flood run under
// ASan lost 3.5 s of values between two silence re-registrations 4 s apart).
TEST_F(WatchTest, QuietRegistrationSpeakingFirstIsPublishedAndTheNewOneStaysAwaited) {
  auto w = make();
  const auto [old_id, new_id] = goQuiet(*w);
  transport.respond(old_id, notification(6, "v6"));
  EXPECT_EQ(values.back(), "v6");
  EXPECT_EQ(transport.timesCancelled(new_id), 0u);
  EXPECT_EQ(transport.timesCancelled(old_id), 0u);
  EXPECT_TRUE(w->observing());
  // Its sequence goes on while the new one is awaited: an older number is stale, the same
  // value again is a notification (published), not a re-registration's answer.
  transport.respond(old_id, notification(4, "old"));
  EXPECT_EQ(count(Count::Stale), 1);
  transport.respond(old_id, notification(7, "v6"));
  EXPECT_EQ(values.size(), 7u);
  // The new registration answers with the value published already: current, not repeated;
  // the quiet one is given up now.
  timers.advance(milliseconds(1000));
  transport.respond(new_id, notification(8, "v6"));
  EXPECT_EQ(values.size(), 7u);
  EXPECT_EQ(transport.timesCancelled(old_id), 1u);
  EXPECT_EQ(transport.timesCancelled(new_id), 0u);
  transport.respond(new_id, notification(9, "v9"));
  EXPECT_EQ(values.back(), "v9");
  transport.respond(old_id, notification(10, "late"));  // delivered anyway: not its any more
  EXPECT_EQ(values.back(), "v9");
  EXPECT_EQ(transport.timesCancelled(old_id), 2u);
  EXPECT_EQ(transport.count(Kind::Observe), 2u);
}

// ... and when the new registration gets no answer after all, the quiet one (which spoke
// meanwhile) stays: it is alive when the new registration never reached the device.
TEST_F(WatchTest, QuietRegistrationThatSpokeStaysWhenTheNewOneFails) {
  auto w = make();
  const auto [old_id, new_id] = goQuiet(*w);
  transport.respond(old_id, notification(6, "v6"));
  transport.fail(new_id, "timeout");
  EXPECT_TRUE(w->observing());
  EXPECT_EQ(transport.timesCancelled(old_id), 0u);
  EXPECT_EQ(count(Count::Failure), 0);
  transport.respond(old_id, notification(7, "v7"));
  EXPECT_EQ(values.back(), "v7");
  // Still watched for silence (by Max-Age at the latest, 60 s + 2 s): the next silence
  // re-registers again, and the new registration is a re-registration again.
  timers.advance(milliseconds(62000));
  EXPECT_EQ(transport.count(Kind::Observe), 3u);
  EXPECT_EQ(transport.last(Kind::Observe).timeout, kReregisterTimeout);
}

TEST_F(WatchTest, ReregistrationAnsweringFirstCancelsTheQuietOneAndSkipsTheRepeatedValue) {
  auto w = make();
  const auto [old_id, new_id] = goQuiet(*w);
  ASSERT_EQ(values.back(), "v5");
  const auto published = values.size();
  transport.respond(new_id, notification(1, "v5"));  // the value we have already
  EXPECT_EQ(values.size(), published);
  EXPECT_EQ(transport.timesCancelled(old_id), 1u);
  EXPECT_TRUE(transport.deregistered.empty());
  EXPECT_EQ(count(Count::Notification), 6);          // counted, though not published
  transport.respond(new_id, notification(2, "v5"));  // a notification: published
  EXPECT_EQ(values.size(), published + 1);
  transport.respond(new_id, notification(3, "v6"));
  EXPECT_EQ(values.back(), "v6");
}

TEST_F(WatchTest, ReregistrationAnsweringWithANewValuePublishesIt) {
  auto w = make();
  const auto [old_id, new_id] = goQuiet(*w);
  transport.respond(new_id, notification(1, "v9"));
  EXPECT_EQ(values.back(), "v9");
  EXPECT_EQ(values.size(), 6u);
  EXPECT_EQ(transport.timesCancelled(old_id), 1u);
}

TEST_F(WatchTest, QuietRegistrationComingBackAfterTheNewOneAnsweredIsIgnored) {
  auto w = make();
  const auto [old_id, new_id] = goQuiet(*w);
  transport.respond(new_id, notification(1, "v6"));
  ASSERT_EQ(transport.timesCancelled(old_id), 1u);
  const auto published = values;
  transport.respond(old_id, notification(6, "late"));  // delivered anyway
  EXPECT_EQ(values, published);
  EXPECT_EQ(transport.timesCancelled(old_id), 2u);
  EXPECT_EQ(count(Count::Stale), 0);
  transport.respond(new_id, notification(2, "v7"));  // the new one stays current
  EXPECT_EQ(values.back(), "v7");
  transport.fail(old_id, "RST");  // its failure is not the watch's either
  EXPECT_EQ(count(Count::Failure), 0);
  EXPECT_TRUE(w->observing());
}

TEST_F(WatchTest, ANewRegistrationStartsANewSequence) {
  auto w = make();
  w->start();
  const Id first = transport.last(Kind::Observe).id;
  transport.respond(first, notification(5000, "a"));
  transport.respond(first, notification(5001, "b"));
  transport.fail(first, "RST");  // e.g. the device rebooted and reset a notification
  EXPECT_EQ(count(Count::Failure), 1);
  // It was delivering: registered again at once (see
  // ADeliveringObservationEndedByASessionResetIsRegisteredAgainAtOnce).
  ASSERT_EQ(transport.count(Kind::Observe), 2u);
  const Id second = transport.last(Kind::Observe).id;
  transport.respond(second, notification(3, "c"));  // far "behind" 5001: a new sequence
  transport.respond(second, notification(4, "d"));
  EXPECT_EQ(values, (std::vector<std::string>{"a", "b", "c", "d"}));
  EXPECT_EQ(count(Count::Stale), 0);
}

TEST_F(WatchTest, RebootSeenByAReregistrationStartsANewSequence) {
  auto w = make();
  const auto [old_id, new_id] = goQuiet(*w);
  // The old sequence was at 5; the rebooted device starts again at 1 (and 1 is within
  // 2^23 behind 5: stale under the old reference).
  transport.respond(new_id, notification(1, "r1"));
  transport.respond(new_id, notification(2, "r2"));
  EXPECT_EQ(values.back(), "r2");
  EXPECT_EQ(count(Count::Stale), 0);
}

TEST_F(WatchTest, ErrorAnswerToAReregistrationRestoresTheQuietOne) {
  auto w = make();
  const auto [old_id, new_id] = goQuiet(*w);
  transport.respond(new_id, errorResponse(404));
  EXPECT_TRUE(w->observing());
  EXPECT_EQ(transport.timesCancelled(old_id), 0u);
  EXPECT_EQ(count(Count::Failure), 0);
  EXPECT_EQ(transport.count(Kind::Observe), 2u);  // no new attempt
  transport.respond(old_id, notification(6, "v6"));
  EXPECT_EQ(values.back(), "v6");
  // Watched for silence again.
  timers.advance(milliseconds(8000));
  EXPECT_EQ(transport.count(Kind::Observe), 3u);
}

TEST_F(WatchTest, NoAnswerToAReregistrationRestoresTheQuietOneToo) {
  auto w = make();
  const auto [old_id, new_id] = goQuiet(*w);
  transport.fail(new_id, "timeout");
  EXPECT_TRUE(w->observing());
  EXPECT_EQ(transport.timesCancelled(old_id), 0u);
  // Silence armed from the restore (pace 2 s): 8 s later it tries again.
  timers.advance(milliseconds(7999));
  EXPECT_EQ(transport.count(Kind::Observe), 2u);
  timers.advance(milliseconds(1));
  EXPECT_EQ(transport.count(Kind::Observe), 3u);
  EXPECT_EQ(count(Count::Reregistration), 2);
}

TEST_F(WatchTest, ErrorAnswerToAReregistrationWithNoneKeptBacksOff) {
  auto w = make();
  const auto [old_id, new_id] = goQuiet(*w);
  transport.fail(old_id, "session reset");  // the quiet one is gone
  EXPECT_EQ(count(Count::Failure), 0);
  transport.respond(new_id, errorResponse(404));
  EXPECT_EQ(count(Count::Failure), 1);
  EXPECT_FALSE(w->observing());
  EXPECT_EQ(transport.count(Kind::Observe), 2u);  // not at once
  timers.advance(kRetry - milliseconds(1));
  EXPECT_EQ(transport.count(Kind::Observe), 2u);
  timers.advance(milliseconds(1));
  ASSERT_EQ(transport.count(Kind::Observe), 3u);
  EXPECT_EQ(transport.last(Kind::Observe).timeout, std::nullopt);
  // Its answer is published even when it repeats the last value: the error ended the
  // re-registration.
  transport.respond(transport.last(Kind::Observe).id, notification(1, "v5"));
  EXPECT_EQ(values.size(), 6u);
}

TEST_F(WatchTest, UnansweredReregistrationWithNoneKeptIsRetriedAtOnceOnceThenBacksOff) {
  auto w = make();
  const auto [old_id, new_id] = goQuiet(*w);
  transport.fail(old_id, "session reset");
  transport.fail(new_id, "timeout");
  EXPECT_EQ(count(Count::Failure), 1);
  ASSERT_EQ(transport.count(Kind::Observe), 3u);  // at once
  const auto& third = transport.last(Kind::Observe);
  EXPECT_EQ(third.timeout, kReregisterTimeout);
  EXPECT_TRUE(w->observing());
  const Id third_id = third.id;
  transport.fail(third_id, "timeout");
  EXPECT_EQ(count(Count::Failure), 2);
  EXPECT_EQ(transport.count(Kind::Observe), 3u);  // not at once again
  EXPECT_FALSE(w->observing());
  timers.advance(kRetry - milliseconds(1));
  EXPECT_EQ(transport.count(Kind::Observe), 3u);
  timers.advance(milliseconds(1));
  ASSERT_EQ(transport.count(Kind::Observe), 4u);
  // Still a re-registration: its answer repeating the last value is not published.
  transport.respond(transport.last(Kind::Observe).id, notification(1, "v5"));
  EXPECT_EQ(values.size(), 5u);
  EXPECT_EQ(count(Count::Notification), 6);
}

// The same session reset in the other order: CoapLink::resetSession fails every exchange
// of the device in no particular order (an unordered map of tokens). When the
// re-registration's failure comes first, the quiet registration is restored, and then its
// own failure (the same reset) came next: that ended in a retry after retry_interval,
// where the order above retries at once. Under ASan the flood test's device lost its
// values for 4 s + 5 s + 15 s that way.
TEST_F(WatchTest, UnansweredReregistrationThenTheQuietOneFailingIsRetriedAtOnceToo) {
  auto w = make();
  const auto [old_id, new_id] = goQuiet(*w);
  transport.fail(new_id, "timeout");  // the quiet one is restored...
  EXPECT_TRUE(w->observing());
  EXPECT_EQ(count(Count::Failure), 0);
  transport.fail(old_id, "timeout");  // ...and gone with the same session
  EXPECT_EQ(count(Count::Failure), 1);
  ASSERT_EQ(transport.count(Kind::Observe), 3u);  // at once, not after kRetry
  const auto& third = transport.last(Kind::Observe);
  EXPECT_EQ(third.timeout, kReregisterTimeout);
  EXPECT_TRUE(w->observing());
  // Still a re-registration: its answer repeating the last value is not published again.
  const Id third_id = third.id;
  transport.respond(third_id, notification(1, "v5"));
  EXPECT_EQ(values.size(), 5u);
  transport.respond(third_id, notification(2, "v6"));
  EXPECT_EQ(values.back(), "v6");
  EXPECT_EQ(count(Count::Stale), 0);
}

// Only once: the at-once retry failing too backs off, as in the other order.
TEST_F(WatchTest, TheAtOnceRetryAfterARestoredQuietOneFailedBacksOff) {
  auto w = make();
  const auto [old_id, new_id] = goQuiet(*w);
  transport.fail(new_id, "timeout");
  transport.fail(old_id, "timeout");
  ASSERT_EQ(transport.count(Kind::Observe), 3u);
  transport.fail(transport.last(Kind::Observe).id, "timeout");
  EXPECT_EQ(count(Count::Failure), 2);
  EXPECT_FALSE(w->observing());
  timers.advance(kRetry - milliseconds(1));
  EXPECT_EQ(transport.count(Kind::Observe), 3u);
  timers.advance(milliseconds(1));
  EXPECT_EQ(transport.count(Kind::Observe), 4u);
}

// Issue 17's flood under ASan: a command to the device timed out (request_timeout, 10 s),
// CoapLink renewed the device's session and failed every exchange on it, the healthy
// observation among them. It was retried after retry_interval (15 s), while the device
// went on notifying the old session's socket: 25 s of values lost. An observation that
// was delivering is registered again at once, on the fresh session (once: a second
// failure is the usual back-off).
TEST_F(WatchTest, ADeliveringObservationEndedByASessionResetIsRegisteredAgainAtOnce) {
  auto w = make();
  const Id first = establish(*w, milliseconds(500), 6);  // v1..v6, not silent
  timers.advance(milliseconds(300));
  transport.fail(first, "timeout");  // another exchange's timeout renewed the session
  EXPECT_EQ(count(Count::Failure), 1);
  ASSERT_EQ(transport.count(Kind::Observe), 2u);  // at once, not after kRetry
  const auto& again = transport.last(Kind::Observe);
  EXPECT_EQ(again.timeout, kReregisterTimeout);
  EXPECT_TRUE(w->observing());
  const Id second = again.id;
  // Its answer repeating the value published last is not published twice; the next is.
  transport.respond(second, notification(1, "v6"));
  EXPECT_EQ(values.size(), 6u);
  transport.respond(second, notification(2, "v7"));
  EXPECT_EQ(values.back(), "v7");
  EXPECT_EQ(count(Count::Stale), 0);
  // Delivering again: the next reset is registered again at once too.
  transport.fail(second, "ICMP error");
  EXPECT_EQ(transport.count(Kind::Observe), 3u);
}

TEST_F(WatchTest, ASessionResetOfADeliveringObservationRetriedAtOnceThenBacksOff) {
  auto w = make();
  const Id first = establish(*w, milliseconds(500), 6);
  transport.fail(first, "timeout");
  ASSERT_EQ(transport.count(Kind::Observe), 2u);
  transport.fail(transport.last(Kind::Observe).id, "timeout");  // the device is gone
  EXPECT_EQ(count(Count::Failure), 2);
  EXPECT_FALSE(w->observing());
  timers.advance(kRetry - milliseconds(1));
  EXPECT_EQ(transport.count(Kind::Observe), 2u);
  timers.advance(milliseconds(1));
  EXPECT_EQ(transport.count(Kind::Observe), 3u);
}

// An error answer (a notification with 4.04: the resource is gone) is the device's word,
// not a lost session: the usual back-off.
TEST_F(WatchTest, ADeliveringObservationEndedByAnErrorNotificationBacksOff) {
  auto w = make();
  const Id first = establish(*w, milliseconds(500), 6);
  transport.respond(first, errorResponse(404));
  EXPECT_EQ(count(Count::Failure), 1);
  EXPECT_FALSE(w->observing());
  EXPECT_EQ(transport.count(Kind::Observe), 1u);
  timers.advance(kRetry);
  EXPECT_EQ(transport.count(Kind::Observe), 2u);
}

TEST_F(WatchTest, AFailedFirstRegistrationIsRetriedAfterTheInterval) {
  auto w = make();
  w->start();
  transport.fail(transport.last(Kind::Observe).id, "timeout");
  EXPECT_EQ(count(Count::Failure), 1);
  EXPECT_EQ(transport.count(Kind::Observe), 1u);
  timers.advance(kRetry - milliseconds(1));
  EXPECT_EQ(transport.count(Kind::Observe), 1u);
  timers.advance(milliseconds(1));
  EXPECT_EQ(transport.count(Kind::Observe), 2u);
  EXPECT_EQ(transport.last(Kind::Observe).timeout, std::nullopt);
}

TEST_F(WatchTest, AnImmediateFailureIsTheCurrentRegistration) {
  auto w = make();
  transport.fail_at_once = "no session";
  w->start();  // the handler ran inside observe(), with id 0
  EXPECT_EQ(count(Count::Failure), 1);
  EXPECT_FALSE(w->observing());
  EXPECT_EQ(heard, 0);
  timers.advance(kRetry);
  ASSERT_EQ(transport.count(Kind::Observe), 2u);
  transport.respond(transport.last(Kind::Observe).id, notification(1, "ok"));
  EXPECT_EQ(values, std::vector<std::string>{"ok"});
}

TEST_F(WatchTest, AnImmediateFailureOfAReregistrationRestoresTheQuietOne) {
  auto w = make();
  establish(*w, milliseconds(2000), 5);
  const Id old_id = transport.last(Kind::Observe).id;
  transport.fail_at_once = "no session";
  timers.advance(milliseconds(8000));
  EXPECT_EQ(transport.count(Kind::Observe), 2u);
  EXPECT_TRUE(w->observing());
  transport.respond(old_id, notification(6, "v6"));
  EXPECT_EQ(values.back(), "v6");
  EXPECT_TRUE(transport.cancelled.empty());
}

TEST_F(WatchTest, ImmediateFailureOfTheAtOnceRetryBacksOff) {
  auto w = make();
  const auto [old_id, new_id] = goQuiet(*w);
  transport.fail(old_id, "session reset");
  transport.fail_at_once = "no session";
  transport.fail(new_id, "timeout");  // retried at once, which fails at once
  EXPECT_EQ(transport.count(Kind::Observe), 3u);
  EXPECT_EQ(count(Count::Failure), 2);
  EXPECT_FALSE(w->observing());
  timers.advance(kRetry);
  EXPECT_EQ(transport.count(Kind::Observe), 4u);
  EXPECT_TRUE(w->observing());
}

TEST_F(WatchTest, MaxAgeWithoutAPaceAndTheRegistrationAnswerIsNoPace) {
  auto w = make();
  w->start();
  const Id id = transport.last(Kind::Observe).id;
  transport.respond(id, notification(1, "a", 10));  // the answer: not a notification
  timers.advance(milliseconds(1000));
  transport.respond(id, notification(2, "b", 10));  // one notification: no pace yet
  // Had the answer counted, the pace would be 1 s and the wait max(4 s, 4 s).
  timers.advance(milliseconds(11999));  // Max-Age 10 s + 2 s
  EXPECT_EQ(transport.count(Kind::Observe), 1u);
  timers.advance(milliseconds(1));
  EXPECT_EQ(transport.count(Kind::Observe), 2u);
  EXPECT_EQ(count(Count::Reregistration), 1);
}

TEST_F(WatchTest, MaxAgeDefaultsTo60s) {
  auto w = make();
  w->start();
  transport.respond(transport.last(Kind::Observe).id, notification(1, "a"));
  timers.advance(milliseconds(61999));
  EXPECT_EQ(transport.count(Kind::Observe), 1u);
  timers.advance(milliseconds(1));
  EXPECT_EQ(transport.count(Kind::Observe), 2u);
}

TEST_F(WatchTest, AnswerWithoutObserveSwitchesToPollingAtTheDefaultInterval) {
  auto w = make();
  w->start();
  transport.respond(transport.last(Kind::Observe).id, plain("p1"));
  EXPECT_EQ(values, std::vector<std::string>{"p1"});
  EXPECT_EQ(w->mode(), bridge::Mode::Poll);
  EXPECT_EQ(w->plan().interval, kDefaultPoll);
  EXPECT_FALSE(w->observing());
  EXPECT_EQ(count(Count::Notification), 0);
  timers.advance(kDefaultPoll - milliseconds(1));
  EXPECT_EQ(transport.count(Kind::Get), 0u);
  timers.advance(milliseconds(1));
  ASSERT_EQ(transport.count(Kind::Get), 1u);
  EXPECT_EQ(transport.last(Kind::Get).path, "/temp");
  transport.respond(transport.last(Kind::Get).id, plain("p2"));
  EXPECT_EQ(values.back(), "p2");
  // A failed poll: nothing published, polled again after the interval.
  timers.advance(kDefaultPoll);
  ASSERT_EQ(transport.count(Kind::Get), 2u);
  transport.fail(transport.last(Kind::Get).id, "timeout");
  timers.advance(kDefaultPoll);
  ASSERT_EQ(transport.count(Kind::Get), 3u);
  transport.respond(transport.last(Kind::Get).id, errorResponse(503));
  EXPECT_EQ(values.size(), 2u);
  timers.advance(kDefaultPoll);
  ASSERT_EQ(transport.count(Kind::Get), 4u);
  transport.respond(transport.last(Kind::Get).id, plain("p3"));
  EXPECT_EQ(values, (std::vector<std::string>{"p1", "p2", "p3"}));
  EXPECT_EQ(transport.count(Kind::Observe), 1u);
}

TEST_F(WatchTest, AnswerWithoutObservePollsAtThePlansInterval) {
  auto w = make(bridge::Mode::Observe, milliseconds(10000));
  w->start();
  transport.respond(transport.last(Kind::Observe).id, plain("p1"));
  EXPECT_EQ(w->plan().interval, milliseconds(10000));
  timers.advance(milliseconds(10000));
  EXPECT_EQ(transport.count(Kind::Get), 1u);
}

TEST_F(WatchTest, PollModePollsAtOnceThenEveryInterval) {
  auto w = make(bridge::Mode::Poll, milliseconds(5000));
  w->start();
  ASSERT_EQ(transport.count(Kind::Get), 1u);
  EXPECT_EQ(transport.count(Kind::Observe), 0u);
  transport.respond(transport.last(Kind::Get).id, plain("a"));
  EXPECT_EQ(values, std::vector<std::string>{"a"});
  EXPECT_EQ(heard, 1);
  timers.advance(milliseconds(4999));
  EXPECT_EQ(transport.count(Kind::Get), 1u);
  timers.advance(milliseconds(1));
  EXPECT_EQ(transport.count(Kind::Get), 2u);
  // An immediate failure (handler called inside get()) keeps polling too.
  transport.fail(transport.last(Kind::Get).id, "x");
  transport.fail_at_once = "no session";
  timers.advance(milliseconds(5000));
  EXPECT_EQ(transport.count(Kind::Get), 3u);
  timers.advance(milliseconds(5000));
  EXPECT_EQ(transport.count(Kind::Get), 4u);
}

// A device with one observer slot, still held by the quiet registration, refuses another
// observer by answering without Observe (RFC 7641 §4.1). gateway.cpp then polled *and*
// kept the quiet registration, which became current again at its next notification.
TEST_F(WatchTest, ReregistrationAnsweredWithoutObserveDropsTheQuietOne) {
  auto w = make();
  const auto [old_id, new_id] = goQuiet(*w);
  transport.respond(new_id, plain("p"));
  EXPECT_EQ(w->mode(), bridge::Mode::Poll);
  EXPECT_EQ(transport.timesCancelled(old_id), 1u);
  EXPECT_FALSE(w->observing());
  transport.respond(old_id, notification(6, "v6"));  // delivered anyway
  EXPECT_FALSE(w->observing());
  EXPECT_EQ(values.back(), "p");
  timers.advance(kDefaultPoll);
  EXPECT_EQ(transport.count(Kind::Get), 1u);
  EXPECT_EQ(transport.count(Kind::Observe), 2u);
}

TEST_F(WatchTest, StopDeregisters) {
  auto w = make();
  w->start();
  const Id id = transport.last(Kind::Observe).id;
  transport.respond(id, notification(1, "a"));
  w->stop(true);
  EXPECT_EQ(transport.deregistered, std::vector<Id>{id});
  EXPECT_TRUE(transport.cancelled.empty());
  EXPECT_FALSE(w->observing());
  EXPECT_EQ(timers.pending(), 0u);  // no silence timer left
  w.reset();                        // the destructor's stop(false) has nothing to do
  EXPECT_TRUE(transport.cancelled.empty());
}

TEST_F(WatchTest, StopWithoutDeregisterOnlyCancels) {
  auto w = make();
  w->start();
  const Id id = transport.last(Kind::Observe).id;
  transport.respond(id, notification(1, "a"));
  w->stop(false);
  EXPECT_TRUE(transport.deregistered.empty());
  EXPECT_EQ(transport.cancelled, std::vector<Id>{id});
  EXPECT_EQ(timers.pending(), 0u);
}

TEST_F(WatchTest, StopWhileReregisteringDeregistersTheNewAndCancelsTheQuietOne) {
  auto w = make();
  const auto [old_id, new_id] = goQuiet(*w);
  w->stop();
  EXPECT_EQ(transport.deregistered, std::vector<Id>{new_id});
  EXPECT_EQ(transport.cancelled, std::vector<Id>{old_id});
}

TEST_F(WatchTest, StopCancelsAPollAndItsTimer) {
  auto w = make(bridge::Mode::Poll, milliseconds(5000));
  w->start();
  const Id get = transport.last(Kind::Get).id;
  w->stop();
  EXPECT_EQ(transport.cancelled, std::vector<Id>{get});
  transport.respond(get, plain("late"));  // delivered anyway: ignored
  EXPECT_TRUE(values.empty());
  EXPECT_EQ(timers.pending(), 0u);
  timers.advance(milliseconds(60000));
  EXPECT_EQ(transport.count(Kind::Get), 1u);
}

TEST_F(WatchTest, HandlersCalledAfterStopDoNothing) {
  auto w = make();
  w->start();
  const Id id = transport.last(Kind::Observe).id;
  transport.respond(id, notification(1, "a"));
  w->stop();
  const int heard_before = heard;
  transport.respond(id, notification(2, "b"));
  transport.fail(id, "RST");
  EXPECT_EQ(values, std::vector<std::string>{"a"});
  EXPECT_EQ(heard, heard_before);
  EXPECT_EQ(count(Count::Failure), 0);
  EXPECT_EQ(timers.pending(), 0u);
  EXPECT_EQ(transport.count(Kind::Observe), 1u);
}

TEST_F(WatchTest, HandlersCalledAfterDestructionDoNothing) {
  auto w = make();
  w->start();
  const Id id = transport.last(Kind::Observe).id;
  transport.respond(id, notification(1, "a"));
  w.reset();
  EXPECT_EQ(transport.cancelled, std::vector<Id>{id});  // ~Watch: stop(false)
  EXPECT_TRUE(transport.deregistered.empty());
  transport.respond(id, notification(2, "b"));  // under ASan: no use after free
  transport.fail(id, "RST");
  EXPECT_EQ(values, std::vector<std::string>{"a"});
  EXPECT_EQ(count(Count::Failure), 0);

  auto p = make(bridge::Mode::Poll, milliseconds(1000));
  p->start();
  const Id get = transport.last(Kind::Get).id;
  p.reset();
  transport.respond(get, plain("late"));
  EXPECT_EQ(values, std::vector<std::string>{"a"});
  timers.advance(milliseconds(10000));
  EXPECT_EQ(transport.count(Kind::Get), 1u);
}

TEST_F(WatchTest, AListenerMayDestroyTheWatch) {
  auto w = make();
  w->start();
  const Id id = transport.last(Kind::Observe).id;
  on_value = [&] { w.reset(); };
  // Not observable: after publishing this answer the watch would arm its poll timer.
  transport.respond(id, plain("a"));  // under ASan: nothing of the Watch touched after
  EXPECT_EQ(w, nullptr);
  EXPECT_EQ(values, std::vector<std::string>{"a"});
  EXPECT_EQ(timers.pending(), 0u);
  EXPECT_EQ(transport.cancelled, std::vector<Id>{});  // forgotten by the transport already
}

TEST_F(WatchTest, AListenerMayStopTheWatchWhenAFailureIsCounted) {
  auto w = make();
  const auto [old_id, new_id] = goQuiet(*w);
  transport.fail(old_id, "session reset");
  on_count = [&](Count c) {
    if (c == Count::Failure) w->stop(false);
  };
  transport.fail(new_id, "timeout");  // would be retried at once, but it was stopped
  EXPECT_EQ(count(Count::Failure), 1);
  EXPECT_EQ(transport.count(Kind::Observe), 2u);
  EXPECT_EQ(timers.pending(), 0u);
  timers.advance(kRetry);
  EXPECT_EQ(transport.count(Kind::Observe), 2u);
}

TEST_F(WatchTest, ContinueFromDoesNotRepeatTheSameValue) {
  auto old = make();
  establish(*old, milliseconds(2000), 3);
  ASSERT_EQ(values.back(), "v3");
  auto next = make();
  next->continueFrom(*old);
  old->stop(false);
  next->start();
  const auto& reg = transport.last(Kind::Observe);
  EXPECT_EQ(reg.timeout, kReregisterTimeout);  // it was delivering a moment ago
  const Id id = reg.id;
  transport.respond(id, notification(1, "v3"));
  EXPECT_EQ(values.size(), 3u);
  transport.respond(id, notification(2, "v4"));
  EXPECT_EQ(values.back(), "v4");
  EXPECT_EQ(values.size(), 4u);
}

TEST_F(WatchTest, ContinueFromPublishesADifferentValue) {
  auto old = make();
  establish(*old, milliseconds(2000), 3);
  auto next = make();
  next->continueFrom(*old);
  old.reset();
  next->start();
  transport.respond(transport.last(Kind::Observe).id, notification(1, "v4"));
  EXPECT_EQ(values.back(), "v4");
}

TEST_F(WatchTest, ContinueFromAWatchWithoutAValueIsAFreshStart) {
  auto old = make();
  old->start();
  auto next = make();
  next->continueFrom(*old);
  old.reset();
  next->start();
  EXPECT_EQ(transport.last(Kind::Observe).timeout, std::nullopt);
  transport.fail(transport.last(Kind::Observe).id, "timeout");
  EXPECT_EQ(transport.count(Kind::Observe), 2u);  // not at once: it never delivered
}

}  // namespace
}  // namespace coap2mqtt::gateway
