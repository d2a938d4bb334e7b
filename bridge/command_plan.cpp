#include "bridge/command_plan.h"

#include <algorithm>

#include <nlohmann/json.hpp>

#include "bridge/bridge.h"
#include "bridge/json_parse.h"
#include "bridge/topic_template.h"
#include "bridge/transform.h"
#include "bridge/uri_path.h"
#include "registry/utf8.h"

namespace coap2mqtt::bridge {
namespace {

using Json = nlohmann::json;

constexpr std::string_view kResultSuffix = "/result";

bool isJsonFormat(std::optional<unsigned> ct) {
  return ct && (*ct == content_format::kJson || *ct == content_format::kSenmlJson);
}

bool isCborFormat(std::optional<unsigned> ct) {
  return ct && (*ct == content_format::kCbor || *ct == content_format::kSenmlCbor);
}

bool carriesPayload(Method m) {
  return m == Method::Put || m == Method::Post;
}

std::string resultTopic(const CommandRule& rule, std::string_view gateway, std::string_view topic,
                        const std::string& device, const std::string& path) {
  // An empty template: the parser found no usable default (see CommandRule).
  if (!rule.result_topic.text().empty()) {
    std::string_view p = path;
    if (!p.empty() && p.front() == '/') p.remove_prefix(1);
    if (auto t = rule.result_topic.expand(TopicVars{gateway, device, p, {}})) return *t;
  }
  return std::string(topic) + std::string(kResultSuffix);
}

// `empty_levels`: also the result topic of a command topic with an empty level.
bool isResultTopic(const RuleSet& rules, std::string_view topic, bool empty_levels = false) {
  if (topic.size() <= kResultSuffix.size() ||
      topic.substr(topic.size() - kResultSuffix.size()) != kResultSuffix) {
    return false;
  }
  const std::string_view command = topic.substr(0, topic.size() - kResultSuffix.size());
  for (const auto& rule : rules.commands) {
    if (rule.topic.match(command)) return true;
    if (empty_levels && rule.topic.matchWithEmptyLevels(command)) return true;
  }
  return false;
}

}  // namespace

std::optional<std::variant<PlannedCommand, RefusedCommand>> planCommand(
    const RuleSet& rules, const registry::Registry& registry, std::string_view gateway,
    std::string_view topic, std::string_view payload) {
  if (isResultTopic(rules, topic)) return std::nullopt;
  for (std::size_t i = 0; i < rules.commands.size(); ++i) {
    const CommandRule& rule = rules.commands[i];
    auto captures = rule.topic.match(topic);
    if (!captures) continue;
    CommandContext context;
    context.device = captures->device;
    context.path = captures->path;
    context.method = rule.method;
    context.result_topic = resultTopic(rule, gateway, topic, context.device, context.path);
    auto refuse = [&](std::string reason, std::string error) {
      return RefusedCommand{std::move(context), std::move(reason), std::move(error)};
    };
    // Brokers deliver no topic with a wildcard or that is not UTF-8 (MQTT 3.1.1 §1.5.3,
    // §4.7.1), so such a one came some other way: it goes no further, whatever `allow` says
    // (its result topic would be no better). Found by tests/fuzz/fuzz_command.
    if (!isValidPublishTopic(topic)) {
      return refuse("invalid_topic", "not a topic a broker delivers (wildcard or not UTF-8)");
    }
    // The path is decided once, decoded, as the device will get it: `allow` judges that.
    std::optional<UriPath> uri_path;
    if (!captures->path.empty()) {
      std::string path_error;
      uri_path = decodeUriPath(captures->path, &path_error);
      if (!uri_path) return refuse("invalid_path", path_error);
      context.path = uri_path->decoded;
    }
    if (payload.size() > rule.max_payload) {
      return refuse("payload_too_large", "payload of " + std::to_string(payload.size()) +
                                             " bytes is larger than max_payload (" +
                                             std::to_string(rule.max_payload) + ")");
    }
    // The envelope first: its transaction belongs in every later refusal too. Its own
    // errors are reported after `allow` and the device are checked.
    std::optional<Json> value;  // the envelope's "value", when there is an envelope
    std::string envelope_error;
    if (rule.envelope) {
      std::string parse_error;
      Json envelope = parseJson(payload, &parse_error).value_or(Json());
      if (!envelope.is_object()) {
        envelope_error =
            "expected a JSON object {\"value\": ..., \"transaction\": ...} (the rule sets "
            "envelope = true)";
      } else {
        if (auto t = envelope.find("transaction"); t != envelope.end()) {
          context.transaction = t->dump();
        }
        if (auto v = envelope.find("value"); v != envelope.end()) {
          value = *v;
        } else if (carriesPayload(rule.method)) {
          envelope_error = "the envelope has no \"value\"";
        }
      }
    }
    if (!rule.allow_device.matches(context.device) || !rule.allow_path.matches(context.path)) {
      return refuse("not_allowed", "not allowed by " + rule.name + ": device '" + context.device +
                                       "' path '" + context.path + "'");
    }
    if (registry.find(context.device) == nullptr) {
      return refuse("unknown_device", "unknown device '" + context.device + "'");
    }
    if (!envelope_error.empty()) return refuse("invalid_envelope", envelope_error);
    PlannedCommand planned;
    planned.rule_index = i;
    planned.request.device = context.device;
    planned.request.path = uri_path ? uri_path->encoded : context.path;
    planned.request.method = rule.method;
    planned.request.content_format = rule.content_format;
    planned.limits.queue = rule.queue;
    if (!rule.rate_limit.unlimited()) planned.limits.rate = rule.rate_limit;
    planned.limits.timeout = rule.timeout;
    if (carriesPayload(rule.method)) {
      const bool json_based =
          isJsonFormat(rule.content_format) || isCborFormat(rule.content_format);
      std::string text(payload);  // what the device gets, before conversion
      if (value) {
        if (json_based || !value->is_string()) {
          text = value->is_null() && !json_based ? std::string() : value->dump();
        } else {
          text = value->get<std::string>();
        }
      }
      // One converter for every command path: JSON is checked, and turned into CBOR
      // (SenML labels included) where the Content-Format says so.
      TransformResult converted = commandPayload(rule.content_format, text);
      if (!converted.ok()) {
        return refuse("invalid_json", "payload is not valid JSON (the rule sends content_format " +
                                          std::to_string(*rule.content_format) +
                                          "): " + *converted.error);
      }
      planned.request.payload = std::move(converted.payload);
    }
    planned.context = std::move(context);
    return planned;
  }
  // Meant as a command, yet with an empty level where the device or path goes: refused,
  // so that it is counted and answered where an answer can go. (Its answers, on
  // <topic>/result, are not commands either: found by tests/fuzz/fuzz_command.)
  if (isResultTopic(rules, topic, true)) return std::nullopt;
  for (const CommandRule& rule : rules.commands) {
    auto captures = rule.topic.matchWithEmptyLevels(topic);
    if (!captures) continue;
    RefusedCommand refused;
    refused.context.device = captures->device;
    refused.context.path = captures->path;
    refused.context.method = rule.method;
    refused.context.result_topic =
        resultTopic(rule, gateway, topic, captures->device, captures->path);
    refused.reason = "invalid_topic";
    refused.error = "empty topic level in the device or path of " + rule.name;
    return refused;
  }
  return std::nullopt;
}

std::variant<CommandRequest, RefusedCommand> planRead(const RuleSet& rules,
                                                      const registry::Registry& registry,
                                                      std::string_view device,
                                                      std::string_view path) {
  RefusedCommand refused;
  refused.context.device = std::string(device);
  refused.context.path = std::string(path);
  refused.context.method = Method::Get;
  std::string path_error;
  auto uri_path = decodeUriPath(path, &path_error);
  if (!uri_path) {
    refused.reason = "invalid_path";
    refused.error = path_error;
    return refused;
  }
  refused.context.path = uri_path->decoded;
  const bool allowed =
      std::any_of(rules.commands.begin(), rules.commands.end(), [&](const CommandRule& rule) {
        return rule.method == Method::Get && rule.allow_device.matches(device) &&
               rule.allow_path.matches(uri_path->decoded);
      });
  if (!allowed) {
    refused.reason = "not_allowed";
    refused.error = "no [[command]] with method = \"GET\" allows device '" + std::string(device) +
                    "' path '" + uri_path->decoded + "'";
    return refused;
  }
  if (registry.find(std::string(device)) == nullptr) {
    refused.reason = "unknown_device";
    refused.error = "unknown device '" + std::string(device) + "'";
    return refused;
  }
  return CommandRequest{std::string(device), uri_path->encoded, Method::Get, {}, std::nullopt};
}

}  // namespace coap2mqtt::bridge
