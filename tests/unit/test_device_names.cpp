// Stable device names derived from addresses and RD endpoint names.
#include <gtest/gtest.h>

#include "gateway/device_names.h"

namespace coap2mqtt::gateway {
namespace {

TEST(DeviceNames, FromAddress) {
  EXPECT_EQ(deviceNameForAddress("127.0.0.5", 5683), "coap-127-0-0-5");
  EXPECT_EQ(deviceNameForAddress("127.0.0.5", 5690), "coap-127-0-0-5-5690");
  EXPECT_EQ(deviceNameForAddress("fe80::1%eth0", 5683), "coap-fe80--1-eth0");
  EXPECT_EQ(deviceNameForAddress("2001:db8::7", 61616), "coap-2001-db8--7-61616");
  for (const auto& name : {deviceNameForAddress("10.0.0.1", 1), deviceNameForAddress("::1", 2)}) {
    EXPECT_TRUE(isValidDeviceName(name)) << name;
  }
}

TEST(DeviceNames, FromEndpoint) {
  EXPECT_EQ(deviceNameFromEndpoint("node7"), "node7");
  EXPECT_EQ(deviceNameFromEndpoint("lamp.kitchen_1-a"), "lamp.kitchen_1-a");
  EXPECT_EQ(deviceNameFromEndpoint("a/b+c#d e"), "a-b-c-d-e");
  EXPECT_EQ(deviceNameFromEndpoint(""), "ep");
  EXPECT_EQ(deviceNameFromEndpoint(std::string(100, 'x')).size(), 64u);
  EXPECT_TRUE(isValidDeviceName(deviceNameFromEndpoint("\xff\xfe")));
}

// Issue 17, finding 5: an RD endpoint "bridge" published onto <base>/bridge/state.
TEST(DeviceNames, BridgeIsReserved) {
  EXPECT_TRUE(isReservedDeviceName("bridge"));
  EXPECT_FALSE(isValidDeviceName("bridge"));
  EXPECT_EQ(deviceNameFromEndpoint("bridge"), "ep-bridge");
  EXPECT_EQ(deviceNameFromEndpoint("br/dge"), "br-dge");
  EXPECT_TRUE(isValidDeviceName(deviceNameFromEndpoint("bridge")));
  EXPECT_TRUE(isValidDeviceName("bridges"));
}

TEST(DeviceNames, Validity) {
  EXPECT_TRUE(isValidDeviceName("dev0"));
  EXPECT_FALSE(isValidDeviceName(""));
  EXPECT_FALSE(isValidDeviceName("a/b"));
  EXPECT_FALSE(isValidDeviceName("a+"));
  EXPECT_FALSE(isValidDeviceName("#"));
  EXPECT_FALSE(isValidDeviceName("sp ace"));
  EXPECT_FALSE(isValidDeviceName(std::string(65, 'a')));
}

}  // namespace
}  // namespace coap2mqtt::gateway
