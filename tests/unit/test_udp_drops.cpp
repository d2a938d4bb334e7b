// The kernel's per-socket UDP drop counts, read from /proc/net/udp text.
#include "gateway/udp_drops.h"

#include <gtest/gtest.h>

#include <sys/socket.h>
#include <unistd.h>

namespace coap2mqtt::gateway {
namespace {

const char* const kTable =
    "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
    "timeout inode ref pointer drops            \n"
    "    1: 0100007F:AEAE 8001007F:1633 01 00000000:00000000 00:00000000 00000000     0        "
    "0 7189913 2 00000000bfb28ac2 0       \n"
    "   21: 00000000:1633 00000000:0000 07 00000000:00034000 00:00000000 00000000     0        "
    "0 4242 2 0000000038ad3dba 1234    \n"
    "   35: 0100007F:AED0 2303007F:1633 01 00000000:00000000 00:00000000 00000000     0        "
    "0 99 2 000000005cb47f65 7\n"
    "garbage line\n"
    "   36: 0100007F:AED0 2303007F:1633 01 00000000:00000000 00:00000000 00000000     0        "
    "0 100 2 000000005cb47f65 notanumber\n";

TEST(UdpDrops, SumsTheDropsOfTheGivenSocketsOnly) {
  EXPECT_EQ(sumUdpDrops(kTable, {4242, 99}), 1241u);
  EXPECT_EQ(sumUdpDrops(kTable, {4242}), 1234u);
  EXPECT_EQ(sumUdpDrops(kTable, {7189913}), 0u);
  EXPECT_EQ(sumUdpDrops(kTable, {100, 12345}), 0u);  // unreadable line, unknown inode
  EXPECT_EQ(sumUdpDrops("", {4242}), 0u);
  EXPECT_EQ(sumUdpDrops(kTable, {}), 0u);
}

// The process's own sockets, read from /proc: a socket that drops nothing counts 0; it is
// found (the call does not fail) whatever else the host holds.
TEST(UdpDrops, ThisProcessWithAQuietSocketCountsNothing) {
  const int fd = ::socket(AF_INET, SOCK_DGRAM, 0);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(udpDropsOfThisProcess(), 0u);
  ::close(fd);
}

}  // namespace
}  // namespace coap2mqtt::gateway
