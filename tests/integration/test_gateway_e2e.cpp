// End to end on real parts: mosquitto, Debian's coap-server, our simulator, the gateway.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "tests/integration/gateway_process.h"
#include "tests/integration/harness.h"

namespace coap2mqtt::test {
namespace {

TEST(GatewayEndToEnd, ObservedTimeFromLibcoapServerArrivesOnMqtt) {
  TempDir dir;
  Mosquitto broker;
  const int coap_port = freeUdpPort();
  Process server({"coap-server-openssl", "-A", "127.0.0.1", "-p", std::to_string(coap_port)},
                 dir.file("server.log"));
  ASSERT_TRUE(waitUntil(
      [&] {
        return coapRequest("get", "coap://127.0.0.1:" + std::to_string(coap_port) + "/time").ok;
      },
      10s));
  MqttProbe probe(broker.port(), "#");
  // Polling every 60 s could deliver at most one value in 10 s: three or more values prove
  // they are observe notifications.
  auto gateway = startGateway(
      dir, baseConfig(broker, dir) +
               "[[coap.device]]\nname = \"clock\"\nuri = \"coap://127.0.0.1:" +
               std::to_string(coap_port) +
               "\"\n\n[[rule]]\nname = \"time\"\nmatch = { device = \"clock\", path = \"/time\" }\n"
               "mode = \"observe\"\ninterval = \"60s\"\ntopic = \"c2m/{device}/{path}\"\n"
               "payload = \"raw\"\n");
  EXPECT_TRUE(probe.waitForCount("c2m/clock/time", 3, 10s)) << gateway->output();
  auto values = probe.messagesOn("c2m/clock/time");
  ASSERT_GE(values.size(), 3u);
  std::set<std::string> distinct;
  for (const auto& m : values) distinct.insert(m.payload);
  EXPECT_GE(distinct.size(), 2u) << "the clock's value should change between notifications";
  EXPECT_EQ(probe.messagesOn("c2m/clock/example_data").size(), 0u) << "no rule matched it";
  EXPECT_TRUE(probe.waitForCount("c2m/clock/availability", 1, 5s));
  EXPECT_EQ(probe.messagesOn("c2m/clock/availability").back().payload, "online");
}

TEST(GatewayEndToEnd, BridgeStateOnlineThenOfflineOnShutdown) {
  TempDir dir;
  Mosquitto broker;
  MqttProbe probe(broker.port(), "c2m/bridge/#");
  auto gateway = startGateway(dir, baseConfig(broker, dir));
  ASSERT_TRUE(probe.waitFor(
      [](const auto& msgs) {
        return std::any_of(msgs.begin(), msgs.end(), [](const MqttMessage& m) {
          return m.topic == "c2m/bridge/state" && m.payload == R"({"state":"online"})";
        });
      },
      10s))
      << gateway->output();
  ASSERT_TRUE(probe.waitForCount("c2m/bridge/info", 1, 5s));
  const auto info = probe.messagesOn("c2m/bridge/info").back();
  EXPECT_NE(info.payload.find("\"gateway\":\"test-gw\""), std::string::npos) << info.payload;
  EXPECT_NE(info.payload.find("\"version\":"), std::string::npos) << info.payload;
  EXPECT_NE(info.payload.find("\"stale_notification\":0"), std::string::npos) << info.payload;
  EXPECT_EQ(gateway->stop(15, 10s), 0);
  EXPECT_NE(gateway->output().find("stats: {"), std::string::npos) << "counters logged at exit";
  EXPECT_TRUE(probe.waitFor(
      [](const auto& msgs) {
        return !msgs.empty() && msgs.back().topic == "c2m/bridge/state" &&
               msgs.back().payload == R"({"state":"offline"})";
      },
      5s));
  // Retained: a client that connects later still sees where the bridge stands.
  MqttProbe late(broker.port(), "c2m/bridge/state");
  EXPECT_TRUE(late.waitFor(
      [](const auto& msgs) {
        return !msgs.empty() && msgs.front().retained &&
               msgs.front().payload == R"({"state":"offline"})";
      },
      5s));
}

// Two gateways on one state_dir would both send the outbox's messages: the second refuses
// to start and says why; the first goes on.
TEST(GatewayEndToEnd, SecondGatewayOnTheSameStateDirRefusesToStart) {
  TempDir dir;
  Mosquitto broker;
  MqttProbe probe(broker.port(), "c2m/bridge/state");
  auto first = startGateway(dir, baseConfig(broker, dir));
  ASSERT_TRUE(probe.waitForCount("c2m/bridge/state", 1, 10s)) << first->output();
  TempDir second_dir;  // its own config and log, the first one's state_dir
  second_dir.write("gateway.toml", baseConfig(broker, dir));
  Process second({gatewayBinary(), "run", "-c", second_dir.file("gateway.toml")},
                 second_dir.file("gateway.log"));
  EXPECT_EQ(second.stop(0, 20s), 2) << second.output();  // signal 0: wait for its exit
  EXPECT_NE(second.output().find("in use by another process"), std::string::npos)
      << second.output();
  EXPECT_TRUE(first->running()) << first->output();
  // The second never reached the broker: with the same client id it would have thrown the
  // first one off.
  EXPECT_EQ(first->countInOutput("mqtt: connected to"), 1u) << first->output();
  EXPECT_EQ(first->stop(15, 10s), 0) << first->output();
}

TEST(GatewayEndToEnd, SimulatedCountersArriveInOrderAsJson) {
  TempDir dir;
  Mosquitto broker;
  const int port = freeUdpPortRange(3);
  auto sim = startSim(dir, port, 3);
  MqttProbe probe(broker.port(), "c2m/+/sensors/#");
  auto gateway =
      startGateway(dir, baseConfig(broker, dir) + simDevices(port, 3) +
                            "[[rule]]\nname = \"sensors\"\nmatch = { path = \"/sensors/*\" }\n"
                            "topic = \"c2m/{device}/{path}\"\nqos = 1\n");
  for (int i = 0; i < 3; ++i) {
    const std::string topic = "c2m/dev" + std::to_string(i) + "/sensors/counter";
    ASSERT_TRUE(probe.waitForCount(topic, 5, 15s)) << topic << "\n" << gateway->output();
  }
  for (int i = 0; i < 3; ++i) {
    long last = -1;
    for (const auto& m : probe.messagesOn("c2m/dev" + std::to_string(i) + "/sensors/counter")) {
      auto pos = m.payload.find("\"seq\":");
      ASSERT_NE(pos, std::string::npos) << m.payload;
      long seq = std::stol(m.payload.substr(pos + 6));
      EXPECT_GT(seq, last) << "out of order: " << m.payload;
      last = seq;
    }
  }
  // text/plain numbers become JSON numbers.
  auto temps = probe.messagesOn("c2m/dev0/sensors/temp");
  ASSERT_FALSE(temps.empty());
  EXPECT_NO_THROW((void)std::stod(temps.back().payload)) << temps.back().payload;
  EXPECT_NE(temps.back().payload.front(), '"');
}

TEST(GatewayEndToEnd, CommandReachesActuatorOnlyWhereAllowed) {
  TempDir dir;
  Mosquitto broker;
  const int port = freeUdpPortRange(2);
  auto sim = startSim(dir, port, 2, "1000");
  MqttProbe probe(broker.port(), "c2m/#");
  auto gateway = startGateway(
      dir, baseConfig(broker, dir) + simDevices(port, 2) +
               "[[command]]\nname = \"actuators\"\ntopic = \"c2m/{device}/{path}/set\"\n"
               "method = \"PUT\"\nallow = { device = \"*\", path = \"/actuators/*\" }\n");
  ASSERT_TRUE(probe.waitFor(
      [](const auto& msgs) {
        return std::count_if(msgs.begin(), msgs.end(), [](const MqttMessage& m) {
                 return m.topic.find("/availability") != std::string::npos && m.payload == "online";
               }) >= 2;
      },
      10s))
      << gateway->output();

  // Not allowed: a path outside `allow`, then an unknown device.
  probe.publish("c2m/dev0/config/name/set", "evil");
  probe.publish("c2m/nosuchdevice/actuators/led/set", "on");
  // Allowed: commands are handled in order, so once this one has arrived the refused ones
  // have been decided too.
  probe.publish("c2m/dev1/actuators/led/set", "on");
  const std::string led1 = "coap://127.0.0.1:" + std::to_string(port + 1) + "/actuators/led";
  EXPECT_TRUE(waitUntil([&] { return coapRequest("get", led1).payload == "on"; }, 10s))
      << gateway->output() << sim->output();
  EXPECT_TRUE(sim->waitForOutput("REQ dev1 PUT /actuators/led on", 5s)) << sim->output();
  EXPECT_EQ(sim->countInOutput("/config/name"), 0u) << sim->output();
  EXPECT_EQ(sim->countInOutput("REQ dev0 PUT"), 0u) << sim->output();
  EXPECT_NE(gateway->output().find("refused"), std::string::npos) << gateway->output();

  // A multi-level {path}: still the same device's actuator, the payload passed unchanged.
  probe.publish("c2m/dev0/actuators/led/set", "off-then-blue");
  const std::string led0 = "coap://127.0.0.1:" + std::to_string(port) + "/actuators/led";
  EXPECT_TRUE(waitUntil([&] { return coapRequest("get", led0).payload == "off-then-blue"; }, 10s))
      << gateway->output();
}

TEST(GatewayEndToEnd, UnreachableDeviceIsReportedOfflineAndPickedUpWhenItAppears) {
  TempDir dir;
  Mosquitto broker;
  const int port = freeUdpPortRange(1);
  MqttProbe probe(broker.port(), "c2m/#");
  auto gateway = startGateway(
      dir, baseConfig(broker, dir) + simDevices(port, 1) +
               "[[rule]]\nname = \"counter\"\nmatch = { path = \"/sensors/counter\" }\n"
               "topic = \"c2m/{device}/{path}\"\n");
  ASSERT_TRUE(probe.waitFor(
      [](const auto& msgs) {
        return std::any_of(msgs.begin(), msgs.end(), [](const MqttMessage& m) {
          return m.topic == "c2m/dev0/availability" && m.payload == "offline";
        });
      },
      15s))
      << gateway->output();
  auto sim = startSim(dir, port, 1);
  EXPECT_TRUE(probe.waitForCount("c2m/dev0/sensors/counter", 2, 15s)) << gateway->output();
  EXPECT_EQ(probe.messagesOn("c2m/dev0/availability").back().payload, "online");
}

}  // namespace
}  // namespace coap2mqtt::test
