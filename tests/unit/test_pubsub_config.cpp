// [coap] ps_root and ps_max_payload, and [[inbound]] in gateway.toml itself (issue 20).
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "bridge/config_error.h"
#include "gateway/config.h"

namespace {

namespace fs = std::filesystem;
using coap2mqtt::bridge::ConfigErrors;
using coap2mqtt::gateway::GatewayConfig;
using coap2mqtt::gateway::loadConfig;

// Writes `toml` to a fresh directory and loads it; the errors' text when it fails.
std::string load(const std::string& toml, GatewayConfig* out = nullptr) {
  std::string tmpl = (fs::temp_directory_path() / "c2m-ps-XXXXXX").string();
  const std::string dir = mkdtemp(tmpl.data());
  const std::string file = dir + "/gateway.toml";
  std::ofstream(file) << "[gateway]\nstate_dir = \"" << dir << "\"\n" << toml;
  std::string errors;
  try {
    GatewayConfig cfg = loadConfig(file);
    if (out != nullptr) *out = std::move(cfg);
  } catch (const ConfigErrors& e) {
    errors = e.what();
  }
  fs::remove_all(dir);
  return errors;
}

TEST(PubSubConfig, DefaultsAndValues) {
  GatewayConfig cfg;
  ASSERT_EQ(load("", &cfg), "");
  EXPECT_EQ(cfg.coap.pubsub.root, "ps");
  EXPECT_EQ(cfg.coap.pubsub.max_payload, 1024u);
  ASSERT_EQ(load("[coap]\nps_root = \"/pubsub\"\nps_max_payload = 256\n\n[[inbound]]\nallow = { "
                 "device = \"*\", path = \"/a/**\" }\n",
                 &cfg),
            "");
  EXPECT_EQ(cfg.coap.pubsub.root, "pubsub");
  EXPECT_EQ(cfg.coap.pubsub.max_payload, 256u);
  ASSERT_EQ(cfg.rules.inbound.size(), 1u);
  ASSERT_EQ(load("[coap]\nps_root = \"\"\n", &cfg), "");
  EXPECT_EQ(cfg.coap.pubsub.root, "");
}

TEST(PubSubConfig, BadValuesPointAtTheText) {
  const std::string a = load("[coap]\nps_root = \"a/b\"\n");
  EXPECT_NE(a.find("gateway.toml:4:11: coap.ps_root: expected one path segment"), std::string::npos)
      << a;
  const std::string b = load("[coap]\nps_root = \"rd\"\n");
  EXPECT_NE(b.find("coap.ps_root"), std::string::npos) << b;
  const std::string c = load("[coap]\nps_max_payload = 70000\n");
  EXPECT_NE(c.find("gateway.toml:4:18: coap.ps_max_payload"), std::string::npos) << c;
}

}  // namespace
