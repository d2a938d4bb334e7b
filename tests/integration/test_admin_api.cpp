// Issue 7, acceptance 5: every admin op over MQTT, with its error paths.
// <base>/bridge/request/<op> -> <base>/bridge/response/<op>, transaction echoed.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <iterator>

#include <nlohmann/json.hpp>

#include "tests/integration/gateway_process.h"
#include "tests/integration/harness.h"

namespace coap2mqtt::test {
namespace {

using Json = nlohmann::json;

class AdminApi : public ::testing::Test {
 protected:
  void SetUp() override {
    sim_port_ = freeUdpPortRange(2);
    sim_ = startSim(dir_, sim_port_, 2, "1000");
    probe_ = std::make_unique<MqttProbe>(broker_.port(), "c2m/#");
    gw_port_ = freeUdpPort();
    dir_.write("rules.toml", kRules);
    std::string config = baseConfig(broker_, dir_);
    config.replace(config.find("[coap]\n"), 7,
                   "rules = [\"rules.toml\"]\n\n[coap]\nlisten = [\"127.0.0.1:" +
                       std::to_string(gw_port_) + "\"]\n");
    // dev0 is configured (static); dev1 registers through the Resource Directory.
    gateway_ = startGateway(dir_, config + simDevices(sim_port_, 1));
    ASSERT_TRUE(waitUntil(
        [&] {
          return !gateway_->running() ||
                 !coapRequest("get", gw("/.well-known/core"), "", 2s).code.empty();
        },
        15s));
    ASSERT_TRUE(gateway_->running()) << gateway_->output();
    int attempt = 0;
    ASSERT_TRUE(waitUntil(
        [&] {
          const std::string tx = "ready-" + std::to_string(++attempt);
          probe_->publish("c2m/bridge/request/health_check", R"({"transaction":")" + tx + "\"}");
          return probe_->waitFor(
              [&](const std::vector<MqttMessage>& msgs) {
                return std::any_of(msgs.begin(), msgs.end(), [&](const MqttMessage& m) {
                  return m.payload.find(tx) != std::string::npos &&
                         m.topic == "c2m/bridge/response/health_check";
                });
              },
              1s);
        },
        20s))
        << gateway_->output();
  }

  std::string gw(const std::string& path) const {
    return "coap://127.0.0.1:" + std::to_string(gw_port_) + path;
  }

  // Sends `body` (with a fresh transaction added when it is an object) and returns the
  // response carrying that transaction, or null after `timeout`.
  Json request(const std::string& op, Json body = Json::object(),
               std::chrono::milliseconds timeout = 15s) {
    const std::string tx = "t" + std::to_string(++transactions_);
    body["transaction"] = tx;
    return requestRaw(op, body.dump(), tx, timeout);
  }
  Json requestRaw(const std::string& op, const std::string& payload, const std::string& tx,
                  std::chrono::milliseconds timeout = 15s) {
    const std::size_t before = probe_->messagesOn("c2m/bridge/response/" + op).size();
    probe_->publish("c2m/bridge/request/" + op, payload);
    Json found;
    waitUntil(
        [&] {
          const auto msgs = probe_->messagesOn("c2m/bridge/response/" + op);
          for (std::size_t i = before; i < msgs.size(); ++i) {
            Json j = Json::parse(msgs[i].payload, nullptr, false);
            if (tx.empty() || (j.is_object() && j.value("transaction", "") == tx)) {
              found = j;
              return true;
            }
          }
          return false;
        },
        timeout);
    return found;
  }

  std::vector<Json> events(const std::string& type) const {
    std::vector<Json> out;
    for (const auto& m : probe_->messagesOn("c2m/bridge/event")) {
      Json j = Json::parse(m.payload, nullptr, false);
      if (j.is_object() && j.value("type", "") == type) out.push_back(j);
    }
    return out;
  }

  std::string dump() const {
    std::string out = gateway_->output() + "\nmqtt:\n";
    for (const auto& m : probe_->messages()) out += m.topic + " " + m.payload + "\n";
    return out;
  }

  // Reads (device/read) obey the GET rules' allow: /info and /actuators/*.
  static constexpr const char* kRules =
      "[[command]]\nname = \"set\"\ntopic = \"c2m/{device}/{path}/set\"\n"
      "allow = { device = \"*\", path = \"/actuators/*\" }\n"
      "[[command]]\nname = \"get\"\ntopic = \"c2m/{device}/{path}/get\"\nmethod = \"GET\"\n"
      "allow = { device = \"*\", path = \"/actuators/*\" }\n"
      "[[command]]\nname = \"info\"\ntopic = \"c2m/{device}/{path}/info\"\nmethod = \"GET\"\n"
      "allow = { device = \"*\", path = \"/info\" }\n";

  TempDir dir_;
  Mosquitto broker_;
  int sim_port_ = 0;
  int gw_port_ = 0;
  int transactions_ = 0;
  std::unique_ptr<Process> sim_;
  std::unique_ptr<MqttProbe> probe_;
  std::unique_ptr<Process> gateway_;
};

TEST_F(AdminApi, HealthCheckAndInfo) {
  ASSERT_TRUE(waitUntil(
      [&] { return request("health_check")["data"].value("devices_online", 0) == 1; }, 15s))
      << dump();
  Json r = request("health_check");
  EXPECT_EQ(r.value("status", ""), "ok") << r;
  EXPECT_EQ(r["data"].value("healthy", false), true) << r;
  EXPECT_EQ(r["data"].value("mqtt_connected", false), true) << r;
  EXPECT_EQ(r["data"].value("devices", 0), 1) << r;
  EXPECT_GE(r["data"].value("uptime_s", -1), 0) << r;

  r = request("info");
  EXPECT_EQ(r.value("status", ""), "ok") << r;
  EXPECT_EQ(r["data"].value("gateway", ""), "test-gw") << r;
  EXPECT_TRUE(r["data"].contains("version")) << r;
  EXPECT_EQ(r["data"].value("commands", 0), 3) << r;
  EXPECT_TRUE(r["data"].contains("stats")) << r;
}

TEST_F(AdminApi, MalformedAndUnknownRequestsGetErrors) {
  Json r = requestRaw("info", "{not json", "");
  EXPECT_EQ(r.value("status", ""), "error") << dump();
  EXPECT_EQ(r.value("error", "").rfind("invalid JSON: ", 0), 0u) << r.dump();
  r = requestRaw("health_check", "[1,2]", "");
  EXPECT_EQ(r.value("status", ""), "error");
  EXPECT_NE(r.value("error", "").find("JSON object"), std::string::npos) << r;
  r = request("no/such/op");
  EXPECT_EQ(r.value("status", ""), "error") << dump();
  EXPECT_NE(r.value("error", "").find("unknown request 'no/such/op'"), std::string::npos) << r;
  EXPECT_NE(r.value("error", "").find("device/read"), std::string::npos) << "lists the ops";
  // A request without a transaction is answered too.
  r = requestRaw("info", "", "");
  EXPECT_EQ(r.value("status", ""), "ok");
  EXPECT_FALSE(r.contains("transaction"));
}

TEST_F(AdminApi, DiscoverWithoutMulticastIsAnError) {
  Json r = request("discover");
  EXPECT_EQ(r.value("status", ""), "error") << dump();
  EXPECT_NE(r.value("error", "").find("multicast discovery is off"), std::string::npos) << r;
}

TEST_F(AdminApi, DeviceReadGetsTheValueNow) {
  Json r = request("device/read", {{"device", "dev0"}, {"path", "/info"}});
  EXPECT_EQ(r.value("status", ""), "ok") << dump();
  EXPECT_EQ(r["data"].value("code", ""), "2.05") << r;
  EXPECT_EQ(r["data"]["payload"], Json::parse(R"({"name":"dev0","model":"c2m-sim"})")) << r;
  EXPECT_TRUE(sim_->waitForOutput("REQ dev0 GET /info", 5s));
  // A path without its leading '/' is the same path.
  r = request("device/read", {{"device", "dev0"}, {"path", "actuators/led"}});
  EXPECT_EQ(r["data"].value("path", ""), "/actuators/led") << r;
  EXPECT_EQ(r["data"]["payload"], "off") << r;

  r = request("device/read", {{"device", "dev0"}, {"path", "/actuators/nothing"}});
  EXPECT_EQ(r.value("status", ""), "error") << r;
  EXPECT_EQ(r["data"].value("code", ""), "4.04") << r;
  r = request("device/read", {{"device", "ghost"}, {"path", "/info"}});
  EXPECT_EQ(r.value("status", ""), "error") << r;
  EXPECT_EQ(r.value("error", ""), "unknown device 'ghost'") << r;
  r = request("device/read", {{"device", "dev0"}});
  EXPECT_EQ(r.value("error", ""), "missing \"path\"") << r;
  EXPECT_EQ(sim_->countInOutput("/actuators/nothing"), 1u);
  EXPECT_EQ(sim_->countInOutput("ghost"), 0u);
}

// Issue 17, finding 5: device/read GET any path on any device, whatever `allow` said.
TEST_F(AdminApi, DeviceReadObeysTheGetCommandsAllowList) {
  Json r = request("device/read", {{"device", "dev0"}, {"path", "/config/secret"}});
  EXPECT_EQ(r.value("status", ""), "error") << dump();
  EXPECT_NE(r.value("error", "").find("allows device 'dev0' path '/config/secret'"),
            std::string::npos)
      << r;
  r = request("device/read", {{"device", "dev0"}, {"path", "/actuators/%2e%2e/config"}});
  EXPECT_EQ(r.value("status", ""), "error") << r;
  EXPECT_NE(r.value("error", "").find("after decoding"), std::string::npos) << r;
  // Decoded once, as for commands: "%69nfo" is /info.
  r = request("device/read", {{"device", "dev0"}, {"path", "/%69nfo"}});
  EXPECT_EQ(r["data"].value("code", ""), "2.05") << r;
  EXPECT_EQ(r["data"].value("path", ""), "/info") << r;
  EXPECT_EQ(sim_->countInOutput("/config/secret"), 0u) << sim_->output();
  EXPECT_EQ(sim_->countInOutput(".."), 0u) << sim_->output();
}

TEST_F(AdminApi, DeviceRemoveForgetsARegisteredDevice) {
  // dev1 registers itself (RD); dev0 is configured.
  const std::string base = "coap://127.0.0.1:" + std::to_string(sim_port_ + 1);
  CoapResult reg = coapRequest("post", gw("/rd?ep=dev1&base=" + base), "</actuators/led>;obs");
  ASSERT_EQ(reg.code, "2.01") << dump();
  ASSERT_TRUE(waitUntil(
      [&] {
        auto a = probe_->messagesOn("c2m/dev1/availability");
        return !a.empty() && a.back().payload == "online";
      },
      15s))
      << dump();

  Json r = request("device/remove", {{"device", "dev0"}});
  EXPECT_EQ(r.value("status", ""), "error") << r;
  EXPECT_NE(r.value("error", "").find("configured"), std::string::npos) << r;
  r = request("device/remove", {{"device", "ghost"}});
  EXPECT_EQ(r.value("error", ""), "unknown device 'ghost'") << r;
  r = request("device/remove", Json::object());
  EXPECT_EQ(r.value("error", ""), "missing \"device\"") << r;

  r = request("device/remove", {{"device", "dev1"}});
  EXPECT_EQ(r.value("status", ""), "ok") << r << dump();
  EXPECT_EQ(r["data"].value("device", ""), "dev1");
  EXPECT_TRUE(waitUntil([&] { return !events("device_left").empty(); }, 5s)) << dump();
  EXPECT_EQ(events("device_left").front()["data"].value("name", ""), "dev1");
  // Retained availability cleared (an empty retained message).
  EXPECT_TRUE(waitUntil(
      [&] {
        auto a = probe_->messagesOn("c2m/dev1/availability");
        return !a.empty() && a.back().payload.empty();
      },
      5s));
  // Gone: health counts one device, reads and commands to it are refused.
  EXPECT_EQ(request("health_check")["data"].value("devices", 0), 1);
  r = request("device/read", {{"device", "dev1"}, {"path", "/info"}});
  EXPECT_EQ(r.value("error", ""), "unknown device 'dev1'") << r;
  probe_->publish("c2m/dev1/actuators/led/set", "on");
  ASSERT_TRUE(probe_->waitForCount("c2m/dev1/actuators/led/set/result", 1, 10s));
  EXPECT_EQ(Json::parse(probe_->messagesOn("c2m/dev1/actuators/led/set/result")[0].payload)
                .value("reason", ""),
            "unknown_device");
  r = request("device/remove", {{"device", "dev1"}});
  EXPECT_EQ(r.value("status", ""), "error") << "already gone";
}

TEST_F(AdminApi, DeviceRenameErrors) {
  Json r = request("device/rename", {{"from", "dev0"}, {"to", "boiler"}});
  EXPECT_EQ(r.value("status", ""), "error") << r;
  EXPECT_NE(r.value("error", "").find("rename it there"), std::string::npos) << r;
  r = request("device/rename", {{"from", "ghost"}, {"to", "x"}});
  EXPECT_EQ(r.value("error", ""), "unknown device 'ghost'") << r;
  r = request("device/rename", {{"from", 5}, {"to", "x"}});
  EXPECT_EQ(r.value("error", ""), "\"from\" must be a non-empty string") << r;
  r = request("device/rename", {{"from", "dev0"}});
  EXPECT_EQ(r.value("error", ""), "missing \"to\"") << r;
  r = request("device/read", {{"device", "dev0"}, {"path", 7}});
  EXPECT_EQ(r.value("error", ""), "\"path\" must be a non-empty string") << r;
  const std::string base = "coap://127.0.0.1:" + std::to_string(sim_port_ + 1);
  ASSERT_EQ(coapRequest("post", gw("/rd?ep=node&base=" + base), "</actuators/led>").code, "2.01");
  ASSERT_TRUE(
      waitUntil([&] { return request("health_check")["data"].value("devices", 0) == 2; }, 10s));
  r = request("device/rename", {{"from", "node"}, {"to", "bad name"}});
  EXPECT_NE(r.value("error", "").find("invalid name"), std::string::npos) << r;
  r = request("device/rename", {{"from", "node"}, {"to", "dev0"}});
  EXPECT_EQ(r.value("error", ""), "name 'dev0' is taken") << r;
  r = request("device/rename", {{"from", "node"}, {"to", "lamp"}});
  EXPECT_EQ(r.value("status", ""), "ok") << r << dump();
  r = request("device/read", {{"device", "lamp"}, {"path", "/actuators/led"}});
  EXPECT_EQ(r["data"].value("code", ""), "2.05") << r;
}

TEST_F(AdminApi, RulesReloadAnswersWithCountsOrTheError) {
  Json r = request("rules/reload");
  EXPECT_EQ(r.value("status", ""), "ok") << r << dump();
  EXPECT_EQ(r["data"].value("commands", -1), 3) << r;
  EXPECT_EQ(r["data"].value("rules", -1), 0) << r;

  dir_.write("rules.toml", std::string(kRules) +
                               "\n[[rule]]\nname = \"led\"\nmatch = { path = \"/actuators/led\" }\n"
                               "topic = \"c2m/{device}/{path}\"\n");
  r = request("rules/reload");
  EXPECT_EQ(r.value("status", ""), "ok") << r;
  EXPECT_EQ(r["data"].value("rules", -1), 1) << r;
  EXPECT_TRUE(probe_->waitForCount("c2m/dev0/actuators/led", 1, 15s)) << "the new rule works";

  dir_.write("rules.toml", "[[command]]\nname = \"broken\"\ntopic = \"c2m/{device}/set\"\n");
  r = request("rules/reload");
  EXPECT_EQ(r.value("status", ""), "error") << r;
  EXPECT_NE(r.value("error", "").find("rules.toml:1:1"), std::string::npos) << r;
  EXPECT_NE(r.value("error", "").find("allow"), std::string::npos) << r;
  // The old rules stay: commands still pass.
  probe_->publish("c2m/dev0/actuators/led/set", "after-failed-reload");
  ASSERT_TRUE(probe_->waitForCount("c2m/dev0/actuators/led/set/result", 1, 10s)) << dump();
  EXPECT_EQ(Json::parse(probe_->messagesOn("c2m/dev0/actuators/led/set/result")[0].payload)
                .value("code", ""),
            "2.04");
  EXPECT_EQ(request("info")["data"].value("rules", -1), 1);
}

// Issue 16: a reload applies the rules and says which other changes wait for a restart
// (they used to be ignored without a word).
TEST_F(AdminApi, RulesReloadNamesTheChangesThatNeedARestart) {
  Json r = request("rules/reload");
  ASSERT_EQ(r.value("status", ""), "ok") << r;
  EXPECT_EQ(r["data"]["restart_required"], Json::array()) << r;

  std::ifstream in(dir_.file("gateway.toml"));
  std::string toml((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  toml.replace(toml.find("retry_interval = \"1s\""), 22, "retry_interval = \"2s\"");
  toml.replace(toml.find("client_id = \"gw-under-test\""), 27, "client_id = \"gw-renamed\"");
  dir_.write("gateway.toml", toml);
  r = request("rules/reload");
  EXPECT_EQ(r.value("status", ""), "ok") << r;
  EXPECT_EQ(r["data"]["restart_required"], Json::array({"coap.retry_interval", "mqtt.client_id"}))
      << r;
  EXPECT_TRUE(waitUntil(
      [&] {
        return gateway_->output().find(
                   "only after a restart: coap.retry_interval, "
                   "mqtt.client_id") != std::string::npos;
      },
      5s))
      << gateway_->output();
}

// Issue 17, finding 5: the admin API can be cut down to some operations ([admin] allow) or
// turned off ([admin] enabled = false); refusals are counted.
TEST(AdminConfig, OperationsLeftOutOfAllowAreRefusedAndCounted) {
  TempDir dir;
  Mosquitto broker;
  const int port = freeUdpPortRange(1);
  auto sim = startSim(dir, port, 1, "1000");
  MqttProbe probe(broker.port(), "c2m/#");
  auto gateway = startGateway(dir, baseConfig(broker, dir) + simDevices(port, 1) +
                                       "[admin]\nallow = [\"health_check\", \"info\"]\n");
  auto response = [&](const std::string& op, const std::string& tx) {
    Json found;
    waitUntil(
        [&] {
          for (const auto& m : probe.messagesOn("c2m/bridge/response/" + op)) {
            Json j = Json::parse(m.payload, nullptr, false);
            if (j.is_object() && j.value("transaction", "") == tx) found = j;
          }
          return !found.is_null();
        },
        1s);
    return found;
  };
  int attempt = 0;
  ASSERT_TRUE(waitUntil(
      [&] {
        const std::string tx = "ready-" + std::to_string(++attempt);
        probe.publish("c2m/bridge/request/health_check", R"({"transaction":")" + tx + "\"}");
        return !response("health_check", tx).is_null();
      },
      20s))
      << gateway->output();
  probe.publish("c2m/bridge/request/device/rename",
                R"({"from":"dev0","to":"x","transaction":"r"})");
  probe.publish("c2m/bridge/request/rules/reload", R"({"transaction":"l"})");
  ASSERT_TRUE(waitUntil([&] { return !response("rules/reload", "l").is_null(); }, 10s));
  Json r = response("device/rename", "r");
  EXPECT_EQ(r.value("status", ""), "error") << r;
  EXPECT_NE(r.value("error", "").find("not allowed here ([admin] allow)"), std::string::npos) << r;
  EXPECT_EQ(response("rules/reload", "l").value("status", ""), "error");
  probe.publish("c2m/bridge/request/info", R"({"transaction":"i"})");
  ASSERT_TRUE(waitUntil([&] { return !response("info", "i").is_null(); }, 10s));
  EXPECT_EQ(response("info", "i")["data"]["stats"]["dropped"].value("admin_refused", 0), 2)
      << response("info", "i");
}

TEST(AdminConfig, TurnedOffItAnswersNothingAndCommandsStillWork) {
  TempDir dir;
  Mosquitto broker;
  const int port = freeUdpPortRange(1);
  auto sim = startSim(dir, port, 1, "1000");
  MqttProbe probe(broker.port(), "c2m/#");
  auto gateway = startGateway(dir, baseConfig(broker, dir) + simDevices(port, 1) +
                                       "[admin]\nenabled = false\n\n[[command]]\nname = \"set\"\n"
                                       "topic = \"c2m/{device}/{path}/set\"\n"
                                       "allow = { device = \"*\", path = \"/actuators/*\" }\n");
  // Ready once a command is answered; a request sent before a second command would have
  // been answered before that command's result.
  int attempt = 0;
  ASSERT_TRUE(waitUntil(
      [&] {
        probe.publish("c2m/dev0/actuators/led/set", "on-" + std::to_string(++attempt));
        return probe.waitForCount("c2m/dev0/actuators/led/set/result", 1, 1s);
      },
      20s))
      << gateway->output();
  probe.publish("c2m/bridge/request/health_check", R"({"transaction":"h"})");
  probe.publish("c2m/bridge/request/device/remove", R"({"device":"dev0"})");
  const std::size_t results = probe.messagesOn("c2m/dev0/actuators/led/set/result").size();
  probe.publish("c2m/dev0/actuators/led/set", "after");
  ASSERT_TRUE(probe.waitForCount("c2m/dev0/actuators/led/set/result", results + 1, 15s));
  EXPECT_TRUE(probe.messagesOn("c2m/bridge/response/health_check").empty());
  EXPECT_TRUE(probe.messagesOn("c2m/bridge/response/device/remove").empty());
}

}  // namespace
}  // namespace coap2mqtt::test
