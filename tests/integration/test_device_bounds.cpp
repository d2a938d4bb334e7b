// Issue 17, findings 3 and 9: who may create devices, and how many.
//
// - Finding 3: every (IP, port) that answered a round and every RD registration became a
//   device, without bound. Now [coap.limits] bounds them in total and per host: beyond a
//   bound a multicast answer is ignored and a registration gets 5.03; both are counted
//   (bridge/info stats.dropped.device_limit) and logged once per interval, while the
//   configured device keeps flowing.
// - Finding 9: a configured coap://127.0.0.10 that also answered multicast (from
//   127.0.0.10:5683) was two devices, and a multicast answer from a configured device's
//   address rewrote its resources. One endpoint is one device; a configured device's
//   resources come from the device itself, never from a multicast answer anyone can forge.
//
// Everything runs in a private network namespace (root and `ip netns`; skipped otherwise),
// whose lo is multicast capable: 224.0.1.187 and the fixed ports are ours alone.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/integration/harness.h"
#include "tests/integration/netns.h"

namespace coap2mqtt::test {
namespace {

constexpr int kCoapPort = 5683;     // the devices'
constexpr int kGatewayPort = 5690;  // the gateway's own endpoint (the RD)
constexpr int kMqttPort = 1883;
constexpr const char* kGroup = "224.0.1.187";

#define REQUIRE_NETNS()                                 \
  do {                                                  \
    std::string why_;                                   \
    if (!NetNs::available(&why_)) GTEST_SKIP() << why_; \
  } while (0)

// Answers multicast discovery with the given link-format from ADDRESS, once from each of
// COUNT ports (PORT, PORT+1, ...): COUNT endpoints on one host. Nothing answers unicast.
constexpr const char* kAnswererPy = R"py(
import socket, struct, sys
group, port, address, links, count = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4].encode(), int(sys.argv[5])
rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
rx.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
rx.bind((group, port))
rx.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
              struct.pack("4s4s", socket.inet_aton(group), socket.inet_aton("127.0.0.1")))
txs = []
for i in range(count):
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.bind((address, port + i))
    txs.append(tx)
print("READY", flush=True)
while True:
    data, peer = rx.recvfrom(2048)
    if len(data) < 4 or data[0] >> 6 != 1 or data[1] != 1:
        continue
    tkl = data[0] & 0x0F
    # NON 2.05, the request's MID and token, Content-Format 40, the links.
    answer = bytes([0x50 | tkl, 0x45]) + data[2:4] + data[4:4 + tkl] + bytes([0xC1, 40, 0xFF])
    for tx in txs:
        tx.sendto(answer + links, peer)
    print("ANSWERED", peer, flush=True)
)py";

class DeviceBounds : public ::testing::Test {
 protected:
  void SetUp() override {
    REQUIRE_NETNS();
    ns_ = std::make_unique<NetNs>(NetNs::Options{.multicast_lo = true});
    broker_ = std::make_unique<NsMosquitto>(*ns_, kMqttPort);
    tap_ = std::make_unique<NsMqttTap>(*ns_, kMqttPort, "c2m/#");
  }
  void TearDown() override {
    gateway_.reset();
    for (auto& p : peers_) p.reset();
    tap_.reset();
    broker_.reset();
    ns_.reset();
  }

  // `extra` goes into gateway.toml as is (a [coap.limits] table, [[coap.device]]s).
  void startGateway(const std::string& extra) {
    dir_.write("gateway.toml",
               "[gateway]\nname = \"bounds-gw\"\nstate_dir = \"" + dir_.path() +
                   "\"\n\n"
                   "[coap]\nlisten = [\"127.0.0.1:" +
                   std::to_string(kGatewayPort) +
                   "\"]\nrequest_timeout = \"2s\"\nretry_interval = \"1s\"\n\n"
                   "[coap.discovery]\nmulticast = [\"" +
                   kGroup + "\"]\ninterfaces = [\"lo\"]\nport = " + std::to_string(kCoapPort) +
                   "\nwindow = \"2s\"\ninterval = \"1h\"\n\n"
                   "[mqtt]\nuri = \"mqtt://127.0.0.1:" +
                   std::to_string(kMqttPort) +
                   "\"\nclient_id = \"gw-bounds\"\nbase_topic = \"c2m\"\n\n"
                   "[[rule]]\nname = \"counter\"\nmatch = { path = \"/sensors/counter\" }\n"
                   "topic = \"c2m/{device}/{path}\"\n\n" +
                   extra);
    gateway_ = std::make_unique<Process>(
        ns_->exec({gatewayBinary(), "run", "-c", dir_.file("gateway.toml"), "-l", "debug"}),
        dir_.file("gateway.log"));
  }

  // coap2mqtt-sim: `count` devices from `address` on, each on its own address, port 5683.
  void startSim(const std::string& address, int count, bool multicast) {
    std::vector<std::string> argv{
        simulatorBinary(), "--devices", std::to_string(count),     "--address",  address,
        "--address-step",  "--port",    std::to_string(kCoapPort), "--interval", "300",
        "--leisure",       "300"};
    if (multicast) argv.insert(argv.end(), {"--multicast", kGroup});
    peers_.push_back(std::make_unique<Process>(
        ns_->exec(argv), ns_->file("sim-" + std::to_string(peers_.size()) + ".log")));
    ASSERT_TRUE(peers_.back()->waitForOutput("READY", 20s)) << peers_.back()->output();
  }

  Process& startAnswerer(const std::string& address, const std::string& links, int ports) {
    dir_.write("answerer.py", kAnswererPy);
    peers_.push_back(std::make_unique<Process>(
        ns_->exec({"python3", dir_.file("answerer.py"), kGroup, std::to_string(kCoapPort), address,
                   links, std::to_string(ports)}),
        ns_->file("answerer-" + std::to_string(peers_.size()) + ".log")));
    EXPECT_TRUE(peers_.back()->waitForOutput("READY", 10s)) << peers_.back()->output();
    return *peers_.back();
  }

  // POST /rd from `host` (coap-client -a), base coap://host:port; coap-client's log.
  std::string registerInRd(const std::string& ep, const std::string& host, int port) {
    std::string out;
    ns_->run({"coap-client-openssl", "-v", "6", "-m", "post", "-B", "5", "-t", "40", "-a", host,
              "-e", "</sensors/counter>;obs;ct=50",
              "coap://127.0.0.1:" + std::to_string(kGatewayPort) + "/rd?ep=" + ep +
                  "&lt=600&base=coap://" + host + ":" + std::to_string(port)},
             &out, 15s);
    return out;
  }

  // The round the gateway runs at start is over (its summary line is logged).
  bool roundDone() const { return gateway_->countInOutput("device(s) answered") >= 1; }

  // The last retained bridge/devices list, by name.
  std::map<std::string, nlohmann::json> listed() const {
    std::map<std::string, nlohmann::json> out;
    const auto lists = tap_->messagesOn("c2m/bridge/devices");
    if (lists.empty()) return out;
    const auto j = nlohmann::json::parse(lists.back().payload, nullptr, false);
    if (!j.is_array()) return out;
    for (const auto& d : j) out[d.value("name", "")] = d;
    return out;
  }

  static bool hasResource(const nlohmann::json& device, const std::string& path) {
    if (!device.contains("resources")) return false;
    const auto& rs = device["resources"];
    return std::any_of(rs.begin(), rs.end(),
                       [&](const nlohmann::json& r) { return r.value("path", "") == path; });
  }

  // stats.dropped.<reason> of a fresh admin "info" answer; -1 when there is none.
  long long dropped(const std::string& reason) {
    const std::string transaction = "t" + std::to_string(++requests_);
    ns_->run({"mosquitto_pub", "-p", std::to_string(kMqttPort), "-t", "c2m/bridge/request/info",
              "-m", R"({"transaction":")" + transaction + "\"}"},
             nullptr, 5s);
    long long value = -1;
    tap_->waitFor(
        [&](const std::vector<NsMqttTap::Message>& ms) {
          for (const auto& m : ms) {
            if (m.topic != "c2m/bridge/response/info") continue;
            const auto j = nlohmann::json::parse(m.payload, nullptr, false);
            if (j.is_discarded() || j.value("transaction", "") != transaction) continue;
            const auto& d = j["data"]["stats"]["dropped"];
            if (d.contains(reason)) value = d[reason].get<long long>();
            return true;
          }
          return false;
        },
        10s);
    return value;
  }

  std::size_t values(const std::string& device) const {
    return tap_->messagesOn("c2m/" + device + "/sensors/counter").size();
  }

  std::string dump() const {
    std::string out = "gateway log (tail):\n";
    const std::string log = gateway_ ? gateway_->output() : "";
    out += log.size() > 6000 ? log.substr(log.size() - 6000) : log;
    out += "\nmqtt (bridge topics):\n";
    for (const auto& m : tap_->messages()) {
      if (m.topic.find("/bridge/") != std::string::npos) out += m.topic + " " + m.payload + "\n";
    }
    return out;
  }

  TempDir dir_;
  std::unique_ptr<NetNs> ns_;
  std::unique_ptr<NsMosquitto> broker_;
  std::unique_ptr<NsMqttTap> tap_;
  std::vector<std::unique_ptr<Process>> peers_;
  std::unique_ptr<Process> gateway_;
  int requests_ = 0;
};

// Finding 3: five devices answer, the total bound is three and one is configured.
TEST_F(DeviceBounds, MulticastAnswersBeyondMaxDevicesAreRefusedCountedAndLoggedOnce) {
  startSim("127.0.0.10", 1, false);
  startSim("127.0.0.20", 5, true);
  startGateway(
      "[coap.limits]\nmax_devices = 3\n\n"
      "[[coap.device]]\nname = \"boiler\"\nuri = \"coap://127.0.0.10:5683\"\n");
  ASSERT_TRUE(waitUntil([&] { return roundDone(); }, 20s)) << dump();
  ASSERT_TRUE(waitUntil([&] { return values("boiler") >= 2; }, 15s)) << dump();
  EXPECT_TRUE(waitUntil([&] { return listed().size() == 3; }, 10s)) << dump();
  const auto devices = listed();
  EXPECT_EQ(devices.size(), 3u) << dump();
  EXPECT_EQ(devices.count("boiler"), 1u) << dump();
  EXPECT_EQ(dropped("device_limit"), 3) << dump();
  EXPECT_EQ(gateway_->countInOutput("max_devices reached"), 1u) << dump();
  const std::size_t before = values("boiler");
  EXPECT_TRUE(waitUntil([&] { return values("boiler") >= before + 3; }, 10s)) << dump();
  EXPECT_TRUE(gateway_->running()) << dump();
}

// Finding 3: one host answering from six ports is six endpoints, of which two become devices.
TEST_F(DeviceBounds, OneHostAnsweringFromManyPortsGetsMaxDevicesPerHost) {
  Process& answerer = startAnswerer("127.0.0.50", "</sensors/counter>;obs", 6);
  startGateway("[coap.limits]\nmax_devices_per_host = 2\n");
  ASSERT_TRUE(answerer.waitForOutput("ANSWERED", 15s)) << answerer.output() << dump();
  ASSERT_TRUE(waitUntil([&] { return roundDone(); }, 20s)) << dump();
  EXPECT_TRUE(waitUntil([&] { return listed().size() == 2; }, 10s)) << dump();
  EXPECT_EQ(listed().size(), 2u) << dump();
  EXPECT_EQ(dropped("device_limit"), 4) << dump();
  EXPECT_EQ(gateway_->countInOutput("max_devices_per_host reached"), 1u) << dump();
}

// Finding 3: the RD refuses a registration beyond the per-host bound with 5.03 (RFC 9176
// §5.3), and an update of a registration it holds still works.
TEST_F(DeviceBounds, RdRegistrationsBeyondMaxDevicesPerHostGet503) {
  startGateway("[coap.limits]\nmax_devices_per_host = 2\n");
  ASSERT_TRUE(waitUntil([&] { return roundDone(); }, 20s)) << dump();
  EXPECT_NE(registerInRd("n1", "127.0.0.30", 5683).find("2.01"), std::string::npos) << dump();
  EXPECT_NE(registerInRd("n2", "127.0.0.30", 5684).find("2.01"), std::string::npos) << dump();
  const std::string third = registerInRd("n3", "127.0.0.30", 5685);
  EXPECT_NE(third.find("5.03"), std::string::npos) << third << dump();
  EXPECT_EQ(third.find("2.01"), std::string::npos) << third << dump();
  // Another host is not bound by this one's devices; n1 registering again is an update.
  EXPECT_NE(registerInRd("m1", "127.0.0.31", 5683).find("2.01"), std::string::npos) << dump();
  EXPECT_NE(registerInRd("n1", "127.0.0.30", 5683).find("2.0"), std::string::npos) << dump();
  EXPECT_TRUE(waitUntil([&] { return listed().size() == 3; }, 10s)) << dump();
  EXPECT_EQ(listed().count("n3"), 0u) << dump();
  EXPECT_EQ(dropped("device_limit"), 1) << dump();
}

// Finding 9: configured without a port, answering multicast from :5683: one device.
TEST_F(DeviceBounds, AConfiguredDeviceThatAlsoAnswersMulticastIsOneDevice) {
  startSim("127.0.0.10", 1, true);
  startGateway("[[coap.device]]\nname = \"boiler\"\nuri = \"coap://127.0.0.10\"\n");
  ASSERT_TRUE(waitUntil([&] { return roundDone(); }, 20s)) << dump();
  ASSERT_TRUE(waitUntil([&] { return values("boiler") >= 2; }, 15s)) << dump();
  const auto devices = listed();
  EXPECT_EQ(devices.size(), 1u) << dump();
  EXPECT_EQ(devices.count("boiler"), 1u) << dump();
  EXPECT_EQ(devices.count("coap-127-0-0-10"), 0u) << dump();
  EXPECT_EQ(values("coap-127-0-0-10"), 0u) << dump();
}

// Finding 9: a multicast answer from a configured device's address (here the only thing
// that answers there) neither gives it resources nor makes a second device.
TEST_F(DeviceBounds, AMulticastAnswerFromAConfiguredDevicesAddressDoesNotRewriteIt) {
  Process& spoofer = startAnswerer("127.0.0.40", "</evil>;obs;ct=0", 1);
  startGateway("[[coap.device]]\nname = \"boiler\"\nuri = \"coap://127.0.0.40:5683\"\n");
  ASSERT_TRUE(spoofer.waitForOutput("ANSWERED", 15s)) << spoofer.output() << dump();
  ASSERT_TRUE(waitUntil([&] { return roundDone(); }, 20s)) << dump();
  // The configured device's own discovery (unanswered) has been tried since.
  ASSERT_TRUE(waitUntil(
      [&] { return gateway_->countInOutput("device boiler: discovery failed") >= 2; }, 20s))
      << dump();
  const auto devices = listed();
  ASSERT_EQ(devices.count("boiler"), 1u) << dump();
  EXPECT_FALSE(hasResource(devices.at("boiler"), "/evil")) << devices.at("boiler").dump();
  EXPECT_EQ(devices.size(), 1u) << dump();
  EXPECT_EQ(gateway_->countInOutput("/evil"), 0u) << dump();
}

}  // namespace
}  // namespace coap2mqtt::test
