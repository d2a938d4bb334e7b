#pragma once
// Strict UTF-8 validation (RFC 3629: no overlong forms, no surrogates, nothing above
// U+10FFFF), shared by the registry and the bridge.
#include <cstddef>
#include <string_view>

namespace coap2mqtt::registry {

// Length (1..4) of the valid UTF-8 sequence starting at s[i], or 0 when the bytes there are
// not one (also when i is at or past the end).
std::size_t utf8SequenceLength(std::string_view s, std::size_t i);

// True when all of `s` is valid UTF-8.
bool isValidUtf8(std::string_view s);

}  // namespace coap2mqtt::registry
