#include "gateway/config_credentials.h"

#include <sys/stat.h>

#include <cstdio>
#include <set>

#include "bridge/glob.h"
#include "bridge/hex.h"
#include "gateway/config_files.h"

namespace coap2mqtt::gateway {

namespace {

// key_file of `r`: the key it holds (nullopt, reported, when it cannot be had); *path is
// where it was looked for.
std::optional<std::string> readKeyFile(bridge::toml_reader::TableReader& r,
                                       bridge::toml_reader::Reporter& report,
                                       const std::string& dir, std::string* path) {
  auto file = r.string("key_file", true, "the path of the file holding the key");
  if (!file) return std::nullopt;
  if (file->empty()) {
    r.invalid("key_file", "expected a file path, got an empty string");
    return std::nullopt;
  }
  *path = resolveSecretPath(dir, *file);
  std::string content;
  if (auto error = readFile(*path, content)) {
    r.invalid("key_file", "cannot read " + report.quote(*path) + ": " + error->reason);
    return std::nullopt;
  }
  std::string problem;
  auto key = parsePskKey(content, &problem);
  if (!key) r.invalid("key_file", "bad key in " + report.quote(*path) + ": " + problem);
  return key;
}

// `endpoints = ["glob", ...]` of a [[coap.psk_client]] or [[coap.cert_client]].
void readEndpoints(bridge::toml_reader::TableReader& r, bridge::toml_reader::Reporter& report,
                   std::vector<std::string>& out, bool& ok) {
  r.stringArray(
      "endpoints", "RD endpoint names or globs",
      [&](const bridge::toml_reader::Value& v, const std::string& key, const std::string& ep) {
        std::string problem;
        if (!bridge::Glob::compile(ep, bridge::Glob::Kind::Name, &problem)) {
          report.error(v, key, "invalid glob " + report.quote(ep) + ": " + problem);
          ok = false;
        } else {
          out.push_back(ep);
        }
      });
}

// Each table of the array of tables [[coap.<key>]], with its key path ("coap.<key>[n]");
// anything else there is reported. `what` names one of them in the message ("client").
template <class F>
void eachTable(bridge::toml_reader::TableReader& coap, bridge::toml_reader::Reporter& report,
               const std::string& key, std::string_view what, F&& each) {
  using bridge::toml_reader::Value;
  const Value* tables = coap.find(key);
  if (tables == nullptr) return;
  const std::string path = "coap." + key;
  if (!tables->is_array()) {
    report.error(*tables, path,
                 "expected an array of tables (write [[" + path + "]] for each " +
                     std::string(what) + "), got " + bridge::toml_reader::typeName(*tables));
    return;
  }
  std::size_t index = 0;
  for (const Value& item : tables->as_array()) {
    const std::string prefix = path + "[" + std::to_string(++index) + "]";
    if (!item.is_table()) {
      report.error(item, prefix,
                   std::string("expected a table, got ") + bridge::toml_reader::typeName(item));
      continue;
    }
    each(item, prefix);
  }
}

bool checkIdentity(bridge::toml_reader::TableReader& r,
                   const std::optional<std::string>& identity) {
  if (!identity) return false;
  if (identity->empty() || identity->size() > kMaxPskIdentity) {
    r.invalid("identity", "expected 1.." + std::to_string(kMaxPskIdentity) + " bytes, got " +
                              std::to_string(identity->size()));
    return false;
  }
  return true;
}

}  // namespace

std::optional<std::string> parsePskKey(std::string_view content, std::string* error) {
  if (!content.empty() && content.back() == '\n') {
    content.remove_suffix(1);
    if (!content.empty() && content.back() == '\r') content.remove_suffix(1);
  }
  std::string key;
  if (content.substr(0, 4) == "hex:") {
    const std::string_view digits = content.substr(4);
    if (digits.size() % 2 != 0) {
      *error = "expected an even number of hexadecimal digits after \"hex:\", got " +
               std::to_string(digits.size()) + " character(s)";
      return std::nullopt;
    }
    for (std::size_t i = 0; i < digits.size(); i += 2) {
      const int hi = bridge::hexValue(digits[i]);
      const int lo = bridge::hexValue(digits[i + 1]);
      if (hi < 0 || lo < 0) {
        // Where, never what: the file holds a secret.
        *error = "expected hexadecimal digits after \"hex:\"; character " +
                 std::to_string(i + (hi < 0 ? 1 : 2)) + " after it is not one";
        return std::nullopt;
      }
      key.push_back(static_cast<char>(hi * 16 + lo));
    }
  } else {
    key.assign(content);
  }
  if (key.empty()) {
    *error = "the key is empty";
    return std::nullopt;
  }
  if (key.size() > kMaxPskKey) {
    *error = "the key is " + std::to_string(key.size()) + " bytes long; at most " +
             std::to_string(kMaxPskKey) + " are taken";
    return std::nullopt;
  }
  return key;
}

std::optional<PskCredentials> parsePsk(bridge::toml_reader::TableReader& device,
                                       bridge::toml_reader::Reporter& report,
                                       const std::string& prefix, const std::string& dir) {
  const bridge::toml_reader::Value* table = device.table("psk");
  if (table == nullptr) return std::nullopt;
  bridge::toml_reader::TableReader r(report, *table, prefix + ".psk", {"identity", "key_file"});
  PskCredentials psk;
  const auto identity = r.string("identity", true, "the PSK identity the device knows us by");
  bool ok = checkIdentity(r, identity);
  if (identity) psk.identity = *identity;
  if (auto key = readKeyFile(r, report, dir, &psk.key_file)) {
    psk.key = std::move(*key);
  } else {
    ok = false;
  }
  if (!ok) return std::nullopt;
  return psk;
}

std::optional<PkiCredentials> parsePki(bridge::toml_reader::TableReader& device,
                                       bridge::toml_reader::Reporter& report,
                                       const std::string& prefix, const std::string& dir,
                                       std::string_view key, bool listener) {
  const bridge::toml_reader::Value* table = device.table(key);
  if (table == nullptr) return std::nullopt;
  std::vector<std::string> known = {"ca_file", "cert_file", "key_file"};
  if (!listener) known.emplace_back("check_name");
  bridge::toml_reader::TableReader r(report, *table, prefix + "." + std::string(key), known);
  PkiCredentials pki;
  bool ok = true;
  const auto file = [&](std::string_view key, std::string_view expected, bool secret,
                        std::string& out) {
    auto name = r.string(key, true, expected);
    if (!name) {
      ok = false;
      return;
    }
    if (name->empty()) {
      r.invalid(key, "expected a file path, got an empty string");
      ok = false;
      return;
    }
    out = secret ? resolveSecretPath(dir, *name) : resolvePath(dir, *name);
    if (auto error = checkReadable(out)) {
      r.invalid(key, "cannot read " + report.quote(out) + ": " + error->reason);
      ok = false;
    }
  };
  file("ca_file",
       listener ? "the PEM file of the CA(s) client certificates must chain to"
                : "the PEM file of the CA(s) device certificates must chain to",
       false, pki.ca_file);
  file("cert_file",
       listener ? "the PEM file of the gateway's server certificate"
                : "the PEM file of the gateway's client certificate",
       false, pki.cert_file);
  file("key_file", "the PEM file of that certificate's private key", true, pki.key_file);
  if (!listener) {
    if (auto b = r.boolean("check_name")) pki.check_name = *b;
  }
  if (!ok) return std::nullopt;
  return pki;
}

void parsePskClients(bridge::toml_reader::TableReader& coap, bridge::toml_reader::Reporter& report,
                     const std::string& dir, std::vector<PskClient>& out) {
  std::set<std::string> seen;
  eachTable(coap, report, "psk_client", "client",
            [&](const bridge::toml_reader::Value& item, const std::string& prefix) {
              bridge::toml_reader::TableReader r(report, item, prefix,
                                                 {"identity", "key_file", "endpoints"});
              PskClient client;
              const auto identity = r.string("identity", true, "the PSK identity the client sends");
              bool ok = checkIdentity(r, identity);
              if (ok && !seen.insert(*identity).second) {
                r.invalid("identity", "duplicate identity " + report.quote(*identity));
                ok = false;
              }
              if (identity) client.identity = *identity;
              if (auto key = readKeyFile(r, report, dir, &client.key_file)) {
                client.key = std::move(*key);
              } else {
                ok = false;
              }
              readEndpoints(r, report, client.endpoints, ok);
              if (r.find("endpoints") == nullptr && identity) client.endpoints.push_back(*identity);
              if (ok) out.push_back(std::move(client));
            });
}

void parseCertClients(bridge::toml_reader::TableReader& coap, bridge::toml_reader::Reporter& report,
                      std::vector<CertClient>& out) {
  std::set<std::string> seen;
  eachTable(
      coap, report, "cert_client", "client",
      [&](const bridge::toml_reader::Value& item, const std::string& prefix) {
        bridge::toml_reader::TableReader r(report, item, prefix, {"name", "endpoints"});
        CertClient client;
        const auto name = r.string("name", true,
                                   "the name in the client's certificate (a DNS SAN, else the "
                                   "subject's CN)");
        bool ok = name.has_value();
        if (ok && (name->empty() || name->size() > 255)) {
          r.invalid("name", "expected 1..255 characters, got " + std::to_string(name->size()));
          ok = false;
        } else if (ok && !seen.insert(*name).second) {
          r.invalid("name", "duplicate name " + report.quote(*name));
          ok = false;
        }
        if (name) client.name = *name;
        readEndpoints(r, report, client.endpoints, ok);
        if (r.find("endpoints") == nullptr && name) client.endpoints.push_back(*name);
        if (ok) out.push_back(std::move(client));
      });
}

void parseCredentialRules(bridge::toml_reader::TableReader& coap,
                          bridge::toml_reader::Reporter& report, const std::string& dir,
                          std::vector<CredentialsRule>& out) {
  using bridge::toml_reader::Value;
  eachTable(
      coap, report, "credentials", "entry",
      [&](const bridge::toml_reader::Value& item, const std::string& prefix) {
        bridge::toml_reader::TableReader r(report, item, prefix, {"match", "port", "psk", "pki"});
        CredentialsRule rule;
        bool ok = true;
        if (const Value* match = r.table("match")) {
          bridge::toml_reader::TableReader m(report, *match, prefix + ".match",
                                             {"device", "address"});
          const auto glob = [&](std::string_view key, std::string_view expected, std::string& out) {
            auto pattern = m.string(key, false, expected);
            if (!pattern) return;
            std::string problem;
            if (!bridge::Glob::compile(*pattern, bridge::Glob::Kind::Name, &problem)) {
              m.invalid(key, "invalid glob " + report.quote(*pattern) + ": " + problem);
              ok = false;
            }
            out = *pattern;
          };
          glob("device", "a glob on device names, such as \"lamp-*\"", rule.device);
          glob("address", "a glob on device addresses, such as \"192.168.1.*\"", rule.address);
        } else if (r.find("match") == nullptr) {
          r.missing("match", "match = { device = \"glob\", address = \"glob\" }");
          ok = false;
        } else {
          ok = false;  // not a table: reported
        }
        if (r.find("port") != nullptr) {
          if (auto port = r.integer("port", 1, 65535)) {
            rule.port = static_cast<std::uint16_t>(*port);
          } else {
            ok = false;
          }
        }
        const bool has_psk = r.find("psk") != nullptr;
        const bool has_pki = r.find("pki") != nullptr;
        rule.psk = parsePsk(r, report, prefix, dir);
        rule.pki = parsePki(r, report, prefix, dir);
        if ((has_psk && !rule.psk) || (has_pki && !rule.pki)) ok = false;
        if (has_psk && has_pki) {
          r.invalid("pki", "an entry has either psk or pki, not both");
          ok = false;
        } else if (!has_psk && !has_pki) {
          r.missing("psk",
                    "psk = { identity, key_file } or pki = { ca_file, cert_file, key_file }");
          ok = false;
        }
        if (ok) out.push_back(std::move(rule));
      });
}

std::vector<std::string> secretFileWarnings(const GatewayConfig& config) {
  std::vector<std::string> files;
  for (const auto& c : config.coap.psk_clients) files.push_back(c.key_file);
  if (config.coap.listen_pki) files.push_back(config.coap.listen_pki->key_file);
  for (const auto& c : config.coap.credentials) {
    if (c.psk) files.push_back(c.psk->key_file);
    if (c.pki) files.push_back(c.pki->key_file);
  }
  for (const auto& d : config.devices) {
    if (d.psk) files.push_back(d.psk->key_file);
    if (d.pki) files.push_back(d.pki->key_file);
  }
  files.push_back(config.mqtt.password_file);
  files.push_back(config.mqtt.tls.key_file);
  std::vector<std::string> warnings;
  std::set<std::string> seen;
  for (const auto& file : files) {
    if (file.empty() || !seen.insert(file).second) continue;
    struct stat st {};
    if (::stat(file.c_str(), &st) != 0) continue;  // its own error says so at load
    if ((st.st_mode & (S_IRGRP | S_IROTH)) == 0) continue;
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    warnings.push_back(file + ": holds a secret but its group or others can read it (mode " + mode +
                       "); chmod 600 it, or 400 for a systemd credential");
  }
  return warnings;
}

}  // namespace coap2mqtt::gateway
