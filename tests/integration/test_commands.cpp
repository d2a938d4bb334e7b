// Issue 7: MQTT commands to CoAP devices with results. Real mosquitto, Debian's
// coap-server-openssl, our simulator (its REQ lines are what the devices received) and the
// gateway. Everything is awaited with timeouts; timings are only bounded generously.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <sstream>

#include <mqtt/async_client.h>
#include <nlohmann/json.hpp>

#include "tests/integration/bridge_info.h"
#include "tests/integration/gateway_process.h"
#include "tests/integration/harness.h"

namespace coap2mqtt::test {
namespace {

using Json = nlohmann::json;

// A "device" that swallows every datagram: a bound UDP socket nobody reads.
class BlackHole {
 public:
  BlackHole() { fd_ = bindLoopbackUdp(&port_); }
  ~BlackHole() {
    if (fd_ >= 0) ::close(fd_);
  }
  BlackHole(const BlackHole&) = delete;
  BlackHole& operator=(const BlackHole&) = delete;
  int port() const { return port_; }

 private:
  int fd_ = -1;
  int port_ = 0;
};

std::string device(const std::string& name, int port) {
  return "[[coap.device]]\nname = \"" + name +
         "\"\nuri = \"coap://127.0.0.1:" + std::to_string(port) + "\"\n\n";
}

// Once the gateway answers an admin request its subscriptions are in place: the command
// filters are subscribed before bridge/request/#, in one connection, in order.
void waitForGateway(MqttProbe& probe, Process& gateway) {
  int attempt = 0;
  const bool ready = waitUntil(
      [&] {
        const std::string tx = "ready-" + std::to_string(++attempt);
        probe.publish("c2m/bridge/request/health_check", R"({"transaction":")" + tx + "\"}");
        return probe.waitFor(
            [&](const std::vector<MqttMessage>& msgs) {
              return std::any_of(msgs.begin(), msgs.end(), [&](const MqttMessage& m) {
                return m.topic == "c2m/bridge/response/health_check" &&
                       m.payload.find(tx) != std::string::npos;
              });
            },
            1s);
      },
      20s);
  ASSERT_TRUE(ready) << gateway.output();
}

std::vector<Json> jsonOn(const MqttProbe& probe, const std::string& topic) {
  std::vector<Json> out;
  for (const auto& m : probe.messagesOn(topic))
    out.push_back(Json::parse(m.payload, nullptr, false));
  return out;
}

// The simulator's REQ lines for `method` `path` of `dev`, payloads in arrival order.
std::vector<std::string> requests(const Process& sim, const std::string& dev,
                                  const std::string& method, const std::string& path) {
  std::vector<std::string> out;
  std::istringstream in(sim.output());
  const std::string prefix = "REQ " + dev + " " + method + " " + path;
  for (std::string line; std::getline(in, line);) {
    if (line == prefix) {
      out.emplace_back();
    } else if (line.rfind(prefix + " ", 0) == 0) {
      out.push_back(line.substr(prefix.size() + 1));
    }
  }
  return out;
}

std::string dump(const MqttProbe& probe) {
  std::string out;
  for (const auto& m : probe.messages()) {
    if (m.topic.find("/bridge/") == std::string::npos) out += m.topic + " " + m.payload + "\n";
  }
  return out;
}

const char* kSetRule =
    "[[command]]\nname = \"set\"\ntopic = \"c2m/{device}/{path}/set\"\nmethod = \"PUT\"\n"
    "allow = { device = \"*\", path = \"/actuators/*\" }\n";

// Acceptance 1.
TEST(Commands, PutToLibcoapServerChangesExampleDataAndSays204) {
  TempDir dir;
  Mosquitto broker;
  const int coap_port = freeUdpPort();
  const std::string base = "coap://127.0.0.1:" + std::to_string(coap_port);
  // -v 7: the server logs every packet, options included.
  Process server(
      {"coap-server-openssl", "-A", "127.0.0.1", "-p", std::to_string(coap_port), "-v", "7"},
      dir.file("server.log"));
  ASSERT_TRUE(waitUntil([&] { return coapRequest("get", base + "/time").ok; }, 10s));
  MqttProbe probe(broker.port(), "c2m/#");
  auto gateway = startGateway(
      dir, baseConfig(broker, dir) + device("srv", coap_port) +
               "[[command]]\nname = \"data\"\ntopic = \"c2m/{device}/{path}/set\"\n"
               "method = \"PUT\"\nallow = { device = \"srv\", path = \"/example_data\" }\n"
               "content_format = \"text/plain\"\n");
  waitForGateway(probe, *gateway);
  EXPECT_NE(coapRequest("get", base + "/example_data").payload, "written by coap2mqtt");
  probe.publish("c2m/srv/example_data/set", "written by coap2mqtt");
  ASSERT_TRUE(probe.waitForCount("c2m/srv/example_data/set/result", 1, 15s))
      << gateway->output() << dump(probe);
  const Json result = jsonOn(probe, "c2m/srv/example_data/set/result").front();
  EXPECT_EQ(result.value("code", ""), "2.04") << result;
  EXPECT_EQ(result.value("device", ""), "srv");
  EXPECT_EQ(result.value("path", ""), "/example_data");
  EXPECT_EQ(result.value("method", ""), "PUT");
  EXPECT_TRUE(result.contains("latency_ms"));
  EXPECT_EQ(coapRequest("get", base + "/example_data").payload, "written by coap2mqtt");
  // The request carried the rule's Content-Format.
  EXPECT_TRUE(
      server.waitForOutput("Uri-Path:example_data, Content-Format:text/plain ] :: "
                           "'written by coap2mqtt'",
                           5s))
      << server.output();
}

// Acceptance 2: per-device order.
TEST(Commands, BurstOfHundredArrivesInOrder) {
  TempDir dir;
  Mosquitto broker;
  const int port = freeUdpPortRange(1);
  auto sim = startSim(dir, port, 1, "1000");
  MqttProbe probe(broker.port(), "c2m/#");
  auto gateway = startGateway(dir, baseConfig(broker, dir) + simDevices(port, 1) + kSetRule +
                                       "queue = 200\ntimeout = \"60s\"\n");
  waitForGateway(probe, *gateway);
  for (int i = 0; i < 100; ++i)
    probe.publish("c2m/dev0/actuators/led/set", "v" + std::to_string(i));
  ASSERT_TRUE(probe.waitForCount("c2m/dev0/actuators/led/set/result", 100, 60s))
      << probe.messagesOn("c2m/dev0/actuators/led/set/result").size() << "\n"
      << gateway->output();
  for (const Json& r : jsonOn(probe, "c2m/dev0/actuators/led/set/result")) {
    EXPECT_EQ(r.value("code", ""), "2.04") << r;
  }
  const auto seen = requests(*sim, "dev0", "PUT", "/actuators/led");
  ASSERT_EQ(seen.size(), 100u) << sim->output();
  for (int i = 0; i < 100; ++i) EXPECT_EQ(seen[i], "v" + std::to_string(i)) << "at " << i;
}

// Acceptance 2: one silent device holds up nobody else.
TEST(Commands, TenDevicesDoNotBlockEachOther) {
  TempDir dir;
  Mosquitto broker;
  BlackHole silent;
  const int port = freeUdpPortRange(9);
  auto sim = startSim(dir, port, 9, "1000");
  MqttProbe probe(broker.port(), "c2m/#");
  // The CoAP layer's own request timeout (3 s in baseConfig) would end the silent device's
  // exchanges first; make the command timeout the one that counts.
  std::string config = baseConfig(broker, dir);
  const std::string short_timeout = "request_timeout = \"3s\"";
  config.replace(config.find(short_timeout), short_timeout.size(), "request_timeout = \"20s\"");
  auto gateway = startGateway(dir, config + simDevices(port, 9) + device("silent", silent.port()) +
                                       kSetRule + "timeout = \"8s\"\n");
  waitForGateway(probe, *gateway);
  // The silent device first, several times: its lane stays busy for the whole timeout.
  for (int i = 0; i < 3; ++i) probe.publish("c2m/silent/actuators/led/set", "on");
  for (int d = 0; d < 9; ++d) {
    probe.publish("c2m/dev" + std::to_string(d) + "/actuators/led/set", "on" + std::to_string(d));
  }
  for (int d = 0; d < 9; ++d) {
    const std::string topic = "c2m/dev" + std::to_string(d) + "/actuators/led/set/result";
    ASSERT_TRUE(probe.waitForCount(topic, 1, 20s)) << topic << "\n" << gateway->output();
    EXPECT_EQ(jsonOn(probe, topic).front().value("code", ""), "2.04");
  }
  // Every other device was answered before the silent one's first timeout result.
  EXPECT_TRUE(probe.messagesOn("c2m/silent/actuators/led/set/result").empty()) << dump(probe);
  ASSERT_TRUE(probe.waitForCount("c2m/silent/actuators/led/set/result", 3, 30s)) << dump(probe);
  for (const Json& r : jsonOn(probe, "c2m/silent/actuators/led/set/result")) {
    EXPECT_EQ(r.value("reason", ""), "timeout") << r;
  }
}

// Acceptance 2: an unreachable device: each command gets a timeout result in time; what
// does not fit the queue is refused at once. A port where nothing listens is reported
// by the kernel (ICMP), so those commands fail at once instead.
TEST(Commands, UnreachableDeviceTimesOutEachCommand) {
  TempDir dir;
  Mosquitto broker;
  BlackHole silent;
  const int nobody = freeUdpPort();  // nothing listens there
  MqttProbe probe(broker.port(), "c2m/#");
  auto gateway =
      startGateway(dir, baseConfig(broker, dir) + device("silent", silent.port()) +
                            device("nobody", nobody) + kSetRule + "timeout = \"2s\"\nqueue = 3\n");
  waitForGateway(probe, *gateway);
  const auto sent = std::chrono::steady_clock::now();
  for (int i = 0; i < 5; ++i) {
    probe.publish("c2m/silent/actuators/led/set", std::to_string(i));
    probe.publish("c2m/nobody/actuators/led/set", std::to_string(i));
  }
  for (const std::string dev : {"silent", "nobody"}) {
    const std::string topic = "c2m/" + dev + "/actuators/led/set/result";
    ASSERT_TRUE(probe.waitForCount(topic, 5, 15s)) << dump(probe) << gateway->output();
    const auto results = jsonOn(probe, topic);
    std::size_t timeouts = 0;
    std::size_t refused = 0;
    for (const Json& r : results) {
      EXPECT_TRUE(r.contains("error")) << r;
      EXPECT_FALSE(r.contains("code")) << r;
      const std::string reason = r.value("reason", "");
      if (reason == "timeout") {
        ++timeouts;
        // 2 s plus scheduling slack; never the minute libcoap would retransmit for.
        EXPECT_LE(r.value("latency_ms", 0), 2000 + 1500) << r;
      } else if (reason == "queue_full") {
        ++refused;
      } else if (dev == "nobody" && reason == "failed") {
        // Nothing listens: the kernel answers with ICMP port unreachable and the command
        // fails at once, which beats waiting for the timeout.
        ++timeouts;
        EXPECT_NE(r.value("error", "").find("ICMP"), std::string::npos) << r;
      } else {
        ADD_FAILURE() << dev << ": unexpected " << r;
      }
    }
    // One in flight and three waiting: the fifth is refused (unless the first already
    // ended, which a port without a listener may do at once: then fewer).
    EXPECT_EQ(timeouts + refused, 5u);
    EXPECT_LE(refused, 1u);
  }
  EXPECT_LT(std::chrono::steady_clock::now() - sent, 2s + 8s) << "all results within the timeout";
}

// A device that stalls (SIGSTOP) times the commands out; once it is back, the next
// command gets through promptly (the timed-out exchange does not hold it up for the
// minute libcoap would retransmit it).
TEST(Commands, StalledDeviceRecoversForLaterCommands) {
  TempDir dir;
  Mosquitto broker;
  const int port = freeUdpPortRange(1);
  auto sim = startSim(dir, port, 1, "1000");
  MqttProbe probe(broker.port(), "c2m/#");
  auto gateway = startGateway(
      dir, baseConfig(broker, dir) + simDevices(port, 1) + kSetRule + "timeout = \"2s\"\n");
  waitForGateway(probe, *gateway);
  const std::string results = "c2m/dev0/actuators/led/set/result";
  ASSERT_EQ(::kill(sim->pid(), SIGSTOP), 0);
  probe.publish("c2m/dev0/actuators/led/set", "while-stopped");
  const bool timed_out = probe.waitForCount(results, 1, 10s);
  ASSERT_EQ(::kill(sim->pid(), SIGCONT), 0);
  ASSERT_TRUE(timed_out) << gateway->output();
  EXPECT_EQ(jsonOn(probe, results).front().value("reason", ""), "timeout");
  probe.publish("c2m/dev0/actuators/led/set", "after");
  ASSERT_TRUE(probe.waitForCount(results, 2, 15s)) << gateway->output();
  EXPECT_EQ(jsonOn(probe, results)[1].value("code", ""), "2.04") << jsonOn(probe, results)[1];
  EXPECT_TRUE(sim->waitForOutput("REQ dev0 PUT /actuators/led after", 5s));
  const std::string led = "coap://127.0.0.1:" + std::to_string(port) + "/actuators/led";
  EXPECT_EQ(coapRequest("get", led).payload, "after");
}

// Acceptance 3: refused commands get an error result, and the device hears nothing.
TEST(Commands, RefusedCommandsGetErrorsAndCauseNoCoapTraffic) {
  TempDir dir;
  Mosquitto broker;
  const int port = freeUdpPortRange(1);
  auto sim = startSim(dir, port, 1, "1000");
  MqttProbe probe(broker.port(), "c2m/#");
  auto gateway = startGateway(
      dir, baseConfig(broker, dir) + simDevices(port, 1) + kSetRule +
               "max_payload = 64\n\n"
               "[[command]]\nname = \"cbor\"\ntopic = \"c2m/{device}/{path}/cbor\"\n"
               "content_format = \"application/cbor\"\n"
               "allow = { device = \"*\", path = \"/actuators/*\" }\n\n"
               "[[command]]\nname = \"slow\"\ntopic = \"c2m/{device}/{path}/limited\"\n"
               "rate_limit = \"2/m\"\nallow = { device = \"*\", path = \"/actuators/*\" }\n");
  waitForGateway(probe, *gateway);
  probe.publish("c2m/dev0/config/name/set", "evil");
  probe.publish("c2m/ghost/actuators/led/set", "on");
  probe.publish("c2m/dev0/actuators/led/set", std::string(65, 'x'));
  probe.publish("c2m/dev0/actuators/led/cbor", "{not json");
  for (int i = 0; i < 3; ++i)
    probe.publish("c2m/dev0/actuators/led/limited", "r" + std::to_string(i));
  probe.publish("c2m/dev0/actuators/led/set", "last");

  auto reasonOn = [&](const std::string& topic) {
    if (!probe.waitForCount(topic, 1, 15s)) return std::string("(no result)");
    return jsonOn(probe, topic).front().value("reason", "(none)");
  };
  EXPECT_EQ(reasonOn("c2m/dev0/config/name/set/result"), "not_allowed") << dump(probe);
  EXPECT_EQ(reasonOn("c2m/ghost/actuators/led/set/result"), "unknown_device");
  EXPECT_EQ(reasonOn("c2m/dev0/actuators/led/cbor/result"), "invalid_json");
  ASSERT_TRUE(probe.waitForCount("c2m/dev0/actuators/led/set/result", 2, 15s)) << dump(probe);
  const auto set_results = jsonOn(probe, "c2m/dev0/actuators/led/set/result");
  EXPECT_EQ(set_results[0].value("reason", ""), "payload_too_large") << set_results[0];
  EXPECT_EQ(set_results[1].value("code", ""), "2.04") << set_results[1];
  ASSERT_TRUE(probe.waitForCount("c2m/dev0/actuators/led/limited/result", 3, 15s));
  const auto limited = jsonOn(probe, "c2m/dev0/actuators/led/limited/result");
  EXPECT_EQ(std::count_if(limited.begin(), limited.end(),
                          [](const Json& r) { return r.value("reason", "") == "rate_limited"; }),
            1)
      << dump(probe);
  for (const auto& m : probe.messages()) {
    if (m.topic.size() > 7 && m.topic.substr(m.topic.size() - 7) == "/result") {
      const Json r = Json::parse(m.payload);
      EXPECT_TRUE(r.contains("code") || r.contains("error")) << m.payload;
    }
  }
  // The device heard the allowed command "last" and the two rate-allowed ones: no more.
  ASSERT_TRUE(sim->waitForOutput("REQ dev0 PUT /actuators/led last", 10s)) << sim->output();
  auto puts = requests(*sim, "dev0", "PUT", "/actuators/led");
  std::sort(puts.begin(), puts.end());
  EXPECT_EQ(puts, (std::vector<std::string>{"last", "r0", "r1"})) << sim->output();
  EXPECT_EQ(sim->countInOutput("/config/name"), 0u) << sim->output();
}

// GET and DELETE commands, a Block1 PUT, and Content-Format conversion of the answer.
TEST(Commands, GetDeleteAndLargePut) {
  TempDir dir;
  Mosquitto broker;
  const int port = freeUdpPortRange(1);
  auto sim = startSim(dir, port, 1, "1000");
  MqttProbe probe(broker.port(), "c2m/#");
  auto gateway = startGateway(
      dir,
      baseConfig(broker, dir) + simDevices(port, 1) + kSetRule +
          "\n[[command]]\nname = \"get\"\ntopic = \"c2m/{device}/{path}/get\"\nmethod = \"GET\"\n"
          "allow = { device = \"*\", path = \"/**\" }\n"
          "\n[[command]]\nname = \"delete\"\ntopic = \"c2m/{device}/{path}/delete\"\n"
          "method = \"DELETE\"\nallow = { device = \"*\", path = \"/actuators/*\" }\n");
  waitForGateway(probe, *gateway);

  probe.publish("c2m/dev0/info/get", "ignored for GET");
  ASSERT_TRUE(probe.waitForCount("c2m/dev0/info/get/result", 1, 15s)) << gateway->output();
  Json r = jsonOn(probe, "c2m/dev0/info/get/result").front();
  EXPECT_EQ(r.value("code", ""), "2.05") << r;
  EXPECT_EQ(r.value("method", ""), "GET");
  EXPECT_EQ(r["payload"], Json::parse(R"({"name":"dev0","model":"c2m-sim"})")) << r;
  EXPECT_TRUE(sim->waitForOutput("REQ dev0 GET /info\n", 5s)) << "no payload on a GET";

  probe.publish("c2m/dev0/actuators/led/delete", "");
  ASSERT_TRUE(probe.waitForCount("c2m/dev0/actuators/led/delete/result", 1, 15s));
  r = jsonOn(probe, "c2m/dev0/actuators/led/delete/result").front();
  EXPECT_EQ(r.value("code", ""), "4.05") << "the LED cannot be deleted: " << r;
  EXPECT_TRUE(sim->waitForOutput("REQ dev0 DELETE /actuators/led", 5s));

  // 4 KiB: several Block1 blocks, reassembled by the device.
  std::string blob;
  for (int i = 0; i < 4096; ++i) blob.push_back(static_cast<char>('a' + (i * 7) % 26));
  std::uint32_t h = 2166136261u;
  for (unsigned char c : blob) h = (h ^ c) * 16777619u;
  char expected[64];
  std::snprintf(expected, sizeof expected, "size=4096 fnv1a=%08x", h);
  probe.publish("c2m/dev0/actuators/blob/set", blob);
  ASSERT_TRUE(probe.waitForCount("c2m/dev0/actuators/blob/set/result", 1, 20s))
      << gateway->output();
  r = jsonOn(probe, "c2m/dev0/actuators/blob/set/result").front();
  EXPECT_EQ(r.value("code", ""), "2.04") << r;
  EXPECT_TRUE(sim->waitForOutput(std::string("REQ dev0 PUT /actuators/blob ") + expected, 5s))
      << sim->output();
  EXPECT_EQ(sim->countInOutput("REQ dev0 PUT /actuators/blob"), 1u)
      << "one request line: libcoap reassembled the blocks";
}

// The transaction rule: only an envelope carries one.
TEST(Commands, EnvelopeTransactionIsEchoed) {
  TempDir dir;
  Mosquitto broker;
  const int port = freeUdpPortRange(1);
  auto sim = startSim(dir, port, 1, "1000");
  MqttProbe probe(broker.port(), "c2m/#");
  auto gateway =
      startGateway(dir, baseConfig(broker, dir) + simDevices(port, 1) + kSetRule +
                            "\n[[command]]\nname = \"env\"\ntopic = \"c2m/{device}/{path}/env\"\n"
                            "envelope = true\nresult_topic = \"c2m/results/{device}/{path}\"\n"
                            "allow = { device = \"*\", path = \"/actuators/*\" }\n");
  waitForGateway(probe, *gateway);
  probe.publish("c2m/dev0/actuators/led/env", R"({"value":"blue","transaction":"tx-1"})");
  ASSERT_TRUE(probe.waitForCount("c2m/results/dev0/actuators/led", 1, 15s)) << dump(probe);
  Json r = jsonOn(probe, "c2m/results/dev0/actuators/led").front();
  EXPECT_EQ(r.value("code", ""), "2.04") << r;
  EXPECT_EQ(r.value("transaction", ""), "tx-1") << r;
  EXPECT_TRUE(sim->waitForOutput("REQ dev0 PUT /actuators/led blue", 5s));
  // Without an envelope the same text is just the payload.
  probe.publish("c2m/dev0/actuators/led/set", R"({"value":"x","transaction":"tx-2"})");
  ASSERT_TRUE(probe.waitForCount("c2m/dev0/actuators/led/set/result", 1, 15s));
  r = jsonOn(probe, "c2m/dev0/actuators/led/set/result").front();
  EXPECT_FALSE(r.contains("transaction")) << r;
  EXPECT_TRUE(
      sim->waitForOutput(R"(REQ dev0 PUT /actuators/led {"value":"x","transaction":"tx-2"})", 5s));
  // A malformed envelope: refused, transaction-less, nothing sent.
  probe.publish("c2m/dev0/actuators/led/env", "blue");
  ASSERT_TRUE(probe.waitForCount("c2m/results/dev0/actuators/led", 2, 15s));
  EXPECT_EQ(jsonOn(probe, "c2m/results/dev0/actuators/led")[1].value("reason", ""),
            "invalid_envelope");
}

// Acceptance 4: an MQTT 5 request with Response Topic and Correlation Data is answered
// there, with the same Correlation Data.
TEST(Commands, Mqtt5ResponseTopicAndCorrelationData) {
  TempDir dir;
  Mosquitto broker;
  const int port = freeUdpPortRange(1);
  auto sim = startSim(dir, port, 1, "1000");
  MqttProbe probe(broker.port(), "c2m/#");
  std::string config = baseConfig(broker, dir);
  config.replace(config.find("base_topic"), 0, "protocol = \"5\"\n");
  auto gateway = startGateway(dir, config + simDevices(port, 1) + kSetRule);
  waitForGateway(probe, *gateway);

  mqtt::async_client client("tcp://127.0.0.1:" + std::to_string(broker.port()), "v5-requester",
                            mqtt::create_options(MQTTVERSION_5));
  mqtt::connect_options options;
  options.set_mqtt_version(MQTTVERSION_5);
  options.set_clean_start(true);
  client.start_consuming();
  ASSERT_NO_THROW(client.connect(options)->wait_for(5s));
  ASSERT_NO_THROW(client.subscribe("replies/#", 1)->wait_for(5s));
  const std::string correlation("\x00\x01corr-7", 7);
  auto request = mqtt::make_message("c2m/dev0/actuators/led/set", "mqtt5", 1, false);
  request->set_properties(
      mqtt::properties{mqtt::property(mqtt::property::RESPONSE_TOPIC, std::string("replies/me")),
                       mqtt::property(mqtt::property::CORRELATION_DATA, correlation)});
  client.publish(request)->wait_for(5s);
  mqtt::const_message_ptr reply;
  ASSERT_TRUE(client.try_consume_message_for(&reply, 15s)) << gateway->output();
  ASSERT_TRUE(reply);
  EXPECT_EQ(reply->get_topic(), "replies/me");
  EXPECT_EQ(Json::parse(reply->get_payload_str()).value("code", ""), "2.04")
      << reply->get_payload_str();
  ASSERT_TRUE(reply->get_properties().contains(mqtt::property::CORRELATION_DATA));
  EXPECT_EQ(mqtt::get<std::string>(reply->get_properties(), mqtt::property::CORRELATION_DATA),
            correlation);
  EXPECT_TRUE(sim->waitForOutput("REQ dev0 PUT /actuators/led mqtt5", 5s));
  // Not also on the default result topic.
  EXPECT_TRUE(probe.messagesOn("c2m/dev0/actuators/led/set/result").empty()) << dump(probe);
  // A refusal goes there too.
  auto refused = mqtt::make_message("c2m/dev0/config/name/set", "x", 1, false);
  refused->set_properties(
      mqtt::properties{mqtt::property(mqtt::property::RESPONSE_TOPIC, std::string("replies/me")),
                       mqtt::property(mqtt::property::CORRELATION_DATA, std::string("c2"))});
  client.publish(refused)->wait_for(5s);
  ASSERT_TRUE(client.try_consume_message_for(&reply, 15s));
  EXPECT_EQ(Json::parse(reply->get_payload_str()).value("reason", ""), "not_allowed");
  EXPECT_EQ(mqtt::get<std::string>(reply->get_properties(), mqtt::property::CORRELATION_DATA),
            "c2");
  client.disconnect()->wait_for(5s);
}

// Issue 17, finding 4: a Response Topic is whatever a client says. One with a wildcard made
// mosquitto disconnect the gateway (and the result, first in the outbox, did it again after
// every reconnect); one in the gateway's own namespace published onto its bridge topics.
// Both now go to the rule's result topic, counted; the link stays up.
TEST(Commands, HostileMqtt5ResponseTopicsAreRefusedAndTheLinkStaysUp) {
  TempDir dir;
  Mosquitto broker;
  const int port = freeUdpPortRange(1);
  auto sim = startSim(dir, port, 1, "1000");
  MqttProbe probe(broker.port(), "c2m/#");
  std::string config = baseConfig(broker, dir);
  config.replace(config.find("base_topic"), 0, "protocol = \"5\"\n");
  auto gateway = startGateway(dir, config + simDevices(port, 1) + kSetRule);
  waitForGateway(probe, *gateway);

  mqtt::async_client client("tcp://127.0.0.1:" + std::to_string(broker.port()), "v5-hostile",
                            mqtt::create_options(MQTTVERSION_5));
  mqtt::connect_options options;
  options.set_mqtt_version(MQTTVERSION_5);
  options.set_clean_start(true);
  client.start_consuming();
  ASSERT_NO_THROW(client.connect(options)->wait_for(5s));
  ASSERT_NO_THROW(client.subscribe("replies/#", 1)->wait_for(5s));
  auto send = [&](const std::string& payload, const std::string& response_topic) {
    auto m = mqtt::make_message("c2m/dev0/actuators/led/set", payload, 1, false);
    m->set_properties(
        mqtt::properties{mqtt::property(mqtt::property::RESPONSE_TOPIC, response_topic),
                         mqtt::property(mqtt::property::CORRELATION_DATA, std::string("x"))});
    client.publish(m)->wait_for(5s);
  };
  send("wild", "replies/#");
  send("ours", "c2m/bridge/state");
  // Both answered on the rule's result topic instead.
  ASSERT_TRUE(probe.waitForCount("c2m/dev0/actuators/led/set/result", 2, 15s))
      << gateway->output() << dump(probe);
  for (const auto& m : probe.messagesOn("c2m/bridge/state")) {
    EXPECT_EQ(Json::parse(m.payload, nullptr, false).value("state", ""), "online") << m.payload;
  }
  // The link stayed up: a good request is still answered where it asks.
  send("good", "replies/me");
  mqtt::const_message_ptr reply;
  ASSERT_TRUE(client.try_consume_message_for(&reply, 15s)) << gateway->output();
  EXPECT_EQ(reply->get_topic(), "replies/me");
  // Counted.
  probe.publish("c2m/bridge/request/info", "{}");
  ASSERT_TRUE(probe.waitForCount("c2m/bridge/response/info", 1, 10s)) << gateway->output();
  const Json info = Json::parse(probe.messagesOn("c2m/bridge/response/info").back().payload);
  EXPECT_EQ(info["data"]["stats"]["dropped"].value("bad_response_topic", 0), 2) << info.dump();
  client.disconnect()->wait_for(5s);
}

// Issue 17, finding 8: `allow` was checked before "%XX" was decoded and let "." and ".."
// through; commands on topics with empty levels got neither a result nor a count.
// Finding 5: a retained command ran again at every gateway start.
TEST(Commands, HostilePathsAndRetainedCommandsNeverReachTheDevice) {
  TempDir dir;
  Mosquitto broker;
  const int port = freeUdpPortRange(1);
  auto sim = startSim(dir, port, 1, "1000");
  MqttProbe probe(broker.port(), "c2m/#");
  // Stored by the broker before the gateway subscribes: delivered to it as retained.
  probe.publish("c2m/dev0/actuators/led/set", "from-the-past", 1, true);
  probe.publish("c2m/bridge/request/info", R"({"transaction":"retained-tx"})", 1, true);
  auto gateway = startGateway(dir, baseConfig(broker, dir) + simDevices(port, 1) + kSetRule);
  waitForGateway(probe, *gateway);
  const std::vector<std::string> hostile{
      "c2m/dev0/actuators/../set", "c2m/dev0/actuators/%2e%2e/set",
      "c2m/dev0/actuators/%2F..%2Fsecret/set", "c2m/dev0/actuators/.%00/set"};
  for (const auto& topic : hostile) probe.publish(topic, "evil");
  probe.publish("c2m/dev0//set", "evil");  // an empty level: no result topic to answer on
  probe.publish("c2m/dev0/actuators/l%65d/set", "last");
  for (const auto& topic : hostile) {
    ASSERT_TRUE(probe.waitForCount(topic + "/result", 1, 15s)) << topic << "\n" << dump(probe);
    EXPECT_EQ(jsonOn(probe, topic + "/result").front().value("reason", ""), "invalid_path")
        << topic;
  }
  // Decoded once: "l%65d" is the led, and the device gets exactly that.
  ASSERT_TRUE(sim->waitForOutput("REQ dev0 PUT /actuators/led last", 10s)) << sim->output();
  EXPECT_EQ(requests(*sim, "dev0", "PUT", "/actuators/led"), std::vector<std::string>{"last"})
      << sim->output();
  EXPECT_EQ(sim->countInOutput("secret"), 0u) << sim->output();
  EXPECT_EQ(sim->countInOutput("evil"), 0u) << sim->output();
  const Json stats = bridgeStats(probe);
  // The command, and the request (once per subscription it matches: c2m/+/# and
  // c2m/bridge/request/#).
  EXPECT_GE(stats["dropped"].value("retained_command", 0), 2) << stats.dump();
  EXPECT_EQ(stats["dropped"].value("command_refused", 0), 5) << stats.dump();
  EXPECT_EQ(stats["dropped"].value("command_no_result", 0), 1) << stats.dump();
  EXPECT_EQ(stats["commands"]["refused"].value("invalid_path", 0), 4) << stats.dump();
  EXPECT_EQ(stats["commands"]["refused"].value("invalid_topic", 0), 1) << stats.dump();
  for (const auto& m : probe.messagesOn("c2m/bridge/response/info")) {
    EXPECT_EQ(m.payload.find("retained-tx"), std::string::npos) << "a retained request ran";
  }
}

// Issue 17, finding 11: every refused command published a QoS 1 result, which waits in the
// outbox (and pushes its oldest out when full). Past a small budget they go at QoS 0; each
// still gets its result.
TEST(Commands, AFloodOfRefusedCommandsIsAnsweredAtQos0PastItsBudget) {
  TempDir dir;
  Mosquitto broker;
  const int port = freeUdpPortRange(1);
  auto sim = startSim(dir, port, 1, "1000");
  MqttProbe probe(broker.port(), "c2m/#");
  auto gateway = startGateway(dir, baseConfig(broker, dir) + simDevices(port, 1) + kSetRule);
  waitForGateway(probe, *gateway);
  constexpr std::size_t kFlood = 200;
  for (std::size_t i = 0; i < kFlood; ++i) probe.publish("c2m/dev0/config/name/set", "x");
  ASSERT_TRUE(probe.waitForCount("c2m/dev0/config/name/set/result", kFlood, 20s))
      << dump(probe).size();
  const auto results = probe.messagesOn("c2m/dev0/config/name/set/result");
  const auto qos1 = std::count_if(results.begin(), results.end(),
                                  [](const MqttMessage& m) { return m.qos == 1; });
  EXPECT_GE(qos1, 20) << "the burst";
  EXPECT_LT(qos1, static_cast<long>(kFlood)) << "no QoS 0 past the budget";
  EXPECT_EQ(bridgeStats(probe)["dropped"].value("command_refused", 0), static_cast<int>(kFlood));
}

}  // namespace
}  // namespace coap2mqtt::test
