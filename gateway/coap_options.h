#pragma once
// Reading a received CoAP message's options (libcoap's PDU), for the link (coap_link.cpp).
#include <coap3/coap.h>

#include <cstdint>
#include <optional>

namespace coap2mqtt::gateway {

// The options a response is read for, found in one walk over its options: the first of
// each, as coap_check_option() would find it. coap_check_option() walks the options from
// the first for each number asked, and a notification was asked four times (Observe,
// Content-Format, Max-Age, Block2): 1,900 of its ~55,000 instructions (callgrind,
// 2026-12-04).
struct ResponseOptions {
  std::optional<std::uint32_t> observe;
  std::optional<std::uint32_t> content_format;
  std::optional<std::uint32_t> max_age;
  const coap_opt_t* block2 = nullptr;
};
ResponseOptions readResponseOptions(const coap_pdu_t* pdu);
// What coap_get_block() reads from a Block2 option (false: none, or one it refuses: a
// block number over 20 bits, or BERT's SZX 7, which needs a reliable transport).
bool blockFromOption(const coap_opt_t* option, coap_block_t* block);

}  // namespace coap2mqtt::gateway
