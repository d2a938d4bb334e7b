// Which libcoap context (shard) a device's sessions go to: a fixed number of devices per
// shard, shards made as devices come, emptied slots reused.
#include "gateway/coap_shards.h"

#include <gtest/gtest.h>

#include <stdexcept>
#include <vector>

namespace coap2mqtt::gateway {
namespace {

TEST(CoapShardSlots, FillsOneShardBeforeMakingTheNext) {
  CoapShardSlots slots(3);
  EXPECT_EQ(slots.shards(), 0u);
  std::vector<std::size_t> got;
  for (int i = 0; i < 7; ++i) {
    const std::size_t shard = slots.pick();
    slots.take(shard);
    got.push_back(shard);
  }
  EXPECT_EQ(got, (std::vector<std::size_t>{0, 0, 0, 1, 1, 1, 2}));
  EXPECT_EQ(slots.shards(), 3u);
  EXPECT_EQ(slots.devices(0), 3u);
  EXPECT_EQ(slots.devices(2), 1u);
  EXPECT_EQ(slots.pick(), 2u);
}

TEST(CoapShardSlots, RemovedDevicesFreeSlotsThatAreReusedFirst) {
  CoapShardSlots slots(2);
  for (int i = 0; i < 6; ++i) slots.take(slots.pick());  // shards 0, 1, 2 full
  EXPECT_EQ(slots.pick(), 3u);
  slots.release(1);
  slots.release(0);
  EXPECT_EQ(slots.pick(), 0u);  // the lowest first
  slots.take(0);
  EXPECT_EQ(slots.pick(), 1u);
  slots.take(1);
  EXPECT_EQ(slots.pick(), 3u);  // full again: a new shard
  EXPECT_EQ(slots.shards(), 3u);
}

TEST(CoapShardSlots, ChurnNeverGrowsBeyondWhatIsInUse) {
  // Devices come and go (discovery, RD lifetimes): the shards stay as few as the most
  // devices there were at once needs.
  CoapShardSlots slots(128);
  std::vector<std::size_t> device_shard;
  for (int i = 0; i < 1000; ++i) {
    device_shard.push_back(slots.pick());
    slots.take(device_shard.back());
  }
  for (int round = 0; round < 50; ++round) {
    for (std::size_t d = static_cast<std::size_t>(round); d < device_shard.size(); d += 7) {
      slots.release(device_shard[d]);
      device_shard[d] = slots.pick();
      slots.take(device_shard[d]);
    }
  }
  EXPECT_EQ(slots.shards(), 8u);  // ceil(1000 / 128)
  std::size_t total = 0;
  for (std::size_t s = 0; s < slots.shards(); ++s) {
    EXPECT_LE(slots.devices(s), 128u);
    total += slots.devices(s);
  }
  EXPECT_EQ(total, 1000u);
}

TEST(CoapShardSlots, MisuseIsRefused) {
  CoapShardSlots slots(1);
  EXPECT_THROW(slots.release(0), std::logic_error);
  slots.take(slots.pick());
  EXPECT_THROW(slots.take(0), std::logic_error);  // full
  EXPECT_THROW(slots.take(5), std::logic_error);  // no such shard
  slots.release(0);
  EXPECT_THROW(slots.release(0), std::logic_error);
  EXPECT_EQ(CoapShardSlots(0).perShard(), 1u);
}

}  // namespace
}  // namespace coap2mqtt::gateway
