// Issue 17, acceptance 2: a flood from the LAN and the broker while a real device keeps
// reporting. tests/integration/peers/flooder.py sends, in a private network namespace,
// 100,000 datagrams of junk and 10,000 malformed CoAP messages at the gateway's listener,
// 5,000 RD registrations with hostile names (each from its own address), 5,000 fake answers
// to a multicast discovery round (each from its own address) and 10,000 hostile MQTT
// commands and admin requests (QoS 0 and 1, some retained). Meanwhile a simulated device
// sends a counter every 500 ms as NON notifications: every value is sent (a CON one that
// the gateway, slowed down by a sanitizer and the flood, acknowledges late is replaced by
// the next, as RFC 7641 allows), so a missing value is one the gateway lost.
//
// Asserted: the daemon stays up; every counter value the device sent from before the flood
// to after it arrives on MQTT, in order, none missing; the peak RSS stays within a bound
// (normal build; sanitizers change what RSS means); each kind of hostile input shows up
// by reason in bridge/info; the devices it created stay within [coap.limits]; the log stays
// short (each reason rate-limited); retained commands and admin requests waiting on the
// broker at start-up do not run.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/integration/harness.h"
#include "tests/integration/netns.h"

namespace coap2mqtt::test {
namespace {

constexpr int kCoapPort = 5683;
constexpr int kGatewayPort = 5690;
constexpr int kMqttPort = 1883;
constexpr const char* kGroup = "224.0.1.187";
constexpr const char* kCounter = "c2m/real/sensors/counter";
constexpr std::size_t kMaxDevices = 50;
// Peak RSS of the daemon in a normal build, flood included (x86_64, 15 MB before the flood).
// Most of the rise is the hostile commands waiting for the loop thread, as many as its
// incoming bound allows when the loop falls behind: 22-49 MB in 9 runs on a quiet and on a
// loaded machine (2026-12-04); with the old bound (10,000 messages, 64 MiB) 26-68 MB quiet
// and 38-111 MB loaded (4 of 6 over this ceiling). (Measured 20.6-23.3 MB on the machine of
// an earlier session, with the old bound.)
constexpr long kMaxPeakRssKb = 64 * 1024;

long statusKb(int pid, const std::string& field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) == 0) return std::stol(line.substr(field.size() + 1));
  }
  return -1;
}

TEST(Flood, TheDaemonStaysUpAndTheRealDeviceLosesNothing) {
  std::string why;
  if (!NetNs::available(&why)) GTEST_SKIP() << why;
  TempDir dir;
  NetNs ns(NetNs::Options{.multicast_lo = true});
  NsMosquitto broker(ns, kMqttPort);
  NsMqttTap tap(ns, kMqttPort, "c2m/#");

  Process sim(ns.exec({simulatorBinary(), "--devices", "1", "--address", "127.0.0.10", "--port",
                       std::to_string(kCoapPort), "--interval", "500", "--non-always"}),
              ns.file("sim.log"));
  ASSERT_TRUE(sim.waitForOutput("READY", 20s)) << sim.output();

  dir.write("gateway.toml",
            "[gateway]\nname = \"flood-gw\"\nstate_dir = \"" + dir.path() +
                "\"\n\n[coap]\nlisten = [\"127.0.0.1:" + std::to_string(kGatewayPort) +
                "\"]\n\n[[coap.device]]\nname = \"real\"\nuri = \"coap://127.0.0.10:" +
                std::to_string(kCoapPort) + "\"\n\n[coap.discovery]\nmulticast = [\"" + kGroup +
                "\"]\ninterfaces = [\"lo\"]\nport = " + std::to_string(kCoapPort) +
                "\nwindow = \"3s\"\ninterval = \"1h\"\n\n[coap.limits]\nmax_devices = " +
                std::to_string(kMaxDevices) +
                "\n\n[mqtt]\nuri = \"mqtt://127.0.0.1:" + std::to_string(kMqttPort) +
                "\"\nclient_id = \"gw-flood\"\nbase_topic = \"c2m\"\n\n"
                "[[rule]]\nname = \"counter\"\nmatch = { path = \"/sensors/counter\" }\n"
                "topic = \"c2m/{device}/{path}\"\n\n"
                "[[command]]\nname = \"act\"\ntopic = \"c2m/{device}/{path}/set\"\n"
                "allow = { device = \"real\", path = \"/actuators/*\" }\n");
  // Retained commands and admin requests wait on the broker for the gateway's subscription:
  // they must not run (the flood's own arrive live, where the broker clears the flag).
  auto publishRetained = [&](const std::string& topic, const std::string& payload) {
    ns.run({"mosquitto_pub", "-p", std::to_string(kMqttPort), "-r", "-t", topic, "-m", payload});
  };
  publishRetained("c2m/real/actuators/led/set", "on");
  publishRetained("c2m/bridge/request/device/rename", R"({"from":"real","to":"mine"})");
  Process gateway(ns.exec({gatewayBinary(), "run", "-c", dir.file("gateway.toml")}),
                  dir.file("gateway.log"));
  auto dump = [&] {
    const std::string log = gateway.output();
    return "gateway log (tail):\n" + (log.size() > 4000 ? log.substr(log.size() - 4000) : log);
  };
  auto aboutTheDevice = [&] {  // the gateway's log lines that name the real device
    std::istringstream lines(gateway.output());
    std::string out = "gateway log, lines about \"real\":\n";
    for (std::string line; std::getline(lines, line);) {
      if (line.find("real") != std::string::npos) out += line + "\n";
    }
    return out;
  };
  auto counters = [&] {
    std::vector<long> out;
    for (const auto& m : tap.messagesOn(kCounter)) {
      const auto pos = m.payload.find("\"seq\":");  // {"seq":12,...}
      if (pos != std::string::npos) out.push_back(std::stol(m.payload.substr(pos + 6)));
    }
    return out;
  };
  ASSERT_TRUE(waitUntil([&] { return counters().size() >= 3; }, 30s)) << dump();
  EXPECT_EQ(sim.countInOutput("PUT /actuators/led"), 0u) << "a retained command ran";
  publishRetained("c2m/real/actuators/led/set", "");
  publishRetained("c2m/bridge/request/device/rename", "");
  const long rss_before = statusKb(gateway.pid(), "VmRSS");

  Process flooder(ns.exec({"python3", sourceDir() + "/tests/integration/peers/flooder.py",
                           std::to_string(kGatewayPort), kGroup, std::to_string(kCoapPort),
                           std::to_string(kMqttPort), "c2m"}),
                  ns.file("flooder.log"));
  ASSERT_TRUE(flooder.waitForOutput("LISTENING", 180s)) << flooder.output() << dump();
  // The multicast stage answers the round this starts.
  ns.run({"mosquitto_pub", "-p", std::to_string(kMqttPort), "-t", "c2m/bridge/request/discover",
          "-m", "{}"});
  ASSERT_TRUE(flooder.waitForOutput("FLOOD_DONE", 180s)) << flooder.output() << dump();
  ASSERT_TRUE(gateway.running()) << dump();

  // Values keep coming after the flood, and none of the device's values is missing.
  const long last_during = counters().back();
  ASSERT_TRUE(waitUntil([&] { return counters().back() >= last_during + 6; }, 30s)) << dump();
  const auto seen = counters();
  for (std::size_t i = 1; i < seen.size(); ++i) {
    ASSERT_EQ(seen[i], seen[i - 1] + 1) << "value " << seen[i - 1] + 1 << " missing\n"
                                        << aboutTheDevice() << "\nsimulator:\n"
                                        << sim.output();
  }

  const long peak = statusKb(gateway.pid(), "VmHWM");
  std::printf("gateway RSS: %ld kB before the flood, peak %ld kB\n", rss_before, peak);
  if (!gatewaySanitized()) {
    EXPECT_LE(peak, kMaxPeakRssKb);
  }

  // Every kind of hostile input is counted by reason.
  ns.run({"mosquitto_pub", "-p", std::to_string(kMqttPort), "-t", "c2m/bridge/request/info", "-m",
          R"({"transaction":"flood"})"});
  nlohmann::json info;
  ASSERT_TRUE(waitUntil(
      [&] {
        for (const auto& m : tap.messagesOn("c2m/bridge/response/info")) {
          const auto j = nlohmann::json::parse(m.payload, nullptr, false);
          if (!j.is_discarded() && j.value("transaction", "") == "flood") info = j;
        }
        return !info.is_null();
      },
      20s))
      << dump();
  const auto& stats = info["data"]["stats"];
  const auto& dropped = stats["dropped"];
  std::printf("bridge/info stats after the flood: %s\n", stats.dump().c_str());
  // UDP floods overflow the socket buffer: the kernel drops some datagrams (its count, not
  // ours), more when a sanitizer slows the gateway down. Measured (normal / ASan build):
  // malformed_coap 40,032 / 37,725 of 110,000 junk and malformed datagrams (libcoap
  // discards most as malformed, a few parse as CoAP and are answered); device_limit 4,690 /
  // 2,632 and discovery_answers 3,000 / 3,000 of the 10,000 registrations and answers.
  // Under ASan on a loaded machine (two runs at once beside other tests) the kernel drops
  // more of the multicast answers: discovery_answers 2,456-3,000 in 86 runs, 1,949 and 1,333
  // in two (2026-12-04).
  EXPECT_GE(dropped.value("malformed_coap", 0), 20000) << stats.dump();
  EXPECT_GE(dropped.value("rd_refused", 0) + dropped.value("device_limit", 0), 2000)
      << stats.dump();
  EXPECT_GE(dropped.value("discovery_answers", 0), 1000) << stats.dump();
  EXPECT_GE(dropped.value("command_refused", 0), 1000) << stats.dump();
  EXPECT_GE(dropped.value("retained_command", 0), 2) << stats.dump();
  EXPECT_TRUE(tap.messagesOn("c2m/mine/sensors/counter").empty()) << "a retained rename ran";
  EXPECT_LE(stats.value("devices", 0), kMaxDevices) << stats.dump();
  // Logged, but rate-limited per reason: measured 267 lines for the whole flood.
  const std::string log = gateway.output();
  EXPECT_LT(std::count(log.begin(), log.end(), '\n'), 1000) << dump();
}

}  // namespace
}  // namespace coap2mqtt::test
