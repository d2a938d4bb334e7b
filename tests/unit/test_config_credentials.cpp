// Issue 18: DTLS credentials in gateway.toml. Keys from files (raw or "hex:"), errors at
// file:line:col that never quote a key, and the warning for secret files others can read.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "bridge/config_error.h"
#include "gateway/config.h"
#include "gateway/config_credentials.h"
#include "gateway/device_credentials.h"
#include "tests/unit/temp_dir.h"

namespace {

namespace fs = std::filesystem;
using coap2mqtt::bridge::ConfigError;
using coap2mqtt::bridge::ConfigErrors;
using coap2mqtt::gateway::GatewayConfig;
using coap2mqtt::gateway::kMaxPskKey;
using coap2mqtt::gateway::loadConfig;
using coap2mqtt::gateway::parsePskKey;
using coap2mqtt::gateway::secretFileWarnings;

// Key files are written 0600 unless a test says otherwise.
class Dir : public coap2mqtt::unit::TempDir {
 public:
  Dir() : TempDir("c2m-cred") {}
};

std::vector<ConfigError> load(const Dir& dir, const std::string& toml,
                              GatewayConfig* out = nullptr) {
  const std::string file = dir.write("gateway.toml", toml, 0644);
  try {
    GatewayConfig cfg = loadConfig(file);
    if (out != nullptr) *out = std::move(cfg);
    return {};
  } catch (const ConfigErrors& e) {
    return e.errors();
  }
}

std::string device(const std::string& uri, const std::string& psk) {
  return "[[coap.device]]\nname = \"boiler\"\nuri = \"" + uri + "\"\n" + psk + "\n";
}

// One [[coap.credentials]] entry with `body` after its header (line 1).
std::string entry(const std::string& body) {
  return "[[coap.credentials]]\n" + body + "\n";
}

struct KeyCase {
  const char* name;
  std::string content;
  std::optional<std::string> key;  // nullopt: refused
  const char* error = "";          // part of the refusal
};

class PskKey : public ::testing::TestWithParam<KeyCase> {};

TEST_P(PskKey, ParsesOrRefusesWithoutQuotingTheContent) {
  const KeyCase& c = GetParam();
  std::string error;
  const auto key = parsePskKey(c.content, &error);
  EXPECT_EQ(key, c.key) << error;
  if (!c.key) {
    EXPECT_NE(error.find(c.error), std::string::npos) << error;
    // The message never carries the file's content (a near-miss key is still a secret).
    if (c.content.size() > 6) {
      EXPECT_EQ(error.find(c.content.substr(4)), std::string::npos) << error;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Keys, PskKey,
    ::testing::Values(
        KeyCase{"Raw", "secret", std::string("secret")},
        KeyCase{"RawWithNewline", "secret\n", std::string("secret")},
        KeyCase{"RawWithCrLf", "secret\r\n", std::string("secret")},
        KeyCase{"OnlyOneLineEndIsDropped", "secret\n\n", std::string("secret\n")},
        KeyCase{"RawKeepsSpaces", " s e c ", std::string(" s e c ")},
        KeyCase{"Hex", "hex:00ff10Ab\n", std::string("\x00\xff\x10\xab", 4)},
        KeyCase{"HexOfText", "hex:736563726574", std::string("secret")},
        KeyCase{"Empty", "", std::nullopt, "the key is empty"},
        KeyCase{"OnlyNewline", "\n", std::nullopt, "the key is empty"},
        KeyCase{"EmptyHex", "hex:", std::nullopt, "the key is empty"},
        KeyCase{"OddHex", "hex:abc", std::nullopt, "an even number of hexadecimal digits"},
        KeyCase{"NotHex", "hex:00zz9911", std::nullopt, "character 3 after it is not one"},
        KeyCase{"TooLong", std::string(kMaxPskKey + 1, 'k'), std::nullopt, "at most 256"},
        KeyCase{"LongestTaken", std::string(kMaxPskKey, 'k'), std::string(kMaxPskKey, 'k')}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(PskConfig, LoadsIdentityAndKeyFromTheFile) {
  Dir dir;
  dir.write("boiler.key", "hex:0102030405\n");
  GatewayConfig cfg;
  const auto errors = load(
      dir, device("coaps://192.0.2.10", "psk = { identity = \"gw-1\", key_file = \"boiler.key\" }"),
      &cfg);
  ASSERT_TRUE(errors.empty()) << errors.front().toString();
  ASSERT_EQ(cfg.devices.size(), 1u);
  ASSERT_TRUE(cfg.devices[0].psk.has_value());
  EXPECT_EQ(cfg.devices[0].psk->identity, "gw-1");
  EXPECT_EQ(cfg.devices[0].psk->key, std::string("\x01\x02\x03\x04\x05"));
  EXPECT_EQ(cfg.devices[0].psk->key_file, dir.path("boiler.key"));  // relative to the config
  EXPECT_TRUE(secretFileWarnings(cfg).empty());
}

TEST(PskConfig, KeyFileIsASystemdCredentialFirst) {
  Dir dir;
  Dir credentials;
  credentials.write("boiler.key", "from-credentials", 0400);
  dir.write("boiler.key", "from-config-dir");
  ::setenv("CREDENTIALS_DIRECTORY", credentials.path("").c_str(), 1);
  GatewayConfig cfg;
  const auto errors = load(
      dir, device("coaps://h", "psk = { identity = \"gw\", key_file = \"boiler.key\" }"), &cfg);
  ::unsetenv("CREDENTIALS_DIRECTORY");
  ASSERT_TRUE(errors.empty()) << errors.front().toString();
  EXPECT_EQ(cfg.devices.at(0).psk->key, "from-credentials");
}

struct BadCase {
  const char* name;
  std::string toml;  // after a key file "k" (mode 0600, content "hex:zz") and "good" exist
  std::size_t line;
  std::size_t column;
  const char* key;
  const char* message;
};

class PskConfigErrors : public ::testing::TestWithParam<BadCase> {};

TEST_P(PskConfigErrors, SaysWhereAndWhatWithoutTheKey) {
  Dir dir;
  dir.write("k", "hex:zz");
  dir.write("good", "goodsecret");
  const BadCase& c = GetParam();
  const auto errors = load(dir, c.toml);
  ASSERT_EQ(errors.size(), 1u) << (errors.empty() ? "no error" : errors.back().toString());
  EXPECT_EQ(errors[0].line, c.line) << errors[0].toString();
  EXPECT_EQ(errors[0].column, c.column) << errors[0].toString();
  EXPECT_EQ(errors[0].key, c.key) << errors[0].toString();
  EXPECT_NE(errors[0].message.find(c.message), std::string::npos) << errors[0].toString();
  EXPECT_EQ(errors[0].toString().find("goodsecret"), std::string::npos);
}

INSTANTIATE_TEST_SUITE_P(
    Errors, PskConfigErrors,
    ::testing::Values(
        BadCase{"MissingFile",
                device("coaps://h", "psk = { identity = \"gw\", key_file = \"nope\" }"), 4, 37,
                "coap.device[1].psk.key_file", "cannot read"},
        BadCase{"BadHex", device("coaps://h", "psk = { identity = \"gw\", key_file = \"k\" }"), 4,
                37, "coap.device[1].psk.key_file", "bad key in"},
        BadCase{"NoIdentity", device("coaps://h", "psk = { key_file = \"good\" }"), 4, 7,
                "coap.device[1].psk.identity", "required key is missing"},
        BadCase{"EmptyIdentity",
                device("coaps://h", "psk = { identity = \"\", key_file = \"good\" }"), 4, 20,
                "coap.device[1].psk.identity", "expected 1..128 bytes"},
        BadCase{
            "UnknownKey",
            device("coaps://h", "psk = { identity = \"gw\", key_file = \"good\", key = \"x\" }"), 4,
            51, "coap.device[1].psk.key", "unknown key"},
        BadCase{"PskWithPlainUri",
                device("coap://h", "psk = { identity = \"gw\", key_file = \"good\" }"), 4, 7,
                "coap.device[1].psk", "used with a coaps:// uri only"},
        BadCase{"PkiMissingKeyFile",
                device("coaps://h",
                       "pki = { ca_file = \"good\", cert_file = \"good\", key_file = \"nope\" }"),
                4, 58, "coap.device[1].pki.key_file", "cannot read"},
        BadCase{"PkiWithoutCa",
                device("coaps://h", "pki = { cert_file = \"good\", key_file = \"good\" }"), 4, 7,
                "coap.device[1].pki.ca_file", "required key is missing"},
        BadCase{"PkiWithPlainUri",
                device("coap://h",
                       "pki = { ca_file = \"good\", cert_file = \"good\", key_file = \"good\" }"),
                4, 7, "coap.device[1].pki", "a certificate is used with a coaps:// uri only"},
        BadCase{"PskAndPki",
                device("coaps://h",
                       "psk = { identity = \"gw\", key_file = \"good\" }\npki = { ca_file = "
                       "\"good\", cert_file = \"good\", key_file = \"good\" }"),
                5, 7, "coap.device[1].pki", "either psk or pki, not both"},
        BadCase{"PskNotATable", device("coaps://h", "psk = \"goodsecret\""), 4, 7,
                "coap.device[1].psk", "expected a table"},
        // [[coap.credentials]] (devices found by multicast or registered in the RD).
        BadCase{"EntryWithoutMatch", entry("psk = { identity = \"gw\", key_file = \"good\" }"), 1,
                1, "coap.credentials[1].match", "required key is missing"},
        BadCase{"EntryBadGlob",
                entry("match = { device = \"lamp-[\" }\npsk = { identity = \"gw\", key_file = "
                      "\"good\" }"),
                2, 20, "coap.credentials[1].match.device", "invalid glob"},
        BadCase{"EntryUnknownMatchKey",
                entry("match = { host = \"x\" }\npsk = { identity = \"gw\", key_file = "
                      "\"good\" }"),
                2, 18, "coap.credentials[1].match.host", "unknown key"},
        BadCase{"EntryWithoutCredentials", entry("match = { device = \"*\" }"), 1, 1,
                "coap.credentials[1].psk", "required key is missing"},
        BadCase{"EntryBadKey",
                entry("match = { device = \"*\" }\npsk = { identity = \"gw\", key_file = \"k\" }"),
                3, 37, "coap.credentials[1].psk.key_file", "bad key in"},
        BadCase{"EntryPortOutOfRange",
                entry("match = { address = \"10.*\" }\nport = 70000\npsk = { identity = \"gw\", "
                      "key_file = \"good\" }"),
                3, 8, "coap.credentials[1].port", "1..65535"},
        BadCase{"EntryPskAndPki",
                entry("match = { device = \"*\" }\npsk = { identity = \"gw\", key_file = "
                      "\"good\" }\npki = { ca_file = \"good\", cert_file = \"good\", key_file = "
                      "\"good\" }"),
                4, 7, "coap.credentials[1].pki", "either psk or pki, not both"},
        BadCase{"EntriesNotAnArray", "[coap]\ncredentials = 3\n", 2, 15, "coap.credentials",
                "expected an array of tables"}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(PkiConfig, LoadsTheThreeFilesAndChecksNamesByDefault) {
  Dir dir;
  dir.write("ca.pem", "x", 0644);
  dir.write("gw.pem", "x", 0644);
  dir.write("gw.key", "x", 0644);
  GatewayConfig cfg;
  const auto errors = load(dir,
                           device("coaps://h",
                                  "pki = { ca_file = \"ca.pem\", cert_file = "
                                  "\"gw.pem\", key_file = \"gw.key\" }"),
                           &cfg);
  ASSERT_TRUE(errors.empty()) << errors.front().toString();
  ASSERT_TRUE(cfg.devices.at(0).pki.has_value());
  EXPECT_EQ(cfg.devices[0].pki->ca_file, dir.path("ca.pem"));
  EXPECT_EQ(cfg.devices[0].pki->key_file, dir.path("gw.key"));
  EXPECT_TRUE(cfg.devices[0].pki->check_name);
  // The private key is a secret file: readable by others, it is warned about (the
  // certificates are public).
  const auto warnings = secretFileWarnings(cfg);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_EQ(warnings[0].rfind(dir.path("gw.key") + ": ", 0), 0u) << warnings[0];
}

TEST(CredentialsConfig, LoadsEntriesInOrderWithTheirGlobsPortAndCredentials) {
  Dir dir;
  dir.write("lamps.key", "lamp-secret");
  dir.write("ca.pem", "x", 0644);
  dir.write("gw.pem", "x", 0644);
  dir.write("gw.key", "x", 0644);
  GatewayConfig cfg;
  const auto errors =
      load(dir,
           entry("match = { device = \"lamp-*\", address = \"192.168.1.*\" }\nport = 6000\n"
                 "psk = { identity = \"gw\", key_file = \"lamps.key\" }") +
               entry("match = { address = \"fd00::*\" }\npki = { ca_file = \"ca.pem\", "
                     "cert_file = \"gw.pem\", key_file = \"gw.key\", check_name = false }"),
           &cfg);
  ASSERT_TRUE(errors.empty()) << errors.front().toString();
  const auto& rules = cfg.coap.credentials;
  ASSERT_EQ(rules.size(), 2u);
  EXPECT_EQ(rules[0].device, "lamp-*");
  EXPECT_EQ(rules[0].address, "192.168.1.*");
  EXPECT_EQ(rules[0].port, std::optional<std::uint16_t>(6000));
  ASSERT_TRUE(rules[0].psk.has_value());
  EXPECT_EQ(rules[0].psk->key, "lamp-secret");
  EXPECT_FALSE(rules[0].pki.has_value());
  EXPECT_EQ(rules[1].device, "*");  // an absent glob matches every device
  EXPECT_FALSE(rules[1].port.has_value());
  ASSERT_TRUE(rules[1].pki.has_value());
  EXPECT_FALSE(rules[1].pki->check_name);
  // Their secret files are checked like the devices' ones.
  const auto warnings = secretFileWarnings(cfg);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_EQ(warnings[0].rfind(dir.path("gw.key") + ": ", 0), 0u) << warnings[0];
}

TEST(CertClientConfig, ListenPkiAndClientNamesBoundToEndpoints) {
  Dir dir;
  dir.write("ca.pem", "x", 0644);
  dir.write("gw.pem", "x", 0644);
  dir.write("gw.key", "x");
  GatewayConfig cfg;
  const std::string listen =
      "[coap]\nlisten = [\"coaps://127.0.0.1:5684\"]\nlisten_pki = { ca_file = \"ca.pem\", "
      "cert_file = \"gw.pem\", key_file = \"gw.key\" }\n";
  auto errors =
      load(dir,
           listen +
               "[[coap.cert_client]]\nname = \"node7\"\n"
               "[[coap.cert_client]]\nname = \"lamp.example\"\nendpoints = [\"lamp-*\"]\n",
           &cfg);
  ASSERT_TRUE(errors.empty()) << errors.front().toString();
  ASSERT_TRUE(cfg.coap.listen_pki.has_value());
  EXPECT_EQ(cfg.coap.listen_pki->ca_file, dir.path("ca.pem"));
  EXPECT_EQ(cfg.coap.listen_pki->key_file, dir.path("gw.key"));
  ASSERT_EQ(cfg.coap.cert_clients.size(), 2u);
  EXPECT_EQ(cfg.coap.cert_clients[0].endpoints, std::vector<std::string>{"node7"});  // default
  EXPECT_EQ(cfg.coap.cert_clients[1].name, "lamp.example");
  EXPECT_EQ(cfg.coap.cert_clients[1].endpoints, std::vector<std::string>{"lamp-*"});
  // A coaps:// listener with listen_pki needs no [[coap.psk_client]].
  EXPECT_TRUE(cfg.coap.psk_clients.empty());

  // Each mistake at its place.
  errors = load(dir, listen +
                         "check_name = 1\n[[coap.cert_client]]\nname = \"a\"\n"
                         "[[coap.cert_client]]\nname = \"a\"\nendpoints = [\"[\"]\n");
  ASSERT_EQ(errors.size(), 3u);
  EXPECT_EQ(errors[0].key, "coap.check_name");
  EXPECT_EQ(errors[1].key, "coap.cert_client[2].name");
  EXPECT_NE(errors[1].message.find("duplicate name"), std::string::npos) << errors[1].toString();
  EXPECT_EQ(errors[1].line, 8u);
  EXPECT_EQ(errors[2].key, "coap.cert_client[2].endpoints[1]");
  EXPECT_NE(errors[2].message.find("invalid glob"), std::string::npos) << errors[2].toString();

  errors = load(dir,
                "[coap]\nlisten = [\"127.0.0.1:5683\"]\nlisten_pki = { ca_file = "
                "\"ca.pem\", cert_file = \"gw.pem\", key_file = \"gw.key\", check_name = "
                "true }\n[[coap.cert_client]]\nname = \"node7\"\n");
  ASSERT_EQ(errors.size(), 2u);  // in the order of their places
  EXPECT_EQ(errors[0].key, "coap.listen_pki");
  EXPECT_NE(errors[0].message.find("coaps:// listener only"), std::string::npos)
      << errors[0].toString();
  EXPECT_EQ(errors[1].key, "coap.listen_pki.check_name");
  EXPECT_NE(errors[1].message.find("unknown key"), std::string::npos) << errors[1].toString();

  errors = load(dir,
                "[coap]\nlisten = [\"coaps://127.0.0.1:5684\"]\n[[coap.cert_client]]\n"
                "name = \"node7\"\n");
  ASSERT_EQ(errors.size(), 2u);
  EXPECT_EQ(errors[0].key, "coap.listen");
  EXPECT_NE(errors[0].message.find("clients' keys or certificates"), std::string::npos)
      << errors[0].toString();
  EXPECT_EQ(errors[1].key, "coap.cert_client");
  EXPECT_EQ(errors[1].line, 3u);
}

using coap2mqtt::gateway::CredentialRules;
using coap2mqtt::gateway::CredentialsRule;
using coap2mqtt::gateway::PskCredentials;

CredentialsRule rule(const std::string& device, const std::string& address,
                     const std::string& identity, std::optional<std::uint16_t> port = {}) {
  CredentialsRule r;
  r.device = device;
  r.address = address;
  r.port = port;
  r.psk = PskCredentials{identity, "/k", "key-" + identity};
  return r;
}

TEST(CredentialRules, TheFirstMatchingEntryChoosesCoapsAndItsPort) {
  const CredentialRules rules({rule("lamp-*", "192.168.1.*", "lamps", 6000),
                               rule("*", "192.168.1.*", "lan"), rule("sensor-?", "*", "sensors")});
  // Name and address both match the first entry: its port.
  auto r = rules.reach("lamp-1", "coap://192.168.1.7:5683");
  EXPECT_EQ(r.uri, "coaps://192.168.1.7:6000");
  ASSERT_TRUE(r.credentials.psk.has_value());
  EXPECT_EQ(r.credentials.psk->identity, "lamps");
  // Only the address matches an entry: the second, on 5684.
  r = rules.reach("heater", "coap://192.168.1.8:5683");
  EXPECT_EQ(r.uri, "coaps://192.168.1.8:5684");
  EXPECT_EQ(r.credentials.psk->identity, "lan");
  // A coaps:// base keeps its own port.
  r = rules.reach("lamp-2", "coaps://192.168.1.9:7000");
  EXPECT_EQ(r.uri, "coaps://192.168.1.9:7000");
  EXPECT_EQ(r.credentials.psk->identity, "lamps");
  // IPv6: matched without brackets, written with them.
  r = rules.reach("sensor-4", "coap://[fd00::4]:5683");
  EXPECT_EQ(r.uri, "coaps://[fd00::4]:5684");
  EXPECT_EQ(r.credentials.psk->identity, "sensors");
  // Nothing matches: as it was, plain CoAP.
  r = rules.reach("sensor-42", "coap://10.0.0.1:5683");
  EXPECT_EQ(r.uri, "coap://10.0.0.1:5683");
  EXPECT_FALSE(r.credentials.any());
  EXPECT_EQ(rules.find("sensor-42", "coap://10.0.0.1:5683"), nullptr);
  // A copy matches the same (it holds its own entries).
  const CredentialRules copy = rules;
  EXPECT_EQ(copy.reach("lamp-1", "coap://192.168.1.7").uri, "coaps://192.168.1.7:6000");
  EXPECT_TRUE(CredentialRules().reach("lamp-1", "coap://192.168.1.7").uri == "coap://192.168.1.7");
}

TEST(PskConfig, WarnsAboutKeyFilesOthersCanRead) {
  Dir dir;
  dir.write("open.key", "secret", 0644);
  dir.write("group.key", "secret", 0640);
  dir.write("private.key", "secret", 0600);
  GatewayConfig cfg;
  const auto errors = load(
      dir,
      "[[coap.device]]\nname = \"a\"\nuri = \"coaps://h1\"\npsk = { identity = \"a\", key_file = "
      "\"open.key\" }\n[[coap.device]]\nname = \"b\"\nuri = \"coaps://h2\"\npsk = { identity = "
      "\"b\", key_file = \"group.key\" }\n[[coap.device]]\nname = \"c\"\nuri = \"coaps://h3\"\n"
      "psk = { identity = \"c\", key_file = \"private.key\" }\n",
      &cfg);
  ASSERT_TRUE(errors.empty()) << errors.front().toString();
  const auto warnings = secretFileWarnings(cfg);
  ASSERT_EQ(warnings.size(), 2u);
  EXPECT_EQ(warnings[0].rfind(dir.path("open.key") + ": ", 0), 0u) << warnings[0];
  EXPECT_NE(warnings[0].find("mode 0644"), std::string::npos) << warnings[0];
  EXPECT_EQ(warnings[1].rfind(dir.path("group.key") + ": ", 0), 0u) << warnings[1];
  EXPECT_EQ(warnings[0].find("secret\n"), std::string::npos);
}

}  // namespace
