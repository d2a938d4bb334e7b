// [[inbound]] entries (who may use /ps, issue 20) and the /ps topic path rules.
#include <gtest/gtest.h>

#include "bridge/inbound.h"
#include "bridge/rules.h"

namespace coap2mqtt::bridge {
namespace {

RuleSet parse(const std::string& toml, std::vector<ConfigError>& errors) {
  RuleSet set;
  parseRules("in.toml", toml, "c2m", false, set, errors);
  return set;
}

std::string joined(const std::vector<ConfigError>& errors) {
  std::string out;
  for (const auto& e : errors) out += e.toString() + "\n";
  return out;
}

TEST(InboundRules, ParsedWithDefaults) {
  std::vector<ConfigError> errors;
  const RuleSet set = parse(R"([[inbound]]
allow = { device = "*", path = "/sensors/**" }

[[inbound]]
name = "commands"
allow = { device = "attic*", path = "/cmd/*" }
methods = ["get"]
qos = 0
retain = true
)",
                            errors);
  ASSERT_TRUE(errors.empty()) << joined(errors);
  ASSERT_EQ(set.inbound.size(), 2u);
  const InboundRule& a = set.inbound[0];
  EXPECT_EQ(a.name, "inbound[1]");
  EXPECT_EQ(a.file, "in.toml");
  EXPECT_TRUE(a.post && a.put && a.get);
  EXPECT_EQ(a.qos, 1);
  EXPECT_FALSE(a.retain);
  const InboundRule& b = set.inbound[1];
  EXPECT_EQ(b.name, "commands");
  EXPECT_FALSE(b.post);
  EXPECT_FALSE(b.put);
  EXPECT_TRUE(b.get);
  EXPECT_EQ(b.qos, 0);
  EXPECT_TRUE(b.retain);
}

TEST(InboundRules, ErrorsPointAtTheText) {
  std::vector<ConfigError> errors;
  const RuleSet set = parse(R"([[inbound]]
name = "no allow"

[[inbound]]
allow = { device = "*" }
methods = ["POST", "DELETE"]

[[inbound]]
allow = { device = "*", path = "/a/*", tpoic = "x" }
methods = []
qos = 3
)",
                            errors);
  EXPECT_TRUE(set.inbound.empty());
  const std::string text = joined(errors);
  EXPECT_NE(text.find("in.toml:1:1: inbound[1].allow: devices may publish or subscribe only "
                      "where `allow` names"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("in.toml:5:9: inbound[2].allow.path: "), std::string::npos) << text;
  EXPECT_NE(text.find("in.toml:6:20: inbound[2].methods[2]: expected \"POST\", \"PUT\" or "
                      "\"GET\" (GET includes observe), got \"DELETE\""),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("inbound[3].allow.tpoic: unknown key"), std::string::npos) << text;
  EXPECT_NE(text.find("in.toml:10:11: inbound[3].methods: expected at least one"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("in.toml:11:7: inbound[3].qos"), std::string::npos) << text;
}

TEST(InboundRules, UnknownTopLevelTableSuggestsInbound) {
  std::vector<ConfigError> errors;
  parse("[[inbond]]\nallow = { device = \"*\", path = \"/**\" }\n", errors);
  ASSERT_FALSE(errors.empty());
  EXPECT_NE(joined(errors).find("did you mean \"inbound\""), std::string::npos) << joined(errors);
}

TEST(InboundRules, DefaultDenyAndFirstMatchingEntryWins) {
  std::vector<ConfigError> errors;
  const RuleSet set = parse(R"([[inbound]]
name = "sensors"
allow = { device = "attic", path = "/sensors/*" }
methods = ["POST"]

[[inbound]]
name = "read"
allow = { device = "*", path = "/cmd/**" }
methods = ["GET", "PUT"]
)",
                            errors);
  ASSERT_TRUE(errors.empty()) << joined(errors);
  const auto* r = findInbound(set.inbound, "attic", "/sensors/attic", InboundMethod::Post);
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->name, "sensors");
  EXPECT_EQ(findInbound(set.inbound, "attic", "/sensors/attic", InboundMethod::Put), nullptr);
  EXPECT_EQ(findInbound(set.inbound, "cellar", "/sensors/attic", InboundMethod::Post), nullptr);
  EXPECT_EQ(findInbound(set.inbound, "attic", "/sensors/a/b", InboundMethod::Post), nullptr);
  ASSERT_NE(findInbound(set.inbound, "cellar", "/cmd/x/y", InboundMethod::Get), nullptr);
  EXPECT_EQ(findInbound(set.inbound, "cellar", "/cmd/x/y", InboundMethod::Get)->name, "read");
  EXPECT_EQ(findInbound(set.inbound, "cellar", "/cmd/x", InboundMethod::Post), nullptr);
  EXPECT_EQ(findInbound({}, "attic", "/sensors/attic", InboundMethod::Post), nullptr);
}

TEST(PsTopicPath, AcceptsPlainLevels) {
  std::string error;
  EXPECT_EQ(psTopicPath({"sensors", "attic"}, &error), "sensors/attic");
  EXPECT_EQ(psTopicPath({"Küche", "t-1_2.x"}, &error), "Küche/t-1_2.x");
  EXPECT_EQ(psTopicPath(std::vector<std::string>(kMaxPsLevels, "a"), &error).value().size(),
            kMaxPsLevels * 2 - 1);
}

TEST(PsTopicPath, RefusesWhatIsNoTopicOrAWildcard) {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{}, "no topic"},
      {{"a", ""}, "empty topic level"},
      {{"", "a"}, "empty topic level"},
      {{"a", ".."}, "'.' or '..'"},
      {{"."}, "'.' or '..'"},
      {{"a", "+"}, "wildcard"},
      {{"a", "b#"}, "wildcard"},
      {{"a/b"}, "'/' inside"},
      {{std::string("a\0b", 3)}, "control character"},
      {{"a\nb"}, "control character"},
      {{"\xc3\x28"}, "not valid UTF-8"},
      {{"\xed\xa0\x80"}, "not valid UTF-8"},  // a surrogate
      {std::vector<std::string>(kMaxPsLevels + 1, "a"), "more than 16 topic levels"},
      {{std::string(200, 'x'), std::string(60, 'y')}, "longer than 256 bytes"},
  };
  for (const auto& [segments, why] : cases) {
    std::string error;
    EXPECT_FALSE(psTopicPath(segments, &error).has_value()) << why;
    EXPECT_NE(error.find(why), std::string::npos) << error << " / " << why;
  }
}

TEST(InboundRules, MqttFilterCoversTheAllowedPaths) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"/cmd/**", "cmd/#"}, {"/cmd/*", "cmd/+"}, {"/cmd/a?", "cmd/+"}, {"/**", "#"},
      {"/a/b/c", "a/b/c"},  {"/a/*/c", "a/+/c"}, {"/a/x**/c", "a/#"},  {"/a/[bc]/d", "a/+/d"},
  };
  for (const auto& [glob, filter] : cases) {
    std::string error;
    const auto g = Glob::compile(glob, Glob::Kind::Path, &error);
    ASSERT_TRUE(g) << glob << ": " << error;
    EXPECT_EQ(mqttFilterFor(*g), filter) << glob;
  }
}

}  // namespace
}  // namespace coap2mqtt::bridge
