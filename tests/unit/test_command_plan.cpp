// planCommand: which [[command]] takes an MQTT message, the refusals and their reasons,
// payload conversion and the envelope; the [[command]] delivery keys it carries over.
#include "bridge/command_plan.h"
#include "bridge/uri_path.h"

#include <gtest/gtest.h>

#include <initializer_list>
#include <string>
#include <vector>

namespace coap2mqtt::bridge {
namespace {

using namespace std::chrono_literals;

RuleSet rulesFrom(const std::string& toml) {
  RuleSet set;
  std::vector<ConfigError> errors;
  parseRules("mem.toml", toml, "c2m", false, set, errors);
  for (const auto& e : errors) ADD_FAILURE() << e.toString();
  return set;
}

registry::Registry devices(std::initializer_list<const char*> names) {
  registry::Registry r;
  for (const char* n : names) {
    registry::Device d;
    d.name = n;
    d.uri = "coap://127.0.0.1";
    r.upsert(d);
  }
  return r;
}

const char* kCommandRule = R"(
[[command]]
name = "act"
topic = "c2m/{device}/{path}/set"
allow = { device = "*", path = "/actuators/*" }
)";

TEST(PlanCommand, PlainPayloadPassesAsIsWithDefaults) {
  auto rules = rulesFrom(kCommandRule);
  auto reg = devices({"lamp"});
  auto r = planCommand(rules, reg, "gw", "c2m/lamp/actuators/led/set", R"({"transaction":"t"})");
  ASSERT_TRUE(r);
  auto* p = std::get_if<PlannedCommand>(&*r);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(p->request.device, "lamp");
  EXPECT_EQ(p->request.path, "/actuators/led");
  EXPECT_EQ(p->request.payload, R"({"transaction":"t"})") << "no envelope: just a payload";
  EXPECT_FALSE(p->context.transaction);
  EXPECT_EQ(p->context.result_topic, "c2m/lamp/actuators/led/set/result");
  EXPECT_EQ(p->limits.queue, 32u);
  EXPECT_EQ(p->limits.timeout, 30s);
  EXPECT_FALSE(p->limits.rate);
  EXPECT_FALSE(p->request.content_format);
}

TEST(PlanCommand, ResultTopicsAndUnrelatedTopicsAreNotCommands) {
  auto rules = rulesFrom(kCommandRule);
  auto reg = devices({"lamp"});
  EXPECT_FALSE(planCommand(rules, reg, "gw", "c2m/lamp/actuators/led/set/result", "{}"));
  EXPECT_FALSE(planCommand(rules, reg, "gw", "c2m/lamp/actuators/led", "on"));
}

TEST(PlanCommand, RefusalsSayWhy) {
  auto rules = rulesFrom(std::string(kCommandRule) + R"(max_payload = 8
content_format = "application/cbor"
)");
  auto reg = devices({"lamp"});
  auto reason = [&](const std::string& topic, const std::string& payload) {
    auto r = planCommand(rules, reg, "gw", topic, payload);
    if (!r) return std::string("none");
    auto* refused = std::get_if<RefusedCommand>(&*r);
    return refused ? refused->reason : std::string("planned");
  };
  EXPECT_EQ(reason("c2m/lamp/config/name/set", "1"), "not_allowed");
  EXPECT_EQ(reason("c2m/ghost/actuators/led/set", "1"), "unknown_device");
  EXPECT_EQ(reason("c2m/lamp/actuators/led/set", "123456789"), "payload_too_large");
  EXPECT_EQ(reason("c2m/lamp/actuators/led/set", "{oops"), "invalid_json");
  EXPECT_EQ(reason("c2m/lamp/actuators/led/set", "[1,2]"), "planned");
}

// Issue 17, finding 8: `allow` judged the topic's text, and the CoAP side decoded "%XX"
// after it: with path = "/actuators/*" all of these reached the device.
TEST(PlanCommand, PathsAreDecodedOnceAndTraversalIsRefused) {
  auto rules = rulesFrom(kCommandRule);
  auto reg = devices({"lamp"});
  auto plan = [&](const std::string& topic) { return planCommand(rules, reg, "gw", topic, "1"); };
  for (const char* topic :
       {"c2m/lamp/actuators/../set", "c2m/lamp/actuators/./set", "c2m/lamp/actuators/%2e%2e/set",
        "c2m/lamp/actuators/%2E./set", "c2m/lamp/actuators/%2F..%2Fsecret/set",
        "c2m/lamp/actuators/a%2Fb/set", "c2m/lamp/actuators/a%00b/set"}) {
    SCOPED_TRACE(topic);
    auto r = plan(topic);
    ASSERT_TRUE(r);
    auto* refused = std::get_if<RefusedCommand>(&*r);
    ASSERT_NE(refused, nullptr) << "reached the device";
    EXPECT_EQ(refused->reason, "invalid_path");
    EXPECT_EQ(refused->context.result_topic, std::string(topic) + "/result");
  }
  // Decoded once: the device gets "led" for "l%65d", and a literal '%' stays one.
  auto r = plan("c2m/lamp/actuators/l%65d/set");
  ASSERT_TRUE(r);
  auto* p = std::get_if<PlannedCommand>(&*r);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(p->context.path, "/actuators/led");
  EXPECT_EQ(p->request.path, "/actuators/led");
  r = plan("c2m/lamp/actuators/100%2525/set");
  ASSERT_TRUE(r);
  p = std::get_if<PlannedCommand>(&*r);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(p->context.path, "/actuators/100%25");
  EXPECT_EQ(p->request.path, "/actuators/100%2525");
  EXPECT_EQ(percentDecode("100%2525"), "100%25") << "what the CoAP side sends";
  // `allow` sees the decoded path: "%2A" is a literal '*', not a glob.
  r = plan("c2m/lamp/%61ctuators/led/set");
  ASSERT_TRUE(r);
  EXPECT_TRUE(std::holds_alternative<PlannedCommand>(*r));
}

// Issue 17, finding 8: a command topic with an empty level got neither a result nor a
// counted drop; it is now refused like any other bad command.
TEST(PlanCommand, EmptyLevelsInDeviceOrPathAreRefused) {
  auto rules = rulesFrom(kCommandRule);
  auto reg = devices({"lamp"});
  for (const char* topic : {"c2m/lamp//set", "c2m//actuators/led/set",
                            "c2m/lamp/actuators//led/set", "c2m/lamp/actuators/led//set"}) {
    SCOPED_TRACE(topic);
    auto r = planCommand(rules, reg, "gw", topic, "1");
    ASSERT_TRUE(r);
    auto* refused = std::get_if<RefusedCommand>(&*r);
    ASSERT_NE(refused, nullptr);
    EXPECT_EQ(refused->reason, "invalid_topic");
  }
  EXPECT_FALSE(planCommand(rules, reg, "gw", "c2m/lamp//get", "1")) << "not a command topic";
  EXPECT_FALSE(planCommand(rules, reg, "gw", "c2m/lamp//set/result", "1")) << "its result";
  EXPECT_FALSE(planCommand(rules, reg, "gw", "other//x", "1"));
}

// Found by tests/fuzz/fuzz_command: topics no broker delivers (not UTF-8, a wildcard) were
// planned, with a result topic nobody may publish to.
TEST(PlanCommand, TopicsNoBrokerDeliversAreRefused) {
  auto rules = rulesFrom(kCommandRule);
  auto reg = devices({"lamp"});
  for (const char* topic : {"c2m/lamp/actuators/\xe4"
                            "ed/set",
                            "c2m/lamp/actuators/a+b/set", "c2m/lamp/actuators/#/set"}) {
    SCOPED_TRACE(topic);
    auto r = planCommand(rules, reg, "gw", topic, "on");
    ASSERT_TRUE(r);
    auto* refused = std::get_if<RefusedCommand>(&*r);
    ASSERT_NE(refused, nullptr);
    EXPECT_EQ(refused->reason, "invalid_topic");
  }
}

// Issue 17, finding 5: the admin API's device/read GETs only what a GET [[command]] allows.
TEST(PlanRead, FollowsTheGetCommandsAllowList) {
  auto rules = rulesFrom(std::string(kCommandRule) + R"(
[[command]]
name = "read"
topic = "c2m/{device}/{path}/get"
method = "GET"
allow = { device = "lamp", path = "/sensors/*" }
)");
  auto reg = devices({"lamp", "door"});
  auto reason = [&](const char* device, const char* path) {
    auto r = planRead(rules, reg, device, path);
    auto* refused = std::get_if<RefusedCommand>(&r);
    return refused ? refused->reason : std::get<CommandRequest>(r).path;
  };
  EXPECT_EQ(reason("lamp", "/sensors/temp"), "/sensors/temp");
  EXPECT_EQ(reason("lamp", "sensors/t%65mp"), "/sensors/temp");
  EXPECT_EQ(reason("lamp", "/actuators/led"), "not_allowed") << "a PUT rule allows no reads";
  EXPECT_EQ(reason("door", "/sensors/temp"), "not_allowed");
  EXPECT_EQ(reason("lamp", "/sensors/../secret"), "invalid_path");
  EXPECT_EQ(reason("lamp", "/sensors//temp"), "invalid_path");
  EXPECT_EQ(reason("ghost", "/sensors/temp"), "not_allowed");
  EXPECT_EQ(planRead(rulesFrom(kCommandRule), reg, "lamp", "/actuators/led").index(), 1u)
      << "no GET rule: no reads";
}

TEST(UriPath, DecodesEachSegmentOnceAndRefusesWhatCannotBeOne) {
  std::string error;
  auto p = decodeUriPath("/a%20b/c", &error);
  ASSERT_TRUE(p);
  EXPECT_EQ(p->segments, (std::vector<std::string>{"a b", "c"}));
  EXPECT_EQ(p->decoded, "/a b/c");
  EXPECT_EQ(decodeUriPath("a/%zz%2", &error)->decoded, "/a/%zz%2") << "not escapes: kept";
  EXPECT_EQ(decodeUriPath("a/%zz", &error)->encoded, "/a/%25zz");
  for (const char* bad : {"", "/", "a//b", "a/", "..", "a/%2E", "a/%2f", "%00"}) {
    EXPECT_FALSE(decodeUriPath(bad, &error)) << bad;
    EXPECT_FALSE(error.empty());
  }
}

TEST(PlanCommand, JsonBecomesCbor) {
  auto rules = rulesFrom(std::string(kCommandRule) + "content_format = 60\n");
  auto reg = devices({"lamp"});
  auto r = planCommand(rules, reg, "gw", "c2m/lamp/actuators/led/set", R"({"on":true})");
  auto& p = std::get<PlannedCommand>(*r);
  EXPECT_EQ(p.request.content_format, 60u);
  EXPECT_EQ(p.request.payload, std::string("\xa1\x62on\xf5", 5));
}

TEST(PlanCommand, EnvelopeCarriesValueAndTransaction) {
  auto rules = rulesFrom(std::string(kCommandRule) + "envelope = true\n");
  auto reg = devices({"lamp"});
  auto plan = [&](const std::string& payload) {
    return planCommand(rules, reg, "gw", "c2m/lamp/actuators/led/set", payload);
  };
  auto r = plan(R"({"value":"on","transaction":"abc"})");
  auto& p = std::get<PlannedCommand>(*r);
  EXPECT_EQ(p.request.payload, "on");
  EXPECT_EQ(p.context.transaction, "\"abc\"");
  EXPECT_EQ(std::get<PlannedCommand>(*plan(R"({"value":21.5})")).request.payload, "21.5");
  EXPECT_EQ(std::get<RefusedCommand>(*plan("on")).reason, "invalid_envelope");
  EXPECT_EQ(std::get<RefusedCommand>(*plan(std::string("{\"value\":1}\0garbage", 19))).reason,
            "invalid_envelope")
      << "a NUL byte does not end the JSON";
  EXPECT_EQ(std::get<RefusedCommand>(
                *plan("{\"value\":" + std::string(200, '[') + std::string(200, ']') + "}"))
                .reason,
            "invalid_envelope");
  auto missing = plan(R"({"transaction":7})");
  EXPECT_EQ(std::get<RefusedCommand>(missing.value()).reason, "invalid_envelope");
  EXPECT_EQ(std::get<RefusedCommand>(missing.value()).context.transaction, "7")
      << "echoed in refusals too";
  // `allow` is decided before the envelope's shape.
  auto outside = planCommand(rules, reg, "gw", "c2m/lamp/config/name/set", "not an envelope");
  EXPECT_EQ(std::get<RefusedCommand>(outside.value()).reason, "not_allowed");
  auto ghost = planCommand(rules, reg, "gw", "c2m/ghost/actuators/led/set", R"({"transaction":1})");
  EXPECT_EQ(std::get<RefusedCommand>(ghost.value()).reason, "unknown_device");
  EXPECT_EQ(std::get<RefusedCommand>(ghost.value()).context.transaction, "1");
}

// ---------------------------------------------------------------------------------------
// [[command]] delivery keys

TEST(CommandRuleKeys, ParsedWithDefaultsAndErrors) {
  auto rules = rulesFrom(std::string(kCommandRule) + R"(content_format = "application/json"
result_topic = "c2m/results/{device}/{path}"
max_payload = 4096
rate_limit = "10/s"
timeout = "5s"
queue = 8
envelope = true
)");
  ASSERT_EQ(rules.commands.size(), 1u);
  const auto& c = rules.commands[0];
  EXPECT_EQ(c.content_format, 50u);
  EXPECT_EQ(c.result_topic.text(), "c2m/results/{device}/{path}");
  EXPECT_EQ(c.max_payload, 4096u);
  ASSERT_FALSE(c.rate_limit.unlimited());
  EXPECT_EQ(c.rate_limit.count, 10u);
  EXPECT_EQ(c.rate_limit.period, 1000ms);
  EXPECT_EQ(c.timeout, 5s);
  EXPECT_EQ(c.queue, 8u);
  EXPECT_TRUE(c.envelope);
  auto reg = devices({"lamp"});
  auto r = planCommand(rules, reg, "gw", "c2m/lamp/actuators/led/set", R"({"value":{"on":1}})");
  EXPECT_EQ(std::get<PlannedCommand>(*r).context.result_topic, "c2m/results/lamp/actuators/led");
  EXPECT_EQ(std::get<PlannedCommand>(*r).request.payload, R"({"on":1})");

  RuleSet set;
  std::vector<ConfigError> errors;
  parseRules("mem.toml", std::string(kCommandRule) + R"(content_format = "text/html"
rate_limit = "fast"
queue = -1
)",
             "c2m", false, set, errors);
  ASSERT_EQ(errors.size(), 3u);
  EXPECT_NE(errors[0].toString().find("unknown Content-Format \"text/html\""), std::string::npos)
      << errors[0].toString();
  EXPECT_NE(errors[1].toString().find("rate_limit"), std::string::npos);
  EXPECT_NE(errors[2].toString().find("queue"), std::string::npos);
  EXPECT_TRUE(set.commands.empty());
}

}  // namespace
}  // namespace coap2mqtt::bridge
