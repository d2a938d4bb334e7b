// The event bus: listeners in subscription order; one that throws is reported and the
// others still run.
#include <stdexcept>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "gateway/events.h"

namespace coap2mqtt::gateway {
namespace {

TEST(EventBus, ListenersRunInSubscriptionOrderAndAThrowingOneDoesNotStopTheRest) {
  std::vector<std::string> errors;
  Events bus([&](const char* what) { errors.emplace_back(what); });
  std::vector<int> calls;
  bus.on<RulesReplaced>([&](const RulesReplaced&) { calls.push_back(1); });
  bus.on<RulesReplaced>([&](const RulesReplaced&) -> void { throw std::runtime_error("boom"); });
  bus.on<RulesReplaced>([&](const RulesReplaced&) { calls.push_back(3); });
  bus.on<MqttConnected>([&](const MqttConnected&) { calls.push_back(99); });

  bus.emit(RulesReplaced{});

  EXPECT_EQ(calls, (std::vector<int>{1, 3}));
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0], "boom");
}

TEST(EventBus, AnEventReachesOnlyItsOwnListenersWithItsData) {
  Events bus([](const char*) { FAIL() << "no listener throws here"; });
  registry::Device device;
  device.name = "boiler";
  std::string seen;
  bool other = false;
  bus.on<DeviceJoined>([&](const DeviceJoined& e) { seen = e.device.name; });
  bus.on<DeviceRemoved>([&](const DeviceRemoved&) { other = true; });

  bus.emit(DeviceJoined{device});

  EXPECT_EQ(seen, "boiler");
  EXPECT_FALSE(other);
}

}  // namespace
}  // namespace coap2mqtt::gateway
