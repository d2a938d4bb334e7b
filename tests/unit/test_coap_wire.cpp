// The CoAP datagram encoder/decoder used by multicast discovery: RFC 7252 §3 framing.
#include <gtest/gtest.h>

#include "gateway/multicast_discovery.h"

namespace coap2mqtt::gateway {
namespace {

const std::uint8_t kToken[8] = {1, 2, 3, 4, 5, 6, 7, 8};

std::string bytes(std::initializer_list<int> list) {
  std::string out;
  for (int b : list) out.push_back(static_cast<char>(b));
  return out;
}

TEST(CoapWire, DiscoveryRequestIsNonGetWellKnownCore) {
  std::string r = encodeDiscoveryRequest(0x1234, kToken, "");
  // ver 1, NON, TKL 8; GET; MID; token; Uri-Path ".well-known" (delta 11, len 11); "core".
  std::string expected = bytes({0x58, 0x01, 0x12, 0x34, 1, 2, 3, 4, 5, 6, 7, 8, 0xbb}) +
                         ".well-known" + bytes({0x04}) + "core";
  EXPECT_EQ(r, expected);
  auto d = decodeCoapDatagram(r);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->type, 1);
  EXPECT_EQ(d->code, 1);
  EXPECT_EQ(d->mid, 0x1234);
  EXPECT_EQ(d->token, std::string("\x01\x02\x03\x04\x05\x06\x07\x08", 8));
  EXPECT_TRUE(d->payload.empty());
}

TEST(CoapWire, QueryUsesExtendedLengthWhenLong) {
  std::string query = "rt=" + std::string(20, 'x');  // 23 bytes: length nibble 13 + 10
  std::string r = encodeDiscoveryRequest(1, kToken, query);
  std::string tail = bytes({0x4d, 23 - 13}) + query;
  ASSERT_GE(r.size(), tail.size());
  EXPECT_EQ(r.substr(r.size() - tail.size()), tail);
}

TEST(CoapWire, DecodesResponseWithContentFormatBlock2AndPayload) {
  // ACK 2.05, MID 7, TKL 1; Content-Format 40 (delta 12, len 1); Block2 (delta 11, len 1,
  // NUM 0 M 1 SZX 6 = 0x0e); payload.
  std::string dgram = bytes({0x61, 0x45, 0x00, 0x07, 0xaa, 0xc1, 40, 0xb1, 0x0e, 0xff}) + "</a>";
  auto d = decodeCoapDatagram(dgram);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->type, 2);
  EXPECT_EQ(d->code, (2 << 5) | 5);
  EXPECT_EQ(d->mid, 7);
  EXPECT_EQ(d->content_format, 40u);
  EXPECT_TRUE(d->block2_more);
  EXPECT_EQ(d->payload, "</a>");
}

TEST(CoapWire, RejectsMalformedDatagrams) {
  const std::string cases[] = {
      "",                                        // empty
      bytes({0x40, 0x45, 0x00}),                 // short header
      bytes({0x80, 0x45, 0x00, 0x01}),           // version 2
      bytes({0x49, 0x45, 0x00, 0x01}),           // TKL 9
      bytes({0x48, 0x45, 0x00, 0x01, 1, 2}),     // token shorter than TKL
      bytes({0x40, 0x45, 0x00, 0x01, 0xff}),     // payload marker without payload
      bytes({0x40, 0x45, 0x00, 0x01, 0xd1}),     // extended delta missing
      bytes({0x40, 0x45, 0x00, 0x01, 0x13, 1}),  // option value runs past the end
      bytes({0x40, 0x45, 0x00, 0x01, 0xf0}),     // delta 15 without being the marker
  };
  for (const auto& c : cases) EXPECT_FALSE(decodeCoapDatagram(c)) << ::testing::PrintToString(c);
}

TEST(CoapWire, EveryTruncationOfAValidDatagramIsHandled) {
  std::string dgram = bytes({0x51, 0x45, 0x00, 0x07, 0xaa, 0xc1, 40, 0xff}) + "</a>;obs";
  for (std::size_t n = 0; n <= dgram.size(); ++n) {
    (void)decodeCoapDatagram(dgram.substr(0, n));  // must not crash or read past the end
  }
  EXPECT_TRUE(decodeCoapDatagram(dgram));
}

}  // namespace
}  // namespace coap2mqtt::gateway
