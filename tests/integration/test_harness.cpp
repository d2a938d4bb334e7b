// Tests of the integration harness itself and of coap2mqtt-sim, without the gateway.
#include <gtest/gtest.h>

#include <signal.h>

#include <algorithm>
#include <cctype>
#include <nlohmann/json.hpp>
#include <string>

#include "bridge/transform.h"
#include "tests/integration/harness.h"

namespace coap2mqtt::test {
namespace {

std::string coapUri(int port, const std::string& path, const std::string& host = "127.0.0.1") {
  return "coap://" + host + ":" + std::to_string(port) + path;
}

// "21.37", "-3.50": what /sensors/temp sends. (No std::regex: GCC 12 warns inside it
// under -fsanitize, and warnings are errors.)
bool isTemperature(const std::string& s) {
  std::size_t i = (!s.empty() && s[0] == '-') ? 1 : 0;
  std::size_t dot = s.find('.');
  if (dot == std::string::npos || dot == i || s.size() != dot + 3) return false;
  for (std::size_t k = i; k < s.size(); ++k) {
    if (k != dot && !std::isdigit(static_cast<unsigned char>(s[k]))) return false;
  }
  return true;
}

// {"seq":N,"device":"<device>"} -> N, or -1.
long counterSeq(const std::string& s, const std::string& device) {
  const std::string head = "{\"seq\":";
  const std::string tail = ",\"device\":\"" + device + "\"}";
  if (s.size() <= head.size() + tail.size() || s.compare(0, head.size(), head) != 0 ||
      s.compare(s.size() - tail.size(), tail.size(), tail) != 0) {
    return -1;
  }
  std::string digits = s.substr(head.size(), s.size() - head.size() - tail.size());
  if (digits.find_first_not_of("0123456789") != std::string::npos) return -1;
  return std::stol(digits);
}

// A running simulator whose READY line has been seen.
struct Sim {
  TempDir dir;
  std::unique_ptr<Process> proc;

  explicit Sim(std::vector<std::string> args, int devices) {
    args.insert(args.begin(), simulatorBinary());
    args.insert(args.end(), {"--devices", std::to_string(devices)});
    proc = std::make_unique<Process>(args, dir.file("sim.log"));
    bool ready = proc->waitForOutput("READY " + std::to_string(devices) + "\n", 15s);
    EXPECT_TRUE(ready) << proc->output();
  }
};

// ---------------------------------------------------------------------------------------
// Harness basics

TEST(Harness, ProcessCapturesOutputAndExitCode) {
  TempDir dir;
  Process p({"sh", "-c", "echo hello; echo oops >&2; exit 3"}, dir.file("p.log"));
  EXPECT_EQ(p.stop(0, 5s), 3);  // signal 0: just wait
  EXPECT_FALSE(p.running());
  EXPECT_NE(p.output().find("hello\n"), std::string::npos);
  EXPECT_NE(p.output().find("oops\n"), std::string::npos);
  EXPECT_EQ(p.countInOutput("o"), 3u);
}

TEST(Harness, ProcessStopAndWaitForOutput) {
  TempDir dir;
  Process p({"sh", "-c", "echo started; exec sleep 60"}, dir.file("p.log"));
  EXPECT_TRUE(p.waitForOutput("started", 5s));
  EXPECT_FALSE(p.waitForOutput("never printed", 100ms));
  EXPECT_TRUE(p.running());
  EXPECT_EQ(p.stop(SIGTERM, 5s), 128 + SIGTERM);
  EXPECT_FALSE(p.running());
}

TEST(Harness, ProcessDestructorKillsTermResistantChild) {
  TempDir dir;
  int pid = 0;
  auto start = std::chrono::steady_clock::now();
  {
    Process p({"sh", "-c", "trap '' TERM; echo armed; while :; do sleep 0.1; done"},
              dir.file("p.log"));
    ASSERT_TRUE(p.waitForOutput("armed", 5s));
    pid = p.pid();
  }
  auto took = std::chrono::steady_clock::now() - start;
  EXPECT_GE(took, 2900ms);  // TERM ignored: KILL after 3 s
  EXPECT_LT(took, 10s);
  EXPECT_NE(::kill(pid, 0), 0);  // gone and reaped
}

TEST(Harness, FreePortsAreBindable) {
  EXPECT_GT(freeTcpPort(), 0);
  EXPECT_GT(freeUdpPort(), 0);
  int base = freeUdpPortRange(50);
  EXPECT_GE(base, 20000);
  EXPECT_LE(base + 49, 32767);
  int p = freeUdpPortOnAddresses("127.0.0.2", 5);
  EXPECT_GT(p, 0);
}

TEST(Harness, CoapRequestWithoutServerHasNoCode) {
  int port = freeUdpPort();
  CoapResult r = coapRequest("GET", coapUri(port, "/x"), "", 1s);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.code, "");
}

TEST(Harness, CoapRequestAgainstLibcoapServer) {
  // libcoap's own example server: an independent check of the code/payload parsing.
  TempDir dir;
  int port = freeUdpPort();
  Process server({"coap-server-openssl", "-A", "127.0.0.1", "-p", std::to_string(port)},
                 dir.file("server.log"));
  ASSERT_TRUE(
      waitUntil([&] { return coapRequest("GET", coapUri(port, "/time"), "", 1s).ok; }, 10s));
  CoapResult big = coapRequest("GET", coapUri(port, "/example_data"));
  EXPECT_TRUE(big.ok);
  EXPECT_EQ(big.code, "2.05");
  EXPECT_EQ(big.payload.size(), 1500u);  // Block2, reassembled into the -o file
  CoapResult missing = coapRequest("GET", coapUri(port, "/nothing"));
  EXPECT_FALSE(missing.ok);
  EXPECT_EQ(missing.code, "4.04");
  CoapResult put = coapRequest("PUT", coapUri(port, "/example_data"), "abc");
  EXPECT_TRUE(put.ok);
  EXPECT_EQ(put.code, "2.04");
  EXPECT_EQ(coapRequest("GET", coapUri(port, "/example_data")).payload, "abc");
}

// ---------------------------------------------------------------------------------------
// Mosquitto + MqttProbe

TEST(Mosquitto, ProbeRoundTripSurvivesRestart) {
  Mosquitto broker;
  ASSERT_GT(broker.port(), 0);
  {
    MqttProbe probe(broker.port(), "c2m/test/#");
    probe.publish("c2m/test/a", "hello", 1);
    probe.publish("c2m/test/b", "retained", 1, true);
    ASSERT_TRUE(probe.waitForCount("c2m/test/a", 1, 5s));
    ASSERT_TRUE(probe.waitForCount("c2m/test/b", 1, 5s));
    auto msgs = probe.messagesOn("c2m/test/a");
    ASSERT_EQ(msgs.size(), 1u);
    EXPECT_EQ(msgs[0].payload, "hello");
    EXPECT_EQ(msgs[0].qos, 1);
    EXPECT_FALSE(msgs[0].retained);  // live delivery
    EXPECT_FALSE(probe.waitForCount("c2m/test/a", 2, 200ms));
  }
  {
    // A later subscriber gets the retained message with the retain flag.
    MqttProbe late(broker.port(), "c2m/test/b");
    ASSERT_TRUE(late.waitForCount("c2m/test/b", 1, 5s));
    EXPECT_TRUE(late.messages()[0].retained);
  }

  int port = broker.port();
  broker.stop();
  EXPECT_FALSE(broker.running());
  EXPECT_THROW(MqttProbe(port, "#"), std::exception);
  broker.start();
  EXPECT_EQ(broker.port(), port);
  MqttProbe probe(broker.port(), "again/+");
  probe.publish("again/x", "after restart", 0);
  ASSERT_TRUE(probe.waitFor(
      [](const std::vector<MqttMessage>& m) {
        return !m.empty() && m.back().payload == "after restart";
      },
      5s));
  EXPECT_TRUE(probe.messagesOn("again/y").empty());
}

// ---------------------------------------------------------------------------------------
// coap2mqtt-sim

TEST(Simulator, ThreeDevicesServeDiscoveryAndResources) {
  int base = freeUdpPortRange(3);
  Sim sim({"--address", "127.0.0.1", "--port", std::to_string(base), "--interval", "200"}, 3);

  CoapResult wk = coapRequest("GET", coapUri(base + 1, "/.well-known/core"));
  ASSERT_TRUE(wk.ok) << wk.code;
  EXPECT_EQ(wk.code, "2.05");
  for (const char* link :
       {"</sensors/temp>;rt=\"temperature\";ct=0;obs",
        "</sensors/counter>;rt=\"counter\";ct=50;obs", "</info>;rt=\"info\";ct=50",
        "</actuators/led>;rt=\"switch\";ct=0;obs", "</config/name>;rt=\"config\";ct=0"}) {
    EXPECT_NE(wk.payload.find(link), std::string::npos) << link << " in " << wk.payload;
  }
  EXPECT_EQ(std::count(wk.payload.begin(), wk.payload.end(), '<'), 5);
  EXPECT_TRUE(sim.proc->waitForOutput("REQ dev1 GET /.well-known/core\n", 2s));

  // Query filter as RFC 6690 / libcoap.
  CoapResult filtered = coapRequest("GET", coapUri(base, "/.well-known/core?rt=temp*"));
  EXPECT_EQ(filtered.payload, "</sensors/temp>;rt=\"temperature\";ct=0;obs");

  CoapResult info = coapRequest("GET", coapUri(base + 2, "/info"));
  EXPECT_EQ(info.payload, R"({"name":"dev2","model":"c2m-sim"})");

  CoapResult temp = coapRequest("GET", coapUri(base, "/sensors/temp"));
  ASSERT_TRUE(temp.ok);
  EXPECT_TRUE(isTemperature(temp.payload)) << temp.payload;

  // PUT the LED of dev2; dev0's stays "off".
  CoapResult put = coapRequest("PUT", coapUri(base + 2, "/actuators/led"), "on");
  EXPECT_EQ(put.code, "2.04");
  EXPECT_EQ(coapRequest("GET", coapUri(base + 2, "/actuators/led")).payload, "on");
  EXPECT_EQ(coapRequest("GET", coapUri(base, "/actuators/led")).payload, "off");
  EXPECT_EQ(coapRequest("POST", coapUri(base, "/actuators/led")).code, "2.04");  // toggles
  EXPECT_EQ(coapRequest("GET", coapUri(base, "/actuators/led")).payload, "on");

  EXPECT_EQ(coapRequest("PUT", coapUri(base + 1, "/config/name"), "kitchen").code, "2.04");
  EXPECT_EQ(coapRequest("GET", coapUri(base + 1, "/config/name")).payload, "kitchen");

  EXPECT_EQ(coapRequest("DELETE", coapUri(base, "/info")).code, "4.05");
  EXPECT_EQ(coapRequest("PUT", coapUri(base, "/sensors/temp"), "1").code, "4.05");
  EXPECT_EQ(coapRequest("GET", coapUri(base, "/no/such")).code, "4.04");
  EXPECT_EQ(coapRequest("PUT", coapUri(base, "/actuators/led"), std::string("\x01\xff", 2)).code,
            "2.04");

  // One REQ line per request, in the documented format.
  for (const char* line :
       {"REQ dev2 PUT /actuators/led on\n", "REQ dev2 GET /actuators/led\n",
        "REQ dev0 GET /actuators/led\n", "REQ dev0 POST /actuators/led\n",
        "REQ dev1 PUT /config/name kitchen\n", "REQ dev0 DELETE /info\n", "REQ dev0 GET /no/such\n",
        "REQ dev0 GET /.well-known/core?rt=temp*\n", "REQ dev0 PUT /actuators/led hex:01ff\n"}) {
    EXPECT_TRUE(sim.proc->waitForOutput(line, 2s)) << line << sim.proc->output();
  }
  EXPECT_EQ(sim.proc->countInOutput("REQ dev2 GET /actuators/led\n"), 1u);

  EXPECT_EQ(sim.proc->stop(SIGTERM, 5s), 0);  // clean exit
}

TEST(Simulator, ObserveCounterIsInOrderAndNotLoggedAsRequests) {
  int base = freeUdpPortRange(2);
  Sim sim({"--port", std::to_string(base), "--interval", "250"}, 2);

  auto notes = coapObserve(coapUri(base + 1, "/sensors/counter"), 4s);
  ASSERT_GE(notes.size(), 8u);  // the first response + ~15 notifications in 4 s
  long prev = -1;
  for (const auto& n : notes) {
    EXPECT_EQ(n.code, "2.05");
    long seq = counterSeq(n.payload, "dev1");
    ASSERT_GE(seq, 0) << n.payload;
    if (prev >= 0) {
      EXPECT_EQ(seq, prev + 1);
    }
    prev = seq;
  }
  // Registration and cancellation only: notifications are not requests.
  EXPECT_LE(sim.proc->countInOutput("REQ dev1 GET /sensors/counter\n"), 2u);
  EXPECT_GE(sim.proc->countInOutput("REQ dev1 GET /sensors/counter\n"), 1u);
  EXPECT_EQ(sim.proc->countInOutput("REQ dev0"), 0u);
}

TEST(Simulator, ObserveTempInNonMode) {
  int base = freeUdpPortRange(1);
  Sim sim({"--port", std::to_string(base), "--interval", "200", "--non-always", "--max-age", "5"},
          1);
  auto notes = coapObserve(coapUri(base, "/sensors/temp"), 2s);
  ASSERT_GE(notes.size(), 5u);
  for (const auto& n : notes) {
    EXPECT_TRUE(isTemperature(n.payload)) << n.payload;
  }
  EXPECT_NE(notes.front().payload, notes.back().payload);
}

TEST(Simulator, AddressStepBindsOneAddressPerDevice) {
  int port = freeUdpPortOnAddresses("127.0.0.2", 3);
  Sim sim({"--address", "127.0.0.2", "--address-step", "--port", std::to_string(port),
           "--name-prefix", "node"},
          3);
  EXPECT_EQ(coapRequest("GET", coapUri(port, "/info", "127.0.0.2")).payload,
            R"({"name":"node0","model":"c2m-sim"})");
  EXPECT_EQ(coapRequest("GET", coapUri(port, "/info", "127.0.0.4")).payload,
            R"({"name":"node2","model":"c2m-sim"})");
  EXPECT_TRUE(sim.proc->waitForOutput("REQ node2 GET /info\n", 2s));
  // 127.0.0.5 is not a device.
  EXPECT_EQ(coapRequest("GET", coapUri(port, "/info", "127.0.0.5"), "", 1s).code, "");
}

TEST(Simulator, RefusesPortsAlreadyInUse) {
  int base = freeUdpPortRange(2);
  Sim first({"--port", std::to_string(base)}, 2);
  TempDir dir;
  // libcoap binds with SO_REUSEADDR, so without the simulator's own check this would
  // "succeed" and steal datagrams.
  Process second({simulatorBinary(), "--devices", "2", "--port", std::to_string(base + 1)},
                 dir.file("second.log"));
  EXPECT_EQ(second.stop(0, 5s), 1);
  EXPECT_NE(second.output().find("Address already in use"), std::string::npos) << second.output();
  EXPECT_EQ(second.countInOutput("READY"), 0u);
}

TEST(Simulator, RejectsBadArguments) {
  TempDir dir;
  Process p({simulatorBinary(), "--devices", "zero"}, dir.file("p.log"));
  EXPECT_EQ(p.stop(0, 5s), 2);
  EXPECT_NE(p.output().find("usage:"), std::string::npos);
}

// --senml: two more observable resources in /.well-known/core, serving the pack the SENML
// line shows, once as SenML JSON and once as SenML CBOR with RFC 8428's integer labels
// (decoded here by the bridge's CBOR reader, not by anything of the simulator's).
TEST(Simulator, SenmlResourcesServeTheLoggedPack) {
  int base = freeUdpPortRange(2);
  // No sensor update during the test: the pack stays the one logged at start.
  Sim sim({"--port", std::to_string(base), "--interval", "600000", "--senml"}, 2);

  CoapResult wk = coapRequest("GET", coapUri(base + 1, "/.well-known/core"));
  ASSERT_TRUE(wk.ok) << wk.code;
  for (const char* link : {"</sensors/senml>;rt=\"senml\";ct=110;obs",
                           "</sensors/senml-cbor>;rt=\"senml\";ct=112;obs"}) {
    EXPECT_NE(wk.payload.find(link), std::string::npos) << link << " in " << wk.payload;
  }
  EXPECT_EQ(std::count(wk.payload.begin(), wk.payload.end(), '<'), 7) << wk.payload;
  EXPECT_EQ(coapRequest("GET", coapUri(base, "/.well-known/core?ct=112")).payload,
            "</sensors/senml-cbor>;rt=\"senml\";ct=112;obs");

  const std::string out = sim.proc->output();
  const std::string prefix = "SENML dev1 ";
  const std::size_t at = out.find(prefix);
  ASSERT_NE(at, std::string::npos) << out;
  const std::string logged =
      out.substr(at + prefix.size(), out.find('\n', at) - at - prefix.size());
  EXPECT_EQ(logged.rfind(R"([{"bn":"dev1/","bt":)", 0), 0u) << logged;
  const std::string rest =
      R"(,"n":"seq","v":0},{"n":"temp","t":-0.5,"u":"Cel","v":20.10},{"n":"even","vb":true},)"
      R"({"n":"trend","vs":"steady"}])";
  ASSERT_GT(logged.size(), rest.size());
  EXPECT_EQ(logged.substr(logged.size() - rest.size()), rest) << logged;

  CoapResult json = coapRequest("GET", coapUri(base + 1, "/sensors/senml"));
  EXPECT_EQ(json.code, "2.05");
  EXPECT_EQ(json.payload, logged);

  CoapResult cbor = coapRequest("GET", coapUri(base + 1, "/sensors/senml-cbor"));
  EXPECT_EQ(cbor.code, "2.05");
  // An array of 4, a map of 4, label -2 (bn): integer labels, not text.
  ASSERT_GE(cbor.payload.size(), 3u);
  EXPECT_EQ(cbor.payload.substr(0, 3), "\x84\xa4\x21");
  const auto decoded = bridge::transformPayload(bridge::PayloadMode::Json,
                                                bridge::content_format::kSenmlCbor, cbor.payload);
  ASSERT_TRUE(decoded.ok()) << *decoded.error;
  EXPECT_EQ(nlohmann::json::parse(decoded.payload), nlohmann::json::parse(logged))
      << decoded.payload;
  EXPECT_TRUE(sim.proc->waitForOutput("REQ dev1 GET /sensors/senml-cbor\n", 2s));
}

TEST(Simulator, TwoHundredDevices) {
  int base = freeUdpPortRange(200);
  Sim sim({"--port", std::to_string(base)}, 200);
  CoapResult last = coapRequest("GET", coapUri(base + 199, "/info"));
  EXPECT_EQ(last.payload, R"({"name":"dev199","model":"c2m-sim"})");
  CoapResult first = coapRequest("GET", coapUri(base, "/sensors/counter"));
  EXPECT_NE(first.payload.find("\"device\":\"dev0\""), std::string::npos);
  EXPECT_TRUE(sim.proc->waitForOutput("REQ dev199 GET /info\n", 2s));
  EXPECT_EQ(sim.proc->stop(SIGINT, 5s), 0);
}

// Past 256 devices the simulator spreads them over several libcoap contexts (its header
// says why): devices in the first, a middle and the last context all answer, notify in
// order, and their notifications are not logged as requests.
TEST(Simulator, DevicesInEveryContextServeAndNotify) {
  const int devices = 520;  // contexts of 256, 256 and 8 devices
  int base = freeUdpPortRange(devices);
  Sim sim({"--port", std::to_string(base), "--interval", "250"}, devices);
  for (int device : {0, 300, devices - 1}) {
    const std::string name = "dev" + std::to_string(device);
    SCOPED_TRACE(name);
    EXPECT_EQ(coapRequest("GET", coapUri(base + device, "/info")).payload,
              R"({"name":")" + name + R"(","model":"c2m-sim"})");
    auto notes = coapObserve(coapUri(base + device, "/sensors/counter"), 2s);
    ASSERT_GE(notes.size(), 4u);  // the first response + ~7 notifications in 2 s
    long prev = -1;
    for (const auto& n : notes) {
      long seq = counterSeq(n.payload, name);
      ASSERT_GE(seq, 0) << n.payload;
      if (prev >= 0) {
        EXPECT_EQ(seq, prev + 1);
      }
      prev = seq;
    }
    EXPECT_LE(sim.proc->countInOutput("REQ " + name + " GET /sensors/counter\n"), 2u);
  }
  EXPECT_EQ(sim.proc->stop(SIGINT, 5s), 0);
}

}  // namespace
}  // namespace coap2mqtt::test
