// gateway/tcp_nodelay: the broker URI's port, and Nagle turned off on a real loopback TCP
// connection found through /proc/self/fd (the way the link finds paho's socket).
#include "gateway/tcp_nodelay.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

namespace coap2mqtt::gateway {
namespace {

TEST(BrokerPort, TheUrisOwnPortOrTheSchemesDefault) {
  EXPECT_EQ(brokerPort("mqtt://127.0.0.1:18830"), 18830);
  EXPECT_EQ(brokerPort("mqtt://broker.local"), 1883);
  EXPECT_EQ(brokerPort("tcp://broker.local"), 1883);
  EXPECT_EQ(brokerPort("mqtts://broker.local"), 8883);
  EXPECT_EQ(brokerPort("ssl://user@broker.local:9883"), 9883);
  EXPECT_EQ(brokerPort("ws://broker.local/mqtt"), 80);
  EXPECT_EQ(brokerPort("wss://broker.local:8443/mqtt"), 8443);
  EXPECT_EQ(brokerPort("mqtt://[::1]:1884"), 1884);
  EXPECT_EQ(brokerPort("mqtt://[::1]"), 1883);
  EXPECT_EQ(brokerPort("mqtt://host:0"), std::nullopt);
  EXPECT_EQ(brokerPort("mqtt://host:65536"), std::nullopt);
  EXPECT_EQ(brokerPort("mqtt://host:1x"), std::nullopt);
  EXPECT_EQ(brokerPort("mqtt://[::1"), std::nullopt);
  EXPECT_EQ(brokerPort("broker.local:1883"), std::nullopt);
  EXPECT_EQ(brokerPort("coap://host"), std::nullopt);
}

int noDelay(int fd) {
  int value = -1;
  socklen_t length = sizeof value;
  EXPECT_EQ(getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &value, &length), 0);
  return value;
}

TEST(DisableNagle, OnTheConnectionToThePeerPortOnly) {
  const int listener = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(listener, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  ASSERT_EQ(listen(listener, 1), 0);
  socklen_t length = sizeof address;
  ASSERT_EQ(getsockname(listener, reinterpret_cast<sockaddr*>(&address), &length), 0);
  const auto port = ntohs(address.sin_port);
  const int client = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(client, 0);
  ASSERT_EQ(connect(client, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  const int accepted = accept(listener, nullptr, nullptr);
  ASSERT_GE(accepted, 0);
  ASSERT_EQ(noDelay(client), 0);  // the kernel's default: Nagle on

  EXPECT_EQ(disableNagleTowards(port), 1);
  EXPECT_NE(noDelay(client), 0);
  EXPECT_EQ(noDelay(accepted), 0);  // its peer is the client's ephemeral port
  EXPECT_EQ(disableNagleTowards(static_cast<std::uint16_t>(port == 1 ? 2 : port - 1)), 0);
  close(accepted);
  close(client);
  close(listener);
}

}  // namespace
}  // namespace coap2mqtt::gateway
