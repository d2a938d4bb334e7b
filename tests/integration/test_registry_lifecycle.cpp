// The registry over a device's life: restart without rediscovery, liveness, renames.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "tests/integration/gateway_process.h"
#include "tests/integration/harness.h"

namespace coap2mqtt::test {
namespace {

using Json = nlohmann::json;

const char* kCounterRule =
    "[[rule]]\nname = \"counter\"\nmatch = { path = \"/sensors/counter\" }\n"
    "topic = \"c2m/{device}/{path}\"\n";

bool sawPayload(const MqttProbe& probe, const std::string& topic, const std::string& payload,
                std::chrono::milliseconds timeout) {
  return probe.waitFor(
      [&](const std::vector<MqttMessage>& msgs) {
        for (const auto& m : msgs) {
          if (m.topic == topic && m.payload == payload) return true;
        }
        return false;
      },
      timeout);
}

Json devicesJson(const TempDir& dir) {
  Process cli({gatewayBinary(), "devices", "--json", "-c", dir.file("gateway.toml")},
              dir.file("devices.log"));
  EXPECT_EQ(cli.stop(0, 20s), 0) << cli.output();
  return Json::parse(cli.output(), nullptr, false);
}

TEST(RegistryLifecycle, RestartObservesKnownDevicesWithoutRediscovery) {
  TempDir dir;
  Mosquitto broker;
  const int port = freeUdpPortRange(2);
  auto sim = startSim(dir, port, 2);
  MqttProbe probe(broker.port(), "c2m/+/sensors/counter");
  const std::string config = baseConfig(broker, dir) + simDevices(port, 2) + kCounterRule;
  auto gateway = startGateway(dir, config);
  ASSERT_TRUE(probe.waitForCount("c2m/dev0/sensors/counter", 2, 15s)) << gateway->output();
  ASSERT_TRUE(probe.waitForCount("c2m/dev1/sensors/counter", 2, 15s)) << gateway->output();
  EXPECT_EQ(sim->countInOutput("GET /.well-known/core"), 2u) << sim->output();

  gateway->stop(9);  // SIGKILL: no goodbye, no flush beyond what the store committed
  const std::size_t before = probe.messages().size();
  auto restarted = startGateway(dir, config);
  EXPECT_TRUE(restarted->waitForOutput("re-observed from the database", 10s))
      << restarted->output();
  for (const std::string dev : {"dev0", "dev1"}) {
    EXPECT_TRUE(probe.waitFor(
        [&](const std::vector<MqttMessage>& msgs) {
          for (std::size_t i = before; i < msgs.size(); ++i) {
            if (msgs[i].topic == "c2m/" + dev + "/sensors/counter") return true;
          }
          return false;
        },
        10s))
        << dev << "\n"
        << restarted->output();
  }
  // Observed straight from the database: nobody asked the devices for their resources again.
  EXPECT_EQ(sim->countInOutput("GET /.well-known/core"), 2u) << sim->output();
}

TEST(RegistryLifecycle, SilentDeviceGoesOfflineAndComesBack) {
  TempDir dir;
  Mosquitto broker;
  const int port = freeUdpPortRange(1);
  auto sim = startSim(dir, port, 1);
  MqttProbe probe(broker.port(), "c2m/#");
  std::string config = baseConfig(broker, dir) + simDevices(port, 1) + kCounterRule;
  config.replace(config.find("[coap]\n"), 7, "[coap]\noffline_after = \"2s\"\n");
  auto gateway = startGateway(dir, config);
  ASSERT_TRUE(sawPayload(probe, "c2m/dev0/availability", "online", 10s)) << gateway->output();

  sim->stop(9);
  EXPECT_TRUE(sawPayload(probe, "c2m/dev0/availability", "offline", 10s)) << gateway->output();
  EXPECT_TRUE(probe.waitFor(
      [](const std::vector<MqttMessage>& msgs) {
        for (const auto& m : msgs) {
          if (m.topic != "c2m/bridge/event") continue;
          Json e = Json::parse(m.payload, nullptr, false);
          if (e.value("type", "") == "device_offline" && e["data"].value("name", "") == "dev0") {
            return true;
          }
        }
        return false;
      },
      5s));
  EXPECT_TRUE(probe.waitFor(
      [](const std::vector<MqttMessage>& msgs) {
        for (auto it = msgs.rbegin(); it != msgs.rend(); ++it) {
          if (it->topic != "c2m/bridge/devices") continue;
          Json list = Json::parse(it->payload, nullptr, false);
          return list.is_array() && list.size() == 1 && list[0].value("online", true) == false;
        }
        return false;
      },
      5s));

  const std::size_t before = probe.messagesOn("c2m/dev0/sensors/counter").size();
  auto again = startSim(dir, port, 1, "200", "sim2.log");
  EXPECT_TRUE(probe.waitFor(
      [&](const std::vector<MqttMessage>& msgs) {
        std::size_t n = 0;
        bool online_last = false;
        for (const auto& m : msgs) {
          if (m.topic == "c2m/dev0/sensors/counter") ++n;
          if (m.topic == "c2m/dev0/availability") online_last = m.payload == "online";
        }
        return online_last && n >= before + 2;
      },
      15s))
      << gateway->output();
}

TEST(RegistryLifecycle, RenamePersistsAndMovesTopics) {
  TempDir dir;
  Mosquitto broker;
  const int port = freeUdpPortRange(2);
  const int rd_port = freeUdpPort();
  auto sim = startSim(dir, port, 2);
  MqttProbe probe(broker.port(), "c2m/#");
  std::string config = baseConfig(broker, dir) + simDevices(port, 1) + kCounterRule;
  config.replace(config.find("[coap]\n"), 7,
                 "[coap]\nlisten = [\"127.0.0.1:" + std::to_string(rd_port) + "\"]\n");
  auto gateway = startGateway(dir, config);
  ASSERT_TRUE(probe.waitForCount("c2m/dev0/sensors/counter", 1, 10s)) << gateway->output();

  // The second simulated device joins through the Resource Directory as "node7".
  const std::string rd = "coap://127.0.0.1:" + std::to_string(rd_port);
  auto reg = coapRequest(
      "post", rd + "/rd?ep=node7&lt=300&base=coap://127.0.0.1:" + std::to_string(port + 1),
      "</sensors/counter>;obs;rt=\"counter\"");
  ASSERT_EQ(reg.code, "2.01") << gateway->output();
  ASSERT_TRUE(probe.waitForCount("c2m/node7/sensors/counter", 1, 10s)) << gateway->output();

  auto request = [&](const std::string& body) {
    const std::size_t n = probe.messagesOn("c2m/bridge/response/device/rename").size();
    probe.publish("c2m/bridge/request/device/rename", body);
    EXPECT_TRUE(probe.waitForCount("c2m/bridge/response/device/rename", n + 1, 10s));
    return Json::parse(probe.messagesOn("c2m/bridge/response/device/rename").back().payload);
  };
  Json r = request(R"({"from":"nosuch","to":"x","transaction":"t1"})");
  EXPECT_EQ(r["status"], "error");
  EXPECT_EQ(r["transaction"], "t1");
  EXPECT_EQ(request(R"({"from":"node7","to":"bad/name"})")["status"], "error");
  EXPECT_EQ(request(R"({"from":"node7","to":"dev0"})")["status"], "error");
  r = request(R"({"from":"dev0","to":"boiler"})");
  EXPECT_EQ(r["status"], "error") << "configured devices are renamed in gateway.toml";
  EXPECT_NE(r.value("error", "").find("gateway.toml"), std::string::npos) << r.dump();
  EXPECT_EQ(request("not json")["status"], "error");

  r = request(R"({"from":"node7","to":"attic","transaction":42})");
  EXPECT_EQ(r["status"], "ok") << r.dump();
  EXPECT_EQ(r["transaction"], 42);
  EXPECT_TRUE(probe.waitForCount("c2m/attic/sensors/counter", 2, 10s)) << gateway->output();
  EXPECT_TRUE(sawPayload(probe, "c2m/node7/availability", "", 5s)) << "old retained state cleared";

  gateway->stop(15);
  Json list = devicesJson(dir);
  ASSERT_TRUE(list.is_array()) << list.dump();
  std::set<std::string> names;
  for (const auto& d : list) names.insert(d.value("name", ""));
  EXPECT_EQ(names, (std::set<std::string>{"attic", "dev0"}));
}

}  // namespace
}  // namespace coap2mqtt::test
