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

namespace {

namespace fs = std::filesystem;
using coap2mqtt::bridge::ConfigError;
using coap2mqtt::bridge::ConfigErrors;
using coap2mqtt::gateway::GatewayConfig;
using coap2mqtt::gateway::kMaxPskKey;
using coap2mqtt::gateway::loadConfig;
using coap2mqtt::gateway::parsePskKey;
using coap2mqtt::gateway::secretFileWarnings;

class Dir {
 public:
  Dir() {
    std::string tmpl = (fs::temp_directory_path() / "c2m-cred-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~Dir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string write(const std::string& name, const std::string& content, mode_t mode = 0600) const {
    const std::string p = (path_ / name).string();
    std::ofstream(p, std::ios::binary) << content;
    ::chmod(p.c_str(), mode);
    return p;
  }
  std::string path(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
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
                "coap.device[1].psk", "expected a table"}),
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
