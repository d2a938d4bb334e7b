// mqtts:// against a real mosquitto with a TLS listener that requires client certificates.
// The test makes its own CA, server and client certificates with the openssl CLI; a probe
// watches over a second, plain listener of the same broker.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <string>
#include <vector>

#include "tests/integration/gateway_process.h"
#include "tests/integration/harness.h"

namespace coap2mqtt::test {
namespace {

// Runs `argv` to its end: "" when it succeeded, else its exit code and output.
std::string run(const TempDir& dir, std::vector<std::string> argv) {
  Process p(std::move(argv), dir.file("openssl.log"));
  const int rc = p.stop(0, 20s);
  return rc == 0 ? std::string() : "exit " + std::to_string(rc) + ": " + p.output();
}

// ca.pem/ca.key, server.pem/server.key (localhost, 127.0.0.1), client.pem/client.key,
// and an unrelated other-ca.pem.
class Pki {
 public:
  Pki() {
    const auto ec = std::vector<std::string>{"-newkey", "ec", "-pkeyopt",
                                             "ec_paramgen_curve:prime256v1", "-nodes"};
    auto req = [&](std::vector<std::string> args) {
      std::vector<std::string> argv{"openssl", "req"};
      argv.insert(argv.end(), ec.begin(), ec.end());
      argv.insert(argv.end(), args.begin(), args.end());
      EXPECT_EQ(run(dir_, argv), "");
    };
    req({"-x509", "-days", "2", "-subj", "/CN=c2m test CA", "-keyout", file("ca.key"), "-out",
         file("ca.pem")});
    req({"-x509", "-days", "2", "-subj", "/CN=some other CA", "-keyout", file("other-ca.key"),
         "-out", file("other-ca.pem")});
    dir_.write("server.ext", "subjectAltName=DNS:localhost,IP:127.0.0.1\n");
    dir_.write("client.ext", "extendedKeyUsage=clientAuth\n");
    for (const std::string name : {"server", "client"}) {
      req({"-subj", "/CN=c2m-" + name, "-keyout", file(name + ".key"), "-out",
           file(name + ".csr")});
      EXPECT_EQ(run(dir_, {"openssl", "x509", "-req", "-in", file(name + ".csr"), "-CA",
                           file("ca.pem"), "-CAkey", file("ca.key"), "-CAcreateserial", "-days",
                           "2", "-extfile", file(name + ".ext"), "-out", file(name + ".pem")}),
                "");
    }
    // mosquitto reads them after dropping to its own user.
    for (const char* f :
         {"ca.pem", "server.pem", "server.key", "client.pem", "client.key", "other-ca.pem"}) {
      ::chmod(file(f).c_str(), 0644);
    }
  }
  std::string file(const std::string& name) const { return dir_.file(name); }

 private:
  TempDir dir_;
};

struct TlsBroker {
  explicit TlsBroker(const Pki& pki)
      : tls_port(freeTcpPort()),
        broker(Mosquitto::Options{
            false, "\nlistener " + std::to_string(tls_port) + " 127.0.0.1\ncafile " +
                       pki.file("ca.pem") + "\ncertfile " + pki.file("server.pem") + "\nkeyfile " +
                       pki.file("server.key") + "\nrequire_certificate true\n"}) {}
  int tls_port;
  Mosquitto broker;
};

std::string tlsConfig(const TempDir& dir, int tls_port, const std::string& ca_file, const Pki& pki,
                      int sim_port, const std::string& extra_mqtt = "") {
  return "[gateway]\nname = \"test-gw\"\nstate_dir = \"" + dir.path() +
         "\"\n\n[coap]\nrequest_timeout = \"3s\"\nretry_interval = \"1s\"\n\n"
         "[mqtt]\nuri = \"mqtts://127.0.0.1:" +
         std::to_string(tls_port) +
         "\"\nclient_id = \"gw-tls\"\nbase_topic = \"c2m\"\nreconnect_max = \"2s\"\n" + extra_mqtt +
         "\n"
         "[mqtt.tls]\nca_file = \"" +
         ca_file + "\"\ncert_file = \"" + pki.file("client.pem") + "\"\nkey_file = \"" +
         pki.file("client.key") + "\"\n\n" + simDevices(sim_port, 1) +
         "[[rule]]\nname = \"counter\"\nmatch = { path = \"/sensors/counter\" }\n"
         "topic = \"c2m/{device}/{path}\"\nqos = 1\n";
}

TEST(MqttTls, ClientCertificateOverMqttsBridgesValues) {
  Pki pki;
  TlsBroker tls(pki);
  TempDir dir;
  MqttProbe probe(tls.broker.port(), "c2m/#");  // the plain listener
  const int port = freeUdpPortRange(1);
  auto sim = startSim(dir, port, 1);
  auto gateway = startGateway(dir, tlsConfig(dir, tls.tls_port, pki.file("ca.pem"), pki, port));
  EXPECT_TRUE(probe.waitForCount("c2m/dev0/sensors/counter", 3, 20s))
      << gateway->output() << tls.broker.output();
  EXPECT_TRUE(probe.waitForCount("c2m/bridge/state", 1, 5s));
  EXPECT_NE(gateway->output().find("mqtt: connected to mqtts://127.0.0.1:"), std::string::npos)
      << gateway->output();
}

TEST(MqttTls, WrongCaFailsWithAClearErrorAndKeepsRetrying) {
  Pki pki;
  TlsBroker tls(pki);
  TempDir dir;
  MqttProbe probe(tls.broker.port(), "c2m/#");
  const int port = freeUdpPortRange(1);
  auto sim = startSim(dir, port, 1);
  auto gateway =
      startGateway(dir, tlsConfig(dir, tls.tls_port, pki.file("other-ca.pem"), pki, port));
  // Two failed attempts: it keeps retrying rather than giving up.
  ASSERT_TRUE(
      waitUntil([&] { return gateway->countInOutput("cannot connect to mqtts://") >= 2; }, 20s))
      << gateway->output();
  const std::string log = gateway->output();
  // Paho's code and message, and what to check.
  EXPECT_NE(log.find("MQTT error [-1]: TCP/TLS connect failure"), std::string::npos) << log;
  // And why, from the handshake: we did not know the CA of the broker's certificate.
  EXPECT_NE(log.find("TLS alert we sent: unknown CA"), std::string::npos) << log;
  EXPECT_NE(log.find("check that the CA signed the broker's certificate"), std::string::npos)
      << log;
  EXPECT_NE(log.find(pki.file("other-ca.pem")), std::string::npos) << "names the CA file\n" << log;
  EXPECT_TRUE(probe.messagesOn("c2m/dev0/sensors/counter").empty());
  EXPECT_TRUE(probe.messagesOn("c2m/bridge/state").empty());
}

TEST(MqttTls, Mqtt5CarriesValuesAndCommands) {
  Pki pki;
  TlsBroker tls(pki);
  TempDir dir;
  MqttProbe probe(tls.broker.port(), "c2m/#");
  const int port = freeUdpPortRange(1);
  auto sim = startSim(dir, port, 1, "500");
  auto gateway = startGateway(
      dir, tlsConfig(dir, tls.tls_port, pki.file("ca.pem"), pki, port, "protocol = \"5\"\n") +
               "\n[[command]]\nname = \"actuators\"\ntopic = \"c2m/{device}/{path}/set\"\n"
               "method = \"PUT\"\nallow = { device = \"*\", path = \"/actuators/*\" }\n");
  ASSERT_TRUE(probe.waitForCount("c2m/dev0/sensors/counter", 2, 20s))
      << gateway->output() << tls.broker.output();
  // A broker that does not speak MQTT 5 would have refused the CONNECT.
  EXPECT_NE(gateway->output().find("with MQTT 5"), std::string::npos) << gateway->output();
  probe.publish("c2m/dev0/actuators/led/set", "on");
  EXPECT_TRUE(sim->waitForOutput("REQ dev0 PUT /actuators/led on", 10s))
      << gateway->output() << sim->output();
}

// A broker whose second listener wants a user name and password (mosquitto_passwd); the
// first, anonymous one is for the probe.
struct PasswordBroker {
  PasswordBroker()
      : auth_port(freeTcpPort()),
        broker(Mosquitto::Options{false,
                                  "\nlistener " + std::to_string(auth_port) +
                                      " 127.0.0.1\nallow_anonymous false\npassword_file " +
                                      passwords.file("passwd") + "\n",
                                  true}) {}
  // Written before the broker starts (members are initialised in order).
  struct Passwords {
    Passwords() {
      EXPECT_EQ(run(dir, {"mosquitto_passwd", "-b", "-c", file("passwd"), "gw", "s3cret word"}),
                "");
      ::chmod(file("passwd").c_str(), 0644);
    }
    std::string file(const std::string& name) const { return dir.file(name); }
    TempDir dir;
  } passwords;
  int auth_port;
  Mosquitto broker;
};

std::string authConfig(const TempDir& dir, int auth_port, const std::string& password,
                       int sim_port) {
  dir.write("mqtt-password", password + "\n");  // the trailing newline is not part of it
  return "[gateway]\nname = \"test-gw\"\nstate_dir = \"" + dir.path() +
         "\"\n\n[coap]\nrequest_timeout = \"3s\"\nretry_interval = \"1s\"\n\n"
         "[mqtt]\nuri = \"mqtt://127.0.0.1:" +
         std::to_string(auth_port) +
         "\"\nclient_id = \"gw-auth\"\nbase_topic = \"c2m\"\nreconnect_max = \"2s\"\n"
         "username = \"gw\"\npassword_file = \"" +
         dir.file("mqtt-password") + "\"\n\n" + simDevices(sim_port, 1) +
         "[[rule]]\nname = \"counter\"\nmatch = { path = \"/sensors/counter\" }\n"
         "topic = \"c2m/{device}/{path}\"\nqos = 1\n";
}

// The password broker, a probe on its anonymous listener and one simulated device.
class MqttAuth : public ::testing::Test {
 protected:
  std::unique_ptr<Process> startGatewayWithPassword(const std::string& password) {
    return startGateway(dir, authConfig(dir, auth.auth_port, password, port));
  }
  PasswordBroker auth;
  TempDir dir;
  MqttProbe probe{auth.broker.port(), "c2m/#"};
  const int port = freeUdpPortRange(1);
  std::unique_ptr<Process> sim = startSim(dir, port, 1);
};

TEST_F(MqttAuth, UserNameAndPasswordFileBridgeValues) {
  auto gateway = startGatewayWithPassword("s3cret word");
  EXPECT_TRUE(probe.waitForCount("c2m/dev0/sensors/counter", 3, 20s))
      << gateway->output() << auth.broker.output();
  // The listener refuses anonymous clients (see the next test): the credentials worked.
}

TEST_F(MqttAuth, WrongPasswordIsRefusedWithAClearErrorAndRetried) {
  auto gateway = startGatewayWithPassword("not it");
  ASSERT_TRUE(
      waitUntil([&] { return gateway->countInOutput("cannot connect to mqtt://") >= 2; }, 20s))
      << gateway->output();
  const std::string log = gateway->output();
  EXPECT_NE(log.find("not authorized"), std::string::npos) << log;
  EXPECT_NE(log.find("user 'gw'"), std::string::npos) << "names the user\n" << log;
  EXPECT_NE(log.find(dir.file("mqtt-password")), std::string::npos) << "names the password file\n"
                                                                    << log;
  EXPECT_EQ(log.find("not it"), std::string::npos) << "never logs the password\n" << log;
  EXPECT_TRUE(probe.messagesOn("c2m/dev0/sensors/counter").empty());
}

}  // namespace
}  // namespace coap2mqtt::test
