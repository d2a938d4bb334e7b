#include "gateway/config_values.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cctype>

#include "bridge/toml_reader.h"
#include "gateway/admin_api.h"
#include "gateway/config.h"

namespace coap2mqtt::gateway {

namespace {

// gateway.toml's messages show control characters in values as '?'.
std::string quote(std::string_view s) {
  return bridge::toml_reader::quote(s, bridge::toml_reader::MessageStyle::Gateway);
}

bool isPort(std::string_view s, bool allow_zero) {
  if (s.empty() || s.size() > 5) return false;
  unsigned n = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    n = n * 10 + static_cast<unsigned>(c - '0');
  }
  return n <= 65535 && (allow_zero || n != 0);
}

bool isHostName(std::string_view s) {
  if (s.empty() || s.size() > 253) return false;
  std::size_t start = 0;
  while (start <= s.size()) {
    const auto dot = std::min(s.find('.', start), s.size());
    const auto label = s.substr(start, dot - start);
    if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') {
      return false;
    }
    for (char c : label) {
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-') return false;
    }
    start = dot + 1;
  }
  return true;
}

bool startsWithIgnoreCase(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() &&
         std::equal(prefix.begin(), prefix.end(), s.begin(), [](char a, char b) {
           return std::tolower(static_cast<unsigned char>(a)) ==
                  std::tolower(static_cast<unsigned char>(b));
         });
}

}  // namespace

bool isNameChar(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-';
}

bool isValidName(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), isNameChar);
}

bool isHostPort(std::string_view s, bool port_required, bool allow_port_zero) {
  std::string_view host;
  std::string_view port;
  bool has_port = false;
  if (!s.empty() && s.front() == '[') {
    const auto close = s.find(']');
    if (close == std::string_view::npos) return false;
    std::string addr(s.substr(1, close - 1));
    if (const auto zone = addr.find('%'); zone != std::string::npos) addr.resize(zone);
    in6_addr a6{};
    if (inet_pton(AF_INET6, addr.c_str(), &a6) != 1) return false;
    const auto rest = s.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return false;
      port = rest.substr(1);
      has_port = true;
    }
  } else {
    const auto colon = s.rfind(':');
    host = colon == std::string_view::npos ? s : s.substr(0, colon);
    if (colon != std::string_view::npos) {
      port = s.substr(colon + 1);
      has_port = true;
    }
    const bool numeric = !host.empty() && std::all_of(host.begin(), host.end(), [](char c) {
      return (c >= '0' && c <= '9') || c == '.';
    });
    if (numeric) {
      in_addr a4{};
      if (inet_pton(AF_INET, std::string(host).c_str(), &a4) != 1) return false;
    } else if (!isHostName(host)) {
      return false;
    }
  }
  if (has_port) return isPort(port, allow_port_zero);
  return !port_required;
}

bool isMulticastGroup(const std::string& address) {
  in_addr v4{};
  in6_addr v6{};
  return (inet_pton(AF_INET, address.c_str(), &v4) == 1 && (ntohl(v4.s_addr) >> 28) == 0xe) ||
         (inet_pton(AF_INET6, address.c_str(), &v6) == 1 && v6.s6_addr[0] == 0xff);
}

std::optional<std::string> checkCoapUri(std::string_view uri) {
  const std::string expected =
      "expected coap://host[:port] or coaps://host[:port] with host an IPv4 address, [IPv6] or "
      "a name, got " +
      quote(uri);
  std::string_view authority;
  if (startsWithIgnoreCase(uri, "coaps://")) {
    authority = uri.substr(8);
  } else if (startsWithIgnoreCase(uri, "coap://")) {
    authority = uri.substr(7);
  } else {
    return expected;
  }
  if (!authority.empty() && authority.back() == '/') authority.remove_suffix(1);
  if (!isHostPort(authority, false, false)) return expected;
  return std::nullopt;
}

bool isCoapsUri(std::string_view uri) {
  return startsWithIgnoreCase(uri, "coaps://");
}

bool isTlsMqttUri(std::string_view uri) {
  for (const char* tls : {"mqtts://", "ssl://", "wss://"}) {
    if (startsWithIgnoreCase(uri, tls)) return true;
  }
  return false;
}

std::optional<std::string> checkMqttUri(std::string_view uri) {
  const std::string expected =
      "expected mqtt://, tcp://, mqtts://, ssl://, ws:// or wss:// followed by host[:port] "
      "(ws/wss: host[:port][/path]), got " +
      quote(uri);
  std::string_view authority;
  bool websocket = false;
  for (const char* scheme : {"mqtt://", "tcp://", "mqtts://", "ssl://", "ws://", "wss://"}) {
    if (startsWithIgnoreCase(uri, scheme)) {
      authority = uri.substr(std::string_view(scheme).size());
      websocket = scheme[0] == 'w';
      break;
    }
  }
  if (authority.empty()) return expected;
  if (websocket) {
    if (const auto slash = authority.find('/'); slash != std::string_view::npos) {
      authority = authority.substr(0, slash);
    }
  }
  if (!isHostPort(authority, false, false)) return expected;
  return std::nullopt;
}

std::optional<std::string> checkBaseTopic(std::string_view topic) {
  if (topic.empty()) return "must not be empty";
  if (topic.front() == '$') return "must not start with '$' (reserved for the broker)";
  if (topic.find_first_of("+#") != std::string_view::npos) {
    return "must not contain the wildcards '+' or '#'";
  }
  if (topic.find('\0') != std::string_view::npos) return "must not contain NUL";
  if (topic.front() == '/' || topic.back() == '/' || topic.find("//") != std::string_view::npos) {
    return "must not have empty levels (a leading, trailing or doubled '/')";
  }
  return std::nullopt;
}

// ---- [admin] (issue 17, finding 5) ----------------------------------------------------

void parseAdminSection(bridge::toml_reader::TableReader& root,
                       bridge::toml_reader::Reporter& report, AdminConfig& out) {
  using bridge::toml_reader::TableReader;
  using bridge::toml_reader::Value;
  const Value* section = root.table("admin");
  if (section == nullptr) return;
  TableReader r(report, *section, "admin", {"enabled", "allow"});
  if (auto enabled = r.boolean("enabled")) out.enabled = *enabled;
  if (r.find("allow") == nullptr) return;
  std::vector<std::string> allow;
  const auto& ops = admin::operations();
  r.stringArray("allow", "admin operation names such as \"health_check\"",
                [&](const Value& item, const std::string& key, const std::string& op) {
                  if (std::find(ops.begin(), ops.end(), op) == ops.end()) {
                    std::string known;
                    for (const auto& o : ops) known += (known.empty() ? "" : ", ") + o;
                    report.error(
                        item, key,
                        "unknown admin operation " + quote(op) + "; expected one of: " + known);
                  } else if (std::find(allow.begin(), allow.end(), op) == allow.end()) {
                    allow.push_back(op);
                  }
                });
  out.allow = std::move(allow);
}

void parseHttpListen(bridge::toml_reader::TableReader& r, int example_port, const char* what,
                     std::string& out) {
  const std::string port = std::to_string(example_port);
  const std::string expected =
      "\"host:port\" such as \"127.0.0.1:" + port + "\" or \"[::1]:" + port + "\"";
  auto listen = r.string("listen", false, expected);
  if (!listen) return;
  if (isHostPort(*listen, true, false)) {
    out = *listen;
    return;
  }
  // append, not a chain of +: GCC 12 -O2 reports a false -Warray-bounds in the chain.
  std::string message = "expected ";
  message.append(expected).append(" (leave the key out to turn ").append(what);
  message.append(" off), got ").append(quote(*listen));
  r.invalid("listen", message);
}

// ---- [metrics] (issue 19): the Prometheus endpoint ------------------------------------

void parseMetricsSection(bridge::toml_reader::TableReader& root,
                         bridge::toml_reader::Reporter& report, MetricsConfig& out) {
  using bridge::toml_reader::TableReader;
  const bridge::toml_reader::Value* section = root.table("metrics");
  if (section == nullptr) return;
  TableReader r(report, *section, "metrics", {"listen"});
  parseHttpListen(r, 9105, "the endpoint", out.listen);
}

// ---- [coap.limits] (issue 17): bounds on what peers can make the gateway hold -----------

void parseCoapLimits(bridge::toml_reader::TableReader& coap, bridge::toml_reader::Reporter& report,
                     CoapLimits& out) {
  const bridge::toml_reader::Value* section = coap.table("limits");
  if (section == nullptr) return;
  bridge::toml_reader::TableReader r(
      report, *section, "coap.limits",
      {"max_devices", "max_devices_per_host", "max_answers_per_round", "max_sessions"});
  const auto size = [&](std::string_view key, std::int64_t lo, std::int64_t hi, std::size_t& to) {
    if (auto n = r.integer(key, lo, hi)) to = static_cast<std::size_t>(*n);
  };
  size("max_devices", 1, 1000000, out.max_devices);
  size("max_devices_per_host", 1, 1000000, out.max_devices_per_host);
  size("max_answers_per_round", 1, 1000000, out.max_answers_per_round);
  size("max_sessions", 1, 1000000, out.max_sessions);
}

}  // namespace coap2mqtt::gateway
