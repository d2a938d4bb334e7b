#pragma once
// One hexadecimal digit's value, for the decoders that need it (percent-encoded URI paths,
// "hex:" pre-shared keys). Pure.

namespace coap2mqtt::bridge {

// 0..15 for '0'-'9', 'a'-'f', 'A'-'F'; -1 for anything else.
constexpr int hexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace coap2mqtt::bridge
