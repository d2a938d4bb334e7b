// The kernel's per-socket UDP drop counts of this process's sockets.
#include "gateway/udp_drops.h"

#include <gtest/gtest.h>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

namespace coap2mqtt::gateway {
namespace {

// A socket that drops nothing adds nothing.
TEST(UdpDrops, ThisProcessWithAQuietSocketCountsNothingMore) {
  const std::uint64_t before = udpDropsOfThisProcess();
  const int fd = ::socket(AF_INET, SOCK_DGRAM, 0);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(udpDropsOfThisProcess(), before);
  ::close(fd);
}

// A socket on loopback with the smallest receive buffer, sent 100 datagrams of 1,000 bytes
// it never reads: loopback delivers synchronously, so what does not fit is dropped, and
// counted, before sendto returns. Closed, its count goes with it.
TEST(UdpDrops, CountsWhatAFullReceiveBufferDropped) {
  const std::uint64_t before = udpDropsOfThisProcess();
  const int receiver = ::socket(AF_INET, SOCK_DGRAM, 0);
  const int sender = ::socket(AF_INET, SOCK_DGRAM, 0);
  ASSERT_GE(receiver, 0);
  ASSERT_GE(sender, 0);
  int small = 1;  // the kernel raises it to its minimum
  ASSERT_EQ(::setsockopt(receiver, SOL_SOCKET, SO_RCVBUF, &small, sizeof small), 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(receiver, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  socklen_t length = sizeof address;
  ASSERT_EQ(::getsockname(receiver, reinterpret_cast<sockaddr*>(&address), &length), 0);
  const char payload[1000] = {};
  for (int i = 0; i < 100; ++i) {
    ASSERT_EQ(::sendto(sender, payload, sizeof payload, 0,
                       reinterpret_cast<const sockaddr*>(&address), sizeof address),
              static_cast<ssize_t>(sizeof payload));
  }
  const std::uint64_t with = udpDropsOfThisProcess();
  EXPECT_GE(with - before, 90u);   // a few fit in the smallest buffer
  EXPECT_LE(with - before, 100u);  // no more than were sent
  ::close(receiver);
  ::close(sender);
  EXPECT_EQ(udpDropsOfThisProcess(), before);
}

}  // namespace
}  // namespace coap2mqtt::gateway
