// libFuzzer target for bridge/transform: the Content-Format conversions applied to device
// payloads (transformPayload, resolveSenml, renderPayload, responseToJson) and to MQTT
// command payloads (jsonToCbor). Besides "no crash, no UB, no hang, bounded memory", it
// checks what bridge/transform.h promises:
//  - every JSON a conversion returns parses (nlohmann, strict) and is valid UTF-8; errors
//    come with an empty payload and a message;
//  - raw mode and envelope mode agree with json mode as documented; ct 50 re-serialises to
//    the same value; text keeps every byte of a string; other formats are base64 of the
//    bytes;
//  - the compact JSON of a CBOR, JSON, link-format or base64 conversion is a fixed point of
//    the ct 50 conversion (so CBOR and JSON share one depth limit);
//  - jsonToCbor accepts exactly the JSON that ct 50 accepts, and decoding its output as
//    ct 60 gives the same JSON text back; with senml = true, decoding as ct 112 gives the
//    same value and resolveSenml gives the same result from either form;
//  - what the CBOR decoder returns re-encodes (jsonToCbor) and decodes to the same text;
//  - resolved SenML records have a valid name, a time, at most one value, no base fields
//    but "bver", and are in chronological order when "now" is known;
//  - renderPayload appends only on success, fills the envelope's fields, honours want_key
//    and split_senml, and agrees with transformPayload / resolveSenml;
//  - responseToJson never fails and falls back to a string or base64 as documented.
//
// Input layout (see tests/fuzz/make_transform_seeds.py, which writes the seed corpus):
//   byte 0: operation (mod 5): 0 transformPayload, 1 resolveSenml, 2 renderPayload,
//           3 jsonToCbor, 4 responseToJson
//   byte 1: bits 0-3 Content-Format (index into kFormats, mod its size), bits 4-5 mode
//           (0 json, 1 envelope, 2 raw, 3 json), bit 6 split_senml / senml,
//           bit 7 want_key / "now" known (resolveSenml)
//   byte 2: bits 0-2 now_ms (index into kNows), bits 3-7 length of the JSON pointer that
//           starts the payload (renderPayload only)
//   the rest: the payload
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "bridge/transform.h"
#include "registry/utf8.h"
#include "tests/fuzz/fuzz_check.h"

namespace coap2mqtt::bridge {
namespace {

using nlohmann::json;
namespace ct = content_format;

using fuzz::check;

const std::optional<unsigned> kFormats[] = {
    std::nullopt,   ct::kTextPlain, ct::kLinkFormat, ct::kOctetStream, ct::kJson,      ct::kCbor,
    ct::kSenmlJson, ct::kSenmlCbor, ct::kCbor,       ct::kSenmlCbor,   ct::kSenmlJson, 12345u,
};
const std::int64_t kNows[] = {
    1'700'000'000'123,
    0,
    -1,
    std::numeric_limits<std::int64_t>::max(),
    std::numeric_limits<std::int64_t>::min(),
};

// The value of a JSON text, or nullopt; also checks it is valid UTF-8.
std::optional<json> parsed(std::string_view text) {
  if (!registry::isValidUtf8(text)) return std::nullopt;
  try {
    return json::parse(text);
  } catch (const json::exception&) {
    return std::nullopt;
  }
}

json mustParse(std::string_view text, const char* what) {
  auto value = parsed(text);
  check(value.has_value(), what);
  return std::move(*value);
}

std::optional<std::string> decodeBase64(std::string_view text) {
  auto sextet = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  if (text.size() % 4 != 0) return std::nullopt;
  std::string out;
  for (std::size_t i = 0; i < text.size(); i += 4) {
    std::uint32_t v = 0;
    int pad = 0;
    for (std::size_t k = 0; k < 4; ++k) {
      const char c = text[i + k];
      if (c == '=' && i + 4 == text.size() && k >= 2) {
        ++pad;
        v <<= 6;
        continue;
      }
      const int s = sextet(c);
      if (s < 0 || pad > 0) return std::nullopt;
      v = (v << 6) | static_cast<std::uint32_t>(s);
    }
    out.push_back(static_cast<char>((v >> 16) & 0xFF));
    if (pad < 2) out.push_back(static_cast<char>((v >> 8) & 0xFF));
    if (pad < 1) out.push_back(static_cast<char>(v & 0xFF));
  }
  return out;
}

bool isBase64Of(const json& value, std::string_view bytes) {
  if (!value.is_object() || value.size() != 1 || !value.contains("base64")) return false;
  if (!value["base64"].is_string()) return false;
  const auto decoded = decodeBase64(value["base64"].get<std::string>());
  return decoded && *decoded == bytes;
}

bool isSenmlFormat(std::optional<unsigned> format) {
  return format == ct::kSenmlJson || format == ct::kSenmlCbor;
}

// What a successful transformPayload(Json) promises for each Content-Format.
void checkJsonForm(std::optional<unsigned> format, std::string_view bytes,
                   const TransformResult& r) {
  if (!r.ok()) {
    check(r.payload.empty(), "an error comes with an empty payload");
    check(!r.error->empty(), "an error has a message");
    return;
  }
  const json value = mustParse(r.payload, "transformPayload returns valid JSON");
  const bool text = !format || *format == ct::kTextPlain;
  if (text) {
    check(registry::isValidUtf8(bytes), "text is accepted only when valid UTF-8");
    if (value.is_string()) {
      check(value.get<std::string>() == bytes, "a text string keeps every byte");
    } else {
      check(value.is_number() || value.is_boolean(), "text is a string, number or boolean");
    }
    return;
  }
  // Everything else is compact JSON: ct 50 must take it back unchanged. For CBOR this is
  // also the promise that both formats refuse the same depth.
  const TransformResult again = transformPayload(PayloadMode::Json, ct::kJson, r.payload);
  check(again.ok(), "the JSON form is accepted as ct 50");
  check(again.payload == r.payload, "the JSON form is a fixed point of ct 50");
  switch (*format) {
    case ct::kJson:
    case ct::kSenmlJson:
      check(value == mustParse(bytes, "ct 50 accepts only JSON"), "ct 50 keeps the value");
      break;
    case ct::kLinkFormat:
      check(value.is_array(), "link format gives an array");
      for (const json& link : value) {
        check(link.is_object() && link.contains("href") && link["href"].is_string(),
              "every link has an href string");
      }
      break;
    case ct::kCbor:
    case ct::kSenmlCbor:
      break;
    default:
      check(isBase64Of(value, bytes), "other formats are base64 of the bytes");
  }
}

// CBOR decoded to JSON, re-encoded with jsonToCbor and decoded again: the same text.
void checkCborReencodes(unsigned format, const std::string& json_form) {
  const bool senml = format == ct::kSenmlCbor;
  const json value = mustParse(json_form, "CBOR JSON form parses");
  if (senml) {
    bool pack = value.is_array();
    if (pack) {
      for (const json& record : value) pack = pack && record.is_object();
    }
    if (!pack) {
      check(!jsonToCbor(json_form, true).ok(), "senml jsonToCbor needs an array of objects");
      return;
    }
  }
  const TransformResult cbor = jsonToCbor(json_form, senml);
  check(cbor.ok(), "the JSON form of CBOR encodes back to CBOR");
  const TransformResult back = transformPayload(PayloadMode::Json, format, cbor.payload);
  check(back.ok(), "re-encoded CBOR decodes");
  check(back.payload == json_form, "CBOR -> JSON -> CBOR -> JSON is stable");
}

void fuzzTransform(PayloadMode mode, std::optional<unsigned> format, std::string_view bytes) {
  const TransformResult r = transformPayload(mode, format, bytes);
  if (mode == PayloadMode::Raw) {
    check(r.ok() && r.payload == bytes, "raw mode never changes bytes or fails");
    return;
  }
  if (mode == PayloadMode::Envelope) {
    const TransformResult j = transformPayload(PayloadMode::Json, format, bytes);
    check(r.payload == j.payload && r.error == j.error, "envelope converts like json");
  }
  checkJsonForm(format, bytes, r);
  if (r.ok() && (format == ct::kCbor || format == ct::kSenmlCbor)) {
    checkCborReencodes(*format, r.payload);
  }
}

void checkResolved(const TransformResult& r, bool now_known) {
  if (!r.ok()) {
    check(r.payload.empty() && !r.error->empty(), "a SenML error has a message, no payload");
    return;
  }
  const json records = mustParse(r.payload, "resolveSenml returns valid JSON");
  check(records.is_array(), "resolved SenML is an array");
  std::optional<double> previous;
  for (const json& record : records) {
    check(record.is_object(), "every resolved record is an object");
    check(record.contains("n") && record["n"].is_string(), "every record has a name");
    const auto& name = record["n"].get_ref<const std::string&>();
    check(!name.empty(), "names are not empty");
    for (char c : name) {
      const bool alnum = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
      check(alnum || c == '-' || c == ':' || c == '.' || c == '/' || c == '_',
            "names keep to the RFC 8428 characters");
    }
    check(record.contains("t") && record["t"].is_number(), "every record has a time");
    int values = 0;
    for (const char* v : {"v", "vs", "vb", "vd"}) values += record.contains(v) ? 1 : 0;
    check(values <= 1, "at most one value field");
    check(values == 1 || record.contains("s"), "a value or a sum");
    for (const auto& [key, item] : record.items()) {
      check(key.empty() || key.back() != '_', "no must-understand label is left");
      check(key.empty() || key.front() != 'b' || key == "bver", "no base field but bver");
      if (key == "bver") check(item != 10, "bver 10 is dropped");
    }
    if (now_known) {
      const double t = record["t"].get<double>();
      check(!previous || *previous <= t, "records in chronological order");
      previous = t;
    }
  }
}

void fuzzResolve(unsigned format, std::optional<std::int64_t> now, std::string_view bytes) {
  const TransformResult r = resolveSenml(format, bytes, now);
  checkResolved(r, now.has_value());
}

void fuzzJsonToCbor(bool senml, std::string_view text, std::optional<std::int64_t> now) {
  const TransformResult cbor = jsonToCbor(text, senml);
  const TransformResult as_json = transformPayload(PayloadMode::Json, ct::kJson, text);
  if (!cbor.ok()) {
    check(cbor.payload.empty() && !cbor.error->empty(), "a jsonToCbor error has a message");
    if (!senml) check(!as_json.ok(), "jsonToCbor accepts the JSON that ct 50 accepts");
    return;
  }
  check(as_json.ok(), "jsonToCbor refuses the JSON that ct 50 refuses");
  if (!senml) {
    const TransformResult back = transformPayload(PayloadMode::Json, ct::kCbor, cbor.payload);
    check(back.ok(), "jsonToCbor output decodes as ct 60");
    check(back.payload == as_json.payload, "JSON -> CBOR -> JSON gives the same text");
    return;
  }
  const json value = mustParse(as_json.payload, "ct 50 output parses");
  check(value.is_array(), "senml jsonToCbor accepts only arrays");
  const TransformResult back = transformPayload(PayloadMode::Json, ct::kSenmlCbor, cbor.payload);
  check(back.ok(), "senml jsonToCbor output decodes as ct 112");
  check(mustParse(back.payload, "ct 112 output parses") == value,
        "JSON -> SenML CBOR -> JSON gives the same value");
  const TransformResult from_json = resolveSenml(ct::kSenmlJson, text, now);
  const TransformResult from_cbor = resolveSenml(ct::kSenmlCbor, cbor.payload, now);
  check(from_json.payload == from_cbor.payload && from_json.error == from_cbor.error,
        "a pack resolves the same from SenML JSON and its SenML CBOR");
}

void fuzzResponse(std::optional<unsigned> format, std::string_view bytes) {
  const std::string out = responseToJson(format, bytes);
  const json value = mustParse(out, "responseToJson returns valid JSON");
  if (bytes.empty()) {
    check(out == "null", "an empty response is null");
    return;
  }
  const TransformResult r = transformPayload(PayloadMode::Json, format, bytes);
  if (r.ok()) {
    check(out == r.payload, "a parseable response is its JSON form");
  } else if (registry::isValidUtf8(bytes)) {
    check(value.is_string() && value.get<std::string>() == bytes, "UTF-8 falls back to a string");
  } else {
    check(isBase64Of(value, bytes), "other bytes fall back to base64");
  }
}

void fuzzRender(std::uint8_t flags, std::uint8_t extra, std::string_view rest) {
  const std::size_t pointer_length = std::min<std::size_t>(extra >> 3, rest.size());
  const std::string_view pointer = rest.substr(0, pointer_length);
  const std::string_view bytes = rest.substr(pointer_length);
  std::string pointer_error;
  if (!isValidJsonPointer(pointer, &pointer_error)) {
    check(!pointer_error.empty(), "an invalid pointer has a message");
    return;  // renderPayload takes valid pointers only (rules are checked when loaded)
  }
  const auto format = kFormats[(flags & 0x0f) % std::size(kFormats)];
  RenderOptions options;
  switch ((flags >> 4) & 3) {
    case 1:
      options.mode = PayloadMode::Envelope;
      break;
    case 2:
      options.mode = PayloadMode::Raw;
      break;
    default:
      options.mode = PayloadMode::Json;
  }
  options.value_pointer = pointer;
  options.split_senml = (flags & 0x40) != 0;
  options.want_key = (flags & 0x80) != 0;
  options.device = "dev\"1";
  options.path = "/sensors/t\u00e9mp";
  options.now_ms = kNows[(extra & 7) % std::size(kNows)];

  std::vector<RenderedPayload> out(1);  // renderPayload appends: this one must stay
  out[0].payload = "sentinel";
  const auto error = renderPayload(options, format, bytes, out);
  check(!out.empty() && out[0].payload == "sentinel", "renderPayload only appends");
  if (error) {
    check(out.size() == 1, "nothing is appended on error");
    check(!error->empty(), "a render error has a message");
    check(options.mode != PayloadMode::Raw, "raw mode never fails");
    return;
  }
  check(out.size() >= 2, "success appends at least one payload");
  if (options.mode == PayloadMode::Raw) {
    check(out.size() == 2 && out[1].payload == bytes, "raw mode publishes the bytes");
    check(out[1].key == (options.want_key ? bytes : std::string_view()), "raw key");
    return;
  }
  const bool split = options.split_senml && isSenmlFormat(format);

  // What each message's value must be, from the other entry points.
  std::vector<json> expected;
  std::vector<std::string> names;
  if (isSenmlFormat(format)) {
    const TransformResult resolved = resolveSenml(*format, bytes, options.now_ms);
    check(resolved.ok(), "renderPayload accepts what resolveSenml accepts");
    const json records = mustParse(resolved.payload, "resolved SenML parses");
    if (split) {
      for (const json& record : records) {
        expected.push_back(record);
        names.push_back(record["n"].get<std::string>());
      }
    } else {
      expected.push_back(records);
      names.emplace_back();
    }
  } else {
    const TransformResult value = transformPayload(PayloadMode::Json, format, bytes);
    check(value.ok(), "renderPayload accepts what transformPayload accepts");
    expected.push_back(mustParse(value.payload, "transformPayload output parses"));
    names.emplace_back();
  }
  check(out.size() == 1 + expected.size(), "one message per record when split, else one");
  for (std::size_t i = 0; i < expected.size(); ++i) {
    const RenderedPayload& r = out[i + 1];
    check(r.name == names[i], "the name is the record's, or empty");
    json value = mustParse(r.payload, "a rendered payload is valid JSON");
    if (options.mode == PayloadMode::Envelope) {
      check(value.is_object() && value.size() == 5, "the envelope has five fields");
      check(value["device"] == std::string(options.device) &&
                value["path"] == std::string(options.path),
            "the envelope names device and path");
      check(value["ts"] == options.now_ms, "the envelope's ts is now_ms");
      check(format ? value["ct"] == *format : value["ct"].is_null(), "the envelope's ct");
      value = value["value"];
    }
    json want = expected[i];
    if (!pointer.empty()) want = want.at(json::json_pointer(std::string(pointer)));
    check(value == want, "the rendered value is the converted payload (at the pointer)");
    if (options.want_key) {
      mustParse(r.key, "a rendered key is valid JSON");
    } else {
      check(r.key.empty(), "no key unless asked for");
    }
  }
}

}  // namespace
}  // namespace coap2mqtt::bridge

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace coap2mqtt::bridge;
  if (size < 3) return 0;
  const std::uint8_t op = data[0] % 5;
  const std::uint8_t flags = data[1];
  const std::uint8_t extra = data[2];
  const std::string_view bytes(reinterpret_cast<const char*>(data) + 3, size - 3);
  const auto format = kFormats[(flags & 0x0f) % std::size(kFormats)];
  const std::int64_t now = kNows[(extra & 7) % std::size(kNows)];
  switch (op) {
    case 0: {
      const unsigned m = (flags >> 4) & 3;
      fuzzTransform(m == 1   ? PayloadMode::Envelope
                    : m == 2 ? PayloadMode::Raw
                             : PayloadMode::Json,
                    format, bytes);
      break;
    }
    case 1:
      fuzzResolve((flags & 0x40) != 0 ? content_format::kSenmlCbor : content_format::kSenmlJson,
                  (flags & 0x80) != 0 ? std::optional<std::int64_t>(now) : std::nullopt, bytes);
      break;
    case 2:
      fuzzRender(flags, extra, bytes);
      break;
    case 3:
      fuzzJsonToCbor((flags & 0x40) != 0, bytes, now);
      break;
    default:
      fuzzResponse(format, bytes);
  }
  return 0;
}
