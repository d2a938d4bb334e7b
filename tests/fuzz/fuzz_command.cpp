// libFuzzer target for bridge/command_plan: what any client of the broker can publish on a
// command topic (the topic and the payload), against a fixed set of [[command]] rules. Besides
// "no crash, no UB, no hang", it checks what the plan promises:
//  - a planned command goes to a known device, on a path whose segments, as the device will
//    see them (decoded once), are plain (no empty, "." or ".." segment, no NUL or '/' in
//    one) and covered by its rule's `allow`;
//  - the payload respects the rule's max_payload, and a JSON or CBOR rule's payload is what
//    it says it is; the result topic is one we may publish to and is never a command topic;
//  - a refusal names one of the documented reasons, and results are never commands.
//
// Input: the topic, '\0', the payload (no '\0' in the input: the whole input is the topic).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "bridge/command_plan.h"
#include "bridge/glob.h"
#include "bridge/topic_template.h"
#include "bridge/uri_path.h"
#include "tests/fuzz/fuzz_check.h"

namespace coap2mqtt::bridge {
namespace {

using fuzz::check;

constexpr const char* kRules = R"(
[[command]]
name = "set"
topic = "c2m/{device}/{path}/set"
allow = { device = "*", path = "/actuators/*" }
max_payload = 64

[[command]]
name = "cbor"
topic = "c2m/{device}/{path}/cbor"
allow = { device = "lamp*", path = "/actuators/**" }
content_format = "application/cbor"
envelope = true

[[command]]
name = "post"
topic = "cmd/{device}/{path}"
allow = { device = "*", path = "/config/*/value" }
method = "POST"
)";

struct Fixture {
  RuleSet rules;
  registry::Registry devices;
  Fixture() {
    std::vector<ConfigError> errors;
    parseRules("fuzz.toml", kRules, "c2m", false, rules, errors);
    check(errors.empty() && rules.commands.size() == 3, "the fixed rules load");
    for (const char* name : {"lamp", "lamp-2", "thermo", "a.b"}) {
      registry::Device d;
      d.name = name;
      d.uri = "coap://127.0.0.1";
      devices.upsert(d);
    }
  }
};

const std::set<std::string> kReasons = {"not_allowed",  "unknown_device",   "payload_too_large",
                                        "invalid_json", "invalid_envelope", "invalid_path",
                                        "invalid_topic"};

// `path` is the encoded form the CoAP side decodes once (percentDecode per segment): the
// segments the device will see.
std::string checkPath(std::string_view path) {
  check(path.size() >= 2 && path[0] == '/', "a path starts with '/' and has a segment");
  std::string decoded;
  std::size_t start = 1;
  while (start <= path.size()) {
    auto end = path.find('/', start);
    if (end == std::string_view::npos) end = path.size();
    const std::string segment = percentDecode(path.substr(start, end - start));
    check(!segment.empty(), "no empty segment");
    check(segment != "." && segment != "..", "no dot segment");
    check(segment.find('\0') == std::string::npos, "no NUL in a segment");
    check(segment.find('/') == std::string::npos, "no '/' in a segment");
    decoded += "/" + segment;
    start = end + 1;
  }
  return decoded;
}

}  // namespace
}  // namespace coap2mqtt::bridge

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace coap2mqtt::bridge;
  static const Fixture fixture;
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const auto nul = input.find('\0');
  const std::string_view topic = input.substr(0, nul);
  const std::string_view payload =
      nul == std::string_view::npos ? std::string_view{} : input.substr(nul + 1);

  const auto plan = planCommand(fixture.rules, fixture.devices, "gw", topic, payload);
  if (!plan) return 0;
  // "<command topic>/result" is a result, never a command ("a/b/result" alone is a
  // command on the path b/result when "a/b" is no command topic).
  if (topic.size() > 7 && topic.substr(topic.size() - 7) == "/result") {
    const auto command = topic.substr(0, topic.size() - 7);
    for (const auto& rule : fixture.rules.commands) {
      check(!rule.topic.match(command) && !rule.topic.matchWithEmptyLevels(command),
            "a result topic is never a command");
    }
  }
  if (const auto* refused = std::get_if<RefusedCommand>(&*plan)) {
    check(kReasons.count(refused->reason) == 1, "a refusal names a documented reason");
    check(!refused->error.empty(), "a refusal says why");
    return 0;
  }
  const auto& planned = std::get<PlannedCommand>(*plan);
  check(planned.rule_index < fixture.rules.commands.size(), "the rule exists");
  const auto& rule = fixture.rules.commands[planned.rule_index];
  check(fixture.devices.find(planned.request.device) != nullptr, "a known device");
  const std::string decoded = checkPath(planned.request.path);
  check(rule.allow_device.matches(planned.request.device), "allow covers the device");
  check(rule.allow_path.matches(decoded), "allow covers the path the device sees");
  check(isValidPublishTopic(planned.context.result_topic), "the result topic is publishable");
  check(!planCommand(fixture.rules, fixture.devices, "gw", planned.context.result_topic, "x"),
        "the result topic is not a command");
  if (planned.rule_index == 0) check(payload.size() <= 64, "max_payload holds");
  if (planned.rule_index == 1) {
    check(planned.request.content_format == 60u, "a CBOR rule sends CBOR");
  }
  return 0;
}
