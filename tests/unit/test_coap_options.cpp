// Reading a response's options in one walk (gateway/coap_options.h) gives what libcoap's own
// lookups give (coap_check_option, coap_get_block), PDU by PDU, on libcoap-built messages.
#include "gateway/coap_options.h"

#include <cstdint>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

namespace coap2mqtt::gateway {
namespace {

struct PduDelete {
  void operator()(coap_pdu_t* pdu) const { coap_delete_pdu(pdu); }
};
using Pdu = std::unique_ptr<coap_pdu_t, PduDelete>;

// A 2.05 response with these options (number, raw value bytes), added in this order.
Pdu response(const std::vector<std::pair<std::uint16_t, std::vector<std::uint8_t>>>& options) {
  Pdu pdu(coap_pdu_init(COAP_MESSAGE_ACK, COAP_RESPONSE_CODE_CONTENT, 1, 1152));
  for (const auto& [number, value] : options) {
    EXPECT_NE(coap_add_option(pdu.get(), number, value.size(), value.data()), 0u);
  }
  return pdu;
}

std::optional<std::uint32_t> libcoapUint(const coap_pdu_t* pdu, std::uint16_t number) {
  coap_opt_iterator_t it;
  const coap_opt_t* opt = coap_check_option(pdu, number, &it);
  if (opt == nullptr) return std::nullopt;
  return coap_decode_var_bytes(coap_opt_value(opt), coap_opt_length(opt));
}

void expectSameAsLibcoap(const coap_pdu_t* pdu) {
  const ResponseOptions read = readResponseOptions(pdu);
  EXPECT_EQ(read.observe, libcoapUint(pdu, COAP_OPTION_OBSERVE));
  EXPECT_EQ(read.content_format, libcoapUint(pdu, COAP_OPTION_CONTENT_FORMAT));
  EXPECT_EQ(read.max_age, libcoapUint(pdu, COAP_OPTION_MAXAGE));
  coap_block_t ours{};
  coap_block_t theirs{};
  const bool ours_found = blockFromOption(read.block2, &ours);
  EXPECT_EQ(ours_found, coap_get_block(pdu, COAP_OPTION_BLOCK2, &theirs) != 0);
  EXPECT_EQ(ours.num, theirs.num);
  EXPECT_EQ(ours.m, theirs.m);
  EXPECT_EQ(ours.szx, theirs.szx);
}

class CoapOptions : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { coap_startup(); }
};

TEST_F(CoapOptions, NoOptionsReadsNothing) {
  Pdu pdu = response({});
  const ResponseOptions read = readResponseOptions(pdu.get());
  EXPECT_FALSE(read.observe);
  EXPECT_FALSE(read.content_format);
  EXPECT_FALSE(read.max_age);
  EXPECT_EQ(read.block2, nullptr);
  expectSameAsLibcoap(pdu.get());
}

TEST_F(CoapOptions, ANotificationsOptionsAmongOthers) {
  Pdu pdu = response({{COAP_OPTION_ETAG, {1, 2, 3, 4}},
                      {COAP_OPTION_OBSERVE, {0x01, 0x02, 0x03}},
                      {COAP_OPTION_CONTENT_FORMAT, {50}},
                      {COAP_OPTION_MAXAGE, {0x0e, 0x10}},
                      {COAP_OPTION_BLOCK2, {0x12, 0x3e}},
                      {COAP_OPTION_SIZE2, {0x10, 0x00}}});
  const ResponseOptions read = readResponseOptions(pdu.get());
  EXPECT_EQ(read.observe, 0x010203u);
  EXPECT_EQ(read.content_format, 50u);
  EXPECT_EQ(read.max_age, 3600u);
  coap_block_t block{};
  ASSERT_TRUE(blockFromOption(read.block2, &block));
  EXPECT_EQ(block.num, 0x123u);
  EXPECT_EQ(block.m, 1u);
  EXPECT_EQ(block.szx, 6u);
  expectSameAsLibcoap(pdu.get());
}

TEST_F(CoapOptions, ARepeatedOptionCountsItsFirstValueAsLibcoapDoes) {
  // coap_add_option() refuses to repeat these, but a device's datagram may: parsed from
  // the wire. ACK 2.05, MID 1, no token; Observe 7 and 9, Content-Format (empty) and 60,
  // Block2 0x16 and 0x20.
  const std::uint8_t wire[] = {0x60, 0x45, 0x00, 0x01, 0x61, 0x07, 0x01, 0x09,
                               0x60, 0x01, 0x3c, 0xb1, 0x16, 0x01, 0x20};
  Pdu pdu(coap_pdu_init(COAP_MESSAGE_CON, COAP_EMPTY_CODE, 0, sizeof wire));
  ASSERT_NE(coap_pdu_parse(COAP_PROTO_UDP, wire, sizeof wire, pdu.get()), 0);
  const ResponseOptions read = readResponseOptions(pdu.get());
  EXPECT_EQ(read.observe, 7u);
  EXPECT_EQ(read.content_format, 0u);  // empty: the uint 0 (text/plain)
  expectSameAsLibcoap(pdu.get());
}

TEST_F(CoapOptions, Block2ValuesLibcoapTakesOrRefuses) {
  const std::vector<std::vector<std::uint8_t>> values = {
      {},                        // NUM 0, M 0, SZX 0
      {0x08},                    // M only
      {0x0f},                    // SZX 7: BERT, refused over UDP
      {0xff, 0xff, 0xfe},        // the largest 20-bit NUM, M 1, SZX 6
      {0x01, 0x00, 0x00, 0x06},  // NUM over 20 bits: refused
  };
  for (const auto& value : values) {
    SCOPED_TRACE(value.size());
    Pdu pdu = response({{COAP_OPTION_BLOCK2, value}});
    expectSameAsLibcoap(pdu.get());
  }
}

}  // namespace
}  // namespace coap2mqtt::gateway
