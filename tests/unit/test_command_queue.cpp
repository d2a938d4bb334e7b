// CommandQueue (per-device FIFO, NSTART=1, bound, rate limit, deadline), the command
// result messages, and the admin API message format.
#include <gtest/gtest.h>

#include <map>
#include <nlohmann/json.hpp>

#include "bridge/rules.h"
#include "gateway/admin_api.h"
#include "gateway/command_queue.h"
#include "gateway/commands.h"

namespace coap2mqtt::gateway {
namespace {

using namespace std::chrono_literals;
using Json = nlohmann::json;

// A fake loop: a clock moved by hand, timers fired by advance(), CoAP exchanges recorded
// and answered by the test.
struct FakeIo {
  CommandQueue::TimePoint now{};
  std::uint64_t next_id = 1;
  std::map<std::uint64_t, std::pair<CommandQueue::TimePoint, std::function<void()>>> timers;
  struct Sent {
    std::uint64_t id;
    CommandRequest request;
    CommandQueue::ReplyHandler reply;
  };
  std::vector<Sent> sent;
  std::vector<std::uint64_t> cancelled;
  bool fail_at_once = false;  // send() replies before returning and returns 0

  CommandQueue::Io io() {
    CommandQueue::Io io;
    io.now = [this] { return now; };
    io.send = [this](const CommandRequest& r, CommandQueue::ReplyHandler reply) -> std::uint64_t {
      if (fail_at_once) {
        CommandReply failed;
        failed.error = "unknown device '" + r.device + "'";
        reply(failed);
        return 0;
      }
      sent.push_back({next_id, r, std::move(reply)});
      return next_id++;
    };
    io.cancel = [this](std::uint64_t id) { cancelled.push_back(id); };
    io.runAfter = [this](std::chrono::milliseconds d, std::function<void()> f) {
      timers[next_id] = {now + d, std::move(f)};
      return next_id++;
    };
    io.cancelTimer = [this](std::uint64_t id) { timers.erase(id); };
    return io;
  }

  void advance(std::chrono::milliseconds d) {
    now += d;
    for (;;) {
      auto due = std::find_if(timers.begin(), timers.end(),
                              [&](const auto& t) { return t.second.first <= now; });
      if (due == timers.end()) return;
      auto f = std::move(due->second.second);
      timers.erase(due);
      f();
    }
  }

  void answer(std::size_t index, unsigned code, std::string payload = {}) {
    CommandReply r;
    r.answered = true;
    r.code = code;
    r.payload = std::move(payload);
    auto reply = sent.at(index).reply;
    reply(r);
  }
};

CommandRequest put(const std::string& device, const std::string& payload) {
  return CommandRequest{device, "/actuators/led", bridge::Method::Put, payload, std::nullopt};
}

struct Recorder {
  std::vector<CommandOutcome> outcomes;
  std::vector<std::string> tags;
  CommandQueue::Done done(std::string tag) {
    return [this, tag](const CommandOutcome& o) {
      outcomes.push_back(o);
      tags.push_back(tag);
    };
  }
};

TEST(CommandQueue, OneExchangeAtATimePerDeviceInOrder) {
  FakeIo fake;
  CommandQueue q(fake.io());
  Recorder rec;
  for (int i = 0; i < 5; ++i)
    q.submit(put("a", std::to_string(i)), {}, rec.done(std::to_string(i)));
  ASSERT_EQ(fake.sent.size(), 1u) << "NSTART=1: the second waits for the first";
  EXPECT_EQ(q.waiting("a"), 4u);
  EXPECT_TRUE(q.busy("a"));
  for (std::size_t i = 0; i < 5; ++i) {
    ASSERT_EQ(fake.sent.size(), i + 1);
    EXPECT_EQ(fake.sent[i].request.payload, std::to_string(i));
    fake.advance(3ms);
    fake.answer(i, i == 4 ? 404 : 204);
  }
  ASSERT_EQ(rec.tags, (std::vector<std::string>{"0", "1", "2", "3", "4"}));
  for (const auto& o : rec.outcomes) {
    EXPECT_EQ(o.kind, CommandOutcome::Kind::Answered);
    EXPECT_EQ(o.reply.code, &o == &rec.outcomes.back() ? 404u : 204u);
    EXPECT_TRUE(o.sent);
  }
  EXPECT_EQ(q.stats().answered, 5u);
  // coap2mqtt_commands_total{result="answered",code=...}
  EXPECT_EQ(q.stats().answered_by_code, (std::map<unsigned, std::uint64_t>{{204, 4}, {404, 1}}));
  EXPECT_EQ(rec.outcomes[0].latency, 3ms);
  EXPECT_EQ(rec.outcomes[4].latency, 15ms) << "latency counts the wait in the queue";
  EXPECT_FALSE(q.busy("a"));
  EXPECT_TRUE(fake.timers.empty()) << "deadlines are cancelled when done";
}

TEST(CommandQueue, DevicesDoNotBlockEachOther) {
  FakeIo fake;
  CommandQueue q(fake.io());
  Recorder rec;
  q.submit(put("slow", "x"), {}, rec.done("slow"));
  q.submit(put("fast", "y"), {}, rec.done("fast"));
  ASSERT_EQ(fake.sent.size(), 2u);
  fake.answer(1, 204);
  EXPECT_EQ(rec.tags, std::vector<std::string>{"fast"});
}

TEST(CommandQueue, QueueBoundRefusesExcessAtOnce) {
  FakeIo fake;
  CommandQueue q(fake.io());
  Recorder rec;
  CommandLimits limits;
  limits.queue = 2;
  for (int i = 0; i < 4; ++i)
    q.submit(put("a", std::to_string(i)), limits, rec.done(std::to_string(i)));
  // One in flight, two waiting, the fourth refused.
  ASSERT_EQ(rec.outcomes.size(), 1u);
  EXPECT_EQ(rec.tags[0], "3");
  EXPECT_EQ(rec.outcomes[0].kind, CommandOutcome::Kind::QueueFull);
  EXPECT_FALSE(rec.outcomes[0].sent);
  EXPECT_NE(rec.outcomes[0].error.find("queue full"), std::string::npos);
  EXPECT_EQ(q.stats().queue_full, 1u);
  EXPECT_EQ(fake.sent.size(), 1u);
}

TEST(CommandQueue, TokenBucketRateLimitPerDevice) {
  FakeIo fake;
  CommandQueue q(fake.io());
  Recorder rec;
  CommandLimits limits;
  limits.rate = bridge::RateLimit{2, 1000ms};
  q.submit(put("a", "1"), limits, rec.done("1"));
  q.submit(put("a", "2"), limits, rec.done("2"));
  q.submit(put("a", "3"), limits, rec.done("3"));   // bucket empty
  q.submit(put("b", "1"), limits, rec.done("b1"));  // another device, another bucket
  ASSERT_EQ(rec.tags, std::vector<std::string>{"3"});
  EXPECT_EQ(rec.outcomes[0].kind, CommandOutcome::Kind::RateLimited);
  EXPECT_NE(rec.outcomes[0].error.find("rate limited"), std::string::npos);
  fake.advance(499ms);
  q.submit(put("a", "4"), limits, rec.done("4"));  // 0.998 tokens: still refused
  EXPECT_EQ(rec.tags.back(), "4");
  fake.advance(2ms);
  q.submit(put("a", "5"), limits, rec.done("5"));  // one token back
  EXPECT_EQ(rec.tags.back(), "4") << "accepted";
  EXPECT_EQ(q.stats().rate_limited, 2u);
  EXPECT_EQ(q.waiting("a"), 2u);
}

TEST(CommandQueue, DeadlineInFlightReportsTimeoutButHoldsTheDeviceUntilTheExchangeEnds) {
  FakeIo fake;
  CommandQueue q(fake.io());
  Recorder rec;
  CommandLimits limits;
  limits.timeout = 1000ms;
  q.submit(put("a", "1"), limits, rec.done("1"));
  fake.advance(400ms);
  q.submit(put("a", "2"), limits, rec.done("2"));
  fake.advance(600ms);  // the first's deadline
  ASSERT_EQ(rec.tags, std::vector<std::string>{"1"});
  EXPECT_EQ(rec.outcomes[0].kind, CommandOutcome::Kind::TimedOut);
  EXPECT_TRUE(rec.outcomes[0].sent);
  EXPECT_EQ(rec.outcomes[0].latency, 1000ms);
  // The CoAP side may still retransmit it: NSTART=1 holds until it ends.
  EXPECT_TRUE(fake.cancelled.empty());
  EXPECT_EQ(fake.sent.size(), 1u);
  EXPECT_TRUE(q.busy("a"));
  // It ends (late answer, or the CoAP layer's own timeout): no second result, and the
  // next command goes out.
  fake.advance(100ms);
  fake.answer(0, 204);
  EXPECT_EQ(rec.outcomes.size(), 1u);
  ASSERT_EQ(fake.sent.size(), 2u);
  EXPECT_EQ(fake.sent[1].request.payload, "2");
  fake.answer(1, 204);
  ASSERT_EQ(rec.tags, (std::vector<std::string>{"1", "2"}));
  EXPECT_EQ(rec.outcomes[1].kind, CommandOutcome::Kind::Answered);
  EXPECT_EQ(rec.outcomes[1].latency, 700ms);
  EXPECT_TRUE(fake.timers.empty());
}

TEST(CommandQueue, AnExchangeThatNeverEndsIsCancelledAfterASecondTimeout) {
  FakeIo fake;
  CommandQueue q(fake.io());
  Recorder rec;
  CommandLimits limits;
  limits.timeout = 1000ms;
  q.submit(put("a", "1"), limits, rec.done("1"));
  CommandLimits patient;
  patient.timeout = 5000ms;
  q.submit(put("a", "2"), patient, rec.done("2"));
  fake.advance(1000ms);
  EXPECT_EQ(rec.tags, std::vector<std::string>{"1"});
  fake.advance(1000ms);
  ASSERT_EQ(fake.cancelled, std::vector<std::uint64_t>{fake.sent[0].id});
  ASSERT_EQ(fake.sent.size(), 2u);
  fake.answer(0, 204);  // too late for anybody
  EXPECT_EQ(rec.outcomes.size(), 1u);
  fake.answer(1, 204);
  ASSERT_EQ(rec.tags, (std::vector<std::string>{"1", "2"}));
  EXPECT_EQ(rec.outcomes[1].kind, CommandOutcome::Kind::Answered);
  EXPECT_EQ(q.stats().timed_out, 1u);
}

TEST(CommandQueue, WaitingCommandsTimeOutFromArrival) {
  FakeIo fake;
  CommandQueue q(fake.io());
  Recorder rec;
  CommandLimits limits;
  limits.timeout = 1000ms;
  q.submit(put("a", "1"), limits, rec.done("1"));
  fake.advance(400ms);
  q.submit(put("a", "2"), limits, rec.done("2"));
  fake.advance(1000ms);
  ASSERT_EQ(rec.tags, (std::vector<std::string>{"1", "2"}));
  EXPECT_FALSE(rec.outcomes[1].sent);
  EXPECT_EQ(rec.outcomes[1].latency, 1000ms) << "the deadline runs from arrival";
  EXPECT_EQ(q.stats().timed_out, 2u);
  EXPECT_EQ(fake.sent.size(), 1u);
}

TEST(CommandQueue, WaitingCommandTimesOutWithoutEverBeingSent) {
  FakeIo fake;
  CommandQueue q(fake.io());
  Recorder rec;
  CommandLimits long_wait;
  long_wait.timeout = 10s;
  CommandLimits short_wait;
  short_wait.timeout = 1s;
  q.submit(put("a", "1"), long_wait, rec.done("1"));
  q.submit(put("a", "2"), short_wait, rec.done("2"));
  fake.advance(1s);
  ASSERT_EQ(rec.tags, std::vector<std::string>{"2"});
  EXPECT_EQ(rec.outcomes[0].kind, CommandOutcome::Kind::TimedOut);
  EXPECT_FALSE(rec.outcomes[0].sent);
  EXPECT_EQ(fake.sent.size(), 1u);
  EXPECT_EQ(q.waiting("a"), 0u);
}

TEST(CommandQueue, FailureAtOnceFinishesAndStartsTheNextWithoutRecursion) {
  FakeIo fake;
  fake.fail_at_once = true;
  CommandQueue q(fake.io());
  Recorder rec;
  CommandLimits limits;
  limits.queue = 1000;
  for (int i = 0; i < 500; ++i) q.submit(put("gone", std::to_string(i)), limits, rec.done("x"));
  ASSERT_EQ(rec.outcomes.size(), 500u);
  for (const auto& o : rec.outcomes) {
    EXPECT_EQ(o.kind, CommandOutcome::Kind::Failed);
    EXPECT_NE(o.error.find("unknown device"), std::string::npos);
  }
  EXPECT_FALSE(q.busy("gone"));
  EXPECT_TRUE(fake.timers.empty());
}

TEST(CommandQueue, CoapTimeoutIsReportedAsTimeout) {
  FakeIo fake;
  CommandQueue q(fake.io());
  Recorder rec;
  q.submit(put("a", "1"), {}, rec.done("1"));
  CommandReply r;
  r.error = "timeout";
  fake.sent[0].reply(r);
  ASSERT_EQ(rec.outcomes.size(), 1u);
  EXPECT_EQ(rec.outcomes[0].kind, CommandOutcome::Kind::TimedOut);
}

TEST(CommandQueue, DropDeviceEndsEverythingOfIt) {
  FakeIo fake;
  CommandQueue q(fake.io());
  Recorder rec;
  q.submit(put("a", "1"), {}, rec.done("1"));
  q.submit(put("a", "2"), {}, rec.done("2"));
  q.submit(put("b", "1"), {}, rec.done("b"));
  q.dropDevice("a", "device removed");
  ASSERT_EQ(rec.tags, (std::vector<std::string>{"1", "2"}));
  EXPECT_EQ(rec.outcomes[0].kind, CommandOutcome::Kind::Dropped);
  EXPECT_TRUE(rec.outcomes[0].sent);
  EXPECT_FALSE(rec.outcomes[1].sent);
  EXPECT_EQ(fake.cancelled.size(), 1u);
  EXPECT_EQ(fake.timers.size(), 1u) << "only b's deadline is left";
}

// ---------------------------------------------------------------------------------------
// The result messages (planCommand itself: tests/unit/test_command_plan.cpp)

TEST(CommandResult, AnsweredAndErrorMessages) {
  CommandContext c{"lamp", "/actuators/led", bridge::Method::Put, "t/result", "\"x1\""};
  CommandOutcome o;
  o.kind = CommandOutcome::Kind::Answered;
  o.reply.answered = true;
  o.reply.code = 205;
  o.reply.content_format = 50;
  o.reply.payload = R"({"b": 1, "a": 2})";
  o.latency = 12ms;
  Json j = Json::parse(commandResultJson(c, o));
  EXPECT_EQ(j["code"], "2.05");
  EXPECT_EQ(j["payload"], Json::parse(R"({"a":2,"b":1})"));
  EXPECT_EQ(j["latency_ms"], 12);
  EXPECT_EQ(j["device"], "lamp");
  EXPECT_EQ(j["path"], "/actuators/led");
  EXPECT_EQ(j["method"], "PUT");
  EXPECT_EQ(j["transaction"], "x1");
  EXPECT_FALSE(j.contains("error"));

  o.reply.code = 204;
  o.reply.payload.clear();
  EXPECT_TRUE(Json::parse(commandResultJson(c, o))["payload"].is_null());

  o.kind = CommandOutcome::Kind::TimedOut;
  o.error = "timeout: no response from lamp";
  j = Json::parse(commandResultJson(c, o));
  EXPECT_EQ(j["reason"], "timeout");
  EXPECT_EQ(j["error"], "timeout: no response from lamp");
  EXPECT_FALSE(j.contains("code"));

  RefusedCommand r{c, "not_allowed", "nope"};
  j = Json::parse(commandRefusedJson(r));
  EXPECT_EQ(j["reason"], "not_allowed");
  EXPECT_EQ(j["transaction"], "x1");
}

TEST(CommandResult, PayloadByContentFormat) {
  EXPECT_EQ(responsePayloadJson(0, "21.5"), "21.5");
  EXPECT_EQ(responsePayloadJson(std::nullopt, "on"), "\"on\"");
  EXPECT_EQ(responsePayloadJson(60, std::string("\xa1\x61x\x01", 4)), R"({"x":1})");
  EXPECT_EQ(responsePayloadJson(50, "{broken"), R"({"base64":"e2Jyb2tlbg=="})");
  EXPECT_EQ(coapCodeString(404), "4.04");
}

// ---------------------------------------------------------------------------------------
// admin API messages

TEST(AdminApi, ParsesRequestsAndEchoesTransactions) {
  auto r = admin::parseRequest("info", "");
  EXPECT_FALSE(r.error);
  EXPECT_EQ(Json::parse(admin::response(r, Json{{"a", 1}}, "")),
            Json::parse(R"({"status":"ok","data":{"a":1}})"));
  r = admin::parseRequest("device/remove", R"({"device":"x","transaction":42})");
  Json j = Json::parse(admin::response(r, Json::object(), "unknown device 'x'"));
  EXPECT_EQ(j["status"], "error");
  EXPECT_EQ(j["error"], "unknown device 'x'");
  EXPECT_EQ(j["transaction"], 42);
  EXPECT_EQ(admin::parseRequest("x", "{nope").error.value_or("").rfind("invalid JSON: ", 0), 0u);
  // What nlohmann alone would take: a NUL ends its input, and dump() recurses.
  EXPECT_EQ(admin::parseRequest("x", std::string("{}\0{\"op\":1}", 11)).error,
            "invalid JSON: NUL byte at byte 2");
  EXPECT_EQ(
      admin::parseRequest("x", "{\"a\":" + std::string(100, '[') + std::string(100, ']') + "}")
          .error,
      "invalid JSON: nested deeper than 64 levels");
  EXPECT_EQ(admin::parseRequest("x", "[1]").error, "expected a JSON object, got array");
  std::string error;
  EXPECT_EQ(admin::stringField(r, "device", &error), "x");
  EXPECT_FALSE(admin::stringField(r, "path", &error));
  EXPECT_EQ(error, "missing \"path\"");
  EXPECT_NE(admin::unknownOperation("nope").find("health_check"), std::string::npos);
}

}  // namespace
}  // namespace coap2mqtt::gateway
