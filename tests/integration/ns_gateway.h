#pragma once
// A fixture for gateway tests in a private network namespace whose lo is multicast capable
// (root and `ip netns`; skipped otherwise): 224.0.1.187 and the fixed ports below are the
// test's alone. It holds the namespace, a mosquitto and a tap on c2m/# in it, the peers
// the test starts (simulators, multicast answerers) and the gateway, and stops them in the
// right order.
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "tests/integration/harness.h"
#include "tests/integration/netns.h"

namespace coap2mqtt::test {

class NsGatewayTest : public ::testing::Test {
 protected:
  static constexpr int kCoapPort = 5683;     // the devices'
  static constexpr int kGatewayPort = 5690;  // the gateway's own endpoint (the RD)
  static constexpr int kMqttPort = 1883;
  static constexpr const char* kGroup = "224.0.1.187";

  void SetUp() override;
  void TearDown() override;

  // gateway.toml: [gateway] `name`, [coap] listening on kGatewayPort with
  // `request_timeout`, multicast discovery on lo with `window` (interval 1 h), [mqtt] with
  // base topic c2m, a rule publishing /sensors/counter on c2m/{device}/{path}, then
  // `extra` as it is. Started with -l debug.
  void startGateway(const std::string& name, const std::string& request_timeout,
                    const std::string& window, const std::string& extra = "");

  // coap2mqtt-sim: `count` devices from `address` on, each on its own address, port
  // kCoapPort, a value every 300 ms; answering multicast within `leisure_ms` when asked;
  // `extra` arguments after these (e.g. {"--psk", KEY}).
  Process& startSim(const std::string& address, int count, bool multicast, int leisure_ms,
                    const std::vector<std::string>& extra = {});

  // Answers multicast discovery with `links` from `address`, once from each of `ports`
  // ports (kCoapPort, kCoapPort+1, ...): that many endpoints on one host. Nothing answers
  // unicast. Prints ANSWERED per round.
  Process& startAnswerer(const std::string& address, const std::string& links, int ports = 1);

  // mosquitto_pub inside the namespace.
  void publish(const std::string& topic, const std::string& payload);

  // Values seen on c2m/<device>/sensors/counter.
  std::size_t values(const std::string& device) const;

  // The gateway log's tail and the bridge topics seen, for failure messages.
  std::string dump() const;

  TempDir dir_;
  std::unique_ptr<NetNs> ns_;
  std::unique_ptr<NsMosquitto> broker_;
  std::unique_ptr<NsMqttTap> tap_;
  std::vector<std::unique_ptr<Process>> peers_;
  std::unique_ptr<Process> gateway_;
};

}  // namespace coap2mqtt::test
