#pragma once
// MQTT topic templates, compiled once at load time into literal and variable tokens.
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace coap2mqtt::bridge {

// What a broker accepts in a PUBLISH, plus our policy: non-empty, at most 65535 bytes,
// strict UTF-8, no '+', '#' or NUL, no leading '$', no empty levels (no leading, trailing
// or doubled '/'). Every topic the gateway publishes to passes it, also one a client names
// (an MQTT 5 Response Topic): a broker disconnects a client that publishes to '#'.
bool isValidPublishTopic(std::string_view topic);

struct TopicVars {
  std::string_view gateway;
  std::string_view device;
  std::string_view path;       // resource path WITHOUT the leading '/', e.g. "sensors/temp"
  std::string_view rt;         // first rt value, may be empty
  std::string_view name = {};  // resolved SenML record name (senml = "records" rules)
};

// Publish topic template: literal text plus {gateway} {device} {path} {rt} {path[N]}
// (N-th segment of the path, 0-based) {name} (the SenML record name; the rule parser only
// allows it where records are split). Rejected at compile time: unknown variables,
// unbalanced braces, '+' or '#' anywhere, a leading '$', empty levels ("a//b", leading or
// trailing '/'), an empty template.
class TopicTemplate {
 public:
  TopicTemplate() = default;
  static std::optional<TopicTemplate> compile(std::string_view text, std::string* error);

  // Expands the template. nullopt when the result would be an invalid publish topic
  // (a variable expanded to something with '+', '#', NUL, or produced an empty level; also
  // invalid UTF-8, a leading '$', an empty or over-long (> 65535 bytes) topic), or when a
  // {path[N]} names a segment the path does not have.
  std::optional<std::string> expand(const TopicVars& vars) const;
  const std::string& text() const { return text_; }
  bool usesName() const;  // has a {name}
  bool usesRt() const;    // has an {rt}

 private:
  enum class Var { Literal, Gateway, Device, Path, PathSegment, Rt, Name };
  struct Token {
    Var var = Var::Literal;
    std::string literal;  // for Literal
    unsigned index = 0;   // for PathSegment
  };
  std::string text_;
  std::vector<Token> tokens_;
};

// Command topic pattern: MQTT levels where a whole level may be {device} (exactly one
// level), {path} (one or more levels), '+' (one level, ignored) or '#' (rest, last only).
// {device} is required; {path} is optional (then the rule must name a fixed path elsewhere).
// At most one multi-level capture ({path} or '#').
// Example: "coap2mqtt/{device}/{path}/set" matches "coap2mqtt/lamp/actuators/led/set" with
// device "lamp" and path "/actuators/led".
class CommandTopic {
 public:
  CommandTopic() = default;
  static std::optional<CommandTopic> compile(std::string_view text, std::string* error);

  struct Captures {
    std::string device;
    std::string path;  // with a leading '/', empty when the pattern has no {path}
  };
  std::optional<Captures> match(std::string_view topic) const;
  // What match() would capture if empty levels were allowed in {device} and {path}: the
  // topic is meant as a command but cannot be one ("c2m/lamp//set"). The empty levels
  // are empty in the captures. For topics match() did not take; nullopt when the topic
  // has no empty level or does not fit the pattern anyway.
  std::optional<Captures> matchWithEmptyLevels(std::string_view topic) const;

  // The MQTT subscription filter covering every topic match() can accept: captures become
  // '+', and everything from a multi-level capture on becomes '#'.
  std::string subscriptionFilter() const;
  const std::string& text() const { return text_; }

 private:
  enum class Level { Literal, Device, Path, Plus, Hash };
  struct Token {
    Level kind = Level::Literal;
    std::string literal;
  };
  std::string text_;
  std::vector<Token> levels_;
};

}  // namespace coap2mqtt::bridge
