#include "gateway/coap_options.h"

namespace coap2mqtt::gateway {

ResponseOptions readResponseOptions(const coap_pdu_t* pdu) {
  ResponseOptions out;
  coap_opt_iterator_t it;
  if (coap_option_iterator_init(pdu, &it, COAP_OPT_ALL) == nullptr) return out;
  while (coap_opt_t* opt = coap_option_next(&it)) {
    std::optional<std::uint32_t>* value = nullptr;
    switch (it.number) {
      case COAP_OPTION_OBSERVE:
        value = &out.observe;
        break;
      case COAP_OPTION_CONTENT_FORMAT:
        value = &out.content_format;
        break;
      case COAP_OPTION_MAXAGE:
        value = &out.max_age;
        break;
      case COAP_OPTION_BLOCK2:
        if (out.block2 == nullptr) out.block2 = opt;
        break;
      default:
        break;
    }
    if (value != nullptr && !*value) {
      *value = coap_decode_var_bytes(coap_opt_value(opt), coap_opt_length(opt));
    }
  }
  return out;
}

bool blockFromOption(const coap_opt_t* option, coap_block_t* block) {
  // coap_get_block() (libcoap 4.3.1, block.c) on the option it would have found.
  *block = coap_block_t{};
  if (option == nullptr) return false;
  const unsigned szx = COAP_OPT_BLOCK_SZX(option);
  if (szx == 7) return false;
  const unsigned num = coap_opt_block_num(option);
  if (num > 0xFFFFF) return false;
  block->num = num;
  block->m = COAP_OPT_BLOCK_MORE(option) ? 1 : 0;
  block->szx = szx;
  return true;
}

}  // namespace coap2mqtt::gateway
