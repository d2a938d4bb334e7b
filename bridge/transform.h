#pragma once
// Payload conversion by CoAP Content-Format. Pure functions.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace coap2mqtt::bridge {

namespace content_format {
inline constexpr unsigned kTextPlain = 0;
inline constexpr unsigned kLinkFormat = 40;
inline constexpr unsigned kOctetStream = 42;
inline constexpr unsigned kJson = 50;
inline constexpr unsigned kCbor = 60;
inline constexpr unsigned kSenmlJson = 110;
inline constexpr unsigned kSenmlCbor = 112;
}  // namespace content_format

enum class PayloadMode { Raw, Json };

struct TransformResult {
  std::string payload;
  std::optional<std::string> error;  // set when the payload did not parse as its format says
  bool ok() const { return !error.has_value(); }
};

// raw: bytes unchanged, never an error.
// json: ct 50 -> the JSON re-serialised compactly (error if invalid);
//       ct 0 or absent -> a JSON number if the whole text is a finite number, true/false
//       for "true"/"false", otherwise a JSON string (invalid UTF-8 is an error);
//       ct 60 -> CBOR converted to JSON (error if invalid);
//       ct 40 -> a JSON array of {"href":..., attributes...} (error if invalid);
//       any other ct (42 and unknown) -> {"base64":"..."} so binary survives JSON.
// Details:
//  - ct 110 (SenML JSON) is treated as ct 50, ct 112 (SenML CBOR) as ct 60 with the
//    RFC 8428 integer labels (-2 -> "bn", 2 -> "v", ...) turned into their JSON names.
//  - Objects come out with their keys sorted; duplicate keys keep the last value.
//  - Text: surrounding ASCII whitespace is ignored when deciding number/boolean, and the
//    number is then emitted exactly as written ("1e3" stays 1e3). Numbers follow the JSON
//    grammar ("+1", ".5", "007", "0x1f", "nan", "inf" stay strings); one that overflows a
//    double ("1e400") is not finite and stays a string. Strings keep every byte, whitespace
//    included. "null" and "True" are strings.
//  - CBOR (RFC 8949 §6.1): tags are dropped (their content kept), byte strings become
//    base64url strings without padding, NaN/Infinity/undefined/other simple values become
//    null, non-string map keys become their JSON text (1 -> "1"). Trailing bytes, invalid
//    UTF-8 in text strings and indefinite-length misuse are errors.
//  - Link format: attribute values stay strings, a bare attribute is true, a repeated one
//    has its values joined with a space (as rt/if lists are), an attribute named "href"
//    is ignored in favour of the target.
//  - JSON and CBOR nested deeper than 64 levels are refused (bounded stack use).
//  - On error, payload is empty.
TransformResult transformPayload(PayloadMode mode, std::optional<unsigned> content_format,
                                 std::string_view bytes);

}  // namespace coap2mqtt::bridge
