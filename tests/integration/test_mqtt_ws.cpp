// MQTT over WebSocket (ws://) against a real mosquitto. Debian's mosquitto 2.0.11 is built
// without WebSocket listeners, so websockify (apt: websockify) stands in front of its plain
// TCP listener and turns WebSocket connections into TCP ones.
//
// websockify 0.10 as Debian ships it refuses paho: paho.mqtt.c offers the subprotocol "mqtt"
// (Sec-WebSocket-Protocol: mqtt, as MQTT over WebSocket requires) and websockify answers
// "400 Invalid protocol selected" to anything but "binary" or no subprotocol. So the test runs
// websockify's own proxy through tests/integration/websockify_mqtt.py, which changes just
// that choice; the handshake, the binary framing and the proxying are websockify's.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tests/integration/gateway_process.h"
#include "tests/integration/harness.h"

namespace coap2mqtt::test {
namespace {

constexpr const char* kPython = "/usr/bin/python3";  // the one python3-websockify is for

bool websockifyInstalled() {
  return ::access("/usr/bin/websockify", X_OK) == 0 && ::access(kPython, X_OK) == 0;
}

bool tcpAccepts(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  ::close(fd);
  return ok;
}

// websockify on a free loopback port, proxying to 127.0.0.1:target_port. `options` go
// before the addresses (e.g. --cert/--key/--ssl-only for wss://).
struct WebSocketProxy {
  WebSocketProxy(const TempDir& dir, int target_port, const std::vector<std::string>& options = {})
      : port(freeTcpPort()) {
    std::vector<std::string> argv{kPython, sourceDir() + "/tests/integration/websockify_mqtt.py",
                                  "-v"};
    argv.insert(argv.end(), options.begin(), options.end());
    argv.push_back("127.0.0.1:" + std::to_string(port));
    argv.push_back("127.0.0.1:" + std::to_string(target_port));
    proc = std::make_unique<Process>(std::move(argv), dir.file("websockify.log"));
    EXPECT_TRUE(waitUntil([&] { return tcpAccepts(port); }, 10s)) << proc->output();
  }
  int port;
  std::unique_ptr<Process> proc;
};

std::string counterRule() {
  return "[[rule]]\nname = \"counter\"\nmatch = { path = \"/sensors/counter\" }\n"
         "topic = \"c2m/{device}/{path}\"\nqos = 1\n\n"
         "[[command]]\nname = \"set\"\ntopic = \"c2m/{device}/{path}/set\"\nmethod = \"PUT\"\n"
         "allow = { device = \"*\", path = \"/actuators/*\" }\n";
}

// The gateway's broker is `ws_uri` (through `ws`, in front of `broker`); [mqtt] gets
// `extra_mqtt` tables. Values go out over the WebSocket and arrive at a plain TCP subscriber
// of the same broker; a command comes in over the same WebSocket and reaches the device.
void expectBridgingBothWays(const TempDir& dir, const Mosquitto& broker, const WebSocketProxy& ws,
                            const std::string& ws_uri, const std::string& extra_mqtt = "") {
  MqttProbe probe(broker.port(), "c2m/#");  // plain TCP
  const int port = freeUdpPortRange(1);
  auto sim = startSim(dir, port, 1);
  std::string config = baseConfig(broker, dir);
  config.replace(config.find(broker.uri()), broker.uri().size(), ws_uri);
  auto gateway = startGateway(dir, config + extra_mqtt + simDevices(port, 1) + counterRule());
  const auto logs = [&] {
    return "--- gateway:\n" + gateway->output() + "--- websockify:\n" + ws.proc->output() +
           "--- mosquitto:\n" + broker.output();
  };

  ASSERT_TRUE(probe.waitForCount("c2m/dev0/sensors/counter", 5, 20s)) << logs();
  long last = -1;
  for (const auto& m : probe.messagesOn("c2m/dev0/sensors/counter")) {
    const auto j = nlohmann::json::parse(m.payload, nullptr, false);
    ASSERT_TRUE(j.is_object() && j.contains("seq")) << m.payload;
    EXPECT_GT(j["seq"].get<long>(), last) << m.payload;
    last = j["seq"].get<long>();
    EXPECT_EQ(m.qos, 1);
  }
  EXPECT_TRUE(probe.waitFor(
      [](const std::vector<MqttMessage>& msgs) {
        for (const auto& m : msgs) {
          if (m.topic == "c2m/bridge/state" && m.payload.find("online") != std::string::npos) {
            return true;
          }
        }
        return false;
      },
      5s))
      << logs();
  EXPECT_NE(gateway->output().find("mqtt: connected to " + ws_uri), std::string::npos) << logs();
  // The connection really went through websockify: the upgrade of paho's GET /mqtt, with
  // the "mqtt" subprotocol, and a proxied connection to the broker's port.
  EXPECT_NE(ws.proc->output().find("\"GET /mqtt HTTP/1.1\" 101"), std::string::npos) << logs();
  EXPECT_NE(ws.proc->output().find("connecting to: 127.0.0.1:" + std::to_string(broker.port())),
            std::string::npos)
      << logs();

  // MQTT -> CoAP over the same WebSocket. The command subscription is made right after the
  // connect; publish until the device has seen the PUT (it is idempotent).
  EXPECT_TRUE(waitUntil(
      [&] {
        probe.publish("c2m/dev0/actuators/led/set", "on");
        return sim->waitForOutput("REQ dev0 PUT /actuators/led on\n", 1s);
      },
      15s))
      << logs() << "--- sim:\n"
      << sim->output();
  EXPECT_TRUE(probe.waitFor(
      [](const std::vector<MqttMessage>& msgs) {
        for (const auto& m : msgs) {
          if (m.topic == "c2m/dev0/actuators/led/set/result" &&
              m.payload.find("\"code\":\"2.04\"") != std::string::npos) {
            return true;
          }
        }
        return false;
      },
      10s))
      << logs();
}

const char kSkip[] =
    "websockify is not installed (apt-get install websockify): no WebSocket endpoint in front "
    "of mosquitto, whose Debian build has none";

TEST(MqttWebSocket, GatewayBridgesBothWaysOverWsThroughWebsockify) {
  if (!websockifyInstalled()) GTEST_SKIP() << kSkip;
  TempDir dir;
  Mosquitto broker;
  WebSocketProxy ws(dir, broker.port());
  expectBridgingBothWays(dir, broker, ws, "ws://127.0.0.1:" + std::to_string(ws.port));
  EXPECT_NE(ws.proc->output().find("Plain non-SSL (ws://) WebSocket connection"), std::string::npos)
      << ws.proc->output();
}

// wss://: websockify terminates TLS with a certificate the test makes (openssl CLI, a
// self-signed one for 127.0.0.1) and the gateway verifies it against that file.
TEST(MqttWebSocket, GatewayBridgesBothWaysOverWssWithServerVerification) {
  if (!websockifyInstalled()) GTEST_SKIP() << kSkip;
  TempDir dir;
  {
    Process openssl(
        {"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "2", "-subj", "/CN=c2m websockify", "-addext",
         "subjectAltName=IP:127.0.0.1", "-keyout", dir.file("ws.key"), "-out", dir.file("ws.pem")},
        dir.file("openssl.log"));
    ASSERT_EQ(openssl.stop(0, 20s), 0) << openssl.output();
  }
  Mosquitto broker;
  WebSocketProxy wss(dir, broker.port(),
                     {"--cert", dir.file("ws.pem"), "--key", dir.file("ws.key"), "--ssl-only"});
  expectBridgingBothWays(dir, broker, wss, "wss://127.0.0.1:" + std::to_string(wss.port),
                         "[mqtt.tls]\nca_file = \"" + dir.file("ws.pem") + "\"\n\n");
  EXPECT_NE(wss.proc->output().find("SSL/TLS (wss://) WebSocket connection"), std::string::npos)
      << wss.proc->output();
}

}  // namespace
}  // namespace coap2mqtt::test
