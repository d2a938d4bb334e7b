// TopicTemplate and CommandTopic: tables of templates, variables and topics, including
// every compile-time rejection and every expand/match refusal named in the header.
#include "bridge/topic_template.h"

#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace coap2mqtt::bridge {
namespace {

using namespace std::string_literals;

TopicTemplate compileTemplate(std::string_view text) {
  std::string error;
  auto tmpl = TopicTemplate::compile(text, &error);
  EXPECT_TRUE(tmpl.has_value()) << "template '" << text << "': " << error;
  return tmpl.value_or(TopicTemplate{});
}

CommandTopic compileCommand(std::string_view text) {
  std::string error;
  auto topic = CommandTopic::compile(text, &error);
  EXPECT_TRUE(topic.has_value()) << "command topic '" << text << "': " << error;
  return topic.value_or(CommandTopic{});
}

const TopicVars kVars{"gw1", "lamp", "sensors/temp", "oic.r.temperature"};

// --- TopicTemplate: expansion -----------------------------------------------------------

TEST(TopicTemplate, ExpandsEveryVariable) {
  struct Case {
    const char* text;
    std::optional<std::string> topic;
  };
  const Case cases[] = {
      {"{gateway}/{device}/{path}", "gw1/lamp/sensors/temp"},
      {"coap2mqtt/{device}/{path}", "coap2mqtt/lamp/sensors/temp"},
      {"{device}", "lamp"},
      {"{gateway}", "gw1"},
      {"{path}", "sensors/temp"},
      {"by-type/{rt}/{device}", "by-type/oic.r.temperature/lamp"},
      {"x/{path[0]}", "x/sensors"},
      {"x/{path[1]}", "x/temp"},
      {"x/{path[2]}", std::nullopt},  // out of range
      {"x/{path[99]}", std::nullopt},
      {"x/{path[00]}", "x/sensors"},
      {"a/{device}-{path[1]}/b", "a/lamp-temp/b"},
      {"{device}{device}", "lamplamp"},
      {"{path[1]}/{path[0]}", "temp/sensors"},
      {"fixed/topic", "fixed/topic"},
      {"température/{device}", "température/lamp"},
      {"a b/{device}", "a b/lamp"},  // spaces are legal in MQTT topics
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.text);
    EXPECT_EQ(compileTemplate(c.text).expand(kVars), c.topic);
  }
}

TEST(TopicTemplate, ExpandsSenmlRecordName) {
  TopicVars vars = kVars;
  vars.name = "urn:dev:ow:10e2073a01080063:voltage";
  struct Case {
    const char* text;
    const char* name;
    std::optional<std::string> topic;
  };
  const Case cases[] = {
      {"s/{device}/{name}", "urn:dev:ow:10e2073a01080063:voltage",
       "s/lamp/urn:dev:ow:10e2073a01080063:voltage"},
      {"s/{name}", "room/1/temp", "s/room/1/temp"},  // '/' in a SenML name adds levels
      {"s/{name}", "", std::nullopt},                // empty level
      {"s/{name}/x", "a//b", std::nullopt},
      {"s/x{name}", "", "s/x"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.text);
    vars.name = c.name;
    const TopicTemplate t = compileTemplate(c.text);
    EXPECT_TRUE(t.usesName());
    EXPECT_EQ(t.expand(vars), c.topic);
  }
  EXPECT_FALSE(compileTemplate("{device}/{path}").usesName());
  EXPECT_TRUE(compileTemplate("{rt}/x").usesRt());
  EXPECT_FALSE(compileTemplate("{device}/x").usesRt());
}

TEST(TopicTemplate, ExpandRefusesValuesThatMakeAnInvalidTopic) {
  struct Case {
    const char* name;
    const char* text;
    TopicVars vars;
    std::optional<std::string> topic;
  };
  const std::string nul = "la\0mp"s;
  const std::string huge(70000, 'x');
  const Case cases[] = {
      {"empty rt as a level", "x/{rt}", {"gw", "lamp", "p", ""}, std::nullopt},
      {"empty rt inside a level", "x/{rt}y", {"gw", "lamp", "p", ""}, "x/y"},
      {"empty rt is the whole topic", "{rt}", {"gw", "lamp", "p", ""}, std::nullopt},
      {"root path as a level", "c/{device}/{path}", {"gw", "lamp", "", ""}, std::nullopt},
      {"root path inside a level", "c/{device}{path}", {"gw", "lamp", "", ""}, "c/lamp"},
      {"root path has no segment 0", "c/x{path[0]}", {"gw", "lamp", "", ""}, std::nullopt},
      {"empty segment as a level", "c/{path[1]}", {"gw", "lamp", "a//b", ""}, std::nullopt},
      {"empty segment inside a level", "c/y{path[1]}", {"gw", "lamp", "a//b", ""}, "c/y"},
      {"segment after empty one", "c/{path[2]}", {"gw", "lamp", "a//b", ""}, "c/b"},
      {"empty level in path", "c/{path}", {"gw", "lamp", "a//b", ""}, std::nullopt},
      {"trailing slash in path", "c/{path}", {"gw", "lamp", "a/", ""}, std::nullopt},
      {"leading slash in path (contract: none)",
       "c/{path}",
       {"gw", "lamp", "/a", ""},
       std::nullopt},
      {"device with '+'", "c/{device}", {"gw", "la+mp", "p", ""}, std::nullopt},
      {"device with '#'", "c/{device}", {"gw", "#", "p", ""}, std::nullopt},
      {"device with NUL", "c/{device}", {"gw", nul, "p", ""}, std::nullopt},
      {"empty device", "c/{device}/x", {"gw", "", "p", ""}, std::nullopt},
      {"device with '/' adds a level", "c/{device}", {"gw", "a/b", "p", ""}, "c/a/b"},
      {"device with trailing '/'", "c/{device}", {"gw", "a/", "p", ""}, std::nullopt},
      {"device not UTF-8", "c/{device}", {"gw", "\xff", "p", ""}, std::nullopt},
      {"device with a surrogate", "c/{device}", {"gw", "\xed\xa0\x80", "p", ""}, std::nullopt},
      {"device UTF-8", "c/{device}", {"gw", "läмп", "p", ""}, "c/läмп"},
      {"leading '$' from a variable", "{device}/x", {"gw", "$SYS", "p", ""}, std::nullopt},
      {"'$' later is fine", "c/{device}", {"gw", "$SYS", "p", ""}, "c/$SYS"},
      {"rt with '+'", "c/{rt}", {"gw", "d", "p", "a+b"}, std::nullopt},
      {"gateway with '#'", "{gateway}/x", {"g#", "d", "p", ""}, std::nullopt},
      {"over 65535 bytes", "c/{device}", {"gw", huge, "p", ""}, std::nullopt},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    EXPECT_EQ(compileTemplate(c.text).expand(c.vars), c.topic);
  }
}

TEST(TopicTemplate, KeepsItsText) {
  EXPECT_EQ(compileTemplate("c/{device}/{path[1]}").text(), "c/{device}/{path[1]}");
}

TEST(TopicTemplate, DefaultConstructedExpandsToNothing) {
  EXPECT_EQ(TopicTemplate{}.expand(kVars), std::nullopt);
}

// --- TopicTemplate: compile errors ------------------------------------------------------

TEST(TopicTemplate, RejectsInvalidTemplates) {
  struct Case {
    std::string text;
    const char* message;
  };
  const Case cases[] = {
      {"", "empty topic template"},
      {"a/+/b", "'+' at offset 2: wildcards are not allowed"},
      {"a/b+", "'+' at offset 3"},
      {"a/#", "'#' at offset 2: wildcards are not allowed"},
      {"$SYS/{device}", "starts with '$'"},
      {"$", "starts with '$'"},
      {"a//b", "empty topic level at offset 2"},
      {"/a/{device}", "empty topic level at offset 0"},
      {"{device}/", "empty topic level at offset 8"},
      {"/", "empty topic level"},
      {"{foo}",
       "unknown variable {foo} at offset 0: expected {gateway}, {device}, {path}, "
       "{path[N]}, {rt} or {name}"},
      {"x/{names}", "unknown variable {names} at offset 2"},
      {"x/{Device}", "unknown variable {Device} at offset 2"},
      {"x/{ device }", "unknown variable { device }"},
      {"x/{}", "unknown variable {}"},
      {"x/{path[]}", "unknown variable {path[]}"},
      {"x/{path[x]}", "bad index in {path[x]} at offset 2"},
      {"x/{path[-1]}", "bad index in {path[-1]}"},
      {"x/{path[1a]}", "bad index in {path[1a]}"},
      {"x/{path[99999999999]}", "bad index"},
      {"x/{path[1]", "unbalanced '{' at offset 2: expected '}'"},
      {"{device", "unbalanced '{' at offset 0"},
      {"{de{vice}", "unbalanced '{' at offset 0"},
      {"device}", "unbalanced '}' at offset 6"},
      {"a/{device}}", "unbalanced '}' at offset 10"},
      {"a\0b"s, "NUL character at offset 1"},
      {"a/\xff", "not valid UTF-8"},
      {"a/\xc0\xaf", "not valid UTF-8"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.text);
    std::string error;
    EXPECT_FALSE(TopicTemplate::compile(c.text, &error).has_value());
    EXPECT_NE(error.find(c.message), std::string::npos) << error;
  }
  EXPECT_FALSE(TopicTemplate::compile("+", nullptr).has_value());  // error pointer optional
}

// --- CommandTopic: matching -------------------------------------------------------------

struct MatchCase {
  const char* pattern;
  std::string topic;
  bool matches;
  const char* device = "";
  const char* path = "";
};

// MQTT filter semantics (MQTT 3.1.1 §4.7), to check subscriptionFilter() covers match().
bool mqttFilterMatches(std::string_view filter, std::string_view topic) {
  if (!topic.empty() && topic.front() == '$') return false;
  while (true) {
    const std::size_t fs = filter.find('/');
    const std::string_view f = filter.substr(0, fs);
    if (f == "#") return true;
    const std::size_t ts = topic.find('/');
    const std::string_view t = topic.substr(0, ts);
    if (f != "+" && f != t) return false;
    if (fs == std::string_view::npos || ts == std::string_view::npos) {
      if (fs == std::string_view::npos && ts == std::string_view::npos) return true;
      // "a/#" also matches "a"
      return ts == std::string_view::npos && filter.substr(fs + 1) == "#";
    }
    filter.remove_prefix(fs + 1);
    topic.remove_prefix(ts + 1);
  }
}

TEST(CommandTopic, Matches) {
  const MatchCase cases[] = {
      // {path} in the middle
      {"coap2mqtt/{device}/{path}/set", "coap2mqtt/lamp/actuators/led/set", true, "lamp",
       "/actuators/led"},
      {"coap2mqtt/{device}/{path}/set", "coap2mqtt/lamp/led/set", true, "lamp", "/led"},
      {"coap2mqtt/{device}/{path}/set", "coap2mqtt/lamp/a/b/c/set", true, "lamp", "/a/b/c"},
      {"coap2mqtt/{device}/{path}/set", "coap2mqtt/lamp/set/set", true, "lamp", "/set"},
      {"coap2mqtt/{device}/{path}/set", "coap2mqtt/lamp/set", false},       // no path level
      {"coap2mqtt/{device}/{path}/set", "coap2mqtt/lamp", false},           // too few levels
      {"coap2mqtt/{device}/{path}/set", "coap2mqtt", false},                // too few levels
      {"coap2mqtt/{device}/{path}/set", "coap2mqtt/lamp/led/get", false},   // wrong literal
      {"coap2mqtt/{device}/{path}/set", "other/lamp/led/set", false},       // wrong literal
      {"coap2mqtt/{device}/{path}/set", "Coap2mqtt/lamp/led/set", false},   // case matters
      {"coap2mqtt/{device}/{path}/set", "coap2mqtt//led/set", false},       // empty device
      {"coap2mqtt/{device}/{path}/set", "coap2mqtt/lamp//set", false},      // empty path
      {"coap2mqtt/{device}/{path}/set", "coap2mqtt/lamp/a//b/set", false},  // empty level
      {"coap2mqtt/{device}/{path}/set", "coap2mqtt/lamp/a/set/", false},
      {"coap2mqtt/{device}/{path}/set", "", false},
      // {path} last
      {"c/{device}/{path}", "c/lamp/a/b", true, "lamp", "/a/b"},
      {"c/{device}/{path}", "c/lamp/a", true, "lamp", "/a"},
      {"c/{device}/{path}", "c/lamp", false},
      {"c/{device}/{path}", "c/lamp/", false},
      {"c/{device}/{path}", "c/lamp/a/", false},
      // {path} first, {device} after it
      {"{path}/{device}", "a/b/lamp", true, "lamp", "/a/b"},
      {"{path}/{device}", "lamp", false},
      // fixed levels only
      {"c/{device}/led", "c/lamp/led", true, "lamp", ""},
      {"c/{device}/led", "c/lamp/led/x", false},  // too many levels
      {"c/{device}/led", "c/lamp", false},
      {"c/{device}/led", "c/lamp/LED", false},
      {"{device}", "lamp", true, "lamp", ""},
      {"{device}", "a/b", false},
      {"{device}", "", false},
      // '+' ignores one level, empty ones included (as in MQTT)
      {"c/+/{device}/{path}", "c/x/lamp/p", true, "lamp", "/p"},
      {"c/+/{device}/{path}", "c//lamp/p", true, "lamp", "/p"},
      {"c/+/{device}/{path}", "c/lamp/p", false},
      {"c/{device}/+/set", "c/lamp/whatever/set", true, "lamp", ""},
      {"c/{device}/+/set", "c/lamp/a/b/set", false},
      // '#' at the end: the rest, nothing included (as in MQTT "a/#" matches "a")
      {"c/{device}/#", "c/lamp/a/b", true, "lamp", ""},
      {"c/{device}/#", "c/lamp", true, "lamp", ""},
      {"c/{device}/#", "c/lamp/", true, "lamp", ""},
      {"c/{device}/#", "c", false},
      {"c/{device}/#", "d/lamp/x", false},
      // '$' topics are the broker's, whatever the pattern
      {"{device}/{path}", "$SYS/broker/load", false},
      {"{device}/{path}", "lamp/$x", true, "lamp", "/$x"},
      // UTF-8 passes through
      {"c/{device}/{path}", "c/läмп/ü", true, "läмп", "/ü"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(std::string(c.pattern) + " <- " + c.topic);
    const CommandTopic pattern = compileCommand(c.pattern);
    const auto captures = pattern.match(c.topic);
    ASSERT_EQ(captures.has_value(), c.matches);
    if (!captures) continue;
    EXPECT_EQ(captures->device, c.device);
    EXPECT_EQ(captures->path, c.path);
    // Every topic match() accepts reaches us through the subscription.
    EXPECT_TRUE(mqttFilterMatches(pattern.subscriptionFilter(), c.topic))
        << pattern.subscriptionFilter();
  }
}

TEST(CommandTopic, DefaultConstructedMatchesNothing) {
  EXPECT_EQ(CommandTopic{}.match("a"), std::nullopt);
  EXPECT_EQ(CommandTopic{}.match(""), std::nullopt);
}

TEST(CommandTopic, SubscriptionFilter) {
  struct Case {
    const char* pattern;
    const char* filter;
  };
  const Case cases[] = {
      {"c/{device}/{path}/set", "c/+/#"},
      {"coap2mqtt/{device}/{path}/set", "coap2mqtt/+/#"},
      {"c/{device}/led", "c/+/led"},
      {"c/{device}/#", "c/+/#"},
      {"c/{device}/{path}", "c/+/#"},
      {"{device}/{path}", "+/#"},
      {"{device}", "+"},
      {"c/+/{device}/x", "c/+/+/x"},
      {"{path}/{device}", "#"},
      {"a/b/{device}/c/d", "a/b/+/c/d"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.pattern);
    EXPECT_EQ(compileCommand(c.pattern).subscriptionFilter(), c.filter);
  }
}

TEST(CommandTopic, KeepsItsText) {
  EXPECT_EQ(compileCommand("c/{device}/{path}/set").text(), "c/{device}/{path}/set");
}

// --- CommandTopic: compile errors -------------------------------------------------------

TEST(CommandTopic, RejectsInvalidPatterns) {
  struct Case {
    std::string text;
    const char* message;
  };
  const Case cases[] = {
      {"", "empty command topic"},
      {"c/{path}/set", "no {device} level"},
      {"c/+/#", "no {device} level"},
      {"c/{path}/{path}/{device}", "second multi-level capture '{path}' at offset 9"},
      {"c/{device}/{path}/#", "second multi-level capture '#' at offset 18"},
      {"c/#/{device}", "'#' at offset 2 must be the last level"},
      {"#/{device}", "'#' at offset 0 must be the last level"},
      {"c/{device}/{device}", "{device} appears twice at offset 11"},
      {"c/a{device}/x", "level \"a{device}\" at offset 2 mixes text and a variable"},
      {"c/{device}x", "mixes text and a variable"},
      {"c/{device}/{path}.json", "mixes text and a variable"},
      {"c/{device", "mixes text and a variable"},
      {"c/device}", "mixes text and a variable"},
      {"c/{dev{ice}", "mixes text and a variable"},
      {"c/{foo}/{device}", "unknown variable {foo} at offset 2: expected {device} or {path}"},
      {"c/{rt}/{device}", "unknown variable {rt}"},
      {"c/{}/{device}", "unknown variable {}"},
      {"c//{device}", "empty topic level at offset 2"},
      {"c/{device}/", "empty topic level at offset 10"},
      {"/c/{device}", "empty topic level at offset 0"},
      {"c/a+/{device}", "'+' at offset 3 must be a whole level"},
      {"c/a#/{device}", "'#' at offset 3 must be a whole level"},
      {"$share/g/{device}", "starts with '$'"},
      {"c/\0/{device}"s, "NUL character at offset 2"},
      {"c/\xff/{device}", "not valid UTF-8"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.text);
    std::string error;
    EXPECT_FALSE(CommandTopic::compile(c.text, &error).has_value());
    EXPECT_NE(error.find(c.message), std::string::npos) << error;
  }
  EXPECT_FALSE(CommandTopic::compile("x", nullptr).has_value());  // error pointer optional
}

}  // namespace
}  // namespace coap2mqtt::bridge
