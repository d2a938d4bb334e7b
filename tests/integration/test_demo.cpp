// The README's demo: MQTT messages from simulated devices within 10 s.
#include <gtest/gtest.h>

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
}

}  // namespace
}  // namespace coap2mqtt::test
