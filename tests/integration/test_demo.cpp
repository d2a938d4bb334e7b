// The README's demo: MQTT messages from simulated devices within 10 s.
#include <gtest/gtest.h>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>

#include "tests/integration/harness.h"

namespace coap2mqtt::test {
namespace {

TEST(Demo, ShowsDeviceValuesWithinTenSeconds) {
  TempDir dir;
  // The demo uses the binaries of this build; it skips installing and building.
  const std::string build_dir =
      std::filesystem::path(gatewayBinary()).parent_path().parent_path().string();
  Process demo({"/usr/bin/env", "DEMO_SECONDS=10", "DEMO_BUILD_DIR=" + build_dir,
                sourceDir() + "/scripts/demo.sh"},
               dir.file("demo.log"));
  EXPECT_TRUE(demo.waitForOutput("coap2mqtt/kitchen/sensors/temp ", 10s)) << demo.output();
  EXPECT_TRUE(demo.waitForOutput("coap2mqtt/hall/sensors/counter {\"", 5s)) << demo.output();
  EXPECT_TRUE(demo.waitForOutput("coap2mqtt/bridge/state {\"state\":\"online\"}", 5s))
      << demo.output();
  // Issue 22: the demo turns the web page on and says where it is; its API knows the devices.
  const std::string out = demo.output();
  const auto at = out.find("Web page: http://127.0.0.1:");
  ASSERT_NE(at, std::string::npos) << out;
  const std::string url = out.substr(at + 10, out.find('/', at + 17) - at - 10);
  std::string devices;
  if (FILE* p = ::popen(("curl -s --max-time 5 " + url + "/api/devices").c_str(), "r")) {
    char buf[4096];
    for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) devices.append(buf, n);
    ::pclose(p);
  }
  EXPECT_NE(devices.find("\"name\":\"kitchen\""), std::string::npos) << url << ": " << devices;
}

// Issue 19: with 18830 held by someone else, the demo used to show that broker's traffic.
// Now it says so and runs its own broker on the next free port.
TEST(Demo, SaysThePortIsTakenAndUsesAnother) {
  TempDir dir;
  const int holder = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(holder, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(18830);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  // SO_REUSEADDR as mosquitto sets it: without it, the connections of the test before
  // (TIME_WAIT on 18830) fail this bind while the port is free for a listener, and the
  // demo rightly takes it. If something else really listens there, it is just as taken.
  const int on = 1;
  ASSERT_EQ(::setsockopt(holder, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on), 0);
  if (::bind(holder, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
    ASSERT_EQ(::listen(holder, 1), 0);
  }
  const std::string build_dir =
      std::filesystem::path(gatewayBinary()).parent_path().parent_path().string();
  Process demo({"/usr/bin/env", "DEMO_SECONDS=10", "DEMO_BUILD_DIR=" + build_dir,
                sourceDir() + "/scripts/demo.sh"},
               dir.file("demo.log"));
  EXPECT_TRUE(demo.waitForOutput("Port 18830 is taken", 10s)) << demo.output();
  EXPECT_TRUE(demo.waitForOutput("coap2mqtt/kitchen/sensors/temp ", 10s)) << demo.output();
  EXPECT_EQ(demo.output().find("Live MQTT traffic on 127.0.0.1:18830 "), std::string::npos)
      << demo.output();
  ::close(holder);
}

}  // namespace
}  // namespace coap2mqtt::test
