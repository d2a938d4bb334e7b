#include "gateway/config.h"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <sstream>
#include <tuple>
#include <utility>

#include <toml.hpp>

#include "bridge/toml_reader.h"
#include "gateway/config_credentials.h"
#include "gateway/config_files.h"
#include "gateway/config_values.h"
#include "gateway/config_web.h"
#include "gateway/device_names.h"

namespace coap2mqtt::gateway {

namespace {

using bridge::ConfigError;

using bridge::toml_reader::MessageStyle;
using bridge::toml_reader::Reporter;
using bridge::toml_reader::TableReader;
using bridge::toml_reader::typeName;
using bridge::toml_reader::Value;

constexpr const char* kDefaultBaseTopic = "coap2mqtt";

// gateway.toml's messages show control characters in values as '?'.
std::string quote(std::string_view s) {
  return bridge::toml_reader::quote(s, MessageStyle::Gateway);
}

constexpr const char* kNameExpected = "a name of letters, digits, '_', '.' and '-'";

std::string defaultGatewayName() {
  char buf[256] = {};
  std::string name;
  if (::gethostname(buf, sizeof buf - 1) == 0) name = buf;
  for (char& c : name) {
    if (!isNameChar(c)) c = '-';
  }
  return name.empty() ? std::string("coap2mqtt") : name;
}

void parseGatewaySection(TableReader& root, Reporter& report, const std::string& dir,
                         GatewayConfig& cfg) {
  const Value* section = root.table("gateway");
  if (section == nullptr) return;
  TableReader r(report, *section, "gateway", {"name", "state_dir", "rules", "log_level"});
  if (auto name = r.string("name", false, kNameExpected)) {
    if (isValidName(*name)) {
      cfg.name = *name;
    } else {
      r.invalid("name", std::string("expected ") + kNameExpected +
                            " (it is used as an MQTT topic level), got " + quote(*name));
    }
  }
  if (auto dir_value = r.string("state_dir", false, "a directory path")) {
    if (dir_value->empty()) {
      r.invalid("state_dir", "expected a directory path, got an empty string");
    } else {
      cfg.state_dir = resolvePath(dir, *dir_value);
    }
  }
  r.stringArray("rules", "rule file paths or globs (strings)",
                [&](const Value& item, const std::string& key, const std::string& glob) {
                  if (glob.empty()) {
                    report.error(item, key, "expected a rule file path or glob, got \"\"");
                    return;
                  }
                  if (!isRulePattern(glob)) {
                    const std::string path = resolvePath(dir, glob);
                    if (!fileExists(path)) {
                      report.error(item, key, "rule file " + quote(path) + " not found");
                      return;
                    }
                  }
                  cfg.rule_globs.push_back(glob);
                });
  if (auto level =
          r.choice("log_level", {"trace", "debug", "info", "warn", "error", "critical", "off"})) {
    cfg.log_level = *level;
  }
}

void parseDiscoverySection(TableReader& coap, Reporter& report, DiscoveryConfig& out) {
  const Value* section = coap.table("discovery");
  if (section == nullptr) return;
  TableReader r(report, *section, "coap.discovery",
                {"multicast", "interfaces", "port", "interval", "window", "query"});
  r.stringArray("multicast", "multicast group addresses",
                [&](const Value& item, const std::string& key, const std::string& group) {
                  if (isMulticastGroup(group)) {
                    out.multicast.push_back(group);
                  } else {
                    report.error(item, key,
                                 "expected an IPv4 or IPv6 multicast address such as "
                                 "\"224.0.1.187\" or \"ff02::fd\", got " +
                                     quote(group));
                  }
                });
  r.stringArray("interfaces", "interface names",
                [&](const Value&, const std::string&, const std::string& name) {
                  out.interfaces.push_back(name);
                });
  if (auto port = r.integer("port", 1, 65535)) out.port = static_cast<std::uint16_t>(*port);
  if (auto d = r.duration("interval", std::chrono::seconds(1))) out.interval = *d;
  if (auto d = r.duration("window", std::chrono::milliseconds(100))) out.window = *d;
  if (auto q = r.string("query", false, "a query such as \"rt=temperature\"")) out.query = *q;
}

// ps_root: one path segment (a leading '/' is allowed), "" = no /ps; ps_max_payload: bytes.
void parsePubSubKeys(TableReader& r, PubSubConfig& out) {
  if (auto root = r.string("ps_root", false, "a path segment such as \"ps\"")) {
    std::string_view s = *root;
    if (!s.empty() && s.front() == '/') s.remove_prefix(1);
    const bool ok = std::all_of(s.begin(), s.end(), [](char c) {
      return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
    });
    if (!ok || s == "." || s == ".." || s == "rd" || s == "rd-lookup" || s == ".well-known") {
      r.invalid("ps_root",
                "expected one path segment of [A-Za-z0-9_.-] such as \"ps\" (not "
                "rd, rd-lookup or .well-known), or \"\" for no /ps, got " +
                    quote(*root));
    } else {
      out.root = std::string(s);
    }
  }
  if (auto n = r.integer("ps_max_payload", 0, 65536)) out.max_payload = std::size_t(*n);
  if (auto n = r.integer("ps_queue", 0, 10000)) out.queue = std::size_t(*n);
  if (auto d = r.duration("ps_queue_expiry", std::chrono::seconds(1))) out.queue_expiry = *d;
}

void parseCoapSection(TableReader& root, Reporter& report, const std::string& dir,
                      GatewayConfig& cfg) {
  const Value* section = root.table("coap");
  if (section == nullptr) return;
  TableReader r(report, *section, "coap",
                {"listen", "request_timeout", "retry_interval", "offline_after",
                 "resource_directory", "ack_timeout", "ack_random_factor", "max_retransmit",
                 "discovery", "device", "limits", "psk_client", "listen_pki", "cert_client",
                 "credentials", "ps_root", "ps_max_payload", "ps_queue", "ps_queue_expiry"});
  const Value* dtls_listen = nullptr;  // the first coaps:// listener
  r.stringArray("listen", "\"host:port\" strings",
                [&](const Value& item, const std::string& key, const std::string& addr) {
                  const bool dtls = isCoapsUri(addr);
                  if (isHostPort(dtls ? std::string_view(addr).substr(8) : addr, true, true)) {
                    cfg.coap.listen.push_back(addr);
                    if (dtls && dtls_listen == nullptr) dtls_listen = &item;
                  } else {
                    report.error(item, key,
                                 "expected \"host:port\" or \"coaps://host:port\" with host an "
                                 "IPv4 address, [IPv6] or a name, got " +
                                     quote(addr));
                  }
                });
  parsePskClients(r, report, dir, cfg.coap.psk_clients);
  cfg.coap.listen_pki = parsePki(r, report, "coap", dir, "listen_pki", true);
  parseCertClients(r, report, cfg.coap.cert_clients);
  parseCredentialRules(r, report, dir, cfg.coap.credentials);
  if (dtls_listen != nullptr && cfg.coap.psk_clients.empty() && r.find("psk_client") == nullptr &&
      r.find("listen_pki") == nullptr) {
    report.error(*dtls_listen, "coap.listen",
                 "a coaps:// listener needs the clients' keys or certificates: add a "
                 "[[coap.psk_client]] with identity and key_file for each, or listen_pki = "
                 "{ ca_file, cert_file, key_file } and a [[coap.cert_client]] for each");
  }
  if (r.find("listen_pki") != nullptr && dtls_listen == nullptr) {
    r.invalid("listen_pki",
              "a server certificate is used with a coaps:// listener only, and listen has none");
  }
  if (const Value* clients = r.find("cert_client");
      clients != nullptr && r.find("listen_pki") == nullptr) {
    report.error(*clients, "coap.cert_client",
                 "certificate clients need listen_pki = { ca_file, cert_file, key_file } (the "
                 "CA their certificates chain to)");
  }
  constexpr std::chrono::milliseconds kMin{100};
  if (auto d = r.duration("request_timeout", kMin)) cfg.coap.request_timeout = *d;
  if (auto d = r.duration("retry_interval", kMin)) cfg.coap.retry_interval = *d;
  if (auto d = r.duration("offline_after", std::chrono::seconds(1))) cfg.coap.offline_after = *d;
  if (auto b = r.boolean("resource_directory")) cfg.coap.resource_directory = *b;
  if (auto d = r.duration("ack_timeout", kMin)) {
    if (*d > std::chrono::seconds(60)) {
      r.invalid("ack_timeout", "expected at most 60s (RFC 7252 default 2s)");
    } else {
      cfg.coap.ack_timeout = *d;
    }
  }
  if (const Value* v = r.find("ack_random_factor")) {
    const double f =
        v->is_floating() ? v->as_floating() : (v->is_integer() ? double(v->as_integer()) : -1.0);
    if (f < 1.0 || f > 4.0) {
      r.invalid("ack_random_factor", "expected a number 1.0..4.0 (RFC 7252 default 1.5)");
    } else {
      cfg.coap.ack_random_factor = f;
    }
  }
  if (auto n = r.integer("max_retransmit", 0, 20)) cfg.coap.max_retransmit = unsigned(*n);
  parseDiscoverySection(r, report, cfg.coap.discovery);
  parseCoapLimits(r, report, cfg.coap.limits);
  parsePubSubKeys(r, cfg.coap.pubsub);

  const Value* devices = r.find("device");
  if (devices == nullptr) return;
  if (!devices->is_array()) {
    report.error(*devices, "coap.device",
                 std::string("expected an array of tables (write [[coap.device]] for each "
                             "device), got ") +
                     typeName(*devices));
    return;
  }
  // Device name -> its `name` value. The line is read only for a duplicate: toml11 counts
  // the lines from the file's start for each location(), quadratic over 10,000 devices.
  std::map<std::string, const Value*> seen;
  std::size_t index = 0;
  cfg.devices.reserve(devices->as_array().size());  // kept for the gateway's life
  for (const Value& item : devices->as_array()) {
    const std::string prefix = "coap.device[" + std::to_string(++index) + "]";
    if (!item.is_table()) {
      report.error(item, prefix, std::string("expected a table, got ") + typeName(item));
      continue;
    }
    TableReader d(report, item, prefix, {"name", "uri", "psk", "pki"});
    StaticDevice dev;
    bool ok = true;
    if (auto name = d.string("name", true, kNameExpected)) {
      if (!isValidName(*name)) {
        d.invalid("name", std::string("expected ") + kNameExpected +
                              " (it is used as an MQTT topic level), got " + quote(*name));
        ok = false;
      } else if (isReservedDeviceName(*name)) {
        d.invalid("name", quote(*name) +
                              " is reserved: <base_topic>/bridge/... are the gateway's own topics");
        ok = false;
      } else if (const auto [it, inserted] = seen.emplace(*name, d.find("name")); !inserted) {
        d.invalid("name", "duplicate device name " + quote(*name) + " (already used at line " +
                              std::to_string(it->second->location().line()) + ")");
        ok = false;
      }
      dev.name = *name;
    } else {
      ok = false;
    }
    const bool has_psk = d.find("psk") != nullptr;
    const bool has_pki = d.find("pki") != nullptr;
    dev.psk = parsePsk(d, report, prefix, dir);
    dev.pki = parsePki(d, report, prefix, dir);
    if ((has_psk && !dev.psk) || (has_pki && !dev.pki)) ok = false;
    if (has_psk && has_pki) {
      d.invalid("pki", "a device has either psk or pki, not both");
      ok = false;
    }
    if (auto uri = d.string("uri", true, "a URI coap://host[:port] or coaps://host[:port]")) {
      if (auto problem = checkCoapUri(*uri)) {
        d.invalid("uri", *problem);
        ok = false;
      } else if (isCoapsUri(*uri) && !has_psk && !has_pki) {
        d.invalid("uri",
                  "coaps:// needs the device's credentials: psk = { identity = \"...\", "
                  "key_file = \"...\" } or pki = { ca_file, cert_file, key_file }");
        ok = false;
      } else if (!isCoapsUri(*uri) && (has_psk || has_pki)) {
        d.invalid(has_psk ? "psk" : "pki",
                  std::string(has_psk ? "a pre-shared key" : "a certificate") +
                      " is used with a coaps:// uri only, but uri is " + quote(*uri));
        ok = false;
      }
      dev.uri = *uri;
    } else {
      ok = false;
    }
    if (ok) cfg.devices.push_back(std::move(dev));
  }
}

// A readable regular file, resolved against the config file's folder; nullopt (reported)
// otherwise.
std::optional<std::string> readableFile(TableReader& r, const std::string& dir,
                                        std::string_view key) {
  auto file = r.string(key, false, "a file path");
  if (!file) return std::nullopt;
  if (file->empty()) {
    r.invalid(key, "expected a file path, got an empty string");
    return std::nullopt;
  }
  const std::string path = resolvePath(dir, *file);
  if (auto error = checkReadable(path)) {
    r.invalid(key, "cannot read " + quote(path) + ": " + error->reason);
    return std::nullopt;
  }
  return path;
}

// mqtt.session_expiry: "never" or whole seconds; only where it means something (MQTT 5,
// a session that is not cleaned on every connect). `settled`: protocol and clean_session
// are valid (or absent); if not, their own errors say so and no second one follows.
void parseSessionExpiry(TableReader& r, MqttConfig& mqtt, bool settled) {
  const Value* v = r.find("session_expiry");
  if (v == nullptr) return;
  const std::string expected = "expected \"never\" or a duration such as \"12h\", got ";
  if (v->is_string() && v->as_string().str == "never") {
    mqtt.session_expiry = kSessionNeverExpires;
  } else if (v->is_string() && !parseDuration(v->as_string().str)) {
    r.invalid("session_expiry", expected + "\"" + v->as_string().str + "\"");
    return;
  } else if (!v->is_string() && !v->is_integer()) {
    r.invalid("session_expiry", expected + typeName(*v));
    return;
  } else if (auto d = r.duration("session_expiry", std::chrono::milliseconds(0))) {
    if (d->count() % 1000 != 0 || *d >= kSessionNeverExpires) {
      r.invalid("session_expiry", "expected \"never\" or whole seconds below 4294967295s");
      return;
    }
    mqtt.session_expiry = std::chrono::duration_cast<std::chrono::seconds>(*d);
  } else {
    return;
  }
  if (!settled) return;
  if (mqtt.protocol != MqttProtocol::V5) {
    r.invalid("session_expiry",
              "needs protocol = \"5\": MQTT 3.1.1 has no session expiry (its sessions last "
              "until the broker drops them)");
  } else if (mqtt.clean_session) {
    r.invalid("session_expiry",
              "needs clean_session = false: a clean session is dropped on every connect anyway");
  }
}

void parseMqttTls(TableReader& mqtt, Reporter& report, const std::string& dir, MqttConfig& out) {
  const Value* section = mqtt.table("tls");
  if (section == nullptr) return;
  TableReader r(report, *section, "mqtt.tls",
                {"ca_file", "cert_file", "key_file", "verify", "alpn"});
  if (auto p = readableFile(r, dir, "ca_file")) out.tls.ca_file = *p;
  if (auto p = readableFile(r, dir, "cert_file")) out.tls.cert_file = *p;
  if (auto p = readableFile(r, dir, "key_file")) out.tls.key_file = *p;
  if (r.find("cert_file") != nullptr && r.find("key_file") == nullptr) {
    r.invalid("cert_file", "needs mqtt.tls.key_file (the client certificate's private key)");
  }
  if (r.find("key_file") != nullptr && r.find("cert_file") == nullptr) {
    r.invalid("key_file", "needs mqtt.tls.cert_file (the certificate this key belongs to)");
  }
  if (auto b = r.boolean("verify")) out.tls.verify = *b;
  r.stringArray("alpn", "ALPN protocol names such as \"mqtt\"",
                [&](const Value& item, const std::string& key, const std::string& proto) {
                  if (proto.empty() || proto.size() > 255) {
                    report.error(item, key, "expected 1..255 bytes, got " + quote(proto));
                  } else {
                    out.tls.alpn.push_back(proto);
                  }
                });
  if (!isTlsMqttUri(out.uri)) {
    report.error(*section, "mqtt.tls",
                 "TLS settings need a TLS URI (mqtts://, ssl:// or wss://), but mqtt.uri is " +
                     quote(out.uri));
  }
}

void parseMqttBuffer(TableReader& mqtt, Reporter& report, MqttBufferConfig& out) {
  const Value* section = mqtt.table("buffer");
  if (section == nullptr) return;
  TableReader r(report, *section, "mqtt.buffer", {"max_messages", "max_bytes", "qos0_messages"});
  if (auto n = r.integer("max_messages", 1, 100000000)) out.max_messages = std::size_t(*n);
  if (auto n = r.integer("max_bytes", 1024, std::int64_t{1} << 40)) out.max_bytes = std::size_t(*n);
  if (auto n = r.integer("qos0_messages", 0, 10000000)) out.qos0_messages = std::size_t(*n);
}

// Returns the base topic the rules should use (the default when the configured one is bad,
// so a bad base_topic is reported once rather than once per rule).
std::string parseMqttSection(TableReader& root, Reporter& report, const std::string& dir,
                             GatewayConfig& cfg) {
  std::string rules_base = cfg.mqtt.base_topic;
  const Value* section = root.table("mqtt");
  if (section == nullptr) return rules_base;
  TableReader r(
      report, *section, "mqtt",
      {"uri", "client_id", "base_topic", "username", "password_file", "keepalive", "protocol",
       "clean_session", "session_expiry", "max_inflight", "reconnect_max", "tls", "buffer"});
  if (auto uri = r.string("uri", false, "a URI such as mqtt://host[:port]")) {
    if (auto problem = checkMqttUri(*uri)) {
      r.invalid("uri", *problem);
    } else {
      cfg.mqtt.uri = *uri;
    }
  }
  if (auto id = r.string("client_id")) {
    if (id->empty()) {
      r.invalid("client_id", "expected a non-empty string");
    } else {
      cfg.mqtt.client_id = *id;
    }
  }
  if (auto base = r.string("base_topic", false, "an MQTT topic prefix such as \"coap2mqtt\"")) {
    if (auto problem = checkBaseTopic(*base)) {
      r.invalid("base_topic", "invalid base topic " + quote(*base) + ": " + *problem);
    } else {
      cfg.mqtt.base_topic = *base;
      rules_base = *base;
    }
  }
  if (auto user = r.string("username")) cfg.mqtt.username = *user;
  if (auto file = r.string("password_file", false, "a file path")) {
    const std::string path = resolveSecretPath(dir, *file);
    std::string password;
    if (file->empty()) {
      r.invalid("password_file", "expected a file path, got an empty string");
    } else if (auto error = readFile(path, password)) {
      r.invalid("password_file", "cannot read " + quote(path) + ": " + error->reason);
    } else if (r.find("username") == nullptr) {
      r.invalid("password_file",
                "needs mqtt.username: MQTT sends a password only with a user name");
    } else {
      // The first line only, without its line end (a trailing comment or a second
      // secret on later lines must never be sent).
      if (const auto eol = password.find('\n'); eol != std::string::npos) password.resize(eol);
      if (!password.empty() && password.back() == '\r') password.pop_back();
      cfg.mqtt.password_file = path;
      cfg.mqtt.password = std::move(password);
    }
  }
  if (auto d = r.duration("keepalive", std::chrono::milliseconds(0))) {
    if (d->count() % 1000 != 0 || *d > std::chrono::seconds(65535)) {
      r.invalid("keepalive", "expected whole seconds from 0s to 65535s");
    } else {
      cfg.mqtt.keepalive = std::chrono::duration_cast<std::chrono::seconds>(*d);
    }
  }
  const auto protocol =
      r.choice<MqttProtocol>("protocol", {{"3.1.1", MqttProtocol::V311}, {"5", MqttProtocol::V5}});
  if (protocol) cfg.mqtt.protocol = *protocol;
  const auto clean_session = r.boolean("clean_session");
  if (clean_session) cfg.mqtt.clean_session = *clean_session;
  parseSessionExpiry(r, cfg.mqtt,
                     (protocol || r.find("protocol") == nullptr) &&
                         (clean_session || r.find("clean_session") == nullptr));
  if (auto n = r.integer("max_inflight", 1, 65535)) cfg.mqtt.max_inflight = std::size_t(*n);
  if (auto d = r.duration("reconnect_max", std::chrono::milliseconds(100))) {
    cfg.mqtt.reconnect_max = *d;
  }
  parseMqttTls(r, report, dir, cfg.mqtt);
  parseMqttBuffer(r, report, cfg.mqtt.buffer);
  return rules_base;
}

// Files in the order they were first named, each file's errors by position.
void sortErrors(std::vector<ConfigError>& errors) {
  std::map<std::string, std::size_t> rank;
  for (const auto& e : errors) rank.emplace(e.file, rank.size());
  std::stable_sort(errors.begin(), errors.end(), [&](const ConfigError& a, const ConfigError& b) {
    return std::make_tuple(rank[a.file], a.line, a.column) <
           std::make_tuple(rank[b.file], b.line, b.column);
  });
}

}  // namespace

std::optional<std::chrono::milliseconds> parseDuration(std::string_view text) {
  return bridge::parseDuration(text);
}

GatewayConfig loadConfig(const std::string& path) {
  GatewayConfig cfg;
  cfg.file = path;
  std::vector<ConfigError> errors;
  const std::string dir = std::filesystem::path(path).parent_path().string();

  std::string content;
  if (auto error = readFile(path, content)) {
    throw bridge::ConfigErrors({{path, 0, 0, "",
                                 error->directory ? "is a directory, not a config file"
                                                  : "cannot read config file: " + error->reason}});
  }

  if (auto too_deep = bridge::toml_reader::checkDocument(path, content)) {
    throw bridge::ConfigErrors({std::move(*too_deep)});
  }
  std::optional<Value> doc;
  try {
    std::istringstream in(content);
    doc = toml::parse<toml::discard_comments, std::map, std::vector>(in, path);
  } catch (const std::exception&) {
    // parseRules turns the same syntax error into a ConfigError with its line and column.
    bridge::parseRules(path, content, kDefaultBaseTopic, true, cfg.rules, errors);
    if (errors.empty()) errors.push_back({path, 0, 0, "", "cannot parse the file as TOML"});
    throw bridge::ConfigErrors(std::move(errors));
  }

  Reporter report(path, errors, MessageStyle::Gateway);
  TableReader root(
      report, *doc, "",
      {"gateway", "coap", "mqtt", "admin", "metrics", "web", "rule", "command", "inbound"});
  cfg.name = defaultGatewayName();
  parseGatewaySection(root, report, dir, cfg);
  parseCoapSection(root, report, dir, cfg);
  const std::string rules_base = parseMqttSection(root, report, dir, cfg);
  parseAdminSection(root, report, cfg.admin);
  parseMetricsSection(root, report, cfg.metrics);
  parseWebSection(root, report, dir, cfg.web);
  if (cfg.mqtt.client_id.empty()) cfg.mqtt.client_id = "coap2mqtt-" + cfg.name;

  bridge::toml_reader::parseRulesOf(path, *doc, rules_base, true, cfg.rules, errors);
  loadRuleFiles(cfg.rule_globs, dir, rules_base, cfg.rules, errors);

  if (!errors.empty()) {
    sortErrors(errors);
    throw bridge::ConfigErrors(std::move(errors));
  }
  return cfg;
}

}  // namespace coap2mqtt::gateway
