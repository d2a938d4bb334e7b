#include "bridge/bridge.h"

#include <algorithm>

namespace coap2mqtt::bridge {
namespace {

bool ruleMatches(const Rule& rule, const registry::Device& device,
                 const registry::Resource& resource) {
  if (!rule.enabled) return false;
  if (!rule.device.matches(device.name) || !rule.path.matches(resource.path)) return false;
  if (rule.rt) {
    return std::any_of(resource.rt.begin(), resource.rt.end(),
                       [&](const std::string& rt) { return rule.rt->matches(rt); });
  }
  return true;
}

}  // namespace

std::vector<Watch> plan(const RuleSet& rules, const registry::Device& device) {
  std::vector<Watch> watches;
  for (const auto& resource : device.resources) {
    Watch watch;
    watch.device = device.name;
    watch.path = resource.path;
    bool wants_observe = false;
    for (std::size_t i = 0; i < rules.rules.size(); ++i) {
      const Rule& rule = rules.rules[i];
      if (!ruleMatches(rule, device, resource)) continue;
      watch.rules.push_back(i);
      // Observe is only possible where the device says the resource is observable;
      // everything else falls back to polling at the rule's interval.
      if (rule.mode == Mode::Observe && resource.obs) {
        wants_observe = true;
      } else if (watch.interval.count() == 0 || rule.interval < watch.interval) {
        watch.interval = rule.interval;
      }
    }
    if (watch.rules.empty()) continue;
    watch.mode = wants_observe ? Mode::Observe : Mode::Poll;
    if (wants_observe) watch.interval = std::chrono::milliseconds(0);
    watches.push_back(std::move(watch));
  }
  return watches;
}

void route(const RuleSet& rules, std::string_view gateway_name,
           const std::vector<std::size_t>& rule_indices, const Notification& n,
           std::vector<Publish>& out, RouteStats& stats) {
  std::string_view path = n.path;
  if (!path.empty() && path.front() == '/') path.remove_prefix(1);
  const TopicVars vars{gateway_name, n.device, path, n.rt};
  for (std::size_t index : rule_indices) {
    if (index >= rules.rules.size()) continue;
    const Rule& rule = rules.rules[index];
    auto topic = rule.topic.expand(vars);
    if (!topic) {
      ++stats.bad_topic;
      continue;
    }
    TransformResult body = transformPayload(rule.payload, n.content_format, n.payload);
    if (!body.ok()) {
      ++stats.bad_payload;
      continue;
    }
    out.push_back(Publish{std::move(*topic), std::move(body.payload), rule.qos, rule.retain});
    ++stats.published;
  }
}

std::optional<std::variant<CoapRequest, CommandRefused>> routeCommand(
    const RuleSet& rules, const registry::Registry& registry, std::string_view topic,
    std::string_view payload) {
  for (std::size_t i = 0; i < rules.commands.size(); ++i) {
    const CommandRule& command = rules.commands[i];
    auto captures = command.topic.match(topic);
    if (!captures) continue;
    const std::string& path = captures->path;
    if (!command.allow_device.matches(captures->device) || !command.allow_path.matches(path)) {
      return CommandRefused{"not allowed by " + command.name + ": device '" + captures->device +
                            "' path '" + path + "'"};
    }
    if (registry.find(captures->device) == nullptr) {
      return CommandRefused{"unknown device '" + captures->device + "'"};
    }
    return CoapRequest{captures->device, path, command.method, std::string(payload), i};
  }
  return std::nullopt;
}

}  // namespace coap2mqtt::bridge
