#pragma once
// Payload conversion by CoAP Content-Format. Pure functions.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace coap2mqtt::bridge {

namespace content_format {
inline constexpr unsigned kTextPlain = 0;
inline constexpr unsigned kLinkFormat = 40;
inline constexpr unsigned kOctetStream = 42;
inline constexpr unsigned kJson = 50;
inline constexpr unsigned kCbor = 60;
inline constexpr unsigned kSenmlJson = 110;
inline constexpr unsigned kSenmlCbor = 112;

// The IANA "CoAP Content-Formats" name of a number and back: "application/json" <-> 50.
// Names are compared case-insensitively, and a "; charset=utf-8" parameter is accepted on
// text/plain only. nullopt / nullptr for names and numbers outside the table.
std::optional<unsigned> fromName(std::string_view name);
const char* name(unsigned content_format);
// Every name fromName() knows, in table order (for error messages).
std::vector<std::string> knownNames();
}  // namespace content_format

// raw: the bytes as they came. json: the JSON form of the payload (see transformPayload).
// envelope: {"device","path","value","ts","ct"} with the JSON form as "value".
enum class PayloadMode { Raw, Json, Envelope };

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
//  - JSON (ct 50/110, and jsonToCbor's input) with a NUL byte anywhere is invalid.
//  - Text: surrounding ASCII whitespace is ignored when deciding number/boolean, and the
//    number is then emitted exactly as written ("1e3" stays 1e3). Numbers follow the JSON
//    grammar ("+1", ".5", "007", "0x1f", "nan", "inf" stay strings); one that overflows a
//    double ("1e400") is not finite and stays a string. Strings keep every byte, whitespace
//    included. "null" and "True" are strings.
//  - CBOR (RFC 8949 §6.1): tags are dropped (their content kept), byte strings become
//    base64url strings without padding, NaN/Infinity/undefined/other simple values become
//    null, non-string map keys become their JSON text (1 -> "1"). Trailing bytes, invalid
//    UTF-8 in text strings, indefinite-length misuse and a key whose JSON text is longer
//    than 256 bytes (only an array or map key can be) are errors.
//  - Link format: attribute values stay strings, a bare attribute is true, a repeated one
//    has its values joined with a space (as rt/if lists are), an attribute named "href"
//    is ignored in favour of the target.
//  - JSON and CBOR nested deeper than 64 levels (arrays and maps, empty ones included)
//    are refused (bounded stack use).
//  - On error, payload is empty.
// (PayloadMode::Envelope converts like Json: the envelope is added by renderPayload.)
TransformResult transformPayload(PayloadMode mode, std::optional<unsigned> content_format,
                                 std::string_view bytes);

// RFC 8428 §4.6: a SenML pack (ct 110 JSON or 112 CBOR) as a JSON array of resolved
// records. Base name + name -> "n", base time + time -> "t", base unit when the record has
// none -> "u", base value + value -> "v", base sum + sum -> "s"; no "b*" field is left,
// "bver" only stays (in every record) when it is not 10. Times: bt + t below 2^28 are
// relative to "now" (§4.5.3) and become now_ms / 1000 + (bt + t) when now_ms is given (they
// stay relative otherwise). With every time absolute, records are put in chronological
// order (stable). Unknown fields are kept; a field whose label ends in '_' is an error
// (§4.4). Also errors: not an array of objects, wrong field types, a resolved name that is
// empty or outside [A-Za-z0-9:./_-] (starting alphanumerically), more than one value
// field, bver above 10.
// A pack of more than kMaxSenmlRecords records is refused (an error, counted by the caller
// as a bad payload): with senml = "records" each record is a message of its own.
inline constexpr std::size_t kMaxSenmlRecords = 1024;
TransformResult resolveSenml(unsigned content_format, std::string_view bytes,
                             std::optional<std::int64_t> now_ms);

// Whether `pointer` is a syntactically valid RFC 6901 JSON Pointer ("" or "/a/0/~1b").
bool isValidJsonPointer(std::string_view pointer, std::string* error);

// What one rule does to one payload, for renderPayload.
struct RenderOptions {
  PayloadMode mode = PayloadMode::Json;
  std::string_view value_pointer;  // "" (no extraction) or a valid JSON Pointer
  bool split_senml = false;        // one message per resolved SenML record
  std::string_view device;         // for the envelope
  std::string_view path;           // for the envelope, with the leading '/'
  std::int64_t now_ms = 0;         // reception time, epoch ms: envelope "ts", SenML "now"
  bool want_key = true;            // fill RenderedPayload::key (only_changes needs it)
};

struct RenderedPayload {
  std::string name;     // the resolved SenML record name (split_senml only), else empty
  std::string payload;  // what to publish
  std::string key;      // what only_changes compares: the payload without the parts that
                        // depend on now_ms (the envelope's "ts", times resolved from now)
};

// One rule applied to one payload: appends one RenderedPayload (or, with split_senml and a
// SenML Content-Format, one per record) to `out`. Returns the error when the payload does not
// parse as its Content-Format says or the value pointer does not resolve (then nothing is
// appended). Raw mode never fails and ignores value_pointer and split_senml.
// json/envelope with a SenML Content-Format (110, 112) give resolved records (resolveSenml);
// value_pointer is applied to the whole JSON form, or to each record when split.
std::optional<std::string> renderPayload(const RenderOptions& options,
                                         std::optional<unsigned> content_format,
                                         std::string_view bytes, std::vector<RenderedPayload>& out);

// JSON text -> CBOR bytes (RFC 8949 §6.2, via nlohmann::json::to_cbor), for commands sent
// as application/cbor. With senml = true (application/senml+cbor) the RFC 8428 labels of
// each record become their integer keys (Table 6) and the payload must be an array of
// objects. error when the text is not valid JSON.
TransformResult jsonToCbor(std::string_view json_text, bool senml = false);

// A CoAP response payload as JSON for a command result: transformPayload's JSON form; a
// payload that does not parse as its Content-Format says becomes a JSON string when it is
// valid UTF-8, {"base64":"..."} otherwise. Never fails; empty payload -> null.
std::string responseToJson(std::optional<unsigned> content_format, std::string_view bytes);

}  // namespace coap2mqtt::bridge
