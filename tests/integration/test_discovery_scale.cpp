// Issue 4, acceptance 2 and 5: multicast discovery of 200 simulated devices, and a gateway
// killed with SIGKILL in the middle of that discovery round. Also the simulator's own
// multicast answering (coap2mqtt-sim --multicast), which those tests stand on.
//
// Everything runs in a private network namespace per test (root and `ip netns` needed,
// skipped otherwise): lo there is made multicast capable with a 224.0.0.0/4 route, so the
// fixed ports (5683, 1883) and the group 224.0.1.187 are ours alone. The test process
// reaches MQTT through a mosquitto_sub "tap" inside the namespace, and raw CoAP through
// sockets created inside it (NetNs::socket).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/integration/harness.h"
#include "tests/integration/netns.h"

namespace coap2mqtt::test {
namespace {

using Clock = std::chrono::steady_clock;

constexpr int kCoapPort = 5683;
constexpr int kMqttPort = 1883;
constexpr const char* kGroup = "224.0.1.187";
constexpr int kFirstHost = 10;  // devices are 127.0.0.10, 127.0.0.11, ...

#define REQUIRE_NETNS()                                 \
  do {                                                  \
    std::string why_;                                   \
    if (!NetNs::available(&why_)) GTEST_SKIP() << why_; \
  } while (0)

std::string deviceAddress(int i) {
  return "127.0.0." + std::to_string(kFirstHost + i);
}
std::string deviceName(int i) {
  return "coap-127-0-0-" + std::to_string(kFirstHost + i);
}
std::string counterTopic(const std::string& device) {
  return "c2m/" + device + "/sensors/counter";
}

double secondsSince(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// ---------------------------------------------------------------------------------------
// Raw CoAP, enough to play the gateway's part against the simulator.

std::string encodeRequest(std::uint8_t type, std::uint16_t mid, const std::string& token,
                          const std::vector<std::string>& path, const std::string& query = "") {
  std::string out;
  out.push_back(static_cast<char>(0x40 | (type << 4) | token.size()));
  out.push_back(1);  // GET
  out.push_back(static_cast<char>(mid >> 8));
  out.push_back(static_cast<char>(mid & 0xff));
  out += token;
  unsigned last = 0;
  auto option = [&](unsigned number, const std::string& value) {
    // Values and deltas here are < 13 bytes except ".well-known" (11): no extensions.
    out.push_back(static_cast<char>(((number - last) << 4) | value.size()));
    out += value;
    last = number;
  };
  for (const auto& segment : path) option(11, segment);
  if (!query.empty()) option(15, query);
  return out;
}

struct Answer {
  std::string from;  // "a.b.c.d:port"
  std::uint8_t type = 0;
  std::uint8_t code = 0;
  std::uint16_t mid = 0;
  std::string token;
  std::optional<unsigned> content_format;
  std::string payload;
  double at = 0;  // seconds after the request was sent
};

std::optional<Answer> decode(const std::string& b) {
  if (b.size() < 4 || (static_cast<std::uint8_t>(b[0]) >> 6) != 1) return std::nullopt;
  auto u = [&](std::size_t i) { return static_cast<std::uint8_t>(b[i]); };
  Answer a;
  a.type = (u(0) >> 4) & 3;
  std::size_t tkl = u(0) & 0xf;
  if (b.size() < 4 + tkl) return std::nullopt;
  a.code = u(1);
  a.mid = static_cast<std::uint16_t>((u(2) << 8) | u(3));
  a.token = b.substr(4, tkl);
  std::size_t i = 4 + tkl;
  unsigned number = 0;
  while (i < b.size()) {
    if (u(i) == 0xff) {
      a.payload = b.substr(i + 1);
      break;
    }
    unsigned delta = u(i) >> 4, length = u(i) & 0xf;
    ++i;
    for (unsigned* v : {&delta, &length}) {
      if (*v == 13) {
        *v = 13u + u(i);
        i += 1;
      } else if (*v == 14) {
        *v = 269u + ((u(i) << 8) | u(i + 1));
        i += 2;
      }
    }
    number += delta;
    if (number == 12) {
      unsigned cf = 0;
      for (unsigned k = 0; k < length; ++k) cf = (cf << 8) | u(i + k);
      a.content_format = cf;
    }
    i += length;
  }
  return a;
}

// A UDP socket inside the namespace, bound to 0.0.0.0:0, sending multicast on lo.
class NsUdp {
 public:
  explicit NsUdp(const NetNs& ns) : fd_(ns.socket(AF_INET, SOCK_DGRAM)) {
    int big = 4 << 20;
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
    in_addr lo{};
    inet_pton(AF_INET, "127.0.0.1", &lo);
    ::setsockopt(fd_, IPPROTO_IP, IP_MULTICAST_IF, &lo, sizeof(lo));
    sockaddr_in any{};
    any.sin_family = AF_INET;
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&any), sizeof(any)) != 0) {
      throw std::runtime_error("bind");
    }
  }
  ~NsUdp() { ::close(fd_); }
  NsUdp(const NsUdp&) = delete;
  NsUdp& operator=(const NsUdp&) = delete;

  void send(const std::string& host, int port, const std::string& bytes) {
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(static_cast<std::uint16_t>(port));
    inet_pton(AF_INET, host.c_str(), &to.sin_addr);
    ASSERT_EQ(
        ::sendto(fd_, bytes.data(), bytes.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof(to)),
        static_cast<ssize_t>(bytes.size()))
        << std::strerror(errno);
    sent_ = Clock::now();
  }

  // Everything that arrives until `duration` after the last send (or `stop_after` answers).
  std::vector<Answer> receive(std::chrono::milliseconds duration,
                              std::size_t stop_after = SIZE_MAX) {
    std::vector<Answer> out;
    const auto deadline = sent_ + duration;
    while (out.size() < stop_after) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) break;
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
      char buf[2048];
      sockaddr_in from{};
      socklen_t len = sizeof(from);
      ssize_t n = ::recvfrom(fd_, buf, sizeof(buf), 0, reinterpret_cast<sockaddr*>(&from), &len);
      if (n < 0) continue;
      auto a = decode(std::string(buf, static_cast<std::size_t>(n)));
      if (!a) continue;
      char host[INET_ADDRSTRLEN] = {};
      inet_ntop(AF_INET, &from.sin_addr, host, sizeof(host));
      a->from = std::string(host) + ":" + std::to_string(ntohs(from.sin_port));
      a->at = std::chrono::duration<double>(Clock::now() - sent_).count();
      out.push_back(std::move(*a));
    }
    return out;
  }

 private:
  int fd_;
  Clock::time_point sent_ = Clock::now();
};

const std::string kToken = std::string("\x01\x02\x03\x04\x05\x06\x07\x08", 8);

// The simulator's link-format (identical for every device; see kResources in simulator.cpp).
const std::string kAllLinks =
    R"(</sensors/temp>;rt="temperature";ct=0;obs,</sensors/counter>;rt="counter";ct=50;obs,)"
    R"(</info>;rt="info";ct=50,</actuators/led>;rt="switch";ct=0;obs,</config/name>;rt="config";)"
    R"(ct=0)";

// ---------------------------------------------------------------------------------------
// Processes

std::unique_ptr<Process> startSim(const NetNs& ns, int devices, int leisure_ms,
                                  const std::string& log_name = "sim.log") {
  auto sim = std::make_unique<Process>(
      ns.exec({simulatorBinary(), "--devices", std::to_string(devices), "--address",
               deviceAddress(0), "--address-step", "--port", std::to_string(kCoapPort),
               "--multicast", kGroup, "--leisure", std::to_string(leisure_ms), "--interval",
               "1000"}),
      ns.file(log_name));
  EXPECT_TRUE(sim->waitForOutput("READY " + std::to_string(devices), 20s)) << sim->output();
  return sim;
}

std::string gatewayToml(const TempDir& dir, bool multicast) {
  return "[gateway]\nname = \"scale-gw\"\nstate_dir = \"" + dir.path() +
         "\"\n\n"
         "[coap]\nrequest_timeout = \"5s\"\nretry_interval = \"2s\"\n\n"
         "[coap.discovery]\nmulticast = [" +
         (multicast ? std::string("\"") + kGroup + "\"" : std::string()) +
         "]\ninterfaces = [\"lo\"]\nport = " + std::to_string(kCoapPort) +
         "\nwindow = \"6s\"\ninterval = \"1h\"\n\n"
         "[mqtt]\nuri = \"mqtt://127.0.0.1:" +
         std::to_string(kMqttPort) +
         "\"\nclient_id = \"gw-scale\"\nbase_topic = \"c2m\"\n\n"
         "[[rule]]\nname = \"counter\"\nmatch = { path = \"/sensors/counter\" }\n"
         "topic = \"c2m/{device}/{path}\"\n";
}

std::unique_ptr<Process> startGatewayIn(const NetNs& ns, const TempDir& dir,
                                        const std::string& toml, const std::string& log_name) {
  dir.write("gateway.toml", toml);
  return std::make_unique<Process>(
      ns.exec({gatewayBinary(), "run", "-c", dir.file("gateway.toml"), "-l", "debug"}),
      dir.file(log_name));
}

// `coap2mqtt devices --json` (reads the database only: no network, runs on the host).
nlohmann::json devicesJson(const TempDir& dir, std::string* raw = nullptr) {
  static int n = 0;
  Process p({gatewayBinary(), "devices", "--json", "-c", dir.file("gateway.toml")},
            dir.file("devices-" + std::to_string(++n) + ".json"));
  int rc = p.stop(0, 20s);
  std::string out = p.output();
  if (raw != nullptr) *raw = out;
  if (rc != 0)
    throw std::runtime_error("coap2mqtt devices --json: rc " + std::to_string(rc) + ": " + out);
  return nlohmann::json::parse(out);
}

std::set<std::string> names(const nlohmann::json& devices) {
  std::set<std::string> out;
  for (const auto& d : devices) out.insert(d.at("name").get<std::string>());
  return out;
}

// Devices (of `wanted`) with at least `n` counter values on the tap.
std::set<std::string> devicesWithValues(const NsMqttTap& tap, const std::set<std::string>& wanted,
                                        std::size_t n) {
  std::map<std::string, std::size_t> per_topic;
  for (const auto& m : tap.messages()) ++per_topic[m.topic];
  std::set<std::string> out;
  for (const auto& d : wanted) {
    auto it = per_topic.find(counterTopic(d));
    if (it != per_topic.end() && it->second >= n) out.insert(d);
  }
  return out;
}

std::string missing(const std::set<std::string>& wanted, const std::set<std::string>& got) {
  std::string out;
  std::size_t shown = 0;
  for (const auto& w : wanted) {
    if (got.count(w) != 0) continue;
    if (shown++ < 20) out += w + " ";
  }
  return std::to_string(wanted.size() - std::min(wanted.size(), got.size())) + " missing: " + out;
}

// Last lines of a log, for failure messages (the full ones are long).
std::string tail(const std::string& text, std::size_t lines = 40) {
  std::size_t pos = text.size();
  for (std::size_t i = 0; i < lines && pos > 0; ++i) {
    pos = text.rfind('\n', pos - 1);
    if (pos == std::string::npos) return text;
  }
  return text.substr(pos);
}

// ---------------------------------------------------------------------------------------
// The simulator's multicast answers

TEST(DiscoverySim, EveryDeviceAnswersFromItsOwnAddressWithTokenAndMid) {
  REQUIRE_NETNS();
  NetNs ns({.multicast_lo = true});
  auto sim = startSim(ns, 5, 800);
  NsUdp udp(ns);
  udp.send(kGroup, kCoapPort, encodeRequest(1, 0x1234, kToken, {".well-known", "core"}));
  auto answers = udp.receive(2500ms);
  EXPECT_TRUE(sim->waitForOutput("MCAST 5\n", 2s)) << sim->output();

  std::set<std::string> sources;
  for (const auto& a : answers) {
    sources.insert(a.from);
    EXPECT_EQ(a.type, 1) << "NON";
    EXPECT_EQ(a.code, (2 << 5) | 5) << "2.05";
    EXPECT_EQ(a.mid, 0x1234) << "the request's MID, as libcoap 4.3.1 servers answer";
    EXPECT_EQ(a.token, kToken);
    EXPECT_EQ(a.content_format, std::optional<unsigned>(40));
    EXPECT_EQ(a.payload, kAllLinks);
    EXPECT_LT(a.at, 0.8 + 0.3) << "within the leisure";
  }
  EXPECT_EQ(answers.size(), 5u);
  std::set<std::string> expected;
  for (int i = 0; i < 5; ++i) expected.insert(deviceAddress(i) + ":5683");
  EXPECT_EQ(sources, expected) << "each answer comes from its device's unicast address and port";

  // The same link-format as a unicast GET /.well-known/core of a device.
  udp.send(deviceAddress(3), kCoapPort, encodeRequest(0, 0x4321, "u1", {".well-known", "core"}));
  auto unicast = udp.receive(3s, 1);
  ASSERT_EQ(unicast.size(), 1u);
  EXPECT_EQ(unicast[0].type, 2) << "ACK";
  EXPECT_EQ(unicast[0].payload, kAllLinks);
  EXPECT_EQ(unicast[0].from, deviceAddress(3) + ":5683");
}

TEST(DiscoverySim, UnicastStillReachesEveryDeviceWhileTheMulticastSocketIsOpen) {
  REQUIRE_NETNS();
  NetNs ns({.multicast_lo = true});
  auto sim = startSim(ns, 4, 500);
  NsUdp udp(ns);
  for (int i = 0; i < 4; ++i) {
    udp.send(
        deviceAddress(i), kCoapPort,
        encodeRequest(0, static_cast<std::uint16_t>(100 + i), "t" + std::to_string(i), {"info"}));
    auto got = udp.receive(3s, 1);
    ASSERT_EQ(got.size(), 1u) << deviceAddress(i) << "\n" << sim->output();
    EXPECT_EQ(got[0].from, deviceAddress(i) + ":5683");
    EXPECT_EQ(got[0].payload, R"({"name":"dev)" + std::to_string(i) + R"(","model":"c2m-sim"})");
    EXPECT_TRUE(sim->waitForOutput("REQ dev" + std::to_string(i) + " GET /info\n", 2s));
  }
  EXPECT_EQ(sim->countInOutput("MCAST"), 0u) << "unicast must not reach the multicast socket";

  // Multicast still works alongside, and unicast after it.
  udp.send(kGroup, kCoapPort, encodeRequest(1, 7, kToken, {".well-known", "core"}));
  EXPECT_EQ(udp.receive(1500ms).size(), 4u);
  udp.send(deviceAddress(2), kCoapPort, encodeRequest(0, 8, "x", {"info"}));
  auto again = udp.receive(3s, 1);
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].payload, R"({"name":"dev2","model":"c2m-sim"})");

  // A second simulator on the same addresses is still refused (the plain probe bind).
  Process second(
      ns.exec({simulatorBinary(), "--devices", "4", "--address", deviceAddress(0), "--address-step",
               "--port", std::to_string(kCoapPort), "--multicast", kGroup}),
      ns.file("second.log"));
  EXPECT_EQ(second.stop(0, 10s), 1) << second.output();
  EXPECT_NE(second.output().find("Address already in use"), std::string::npos) << second.output();
}

TEST(DiscoverySim, QueryFilterAndRequestsThatAreNotAnswered) {
  REQUIRE_NETNS();
  NetNs ns({.multicast_lo = true});
  auto sim = startSim(ns, 3, 300);
  NsUdp udp(ns);

  udp.send(kGroup, kCoapPort, encodeRequest(1, 1, kToken, {".well-known", "core"}, "rt=counter"));
  auto filtered = udp.receive(1s);
  ASSERT_EQ(filtered.size(), 3u);
  for (const auto& a : filtered) {
    EXPECT_EQ(a.payload, R"(</sensors/counter>;rt="counter";ct=50;obs)");
  }

  // Nothing matches: nobody answers (RFC 7252 §8.2: no empty multicast answers).
  udp.send(kGroup, kCoapPort, encodeRequest(1, 2, kToken, {".well-known", "core"}, "rt=nope"));
  EXPECT_TRUE(udp.receive(800ms).empty());
  EXPECT_TRUE(sim->waitForOutput("MCAST 0\n", 1s)) << sim->output();

  // Not answered at all: a CON request, another path, garbage.
  udp.send(kGroup, kCoapPort, encodeRequest(0, 3, kToken, {".well-known", "core"}));
  udp.send(kGroup, kCoapPort, encodeRequest(1, 4, kToken, {"info"}));
  udp.send(kGroup, kCoapPort, std::string("\xff\x01", 2));
  EXPECT_TRUE(udp.receive(800ms).empty());
  EXPECT_EQ(sim->countInOutput("MCAST"), 2u) << sim->output();
  EXPECT_EQ(sim->countInOutput("multicast: ignored a datagram"), 3u) << sim->output();
}

TEST(DiscoverySim, ThousandDevicesAllAnswerWithinTheLeisure) {
  REQUIRE_NETNS();
  NetNs ns({.multicast_lo = true});
  auto sim = startSim(ns, 1000, 2000);
  NsUdp udp(ns);
  udp.send(kGroup, kCoapPort, encodeRequest(1, 9, kToken, {".well-known", "core"}));
  auto answers = udp.receive(3s, 1000);
  std::set<std::string> sources;
  double last = 0;
  for (const auto& a : answers) {
    sources.insert(a.from);
    last = std::max(last, a.at);
  }
  EXPECT_EQ(sources.size(), 1000u);
  EXPECT_LT(last, 2.5);
  EXPECT_GT(last, 1.0) << "the answers are spread over the leisure, not sent at once";
  EXPECT_TRUE(sim->waitForOutput("MCAST 1000\n", 1s));
}

// ---------------------------------------------------------------------------------------
// The gateway

class DiscoveryScale : public ::testing::Test {
 protected:
  void SetUp() override {
    REQUIRE_NETNS();
    ns_ = std::make_unique<NetNs>(NetNs::Options{.multicast_lo = true});
    broker_ = std::make_unique<NsMosquitto>(*ns_, kMqttPort);
  }
  void TearDown() override {
    // Processes before the namespace they run in.
    gateway_.reset();
    tap_.reset();
    sim_.reset();
    broker_.reset();
    ns_.reset();
  }

  std::unique_ptr<NetNs> ns_;
  std::unique_ptr<NsMosquitto> broker_;
  std::unique_ptr<Process> sim_;
  std::unique_ptr<NsMqttTap> tap_;
  std::unique_ptr<Process> gateway_;
  TempDir dir_;
};

// Acceptance 2: 200 devices answering multicast on loopback all land in the registry
// within one discovery window, are listed by `coap2mqtt devices --json`, and are bridged.
TEST_F(DiscoveryScale, TwoHundredDevicesLandInTheRegistryWithinOneWindow) {
  constexpr int kDevices = 200;
  sim_ = startSim(*ns_, kDevices, 4000);
  tap_ = std::make_unique<NsMqttTap>(*ns_, kMqttPort, "c2m/+/sensors/counter");
  const auto t0 = Clock::now();
  gateway_ = startGatewayIn(*ns_, dir_, gatewayToml(dir_, true), "gateway.log");

  std::set<std::string> expected;
  for (int i = 0; i < kDevices; ++i) expected.insert(deviceName(i));

  // One round: its window (6 s) closes after every device's leisure (< 4 s). Meanwhile
  // the devices found so far are observed and their values arrive.
  std::optional<double> t_round, t_values;
  std::set<std::string> bridged;
  waitUntil(
      [&] {
        if (!t_round &&
            gateway_->output().find("discovery: 200 device(s) answered") != std::string::npos) {
          t_round = secondsSince(t0);
        }
        if (!t_values) {
          bridged = devicesWithValues(*tap_, expected, 1);
          if (bridged.size() == expected.size()) t_values = secondsSince(t0);
        }
        return t_round && t_values;
      },
      40s);
  ASSERT_TRUE(t_round) << "no 'discovery: 200 device(s) answered'\n"
                       << tail(gateway_->output()) << tail(sim_->output());
  EXPECT_LT(*t_round, 15.0) << "one 6 s window after start-up";
  EXPECT_TRUE(t_values) << missing(expected, bridged) << tail(gateway_->output());
  EXPECT_EQ(gateway_->countInOutput("device(s) answered"), 1u);
  EXPECT_EQ(sim_->countInOutput("MCAST 200\n"), 1u) << "exactly one request was sent";
  EXPECT_EQ(gateway_->countInOutput("discovery: new device "), 200u);

  std::string raw;
  nlohmann::json devices = devicesJson(dir_, &raw);
  ASSERT_TRUE(devices.is_array()) << raw;
  EXPECT_EQ(devices.size(), 200u);
  EXPECT_EQ(names(devices), expected) << missing(expected, names(devices));
  for (const auto& d : devices) {
    const std::string name = d.at("name");
    EXPECT_EQ(d.at("source"), "multicast") << name;
    const std::string host = name.substr(5);  // "coap-127-0-0-10" -> "127-0-0-10"
    std::string dotted = host;
    std::replace(dotted.begin(), dotted.end(), '-', '.');
    EXPECT_EQ(d.at("uri"), "coap://" + dotted + ":5683") << name;
    std::set<std::string> paths;
    for (const auto& r : d.at("resources")) {
      paths.insert(r.at("path").get<std::string>());
      if (r.at("path") == "/sensors/counter") {
        EXPECT_EQ(r.at("obs"), true) << name;
      }
    }
    EXPECT_EQ(paths, (std::set<std::string>{"/sensors/temp", "/sensors/counter", "/info",
                                            "/actuators/led", "/config/name"}))
        << name;
  }

  std::printf("[ timing ] round closed %.2f s after start, values from all %d devices %.2f s\n",
              *t_round, kDevices, t_values.value_or(-1));
  RecordProperty("round_s", std::to_string(*t_round));
  RecordProperty("all_values_s", std::to_string(t_values.value_or(-1)));
}

// Acceptance 5: SIGKILL while the discovery window is open; the restarted gateway opens
// the database and resumes bridging every device stored there, with no new round.
//
// "Every device" is every device the database holds after the kill: those whose answer was
// processed (and saved) before it. Devices whose answer came too late were never known and
// cannot be expected back without a round. The restart disables multicast discovery
// (multicast = [], the rest of gateway.toml unchanged) because the gateway always runs a
// round at start when it is on; the simulator's log proves that no request was sent.
TEST_F(DiscoveryScale, KilledDuringDiscoveryResumesEveryStoredDeviceWithoutANewRound) {
  constexpr int kDevices = 200;
  sim_ = startSim(*ns_, kDevices, 4000);
  gateway_ = startGatewayIn(*ns_, dir_, gatewayToml(dir_, true), "gateway-1.log");
  ASSERT_TRUE(
      waitUntil([&] { return gateway_->countInOutput("discovery: new device ") >= 100; }, 20s))
      << tail(gateway_->output());
  EXPECT_EQ(gateway_->stop(SIGKILL, 5s), 128 + SIGKILL);
  const std::string before_kill = gateway_->output();
  ASSERT_EQ(before_kill.find("device(s) answered"), std::string::npos)
      << "the round should still have been open at the kill";
  ASSERT_EQ(sim_->countInOutput("MCAST"), 1u);

  // What the database holds now (read-only, as `coap2mqtt devices` does).
  std::string raw;
  nlohmann::json stored;
  ASSERT_NO_THROW(stored = devicesJson(dir_, &raw)) << raw;
  const std::set<std::string> known = names(stored);
  std::set<std::string> without_resources;
  for (const auto& d : stored) {
    if (d.at("resources").empty()) without_resources.insert(d.at("name").get<std::string>());
  }
  EXPECT_GE(known.size(), 100u) << raw;
  std::printf("[ info ] killed with %zu device(s) stored (%zu without resources), %zu logged\n",
              known.size(), without_resources.size(),
              static_cast<std::size_t>(gateway_->countInOutput("discovery: new device ")));

  // Restart, multicast discovery off.
  tap_ = std::make_unique<NsMqttTap>(*ns_, kMqttPort, "c2m/+/sensors/counter");
  const auto t0 = Clock::now();
  gateway_ = startGatewayIn(*ns_, dir_, gatewayToml(dir_, false), "gateway-2.log");
  const std::string registry_line = "registry: " + std::to_string(known.size()) +
                                    " known device(s), " + std::to_string(known.size()) +
                                    " re-observed from the database";
  EXPECT_TRUE(gateway_->waitForOutput(registry_line, 15s)) << registry_line << "\n"
                                                           << tail(gateway_->output());

  // Every stored device is bridged again: two values each (the observe response and at
  // least one notification), i.e. the observation is established, not just one GET.
  std::set<std::string> resumed;
  const bool all = waitUntil(
      [&] {
        resumed = devicesWithValues(*tap_, known, 2);
        return resumed.size() == known.size();
      },
      30s);
  const double t_resumed = secondsSince(t0);
  std::string no_resources_note;
  for (const auto& d : without_resources) {
    if (resumed.count(d) == 0) no_resources_note += d + " ";
  }
  EXPECT_TRUE(all) << missing(known, resumed)
                   << (no_resources_note.empty()
                           ? std::string()
                           : "\n(stored without resources: " + no_resources_note + ")")
                   << tail(gateway_->output());

  // No new discovery round: no multicast request reached the devices, no answers were
  // collected, and the registry holds exactly the devices it held at the kill.
  EXPECT_EQ(sim_->countInOutput("MCAST"), 1u) << tail(sim_->output());
  EXPECT_EQ(gateway_->countInOutput("device(s) answered"), 0u);
  EXPECT_EQ(gateway_->countInOutput("discovery: new device"), 0u);
  EXPECT_EQ(names(devicesJson(dir_)), known);
  // Nothing but the stored devices is bridged.
  for (const auto& topic : tap_->topics()) {
    EXPECT_EQ(known.count(topic.substr(4, topic.find('/', 4) - 4)), 1u) << topic;
  }
  std::printf("[ timing ] %zu stored devices resumed %.2f s after the restart\n", known.size(),
              t_resumed);
  RecordProperty("resumed_s", std::to_string(t_resumed));
}

}  // namespace
}  // namespace coap2mqtt::test
