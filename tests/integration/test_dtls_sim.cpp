// Issue 18: the simulator speaks DTLS with certificates (coap2mqtt-sim --cert --key [--ca]),
// so that tests and benchmarks can run many certificate devices. Certificates are made here
// with the openssl CLI (test_certs.h): a CA, the devices' certificate (CN 127.0.0.1, the
// host the gateway checks it against), the gateway's client certificate, and the same from
// another CA. Real mosquitto, real gateway, real coap-client-openssl; everything awaited.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "tests/integration/bridge_info.h"
#include "tests/integration/gateway_process.h"
#include "tests/integration/harness.h"
#include "tests/integration/test_certs.h"

namespace coap2mqtt::test {
namespace {

// [[coap.device]] dev0..dev<count-1> at coaps://127.0.0.1:(port+i), each with the CA the
// device's certificate is checked against and the gateway's client certificate (`gw`).
std::string certDevices(int port, int count, const std::string& gw) {
  std::string out;
  for (int i = 0; i < count; ++i) {
    out += "[[coap.device]]\nname = \"dev" + std::to_string(i) +
           "\"\nuri = \"coaps://127.0.0.1:" + std::to_string(port + i) +
           "\"\npki = { ca_file = \"ca.pem\", cert_file = \"" + gw + ".pem\", key_file = \"" + gw +
           ".key\" }\n\n";
  }
  return out;
}

const char* kSensorRule =
    "[[rule]]\nname = \"sensors\"\nmatch = { path = \"/sensors/*\" }\n"
    "topic = \"c2m/{device}/{path}\"\n\n";

// The simulator's certificate flags: device certificate `cert`, and with `ca` non-empty
// --ca (the client must show a certificate of that CA).
std::vector<std::string> certArgs(const TempDir& dir, const std::string& cert,
                                  const std::string& ca = "") {
  std::vector<std::string> args = {"--cert", dir.file(cert + ".pem"), "--key",
                                   dir.file(cert + ".key")};
  if (!ca.empty()) args.insert(args.end(), {"--ca", dir.file(ca + ".pem")});
  return args;
}

// A counter of bridge/info's stats.coap (bridge_info.h asks for the stats), -1 when absent.
long long coapCounter(const nlohmann::json& stats, const std::string& key) {
  if (!stats.is_object()) return -1;
  return stats.value(nlohmann::json::json_pointer("/coap/" + key), -1LL);
}

// The warnings the gateway logged about `device`'s handshake.
std::vector<std::string> handshakeWarnings(const Process& gateway, const std::string& device) {
  std::vector<std::string> out;
  std::istringstream log(gateway.output());
  for (std::string l; std::getline(log, l);) {
    if (l.find(" warning coap: device " + device + " (coaps://") != std::string::npos &&
        l.find("DTLS handshake failed") != std::string::npos) {
      out.push_back(l);
    }
  }
  return out;
}

// Devices dev0..dev<count-1> refused: the retries (the first after 1 s) fail as well, no
// handshake ever completes, no value reaches MQTT, and each device's warning is still the
// only one (repeats of a reason are debug lines).
void expectRetriesFailQuietly(MqttProbe& probe, const Process& gateway, int count) {
  const nlohmann::json info = bridgeStatsUntil(
      probe, [&](const nlohmann::json& s) { return coapCounter(s, "dtls_failures") >= 2 * count; },
      20s);
  EXPECT_GE(coapCounter(info, "dtls_failures"), 2 * count) << info.dump();
  EXPECT_EQ(coapCounter(info, "dtls_handshakes"), 0) << info.dump();
  for (int i = 0; i < count; ++i) {
    const std::string dev = "dev" + std::to_string(i);
    EXPECT_TRUE(probe.messagesOn("c2m/" + dev + "/sensors/counter").empty()) << dev;
    EXPECT_TRUE(probe.messagesOn("c2m/" + dev + "/sensors/temp").empty()) << dev;
    EXPECT_EQ(handshakeWarnings(gateway, dev).size(), 1u) << gateway.output();
  }
}

// The code of one GET of `uri` over DTLS (`extra`: coap-client's credentials and checks),
// empty when no response came.
std::string dtlsGet(const std::string& uri, const std::vector<std::string>& extra) {
  return coapRequest("GET", uri, "", 3s, extra).code;
}

class DtlsSim : public ::testing::Test {
 protected:
  void SetUp() override {
    makeTestCa(dir_, "ca");
    makeTestCa(dir_, "other-ca");
    makeTestCert(dir_, "device", "127.0.0.1", "ca");
    makeTestCert(dir_, "gw", "coap2mqtt-gw", "ca");
  }
  TempDir dir_;
};

// Several --cert devices observed over coaps:// with certificates both ways (the simulator
// asks for the gateway's with --ca): values reach MQTT, one handshake per device.
TEST_F(DtlsSim, CertificateDevicesAreObservedWithOneHandshakeEach) {
  Mosquitto broker;
  constexpr int kDevices = 5;
  const int port = freeUdpPortRange(kDevices);
  auto sim = startSim(dir_, port, kDevices, "200", "sim.log", certArgs(dir_, "device", "ca"));
  MqttProbe probe(broker.port(), "c2m/#");
  auto gateway = startGateway(
      dir_, baseConfig(broker, dir_) + certDevices(port, kDevices, "gw") + kSensorRule);
  for (int i = 0; i < kDevices; ++i) {
    const std::string dev = "c2m/dev" + std::to_string(i);
    ASSERT_TRUE(probe.waitForCount(dev + "/sensors/counter", 3, 30s)) << gateway->output();
    ASSERT_TRUE(probe.waitForCount(dev + "/sensors/temp", 1, 15s)) << gateway->output();
  }
  // The values come from the simulator: its counter names the device it is.
  const auto counter = nlohmann::json::parse(
      probe.messagesOn("c2m/dev3/sensors/counter").back().payload, nullptr, false);
  ASSERT_FALSE(counter.is_discarded());
  EXPECT_EQ(counter.value("device", ""), "dev3");
  const nlohmann::json info = bridgeStats(probe);
  ASSERT_TRUE(info.contains("coap")) << info.dump() << "\n" << gateway->output();
  EXPECT_EQ(coapCounter(info, "dtls_handshakes"), kDevices) << info.dump();
  EXPECT_EQ(coapCounter(info, "dtls_failures"), 0) << info.dump();
  EXPECT_TRUE(sim->running());
  for (int i = 0; i < kDevices; ++i) {
    EXPECT_TRUE(handshakeWarnings(*gateway, "dev" + std::to_string(i)).empty());
  }
}

// --ca: the simulator refuses a client whose certificate comes from another CA. The gateway
// gets no values and says, once per device, that the handshake failed. (Its line does not
// name the "unknown CA" alert the simulator sends, which coap-client-openssl shows: no
// libcoap log line reaches the gateway about it. Not asserted, so that it may improve.)
TEST_F(DtlsSim, WithCaTheSimulatorRefusesAGatewayCertificateFromAnotherCa) {
  makeTestCert(dir_, "gw-foreign", "coap2mqtt-gw", "other-ca");
  Mosquitto broker;
  constexpr int kDevices = 2;
  const int port = freeUdpPortRange(kDevices);
  auto sim = startSim(dir_, port, kDevices, "200", "sim.log", certArgs(dir_, "device", "ca"));
  MqttProbe probe(broker.port(), "c2m/#");
  auto gateway = startGateway(
      dir_, baseConfig(broker, dir_) + certDevices(port, kDevices, "gw-foreign") + kSensorRule);
  for (int i = 0; i < kDevices; ++i) {
    const std::string dev = "dev" + std::to_string(i);
    EXPECT_TRUE(waitUntil([&] { return !handshakeWarnings(*gateway, dev).empty(); }, 20s))
        << gateway->output();
    const auto lines = handshakeWarnings(*gateway, dev);
    ASSERT_EQ(lines.size(), 1u) << gateway->output();
    EXPECT_NE(lines[0].find("coaps://127.0.0.1:" + std::to_string(port + i) + ")"),
              std::string::npos)
        << lines[0];
  }
  expectRetriesFailQuietly(probe, *gateway, kDevices);
  EXPECT_EQ(gateway->output().find("DTLS session established"), std::string::npos);
  // The simulator refused the certificate, and said why (libcoap's warning on its stderr).
  EXPECT_TRUE(sim->waitForOutput("unable to get local issuer certificate: 'coap2mqtt-gw'", 5s))
      << sim->output();
}

// The gateway refuses a device whose certificate comes from another CA than its ca_file.
TEST_F(DtlsSim, TheGatewayRefusesADeviceCertificateFromAnotherCa) {
  makeTestCert(dir_, "device-foreign", "127.0.0.1", "other-ca");
  Mosquitto broker;
  constexpr int kDevices = 2;
  const int port = freeUdpPortRange(kDevices);
  auto sim = startSim(dir_, port, kDevices, "200", "sim.log", certArgs(dir_, "device-foreign"));
  MqttProbe probe(broker.port(), "c2m/#");
  auto gateway = startGateway(
      dir_, baseConfig(broker, dir_) + certDevices(port, kDevices, "gw") + kSensorRule);
  for (int i = 0; i < kDevices; ++i) {
    const std::string dev = "dev" + std::to_string(i);
    EXPECT_TRUE(waitUntil([&] { return !handshakeWarnings(*gateway, dev).empty(); }, 20s))
        << gateway->output();
    const auto lines = handshakeWarnings(*gateway, dev);
    ASSERT_EQ(lines.size(), 1u) << gateway->output();
    EXPECT_NE(lines[0].find("unable to get local issuer certificate"), std::string::npos)
        << lines[0];
  }
  expectRetriesFailQuietly(probe, *gateway, kDevices);
}

// Another DTLS stack's view (coap-client-openssl): without --ca a client without a
// certificate is served; with --ca only one whose certificate chains to that CA.
TEST_F(DtlsSim, OnlyWithCaTheSimulatorAsksForTheClientsCertificate) {
  const int open_port = freeUdpPortRange(1);
  auto open = startSim(dir_, open_port, 1, "1000", "open.log", certArgs(dir_, "device"));
  const std::string open_uri = "coaps://127.0.0.1:" + std::to_string(open_port) + "/info";
  // -R: the client checks the device's certificate against our CA.
  EXPECT_EQ(dtlsGet(open_uri, {"-R", dir_.file("ca.pem")}), "2.05");
  EXPECT_TRUE(open->waitForOutput("REQ dev0 GET /info", 5s)) << open->output();

  const int strict_port = freeUdpPortRange(1);
  auto strict =
      startSim(dir_, strict_port, 1, "1000", "strict.log", certArgs(dir_, "device", "ca"));
  const std::string strict_uri = "coaps://127.0.0.1:" + std::to_string(strict_port) + "/info";
  EXPECT_EQ(dtlsGet(strict_uri, {"-R", dir_.file("ca.pem")}), "");
  makeTestCert(dir_, "client-foreign", "client", "other-ca");
  EXPECT_EQ(dtlsGet(strict_uri, {"-R", dir_.file("ca.pem"), "-c", dir_.file("client-foreign.pem"),
                                 "-j", dir_.file("client-foreign.key")}),
            "");
  EXPECT_EQ(strict->countInOutput("REQ dev0"), 0u) << strict->output();
  EXPECT_EQ(dtlsGet(strict_uri, {"-R", dir_.file("ca.pem"), "-c", dir_.file("gw.pem"), "-j",
                                 dir_.file("gw.key")}),
            "2.05");
  EXPECT_TRUE(strict->waitForOutput("REQ dev0 GET /info", 5s)) << strict->output();
}

// Bad certificate options: exit 2 and a line naming the flag and the file (also a key that
// is not the certificate's, which libcoap would only find at each handshake); --psk and
// --cert together refused; --help says how.
TEST_F(DtlsSim, BadCertificateOptionsExitTwoNamingTheFile) {
  dir_.write("junk.pem", "not a certificate\n");
  const std::string missing = dir_.file("missing.pem");
  struct Case {
    std::vector<std::string> args;
    std::string says;
  };
  const std::vector<Case> cases = {
      {{"--cert", missing, "--key", dir_.file("device.key")},
       "--cert: cannot open " + missing + ": No such file or directory"},
      {{"--cert", dir_.file("device.pem"), "--key", dir_.path()},
       "--key: cannot read " + dir_.path() + ": Is a directory"},
      {{"--cert", dir_.file("junk.pem"), "--key", dir_.file("device.key")},
       "--cert: " + dir_.file("junk.pem") + " holds no PEM \"CERTIFICATE\" block"},
      {{"--cert", dir_.file("device.pem"), "--key", dir_.file("device.pem")},
       "--key: " + dir_.file("device.pem") + " holds no PEM \"PRIVATE KEY\" block"},
      {{"--cert", dir_.file("device.pem"), "--key", dir_.file("device.key"), "--ca", missing},
       "--ca: cannot open " + missing},
      {{"--cert", dir_.file("device.pem"), "--key", dir_.file("gw.key")},
       "--key: " + dir_.file("gw.key") + " is not the private key of " + dir_.file("device.pem")},
      {{"--cert", dir_.file("device.pem")}, "--cert and --key go together"},
      {{"--ca", dir_.file("ca.pem")}, "--ca needs --cert and --key"},
      {{"--psk", "k", "--cert", dir_.file("device.pem"), "--key", dir_.file("device.key")},
       "--psk and --cert exclude each other"},
  };
  const int port = freeUdpPortRange(1);
  int n = 0;
  for (const Case& c : cases) {
    std::vector<std::string> argv = {simulatorBinary(), "--devices", "1", "--port",
                                     std::to_string(port)};
    argv.insert(argv.end(), c.args.begin(), c.args.end());
    Process p(argv, dir_.file("p" + std::to_string(n++) + ".log"));
    EXPECT_EQ(p.stop(0, 5s), 2) << c.says << "\n" << p.output();
    EXPECT_NE(p.output().find("coap2mqtt-sim: " + c.says), std::string::npos) << c.says << "\n"
                                                                              << p.output();
    EXPECT_EQ(p.countInOutput("READY 1"), 0u);
  }
  Process help({simulatorBinary(), "--help"}, dir_.file("help.log"));
  EXPECT_EQ(help.stop(0, 5s), 0);
  EXPECT_NE(help.output().find("--cert CERT.pem --key KEY.pem"), std::string::npos)
      << help.output();
  EXPECT_NE(help.output().find("--ca CA.pem"), std::string::npos) << help.output();
}

}  // namespace
}  // namespace coap2mqtt::test
