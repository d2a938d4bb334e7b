// Issue 19, acceptance 5: the Prometheus endpoint scraped with curl (a real HTTP client)
// while the simulator's device sends notifications through a real mosquitto; promtool
// (Debian's prometheus package) checks the scrape when it is installed.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <sstream>

#include "tests/integration/gateway_process.h"
#include "tests/integration/harness.h"

namespace coap2mqtt::test {
namespace {

// Runs a shell command; its stdout.
std::string shell(const std::string& command, int* status = nullptr) {
  std::string out;
  FILE* p = ::popen(command.c_str(), "r");
  if (p == nullptr) return out;
  char buf[4096];
  for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
  const int st = ::pclose(p);
  if (status != nullptr) *status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return out;
}

struct Scrape {
  int code = 0;
  std::string content_type;
  std::string body;
};

// curl, with the body saved to `body_file`.
Scrape curl(const std::string& args, const std::string& body_file) {
  Scrape s;
  std::istringstream meta(shell("curl -s --max-time 10 -o '" + body_file +
                                "' -w '%{http_code}\\n%{content_type}' " + args));
  meta >> s.code;
  meta.ignore();
  std::getline(meta, s.content_type);
  std::ifstream in(body_file);
  std::ostringstream body;
  body << in.rdbuf();
  s.body = body.str();
  return s;
}

// The sample lines of an exposition: "name{labels}" -> value.
std::map<std::string, double> samples(const std::string& text) {
  std::map<std::string, double> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    const auto space = line.rfind(' ');
    out[line.substr(0, space)] = std::stod(line.substr(space + 1));
  }
  return out;
}

double value(const std::map<std::string, double>& m, const std::string& series) {
  const auto it = m.find(series);
  return it == m.end() ? -1 : it->second;
}

// TCP ports `pid` listens on (its socket inodes matched against /proc/net/tcp{,6}).
std::set<int> listeningTcpPorts(int pid) {
  std::set<std::string> inodes;
  std::error_code ec;
  for (const auto& fd :
       std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec)) {
    const std::string target = std::filesystem::read_symlink(fd.path(), ec).string();
    if (target.rfind("socket:[", 0) == 0) inodes.insert(target.substr(8, target.size() - 9));
  }
  std::set<int> ports;
  for (const char* table : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    std::ifstream in(table);
    std::string line;
    std::getline(in, line);  // header
    while (std::getline(in, line)) {
      std::istringstream f(line);
      std::string sl, local, remote, st, queues, tr, retr, uid, timeout, inode;
      f >> sl >> local >> remote >> st >> queues >> tr >> retr >> uid >> timeout >> inode;
      if (st == "0A" && inodes.count(inode)) {
        ports.insert(std::stoi(local.substr(local.rfind(':') + 1), nullptr, 16));
      }
    }
  }
  return ports;
}

std::size_t openFds(int pid) {
  std::size_t n = 0;
  std::error_code ec;
  for (std::filesystem::directory_iterator it("/proc/" + std::to_string(pid) + "/fd", ec), end;
       !ec && it != end; it.increment(ec)) {
    ++n;
  }
  return n;
}

std::string metricsConfig(int port) {
  return "[metrics]\nlisten = \"127.0.0.1:" + std::to_string(port) + "\"\n\n";
}

const char* const kSetRule =
    "[[command]]\nname = \"set\"\ntopic = \"c2m/{device}/{path}/set\"\nmethod = \"PUT\"\n"
    "allow = { device = \"*\", path = \"/actuators/*\" }\n\n";

const char* const kCounterRule =
    "[[rule]]\nname = \"counter\"\nmatch = { device = \"dev0\", path = \"/sensors/counter\" }\n"
    "mode = \"observe\"\ntopic = \"c2m/{device}/{path}\"\npayload = \"raw\"\nqos = 1\n";

TEST(Metrics, ScrapeCountsWhatWasSentAndPublished) {
  TempDir dir;
  Mosquitto broker;
  const int coap_port = freeUdpPort();
  const int http_port = freeTcpPort();
  // NON notifications: no ACK of ours can reach the device after it was killed, and the
  // ICMP answer to one cannot turn into a failure of the device's session.
  auto sim = startSim(dir, coap_port, 1, "100", "sim.log", {"--non-always"});
  MqttProbe probe(broker.port(), "c2m/dev0/sensors/counter");
  MqttProbe results(broker.port(), "c2m/dev0/actuators/led/set/result");
  const std::string config = baseConfig(broker, dir) + simDevices(coap_port, 1) +
                             metricsConfig(http_port) + kSetRule + kCounterRule;
  auto gateway = startGateway(dir, config);
  const std::string url = "http://127.0.0.1:" + std::to_string(http_port);

  // The device sends until 10 values have reached the broker; then it is killed, so the
  // number sent is fixed: what the broker received once the gateway has caught up.
  ASSERT_TRUE(probe.waitForCount("c2m/dev0/sensors/counter", 10, 30s)) << gateway->output();
  // One command, answered 2.04 by the device: counted by its code.
  results.publish("c2m/dev0/actuators/led/set", "on");
  ASSERT_TRUE(results.waitForCount("c2m/dev0/actuators/led/set/result", 1, 15s))
      << gateway->output();
  EXPECT_NE(results.messages().front().payload.find("\"code\":\"2.04\""), std::string::npos)
      << results.messages().front().payload;
  sim->stop(SIGKILL);
  Scrape scrape;
  std::map<std::string, double> m;
  std::size_t received = 0;
  // Once the gateway has caught up, what it counted equals what the broker received (a
  // value still on its way makes them differ, and the next try looks again).
  const bool settled = waitUntil(
      [&] {
        scrape = curl(url + "/metrics", dir.file("scrape.txt"));
        m = samples(scrape.body);
        received = probe.messagesOn("c2m/dev0/sensors/counter").size();
        return value(m, "coap2mqtt_mqtt_published_total{qos=\"1\"}") == double(received) &&
               value(m, "coap2mqtt_notifications_total") == double(received);
      },
      30s);
  ASSERT_TRUE(settled) << "received " << received << ", scraped:\n"
                       << scrape.body << gateway->output();
  ASSERT_EQ(scrape.code, 200);
  EXPECT_EQ(scrape.content_type, "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_GE(received, 10u);
  EXPECT_EQ(value(m, "coap2mqtt_notifications_total"), double(received));
  EXPECT_EQ(value(m, "coap2mqtt_mqtt_published_total{qos=\"1\"}"), double(received));
  EXPECT_EQ(value(m, "coap2mqtt_mqtt_published_total{qos=\"0\"}"), 0);
  EXPECT_EQ(value(m, "coap2mqtt_mqtt_published_total{qos=\"2\"}"), 0);
  EXPECT_EQ(value(m, "coap2mqtt_devices{state=\"online\"}"), 1) << scrape.body;
  EXPECT_EQ(value(m, "coap2mqtt_devices{state=\"offline\"}"), 0) << scrape.body;
  EXPECT_EQ(value(m, "coap2mqtt_observations"), 1) << scrape.body;
  EXPECT_EQ(value(m, "coap2mqtt_mqtt_connected"), 1);
  EXPECT_EQ(value(m, "coap2mqtt_commands_total{result=\"answered\",code=\"2.04\"}"), 1)
      << scrape.body;
  EXPECT_EQ(value(m, "coap2mqtt_commands_total{result=\"refused\"}"), 0) << scrape.body;
  EXPECT_EQ(value(m, "coap2mqtt_build_info{version=\"" COAP2MQTT_VERSION "\"}"), 1);
  EXPECT_GT(value(m, "process_resident_memory_bytes"), 1e6);
  EXPECT_GT(value(m, "process_open_fds"), 3);
  EXPECT_GE(value(m, "coap2mqtt_mqtt_delivered_total"), double(received))
      << "every QoS 1 value and the gateway's own retained messages were acknowledged";

  // promtool (Debian's prometheus package) lints the exposition.
  if (shell("command -v promtool").empty()) {
    GTEST_SKIP() << "promtool not installed (apt-get install prometheus, or "
                    "scripts/deps.sh --promtool): the scrape was not linted";
  }
  int status = -1;
  const std::string lint =
      shell("promtool check metrics < '" + dir.file("scrape.txt") + "' 2>&1", &status);
  EXPECT_EQ(status, 0) << lint;
  EXPECT_EQ(lint, "") << "promtool found problems";
}

TEST(Metrics, OnlyGetMetricsIsServedAndShutdownIsClean) {
  TempDir dir;
  Mosquitto broker;
  const int http_port = freeTcpPort();
  auto gateway = startGateway(dir, baseConfig(broker, dir) + metricsConfig(http_port));
  ASSERT_TRUE(gateway->waitForOutput("metrics: serving", 15s)) << gateway->output();
  const std::string url = "http://127.0.0.1:" + std::to_string(http_port);
  EXPECT_EQ(listeningTcpPorts(gateway->pid()), std::set<int>{http_port})
      << "the metrics port is the gateway's only TCP listener";

  EXPECT_EQ(curl(url + "/metrics", dir.file("a")).code, 200);
  EXPECT_EQ(curl(url + "/", dir.file("b")).code, 404);
  EXPECT_EQ(curl(url + "/metrics/extra", dir.file("c")).code, 404);
  EXPECT_EQ(curl(url + "/metricsx", dir.file("d")).code, 404);
  EXPECT_EQ(curl("-X POST -d x=1 " + url + "/metrics", dir.file("e")).code, 404);
  EXPECT_EQ(curl("-X POST " + url + "/metrics", dir.file("e")).code, 404) << "no body either";
  EXPECT_EQ(curl("-X PUT -d x=1 " + url + "/metrics", dir.file("f")).code, 404);
  EXPECT_EQ(curl("-X DELETE " + url + "/metrics", dir.file("g")).code, 404);

  // A changed [metrics] listen on reload: said to need a restart, the old port kept.
  const int other_port = freeTcpPort();
  dir.write("gateway.toml", baseConfig(broker, dir) + metricsConfig(other_port));
  ::kill(gateway->pid(), SIGHUP);
  EXPECT_TRUE(gateway->waitForOutput("take effect only after a restart: metrics.listen", 10s))
      << gateway->output();
  EXPECT_EQ(curl(url + "/metrics", dir.file("h")).code, 200);

  EXPECT_EQ(gateway->stop(SIGTERM, 15s), 0) << gateway->output();
  EXPECT_NE(gateway->output().find("metrics: stopped listening on 127.0.0.1:" +
                                   std::to_string(http_port)),
            std::string::npos)
      << gateway->output();
}

TEST(Metrics, OffByDefault) {
  TempDir dir;
  Mosquitto broker;
  MqttProbe probe(broker.port(), "c2m/bridge/state");
  auto gateway = startGateway(dir, baseConfig(broker, dir));
  ASSERT_TRUE(probe.waitForCount("c2m/bridge/state", 1, 15s)) << gateway->output();
  EXPECT_EQ(listeningTcpPorts(gateway->pid()), std::set<int>{}) << "nothing listens on TCP";
  EXPECT_EQ(gateway->output().find("metrics:"), std::string::npos) << gateway->output();
}

// The port is held by a socket with SO_REUSEPORT, which would let a second listener that
// also sets it (httplib's default) share the port: the gateway must fail to bind instead,
// say so, and exit like a CoAP listener that cannot bind.
TEST(Metrics, PortTakenIsAClearErrorAndExitCode) {
  TempDir dir;
  Mosquitto broker;
  const HeldTcpPort held;  // SO_REUSEPORT, as httplib would set it
  const int port = held.port();

  auto gateway = startGateway(dir, baseConfig(broker, dir) + metricsConfig(port));
  const int code = gateway->stop(0, 20s);  // 0: waits for it to exit by itself
  EXPECT_EQ(code, 2) << gateway->output();
  EXPECT_NE(gateway->output().find("metrics: cannot listen on 127.0.0.1:" + std::to_string(port) +
                                   ": Address already in use"),
            std::string::npos)
      << gateway->output();
}

// A hostile client opening many connections and sending nothing: the gateway accepts a
// bounded number (two HTTP threads, eight waiting), its other work goes on, and once the
// clients are gone a scrape is answered again.
TEST(Metrics, IdleConnectionsAreBounded) {
  TempDir dir;
  Mosquitto broker;
  const int coap_port = freeUdpPort();
  const int http_port = freeTcpPort();
  auto sim = startSim(dir, coap_port, 1, "100");
  MqttProbe probe(broker.port(), "c2m/dev0/sensors/counter");
  auto gateway = startGateway(dir, baseConfig(broker, dir) + simDevices(coap_port, 1) +
                                       metricsConfig(http_port) + kCounterRule);
  ASSERT_TRUE(probe.waitForCount("c2m/dev0/sensors/counter", 3, 30s)) << gateway->output();
  const std::size_t fds_before = openFds(gateway->pid());

  std::vector<int> clients;
  for (int i = 0; i < 100; ++i) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    ASSERT_GE(fd, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<std::uint16_t>(http_port));
    ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);  // in progress is fine
    clients.push_back(fd);
  }
  // Values keep flowing while the clients hold their connections, and the gateway holds
  // at most 2 + 8 + 1 (the one its listener waits to queue) of them.
  const std::size_t seen = probe.messagesOn("c2m/dev0/sensors/counter").size();
  EXPECT_TRUE(probe.waitForCount("c2m/dev0/sensors/counter", seen + 10, 15s));
  const std::size_t fds_during = openFds(gateway->pid());
  EXPECT_LE(fds_during, fds_before + 11) << "before " << fds_before;
  for (int fd : clients) ::close(fd);
  EXPECT_TRUE(waitUntil(
      [&] {
        return curl("http://127.0.0.1:" + std::to_string(http_port) + "/metrics",
                    dir.file("scrape.txt"))
                   .code == 200;
      },
      30s));
  EXPECT_TRUE(gateway->running());
}

}  // namespace
}  // namespace coap2mqtt::test
