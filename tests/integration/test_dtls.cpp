// Issue 18: DTLS to devices (coaps://) with pre-shared keys. Debian's coap-server-openssl
// with -k KEY serves plain CoAP on its port and DTLS on the next one; the gateway reaches it
// only over coaps://. Real mosquitto, real gateway; everything awaited with timeouts.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>

#include <algorithm>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "tests/integration/bridge_info.h"
#include "tests/integration/gateway_process.h"
#include "tests/integration/harness.h"

namespace coap2mqtt::test {
namespace {

// Keys long and odd enough that finding one in any output cannot be chance.
const std::string kKey = "dtls-test-key-7f3a91c2e5";
const std::string kOtherKey = "wrong-test-key-0b8d44a6f1";

std::string hexOf(const std::string& s) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (unsigned char c : s) {
    out.push_back(digits[c >> 4]);
    out.push_back(digits[c & 15]);
  }
  return out;
}

std::string readWhole(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// A key file only its owner reads (as `coap2mqtt check` wants), "hex:" or raw.
void writeKeyFile(const TempDir& dir, const std::string& name, const std::string& content) {
  dir.write(name, content);
  ::chmod(dir.file(name).c_str(), 0600);
}

// coap-server-openssl with PSK on 127.0.0.1: plain CoAP on port(), DTLS on port() + 1.
class DtlsServer {
 public:
  DtlsServer(const TempDir& dir, const std::string& key, int port = 0,
             const std::string& log = "server.log")
      : dir_(dir), key_(key), port_(port == 0 ? freeUdpPortRange(2) : port), log_(log) {
    start();
  }
  void start() {
    proc_ = std::make_unique<Process>(
        std::vector<std::string>{"coap-server-openssl", "-A", "127.0.0.1", "-p",
                                 std::to_string(port_), "-k", key_, "-h", "c2m-test", "-v", "6"},
        dir_.file(log_));
    // Ready when its plain endpoint answers (both are bound before it serves).
    EXPECT_TRUE(waitUntil(
        [&] {
          return coapRequest("get", "coap://127.0.0.1:" + std::to_string(port_) + "/time").ok;
        },
        10s))
        << proc_->output();
  }
  void kill() { proc_->stop(9); }
  int port() const { return port_; }
  std::string coapsUri() const { return "coaps://127.0.0.1:" + std::to_string(port_ + 1); }
  std::string plainUri() const { return "coap://127.0.0.1:" + std::to_string(port_); }
  Process& process() { return *proc_; }

 private:
  const TempDir& dir_;
  std::string key_;
  int port_;
  std::string log_;
  std::unique_ptr<Process> proc_;
};

// One request with coap-client-openssl; `extra` goes before the URI, e.g. {"-u", identity,
// "-k", key}. The code of the last response, empty when none came.
std::string coapCode(const std::string& method, const std::string& uri,
                     const std::vector<std::string>& extra, std::string* log = nullptr) {
  CoapResult r = coapRequest(method, uri, "", 4s, extra);
  if (log != nullptr) *log = std::move(r.log);
  return r.code;
}

std::string dtlsDevice(const std::string& name, const std::string& uri,
                       const std::string& key_file) {
  return "[[coap.device]]\nname = \"" + name + "\"\nuri = \"" + uri +
         "\"\npsk = { identity = \"gw-" + name + "\", key_file = \"" + key_file + "\" }\n\n";
}

const char* kTimeRule =
    "[[rule]]\nname = \"time\"\nmatch = { path = \"/time\" }\nmode = \"observe\"\n"
    "topic = \"c2m/{device}/{path}\"\npayload = \"raw\"\n\n";

// The gateway with `server`'s /time as the DTLS device "clock" (identity gw-clock), its key
// file (dir/clock.key, mode 0600) holding `key_content`; `extra` configuration after it.
std::unique_ptr<Process> startClockGateway(const TempDir& dir, const Mosquitto& broker,
                                           const DtlsServer& server, const std::string& key_content,
                                           const std::string& extra = "") {
  writeKeyFile(dir, "clock.key", key_content);
  return startGateway(dir, baseConfig(broker, dir) +
                               dtlsDevice("clock", server.coapsUri(), dir.file("clock.key")) +
                               kTimeRule + extra);
}

std::string allMessages(const MqttProbe& probe) {
  std::string out;
  for (const auto& m : probe.messages()) out += m.topic + " " + m.payload + "\n";
  return out;
}

// A gateway for the Resource Directory tests: `coap` is what its [coap] table holds (and
// the [[coap.*]] tables after it); MQTT on `broker` under c2m; `extra` after [mqtt].
std::unique_ptr<Process> startRdGateway(const TempDir& dir, const Mosquitto& broker,
                                        const std::string& coap, const std::string& extra = "") {
  return startGateway(dir, "[gateway]\nname = \"rd-gw\"\nstate_dir = \"" + dir.path() +
                               "\"\n\n[coap]\n" + coap + "\n[mqtt]\nuri = \"" + broker.uri() +
                               "\"\nbase_topic = \"c2m\"\n\n" + extra);
}

// Whether the gateway's listener at `uri` answers GET /.well-known/core with 2.05 within 15 s
// (coap-client-openssl with `client` before the URI); false at once when the gateway exits.
bool listenerAnswers(Process& gateway, const std::string& uri,
                     const std::vector<std::string>& client) {
  return waitUntil(
             [&] {
               return !gateway.running() ||
                      coapCode("get", uri + "/.well-known/core", client) == "2.05";
             },
             15s) &&
         gateway.running();
}

// Every place the gateway writes to: its log, everything on MQTT (retained bridge/* topics
// included: the probe subscribed to '#' before the gateway started), and the files in its
// state directory (registry.db and its WAL, the outbox).
void expectSecretNowhere(const std::string& secret, const Process& gateway, const MqttProbe& probe,
                         const TempDir& dir) {
  EXPECT_EQ(gateway.output().find(secret), std::string::npos) << "the key is in the log";
  EXPECT_EQ(allMessages(probe).find(secret), std::string::npos) << "the key is on MQTT";
  for (const char* file : {"registry.db", "registry.db-wal", "outbox.db", "outbox.db-wal"}) {
    EXPECT_EQ(readWhole(dir.file(file)).find(secret), std::string::npos)
        << "the key is in " << file;
  }
}

// Acceptance 1: /time observed over coaps:// arrives about once a second; a command reaches
// the device over DTLS.
TEST(Dtls, ObservesTimeOverPskAndCommandsReachTheDevice) {
  TempDir dir;
  Mosquitto broker;
  DtlsServer server(dir, kKey);
  MqttProbe probe(broker.port(), "#");
  auto gateway = startClockGateway(
      dir, broker, server, "hex:" + hexOf(kKey) + "\n",
      "[[command]]\nname = \"data\"\ntopic = \"c2m/{device}/{path}/set\"\n"
      "method = \"PUT\"\nallow = { device = \"clock\", path = \"/example_data\" }\n"
      "content_format = \"text/plain\"\n");
  ASSERT_TRUE(probe.waitForCount("c2m/clock/time", 5, 20s)) << gateway->output();
  const auto values = probe.messagesOn("c2m/clock/time");
  // The first value answers the registration; then the server notifies once a second:
  // four notifications span about three seconds.
  const auto span = values[4].received - values[1].received;
  EXPECT_GE(span, 2s) << "faster than once a second";
  EXPECT_LE(span, 6s) << "slower than about once a second";
  std::set<std::string> distinct;
  for (const auto& m : values) distinct.insert(m.payload);
  EXPECT_GE(distinct.size(), 3u);
  EXPECT_TRUE(probe.waitFor(
      [](const std::vector<MqttMessage>& msgs) {
        return std::any_of(msgs.begin(), msgs.end(), [](const MqttMessage& m) {
          return m.topic == "c2m/clock/availability" && m.payload == "online";
        });
      },
      5s));
  EXPECT_NE(gateway->output().find("DTLS session established"), std::string::npos);

  // A command: PUT over the DTLS session, read back on the server's plain endpoint.
  probe.publish("c2m/clock/example_data/set", "sent over DTLS");
  ASSERT_TRUE(probe.waitForCount("c2m/clock/example_data/set/result", 1, 15s)) << gateway->output();
  const std::string result = probe.messagesOn("c2m/clock/example_data/set/result").front().payload;
  // 2.01 when the PUT created the resource's new value, 2.04 when it changed it.
  EXPECT_NE(result.find("\"code\":\"2.0"), std::string::npos) << result;
  EXPECT_EQ(coapRequest("get", server.plainUri() + "/example_data").payload, "sent over DTLS");
  expectSecretNowhere(kKey, *gateway, probe, dir);
  expectSecretNowhere(hexOf(kKey), *gateway, probe, dir);
}

// Acceptance 3: a wrong key is said once, with the device, its URI and why; the device is
// offline; the handshakes back off; the keys appear nowhere.
TEST(Dtls, WrongKeyIsExplainedOnceAndRetriesBackOff) {
  TempDir dir;
  Mosquitto broker;
  DtlsServer server(dir, kKey);
  MqttProbe probe(broker.port(), "#");
  auto gateway = startClockGateway(dir, broker, server, kOtherKey);
  const std::string line = "coap: device clock (" + server.coapsUri() + "): DTLS handshake failed";
  ASSERT_TRUE(gateway->waitForOutput(line, 15s)) << gateway->output();
  EXPECT_TRUE(probe.waitFor(
      [](const std::vector<MqttMessage>& msgs) {
        return std::any_of(msgs.begin(), msgs.end(), [](const MqttMessage& m) {
          return m.topic == "c2m/clock/availability" && m.payload == "offline";
        });
      },
      10s))
      << allMessages(probe);
  // Watch the retries for a while. A measuring window, not a synchronisation: how many
  // handshakes fit in it is the result. Each attempt waits for request_timeout (3 s); the
  // pauses between them double from retry_interval (1 s): 1, 2, 4 s.
  std::this_thread::sleep_for(14s);
  const std::size_t attempts = gateway->countInOutput(line);
  EXPECT_GE(attempts, 3u) << "retried" << gateway->output();
  EXPECT_LE(attempts, 5u) << "no busy loop" << gateway->output();
  for (const char* pause : {"retrying in 1000 ms", "retrying in 2000 ms", "retrying in 4000 ms"}) {
    EXPECT_NE(gateway->output().find("device clock: discovery failed: DTLS handshake failed: " +
                                     std::string("the device answered")),
              std::string::npos);
    EXPECT_NE(gateway->output().find(pause), std::string::npos) << pause << gateway->output();
  }
  // Said at warning level once: the repeats are debug lines.
  std::istringstream log(gateway->output());
  std::size_t warnings = 0;
  for (std::string l; std::getline(log, l);) {
    if (l.find(" warning " + line) != std::string::npos) ++warnings;
  }
  EXPECT_EQ(warnings, 1u) << gateway->output();
  EXPECT_TRUE(probe.messagesOn("c2m/clock/time").empty());
  expectSecretNowhere(kKey, *gateway, probe, dir);
  expectSecretNowhere(kOtherKey, *gateway, probe, dir);
}

// Acceptance 4: the device process restarts (its DTLS state gone): values resume within 10 s.
TEST(Dtls, DeviceRestartResumesValuesWithinTenSeconds) {
  TempDir dir;
  Mosquitto broker;
  DtlsServer server(dir, kKey);
  MqttProbe probe(broker.port(), "c2m/clock/time");
  auto gateway = startClockGateway(dir, broker, server, kKey);
  ASSERT_TRUE(probe.waitForCount("c2m/clock/time", 2, 20s)) << gateway->output();
  server.kill();
  const std::size_t before = probe.messagesOn("c2m/clock/time").size();
  const auto restarted = std::chrono::steady_clock::now();
  server.start();
  ASSERT_TRUE(probe.waitForCount("c2m/clock/time", before + 1, 10s)) << gateway->output();
  const auto resumed = probe.messagesOn("c2m/clock/time")[before].received;
  EXPECT_LT(resumed - restarted, 10s);
  std::cout << "values resumed "
            << std::chrono::duration_cast<std::chrono::milliseconds>(resumed - restarted).count()
            << " ms after the device restarted\n";
  // How the gateway found out (the probe's silence, normally).
  for (const char* line :
       {"clock: no answer to the probe; renewing its DTLS session", "new session for clock"}) {
    std::cout << gateway->countInOutput(line) << " x \"" << line << "\"\n";
  }
}

// Issue 18: a request that times out does not cost a handshake while the device keeps its
// DTLS state. The device is stopped (SIGSTOP: its DTLS state intact) while a command to it
// times out, and continued once the gateway gave up on the command: its session is kept
// (the probe on it is answered), values resume on it, and no second handshake happens.
TEST(Dtls, APausedDeviceKeepsItsSessionAcrossATimeout) {
  TempDir dir;
  Mosquitto broker;
  DtlsServer server(dir, kKey);
  MqttProbe probe(broker.port(), "c2m/#");
  auto gateway = startClockGateway(
      dir, broker, server, kKey,
      "[[command]]\nname = \"data\"\ntopic = \"c2m/{device}/{path}/set\"\n"
      "method = \"PUT\"\nallow = { device = \"clock\", path = \"/example_data\" }\n");
  ASSERT_TRUE(probe.waitForCount("c2m/clock/time", 2, 20s)) << gateway->output();
  ASSERT_EQ(::kill(server.process().pid(), SIGSTOP), 0);
  probe.publish("c2m/clock/example_data/set", "while-stopped");
  // request_timeout is 3 s: the command's result says timeout, and the gateway probes the
  // session. The device continues as soon as either is seen (the probe waits 1 s for it).
  const bool gave_up = waitUntil(
      [&] {
        return !probe.messagesOn("c2m/clock/example_data/set/result").empty() ||
               gateway->output().find("clock: request timed out; probing its DTLS session") !=
                   std::string::npos;
      },
      15s);
  ASSERT_EQ(::kill(server.process().pid(), SIGCONT), 0);
  ASSERT_TRUE(gave_up) << gateway->output();
  const std::size_t before = probe.messagesOn("c2m/clock/time").size();
  ASSERT_TRUE(probe.waitForCount("c2m/clock/time", before + 2, 15s)) << gateway->output();
  ASSERT_TRUE(probe.waitForCount("c2m/clock/example_data/set/result", 1, 10s));
  EXPECT_EQ(gateway->stop(15, 10s), 0);
  const std::string out = gateway->output();
  EXPECT_NE(out.find("clock: answered the probe; DTLS session kept"), std::string::npos) << out;
  EXPECT_EQ(exitStat(out, "dtls_handshakes"), 1) << "one handshake in all";
  EXPECT_EQ(exitStat(out, "session_resets"), 0) << "the session was not renewed";
  EXPECT_GE(exitStat(out, "dtls_sessions_kept"), 1);
  EXPECT_EQ(exitStat(out, "dtls_failures"), 0);
}

// `coap2mqtt check`: a key file others can read is a warning naming it; a missing one is an
// error at its file:line:col; neither prints the key.
TEST(Dtls, CheckWarnsAboutReadableKeyFilesAndRefusesMissingOnes) {
  TempDir dir;
  dir.write("open.key", kKey);
  ::chmod(dir.file("open.key").c_str(), 0644);
  const std::string base = "[mqtt]\nuri = \"mqtt://127.0.0.1:1883\"\n\n";
  dir.write("ok.toml", base + dtlsDevice("clock", "coaps://127.0.0.1", dir.file("open.key")));
  Process ok({gatewayBinary(), "check", "-c", dir.file("ok.toml")}, dir.file("ok.log"));
  EXPECT_EQ(ok.stop(0, 10s), 0) << ok.output();
  EXPECT_NE(ok.output().find("warning: " + dir.file("open.key") +
                             ": holds a secret but its group or others can read it (mode 0644)"),
            std::string::npos)
      << ok.output();
  dir.write("bad.toml", base + dtlsDevice("clock", "coaps://127.0.0.1", dir.file("missing.key")));
  Process bad({gatewayBinary(), "check", "-c", dir.file("bad.toml")}, dir.file("bad.log"));
  EXPECT_EQ(bad.stop(0, 10s), 1) << bad.output();
  EXPECT_NE(bad.output().find(dir.file("bad.toml") + ":7:"), std::string::npos) << bad.output();
  EXPECT_NE(bad.output().find("coap.device[1].psk.key_file: cannot read"), std::string::npos)
      << bad.output();
  EXPECT_EQ(ok.output().find(kKey), std::string::npos);
}

// Runs a command to its end (openssl); false when it failed.
bool run(const TempDir& dir, std::vector<std::string> argv) {
  Process p(std::move(argv), dir.file("cmd.log"));
  const int rc = p.stop(0, 20s);
  EXPECT_EQ(rc, 0) << p.output();
  return rc == 0;
}

// A CA (`name`.pem/.key) and certificates it signs (P-256, as small devices use).
void makeCa(const TempDir& dir, const std::string& name) {
  run(dir, {"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-keyout", dir.file(name + ".key"), "-out", dir.file(name + ".pem"), "-days",
            "30", "-subj", "/CN=" + name});
}
// `san`: a DNS subjectAltName as well.
void makeCert(const TempDir& dir, const std::string& name, const std::string& cn,
              const std::string& ca, const std::string& days, const std::string& san = "") {
  std::vector<std::string> req = {"openssl",
                                  "req",
                                  "-new",
                                  "-newkey",
                                  "ec",
                                  "-pkeyopt",
                                  "ec_paramgen_curve:P-256",
                                  "-nodes",
                                  "-keyout",
                                  dir.file(name + ".key"),
                                  "-out",
                                  dir.file(name + ".csr"),
                                  "-subj",
                                  "/CN=" + cn};
  if (!san.empty()) req.insert(req.end(), {"-addext", "subjectAltName=DNS:" + san});
  run(dir, req);
  // -days -1: valid until yesterday, i.e. expired.
  std::vector<std::string> sign = {"openssl",
                                   "x509",
                                   "-req",
                                   "-in",
                                   dir.file(name + ".csr"),
                                   "-CA",
                                   dir.file(ca + ".pem"),
                                   "-CAkey",
                                   dir.file(ca + ".key"),
                                   "-CAcreateserial",
                                   "-out",
                                   dir.file(name + ".pem"),
                                   "-days",
                                   days};
  if (!san.empty()) sign.insert(sign.end(), {"-copy_extensions", "copyall"});
  run(dir, sign);
  ::chmod(dir.file(name + ".key").c_str(), 0600);
}

// Acceptance 2: certificates made here: a CA, device certificates, the gateway's client
// certificate (the devices check it against the same CA: -C). A device whose certificate
// comes from another CA, has expired or names another host fails, each with one line that
// says why; the good one is observed.
TEST(Dtls, CertificatesAreCheckedAgainstTheCaTheDateAndTheName) {
  TempDir dir;
  Mosquitto broker;
  makeCa(dir, "ca");
  makeCa(dir, "other-ca");
  makeCert(dir, "good", "127.0.0.1", "ca", "30");
  makeCert(dir, "gw", "coap2mqtt", "ca", "30");
  makeCert(dir, "foreign", "127.0.0.1", "other-ca", "30");
  makeCert(dir, "expired", "127.0.0.1", "ca", "-1");
  makeCert(dir, "misnamed", "device.example", "ca", "30");
  std::vector<std::unique_ptr<Process>> servers;
  std::string devices;
  for (const std::string name : {"good", "foreign", "expired", "misnamed"}) {
    const int port = freeUdpPortRange(2);
    servers.push_back(std::make_unique<Process>(
        std::vector<std::string>{"coap-server-openssl", "-A", "127.0.0.1", "-p",
                                 std::to_string(port), "-c", dir.file(name + ".pem"), "-j",
                                 dir.file(name + ".key"), "-C", dir.file("ca.pem")},
        dir.file("server-" + name + ".log")));
    ASSERT_TRUE(waitUntil(
        [&] { return coapRequest("get", "coap://127.0.0.1:" + std::to_string(port) + "/time").ok; },
        10s));
    devices += "[[coap.device]]\nname = \"" + name +
               "\"\nuri = \"coaps://127.0.0.1:" + std::to_string(port + 1) +
               "\"\npki = { ca_file = \"ca.pem\", cert_file = " +
               "\"gw.pem\", key_file = \"gw.key\" }\n\n";
  }
  MqttProbe probe(broker.port(), "#");
  auto gateway = startGateway(dir, baseConfig(broker, dir) + devices + kTimeRule);
  ASSERT_TRUE(probe.waitForCount("c2m/good/time", 3, 20s)) << gateway->output();
  const std::map<std::string, std::string> why = {
      {"foreign", "DTLS handshake failed: unable to get local issuer certificate"},
      {"expired", "DTLS handshake failed: certificate has expired"},
      {"misnamed",
       "DTLS handshake failed: the device's certificate names \"device.example\", not "
       "\"127.0.0.1\""}};
  for (const auto& [name, reason] : why) {
    EXPECT_TRUE(gateway->waitForOutput("coap: device " + name + " (coaps://", 15s))
        << gateway->output();
    std::istringstream log(gateway->output());
    std::size_t warnings = 0;
    for (std::string l; std::getline(log, l);) {
      if (l.find(" warning coap: device " + name + " (") != std::string::npos) {
        ++warnings;
        EXPECT_NE(l.find(reason), std::string::npos) << l;
      }
    }
    EXPECT_EQ(warnings, 1u) << name << "\n" << gateway->output();
    EXPECT_TRUE(probe.messagesOn("c2m/" + name + "/time").empty()) << name;
  }
}

// Sessions that cost one handshake: ten simulated DTLS devices (coap2mqtt-sim --psk), two
// observed resources each, values every 200 ms, a command to each: one handshake per
// device, however many exchanges follow.
TEST(Dtls, SimulatedDevicesCostOneHandshakeEach) {
  TempDir dir;
  Mosquitto broker;
  writeKeyFile(dir, "sim.key", kKey);
  constexpr int kDevices = 10;
  const int port = freeUdpPortRange(kDevices);
  auto sim = startSim(dir, port, kDevices, "200", "sim.log", {"--psk", kKey});
  std::string devices;
  for (int i = 0; i < kDevices; ++i) {
    devices += dtlsDevice("dev" + std::to_string(i),
                          "coaps://127.0.0.1:" + std::to_string(port + i), dir.file("sim.key"));
  }
  MqttProbe probe(broker.port(), "c2m/#");
  auto gateway = startGateway(
      dir, baseConfig(broker, dir) + devices +
               "[[rule]]\nname = \"sensors\"\nmatch = { path = \"/sensors/*\" }\n"
               "topic = \"c2m/{device}/{path}\"\n\n"
               "[[command]]\nname = \"led\"\ntopic = \"c2m/{device}/{path}/set\"\n"
               "method = \"PUT\"\nallow = { device = \"*\", path = \"/actuators/*\" }\n");
  for (int i = 0; i < kDevices; ++i) {
    const std::string dev = "c2m/dev" + std::to_string(i);
    ASSERT_TRUE(probe.waitForCount(dev + "/sensors/counter", 5, 30s)) << gateway->output();
    ASSERT_TRUE(probe.waitForCount(dev + "/sensors/temp", 2, 15s)) << gateway->output();
    probe.publish(dev + "/actuators/led/set", "on");
  }
  for (int i = 0; i < kDevices; ++i) {
    const std::string dev = "c2m/dev" + std::to_string(i);
    EXPECT_TRUE(probe.waitForCount(dev + "/actuators/led/set/result", 1, 15s)) << dev;
  }
  EXPECT_EQ(gateway->stop(15, 10s), 0);
  // The counters at exit: every device's session was established exactly once.
  const std::string out = gateway->output();
  EXPECT_EQ(exitStat(out, "dtls_handshakes"), kDevices) << out;
  EXPECT_EQ(exitStat(out, "dtls_failures"), 0) << out;
  expectSecretNowhere(kKey, *gateway, probe, dir);
}

// Acceptance 5: the gateway's own listener over DTLS. A PSK identity registers the endpoint
// names it is bound to, and only those; an endpoint bound to an identity is not registered
// over plain CoAP; an unknown identity gets no session.
TEST(Dtls, ResourceDirectoryOverDtlsBindsIdentitiesToEndpoints) {
  TempDir dir;
  Mosquitto broker;
  writeKeyFile(dir, "node7.key", kKey);
  MqttProbe probe(broker.port(), "#");
  const int port = freeUdpPortRange(2);
  const std::string plain = "coap://127.0.0.1:" + std::to_string(port);
  const std::string secure = "coaps://127.0.0.1:" + std::to_string(port + 1);
  auto gateway =
      startRdGateway(dir, broker,
                     "listen = [\"127.0.0.1:" + std::to_string(port) +
                         "\", \"coaps://127.0.0.1:" + std::to_string(port + 1) +
                         "\"]\nrequest_timeout = \"3s\"\nretry_interval = \"1s\"\n\n"
                         "[[coap.psk_client]]\nidentity = \"node7\"\nkey_file = \"node7.key\"\n");
  const std::vector<std::string> node7 = {"-u", "node7", "-k", kKey};
  ASSERT_TRUE(listenerAnswers(*gateway, secure, node7)) << gateway->output();
  const std::vector<std::string> links = {"-e", "</temp>;ct=0", "-t", "40"};
  auto with = [](std::vector<std::string> a, const std::vector<std::string>& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
  };
  std::string log;
  EXPECT_EQ(coapCode("post", secure + "/rd?ep=node7&lt=60", with(node7, links), &log), "2.01")
      << log << gateway->output();
  EXPECT_EQ(coapCode("post", secure + "/rd?ep=node8&lt=60", with(node7, links), &log), "4.03")
      << log;
  // node7 is bound to an identity: not over plain CoAP either.
  EXPECT_EQ(coapCode("post", plain + "/rd?ep=node7&lt=60", links, &log), "4.03") << log;
  // An identity the gateway does not know: no handshake, no answer.
  EXPECT_EQ(coapCode("post", secure + "/rd?ep=node9&lt=60",
                     with({"-u", "node9", "-k", kKey}, links), &log),
            "")
      << log;
  EXPECT_TRUE(gateway->waitForOutput("unknown PSK identity \"node9\"", 5s)) << gateway->output();
  // What the directory holds: node7 only.
  std::string lookup_log;
  TempDir out;
  Process lookup({"coap-client-openssl", "-B", "4", "-o", out.file("eps"), plain + "/rd-lookup/ep"},
                 out.file("log"));
  lookup.stop(0, 10s);
  const std::string eps = readWhole(out.file("eps"));
  EXPECT_NE(eps.find("ep=\"node7\""), std::string::npos) << eps;
  EXPECT_EQ(eps.find("node8"), std::string::npos) << eps;
  EXPECT_EQ(eps.find("node9"), std::string::npos) << eps;
  EXPECT_NE(gateway->output().find("refused: this PSK identity may not register that endpoint"),
            std::string::npos)
      << gateway->output();
  expectSecretNowhere(kKey, *gateway, probe, dir);
}

// Issue 20 over DTLS: a device publishes to /ps on the coaps:// listener; its PSK identity
// is its device name, so an [[inbound]] entry and a rule can name it, and the same publish
// over plain CoAP (another name, its address's) is refused.
TEST(Dtls, PublishToPsOverDtlsActsAsTheIdentity) {
  TempDir dir;
  Mosquitto broker;
  writeKeyFile(dir, "node7.key", kKey);
  MqttProbe probe(broker.port(), "#");
  const int port = freeUdpPortRange(2);
  const std::string plain = "coap://127.0.0.1:" + std::to_string(port);
  const std::string secure = "coaps://127.0.0.1:" + std::to_string(port + 1);
  dir.write(
      "rules.toml",
      "[[rule]]\nname = \"attic\"\nmatch = { device = \"node7\", path = \"/sensors/*\" }\n"
      "topic = \"home/{device}/{path[1]}\"\npayload = \"raw\"\n\n"
      "[[inbound]]\nname = \"node7\"\nallow = { device = \"node7\", path = \"/sensors/**\" }\n");
  auto gateway = startGateway(
      dir, "[gateway]\nname = \"ps-gw\"\nstate_dir = \"" + dir.path() +
               "\"\nrules = [\"rules.toml\"]\n\n[coap]\nlisten = [\"127.0.0.1:" +
               std::to_string(port) + "\", \"" + secure +
               "\"]\n\n[[coap.psk_client]]\nidentity = \"node7\"\nkey_file = \"node7.key\"\n\n"
               "[mqtt]\nuri = \"" +
               broker.uri() + "\"\nbase_topic = \"c2m\"\n");
  const std::vector<std::string> node7 = {"-u", "node7", "-k", kKey};
  ASSERT_TRUE(listenerAnswers(*gateway, secure, node7)) << gateway->output();
  std::string log;
  std::vector<std::string> args = node7;
  args.insert(args.end(), {"-e", "21.5"});
  EXPECT_EQ(coapCode("post", secure + "/ps/sensors/attic", args, &log), "2.04")
      << log << gateway->output();
  ASSERT_TRUE(probe.waitForCount("home/node7/attic", 1, 10s)) << allMessages(probe);
  EXPECT_EQ(probe.messagesOn("home/node7/attic").front().payload, "21.5");
  EXPECT_TRUE(gateway->waitForOutput("device node7 is online", 5s)) << gateway->output();
  // Over plain CoAP the sender is coap-127-0-0-1, which no entry allows.
  EXPECT_EQ(coapCode("post", plain + "/ps/sensors/attic", {"-e", "99"}, &log), "4.03") << log;
  EXPECT_EQ(probe.messagesOn("home/node7/attic").size(), 1u) << allMessages(probe);
  expectSecretNowhere(kKey, *gateway, probe, dir);
}

// [[coap.credentials]]: a device that registers in the RD over plain CoAP, with a plain
// base, is reached over DTLS because an entry matches its name and address: on the
// entry's port, with the entry's key, and the first matching entry wins.
TEST(Dtls, ARegisteredDeviceMatchingCredentialsIsObservedOverDtls) {
  TempDir dir;
  Mosquitto broker;
  writeKeyFile(dir, "clocks.key", kKey);
  writeKeyFile(dir, "other.key", kOtherKey);
  DtlsServer server(dir, kKey);
  MqttProbe probe(broker.port(), "#");
  const int port = freeUdpPortRange(1);
  const std::string gw = "coap://127.0.0.1:" + std::to_string(port);
  auto gateway = startRdGateway(
      dir, broker,
      "listen = [\"127.0.0.1:" + std::to_string(port) +
          "\"]\nrequest_timeout = \"3s\"\nretry_interval = \"1s\"\n\n"
          // Matches the address, not the name: passed over.
          "[[coap.credentials]]\nmatch = { device = \"lamp-*\", address = \"127.0.0.1\" }\n"
          "psk = { identity = \"lamps\", key_file = \"other.key\" }\n\n"
          "[[coap.credentials]]\nmatch = { device = \"clock*\", address = \"127.0.0.*\" }\n"
          "port = " +
          std::to_string(server.port() + 1) +
          "\npsk = { identity = \"gw-clock\", key_file = \"clocks.key\" }\n\n"
          // Would match too, but comes later.
          "[[coap.credentials]]\nmatch = { device = \"*\" }\n"
          "psk = { identity = \"anyone\", key_file = \"other.key\" }\n",
      kTimeRule);
  ASSERT_TRUE(listenerAnswers(*gateway, gw, {})) << gateway->output();
  // Registered on the device's behalf (coap-client's port is not the server's), naming the
  // device's plain endpoint as base.
  std::string log;
  ASSERT_EQ(coapCode("post", gw + "/rd?ep=clock1&lt=60&base=" + server.plainUri(),
                     {"-e", "</time>;obs;ct=0", "-t", "40"}, &log),
            "2.01")
      << log << gateway->output();
  ASSERT_TRUE(probe.waitForCount("c2m/clock1/time", 3, 20s)) << gateway->output();
  const std::string out = gateway->output();
  EXPECT_NE(out.find("rd: clock1 registered as clock1 at " + server.coapsUri()), std::string::npos)
      << out;
  EXPECT_NE(out.find("coap: device clock1 (" + server.coapsUri() + "): DTLS session established"),
            std::string::npos)
      << out;
  EXPECT_EQ(out.find("DTLS handshake failed"), std::string::npos) << out;
  expectSecretNowhere(kKey, *gateway, probe, dir);
  expectSecretNowhere(kOtherKey, *gateway, probe, dir);
}

// Certificates on the gateway's own listener: the RD over coaps:// with listen_pki. A
// client certificate from the CA whose name is a [[coap.cert_client]] registers the
// endpoint names bound to it, and only those; a certificate from another CA, or none, gets
// no session; a good certificate whose name no [[coap.cert_client]] has registers nothing.
// The name is the certificate's first DNS SAN, else its subject's CN.
TEST(Dtls, ResourceDirectoryOverDtlsBindsCertificateNamesToEndpoints) {
  TempDir dir;
  Mosquitto broker;
  makeCa(dir, "ca");
  makeCa(dir, "other-ca");
  makeCert(dir, "gw", "127.0.0.1", "ca", "30");
  makeCert(dir, "node7", "node7", "ca", "30");
  makeCert(dir, "stranger", "node9", "ca", "30");
  makeCert(dir, "forged", "node7", "other-ca", "30");
  // Known by its DNS SAN, not its CN.
  makeCert(dir, "lamp", "node7", "ca", "30", "lamp.example");
  MqttProbe probe(broker.port(), "#");
  const int port = freeUdpPortRange(1);
  const std::string secure = "coaps://127.0.0.1:" + std::to_string(port);
  auto gateway = startRdGateway(
      dir, broker,
      "listen = [\"coaps://127.0.0.1:" + std::to_string(port) +
          "\"]\nlisten_pki = { ca_file = \"ca.pem\", cert_file = \"gw.pem\", "
          "key_file = \"gw.key\" }\n\n"
          "[[coap.cert_client]]\nname = \"node7\"\nendpoints = [\"node7-*\"]\n\n"
          "[[coap.cert_client]]\nname = \"lamp.example\"\nendpoints = [\"lamp-*\"]\n");
  // coap-client-openssl: our certificate and key (-c, -j), the CA it checks the gateway's
  // certificate against (-C).
  const auto certificate = [&](const std::string& name) {
    return std::vector<std::string>{"-c", dir.file(name + ".pem"), "-j", dir.file(name + ".key"),
                                    "-C", dir.file("ca.pem")};
  };
  ASSERT_TRUE(listenerAnswers(*gateway, secure, certificate("node7"))) << gateway->output();
  auto with = [](std::vector<std::string> a) {
    a.insert(a.end(), {"-e", "</temp>;ct=0", "-t", "40"});
    return a;
  };
  std::string log;
  EXPECT_EQ(coapCode("post", secure + "/rd?ep=node7-a&lt=60", with(certificate("node7")), &log),
            "2.01")
      << log << gateway->output();
  EXPECT_EQ(coapCode("post", secure + "/rd?ep=node8&lt=60", with(certificate("node7")), &log),
            "4.03")
      << log;
  EXPECT_EQ(coapCode("post", secure + "/rd?ep=node9&lt=60", with(certificate("stranger")), &log),
            "4.03")
      << log;
  // The name is the certificate's first DNS SAN when it has one: its CN (node7) counts not.
  EXPECT_EQ(coapCode("post", secure + "/rd?ep=lamp-1&lt=60", with(certificate("lamp")), &log),
            "2.01")
      << log << gateway->output();
  EXPECT_EQ(coapCode("post", secure + "/rd?ep=node7-d&lt=60", with(certificate("lamp")), &log),
            "4.03")
      << log;
  // Another CA's certificate with the same name, and no certificate: no session at all.
  EXPECT_EQ(coapCode("post", secure + "/rd?ep=node7-b&lt=60", with(certificate("forged")), &log),
            "")
      << log;
  EXPECT_EQ(
      coapCode("post", secure + "/rd?ep=node7-c&lt=60", with({"-C", dir.file("ca.pem")}), &log), "")
      << log;
  // What the directory holds: node7-a and lamp-1 only.
  const std::string eps = [&] {
    TempDir out;
    std::vector<std::string> argv = {"coap-client-openssl", "-B", "4", "-o", out.file("eps")};
    const auto c = certificate("node7");
    argv.insert(argv.end(), c.begin(), c.end());
    argv.push_back(secure + "/rd-lookup/ep");
    Process lookup(argv, out.file("log"));
    lookup.stop(0, 10s);
    return readWhole(out.file("eps"));
  }();
  EXPECT_NE(eps.find("ep=\"node7-a\""), std::string::npos) << eps;
  EXPECT_NE(eps.find("ep=\"lamp-1\""), std::string::npos) << eps;
  for (const char* absent : {"node8", "node9", "node7-b", "node7-c", "node7-d"}) {
    EXPECT_EQ(eps.find(absent), std::string::npos) << absent << "\n" << eps;
  }
  EXPECT_NE(gateway->output().find("refused: this certificate may not register that endpoint"),
            std::string::npos)
      << gateway->output();
}

}  // namespace
}  // namespace coap2mqtt::test
