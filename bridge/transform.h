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
TransformResult transformPayload(PayloadMode mode, std::optional<unsigned> content_format,
                                 std::string_view bytes);

}  // namespace coap2mqtt::bridge
