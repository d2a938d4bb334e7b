#include "bridge/inbound.h"

#include "registry/utf8.h"

namespace coap2mqtt::bridge {

const char* toString(InboundMethod m) {
  switch (m) {
    case InboundMethod::Post:
      return "POST";
    case InboundMethod::Put:
      return "PUT";
    case InboundMethod::Get:
      return "GET";
  }
  return "?";
}

const InboundRule* findInbound(const std::vector<InboundRule>& rules, std::string_view device,
                               std::string_view path, InboundMethod method) {
  for (const InboundRule& rule : rules) {
    if (rule.allows(method) && rule.allow_device.matches(device) && rule.allow_path.matches(path)) {
      return &rule;
    }
  }
  return nullptr;
}

std::string mqttFilterFor(const Glob& path) {
  std::string_view p = path.pattern();
  while (!p.empty() && p.front() == '/') p.remove_prefix(1);
  std::string out;
  while (true) {
    const std::size_t slash = p.find('/');
    const std::string_view level = p.substr(0, slash);
    if (!out.empty()) out += '/';
    if (level.find("**") != std::string_view::npos) return out + "#";
    if (level.find_first_of("*?[\\") != std::string_view::npos || level.empty()) {
      out += '+';
    } else {
      out += level;
    }
    if (slash == std::string_view::npos) return out;
    p.remove_prefix(slash + 1);
  }
}

std::optional<std::string> psTopicPath(const std::vector<std::string>& segments,
                                       std::string* error) {
  auto fail = [&](std::string why) -> std::optional<std::string> {
    *error = std::move(why);
    return std::nullopt;
  };
  if (segments.empty()) return fail("no topic after the root");
  if (segments.size() > kMaxPsLevels) {
    return fail("more than " + std::to_string(kMaxPsLevels) + " topic levels");
  }
  std::string out;
  for (const std::string& level : segments) {
    if (level.empty()) return fail("empty topic level");
    if (level == "." || level == "..") return fail("'.' or '..' as a topic level");
    for (unsigned char c : level) {
      if (c == '+' || c == '#') return fail("MQTT wildcard '+' or '#' in the topic");
      if (c == '/') return fail("'/' inside a Uri-Path option");
      if (c < 0x20 || c == 0x7f) return fail("control character in the topic");
    }
    if (!registry::isValidUtf8(level)) return fail("topic is not valid UTF-8");
    if (!out.empty()) out += '/';
    out += level;
    if (out.size() > kMaxPsPathBytes) {
      return fail("topic longer than " + std::to_string(kMaxPsPathBytes) + " bytes");
    }
  }
  return out;
}

}  // namespace coap2mqtt::bridge
