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
#include <sys/stat.h>

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
#include "tests/integration/ns_gateway.h"

namespace coap2mqtt::test {
namespace {

class DeviceBounds : public NsGatewayTest {
 protected:
  // `extra` goes into gateway.toml as is (a [coap.limits] table, [[coap.device]]s).
  void startGateway(const std::string& extra) {
    NsGatewayTest::startGateway("bounds-gw", "2s", "2s", extra);
  }

  void startSim(const std::string& address, int count, bool multicast) {
    NsGatewayTest::startSim(address, count, multicast, 300);
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

// Issue 18, [[coap.credentials]] for a device found by multicast (here for its namespace:
// it needs the multicast-capable lo). The simulator answers the multicast request over
// plain CoAP from 127.0.0.40:5683 and speaks DTLS only on that port (--psk); the entry,
// matched by address, has it reached on coaps:// at that port and observed.
using DiscoveryDtls = DeviceBounds;
TEST_F(DiscoveryDtls, AMulticastAnswerMatchingCredentialsIsObservedOverDtls) {
  const std::string key = "netns-dtls-key-51c9e0a7";
  dir_.write("sim.key", key);
  ::chmod(dir_.file("sim.key").c_str(), 0600);
  NsGatewayTest::startSim("127.0.0.40", 1, true, 300, {"--psk", key});
  startGateway(
      "[[coap.credentials]]\nmatch = { device = \"coap-*\", address = \"127.0.0.4?\" }\n"
      "port = 5683\npsk = { identity = \"gw\", key_file = \"" +
      dir_.file("sim.key") + "\" }\n");
  ASSERT_TRUE(waitUntil([&] { return roundDone(); }, 20s)) << dump();
  ASSERT_TRUE(waitUntil([&] { return values("coap-127-0-0-40") >= 3; }, 20s)) << dump();
  EXPECT_TRUE(gateway_->waitForOutput(
      "discovery: new device coap-127-0-0-40 at coaps://127.0.0.40:5683", 1s))
      << dump();
  EXPECT_EQ(listed().size(), 1u) << dump();
  EXPECT_EQ(gateway_->output().find(key), std::string::npos);
}

}  // namespace
}  // namespace coap2mqtt::test
