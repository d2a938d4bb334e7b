#include "bridge/transform.h"

#include <bit>
#include <charconv>
#include <cmath>
#include <limits>
#include <utility>

#include <nlohmann/json.hpp>

#include "registry/link_format.h"
#include "registry/utf8.h"

namespace coap2mqtt::bridge {
namespace {

using nlohmann::json;  // std::map objects: sorted keys, O(log n) inserts on hostile input

// Bounds the recursion of the CBOR decoder and of json::dump() on hostile input.
constexpr unsigned kMaxDepth = 64;

TransformResult failed(std::string message) {
  return {std::string(), std::move(message)};
}

void appendBase64(std::string& out, std::string_view in, bool url) {
  static constexpr char kStd[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  static constexpr char kUrl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  const char* alphabet = url ? kUrl : kStd;
  out.reserve(out.size() + (in.size() + 2) / 3 * 4);
  std::size_t i = 0;
  auto byte = [&in](std::size_t k) {
    return static_cast<std::uint32_t>(static_cast<unsigned char>(in[k]));
  };
  for (; i + 3 <= in.size(); i += 3) {
    const std::uint32_t v = (byte(i) << 16) | (byte(i + 1) << 8) | byte(i + 2);
    out.push_back(alphabet[(v >> 18) & 63]);
    out.push_back(alphabet[(v >> 12) & 63]);
    out.push_back(alphabet[(v >> 6) & 63]);
    out.push_back(alphabet[v & 63]);
  }
  const std::size_t rest = in.size() - i;
  if (rest == 0) return;
  std::uint32_t v = byte(i) << 16;
  if (rest == 2) v |= byte(i + 1) << 8;
  out.push_back(alphabet[(v >> 18) & 63]);
  out.push_back(alphabet[(v >> 12) & 63]);
  if (rest == 2) out.push_back(alphabet[(v >> 6) & 63]);
  if (!url) out.append(rest == 1 ? "==" : "=");
}

// nlohmann's messages start with "[json.exception.parse_error.101] " and quote the bytes
// last read; keep the position and the reason, drop the echo of device data.
std::string describeJsonError(const json::exception& e) {
  std::string message = e.what();
  if (const std::size_t end = message.find("] ");
      message.front() == '[' && end != std::string::npos) {
    message.erase(0, end + 2);
  }
  if (const std::size_t echo = message.find("; last read: "); echo != std::string::npos) {
    const std::size_t expected = message.rfind("; expected ");
    std::string tail =
        expected != std::string::npos && expected > echo ? message.substr(expected) : "";
    message.erase(echo);
    message += tail;
  }
  return message;
}

// ---------------------------------------------------------------------------------------
// ct 0: text

bool isAsciiSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

std::string_view trimAscii(std::string_view s) {
  while (!s.empty() && isAsciiSpace(s.front())) s.remove_prefix(1);
  while (!s.empty() && isAsciiSpace(s.back())) s.remove_suffix(1);
  return s;
}

bool isDigit(char c) {
  return c >= '0' && c <= '9';
}

// RFC 8259 number grammar: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
bool isJsonNumber(std::string_view s) {
  std::size_t i = 0;
  const std::size_t n = s.size();
  auto digits = [&] {
    const std::size_t start = i;
    while (i < n && isDigit(s[i])) ++i;
    return i > start;
  };
  if (i < n && s[i] == '-') ++i;
  if (i >= n) return false;
  if (s[i] == '0') {
    ++i;
  } else if (!digits()) {
    return false;
  }
  if (i < n && s[i] == '.') {
    ++i;
    if (!digits()) return false;
  }
  if (i < n && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < n && (s[i] == '+' || s[i] == '-')) ++i;
    if (!digits()) return false;
  }
  return i == n;
}

// Whether a string that passed isJsonNumber() is a finite double. from_chars reports both
// overflow and underflow as out of range; only overflow makes it infinite, so look at the
// decimal magnitude to tell them apart.
bool isFiniteNumber(std::string_view s) {
  double value = 0;
  const auto result = std::from_chars(s.data(), s.data() + s.size(), value);
  if (result.ec == std::errc()) return std::isfinite(value);
  if (result.ec != std::errc::result_out_of_range) return false;
  std::size_t i = s.front() == '-' ? 1 : 0;
  const std::size_t int_start = i;
  while (i < s.size() && isDigit(s[i])) ++i;
  long magnitude = 0;  // power of ten of the leading significant digit
  if (!(i - int_start == 1 && s[int_start] == '0')) {
    magnitude = static_cast<long>(i - int_start) - 1;
  } else {
    magnitude = -1;
    if (i < s.size() && s[i] == '.') {
      ++i;
      while (i < s.size() && s[i] == '0') {
        --magnitude;
        ++i;
      }
    }
  }
  const std::size_t e = s.find_first_of("eE");
  long exponent = 0;
  if (e != std::string_view::npos) {
    std::size_t k = e + 1;
    const bool negative = s[k] == '-';
    if (s[k] == '+' || s[k] == '-') ++k;
    for (; k < s.size(); ++k) {
      exponent = std::min(exponent * 10 + (s[k] - '0'), 1000000L);  // saturate
    }
    if (negative) exponent = -exponent;
  }
  return magnitude + exponent < 0;  // underflow: tiny, but finite
}

TransformResult textToJson(std::string_view bytes) {
  if (!registry::isValidUtf8(bytes)) return failed("text payload is not valid UTF-8");
  const std::string_view trimmed = trimAscii(bytes);
  if (isJsonNumber(trimmed) && isFiniteNumber(trimmed)) return {std::string(trimmed), {}};
  if (trimmed == "true" || trimmed == "false") return {std::string(trimmed), {}};
  return {json(std::string(bytes)).dump(), {}};
}

// ---------------------------------------------------------------------------------------
// ct 50 / 110: JSON

// json::parse is iterative, but dump() recurses: refuse deep documents before parsing.
// Exact for valid JSON; invalid JSON fails in the parser anyway.
bool jsonDepthWithin(std::string_view s, unsigned max_depth) {
  unsigned depth = 0;
  bool in_string = false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > max_depth) return false;
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return true;
}

TransformResult jsonToJson(std::string_view bytes) {
  if (!jsonDepthWithin(bytes, kMaxDepth)) {
    return failed("invalid JSON: nested deeper than " + std::to_string(kMaxDepth) + " levels");
  }
  try {
    return {json::parse(bytes).dump(), {}};
  } catch (const json::exception& e) {
    return failed("invalid JSON: " + describeJsonError(e));
  }
}

// ---------------------------------------------------------------------------------------
// ct 60 / 112: CBOR

// RFC 8428 Table 6: SenML CBOR labels and their JSON names.
const char* senmlName(std::int64_t label) {
  switch (label) {
    case -1:
      return "bver";
    case -2:
      return "bn";
    case -3:
      return "bt";
    case -4:
      return "bu";
    case -5:
      return "bv";
    case -6:
      return "bs";
    case 0:
      return "n";
    case 1:
      return "u";
    case 2:
      return "v";
    case 3:
      return "vs";
    case 4:
      return "vb";
    case 5:
      return "s";
    case 6:
      return "t";
    case 7:
      return "ut";
    case 8:
      return "vd";
    default:
      return nullptr;
  }
}

double halfToDouble(std::uint16_t half) {
  const int exponent = (half >> 10) & 0x1F;
  const int mantissa = half & 0x3FF;
  double value = 0;
  if (exponent == 0) {
    value = std::ldexp(mantissa, -24);
  } else if (exponent != 31) {
    value = std::ldexp(mantissa + 1024, exponent - 25);
  } else {
    value = mantissa == 0 ? std::numeric_limits<double>::infinity()
                          : std::numeric_limits<double>::quiet_NaN();
  }
  return (half & 0x8000) != 0 ? -value : value;
}

// A small RFC 8949 decoder straight into nlohmann::json. json::from_cbor is not used: it
// refuses integer map keys, which CoAP payloads (SenML CBOR among them) use all the time.
// Recursion is bounded by kMaxDepth; declared lengths are checked against the bytes left
// before anything is allocated.
class CborToJson {
 public:
  CborToJson(std::string_view in, bool senml) : in_(in), senml_(senml) {}

  std::optional<json> run() {
    json out;
    if (!item(out, 0)) return std::nullopt;
    if (pos_ != in_.size()) {
      fail(pos_, "trailing bytes after the CBOR data item");
      return std::nullopt;
    }
    return out;
  }
  const std::string& error() const { return error_; }

 private:
  static constexpr std::uint8_t kBreak = 0xFF;

  struct Head {
    std::size_t at = 0;
    std::uint8_t major = 0;
    std::uint8_t info = 0;
    std::uint64_t arg = 0;
    bool indefinite() const { return info == 31; }
  };

  bool fail(std::size_t at, const std::string& message) {
    if (error_.empty()) error_ = "invalid CBOR at byte " + std::to_string(at) + ": " + message;
    return false;
  }
  std::size_t left() const { return in_.size() - pos_; }
  bool atBreak() const {
    return pos_ < in_.size() && static_cast<std::uint8_t>(in_[pos_]) == kBreak;
  }

  bool head(Head& h) {
    h.at = pos_;
    if (pos_ >= in_.size()) return fail(pos_, "truncated: expected a data item");
    const auto initial = static_cast<std::uint8_t>(in_[pos_++]);
    h.major = initial >> 5;
    h.info = initial & 0x1F;
    if (h.info < 24) {
      h.arg = h.info;
      return true;
    }
    if (h.info == 31) {
      if (h.major == 0 || h.major == 1 || h.major == 6) {
        return fail(h.at,
                    "indefinite length is not allowed for major type " + std::to_string(h.major));
      }
      h.arg = 0;
      return true;
    }
    if (h.info > 27) return fail(h.at, "reserved additional information " + std::to_string(h.info));
    const std::size_t size = std::size_t{1} << (h.info - 24);
    if (left() < size)
      return fail(h.at, "truncated: expected " + std::to_string(size) + " argument bytes");
    std::uint64_t value = 0;
    for (std::size_t k = 0; k < size; ++k)
      value = (value << 8) | static_cast<std::uint8_t>(in_[pos_++]);
    h.arg = value;
    return true;
  }

  bool string(const Head& h, std::string& out) {
    if (!h.indefinite()) {
      if (h.arg > left())
        return fail(h.at, "truncated: string of " + std::to_string(h.arg) + " bytes");
      out.assign(in_.substr(pos_, static_cast<std::size_t>(h.arg)));
      pos_ += static_cast<std::size_t>(h.arg);
      return true;
    }
    while (!atBreak()) {
      Head chunk;
      if (!head(chunk)) return false;
      if (chunk.major != h.major || chunk.indefinite()) {
        return fail(chunk.at,
                    "a chunk of an indefinite-length string must be a definite "
                    "string of the same type");
      }
      if (chunk.arg > left()) return fail(chunk.at, "truncated: string chunk");
      out.append(in_.substr(pos_, static_cast<std::size_t>(chunk.arg)));
      pos_ += static_cast<std::size_t>(chunk.arg);
    }
    ++pos_;  // the break
    return true;
  }

  std::string key(json&& k) const {
    if (k.is_string()) return std::move(k.get_ref<std::string&>());
    if (k.is_number_unsigned()) {
      const auto v = k.get<std::uint64_t>();
      if (senml_ && v <= 8) return senmlName(static_cast<std::int64_t>(v));
      return std::to_string(v);
    }
    if (k.is_number_integer()) {
      const auto v = k.get<std::int64_t>();
      if (const char* name = senml_ ? senmlName(v) : nullptr) return name;
      return std::to_string(v);
    }
    return k.dump();
  }

  bool item(json& out, unsigned depth) {
    if (depth > kMaxDepth)
      return fail(pos_, "nested deeper than " + std::to_string(kMaxDepth) + " levels");
    Head h;
    if (!head(h)) return false;
    while (h.major == 6) {  // a tag: keep the content, drop the tag (RFC 8949 §6.1)
      if (!head(h)) return false;
    }
    switch (h.major) {
      case 0:
        out = h.arg;
        return true;
      case 1:
        if (h.arg <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
          out = -1 - static_cast<std::int64_t>(h.arg);
        } else {
          out = -1.0 - static_cast<double>(h.arg);  // below INT64_MIN: only a double holds it
        }
        return true;
      case 2: {
        std::string bytes;
        if (!string(h, bytes)) return false;
        std::string text;
        appendBase64(text, bytes, /*url=*/true);
        out = std::move(text);
        return true;
      }
      case 3: {
        std::string text;
        if (!string(h, text)) return false;
        if (!registry::isValidUtf8(text)) return fail(h.at, "text string is not valid UTF-8");
        out = std::move(text);
        return true;
      }
      case 4: {
        out = json::array();
        if (!h.indefinite() && h.arg > left()) {
          return fail(h.at, "truncated: array of " + std::to_string(h.arg) + " items");
        }
        for (std::uint64_t k = 0; h.indefinite() ? !atBreak() : k < h.arg; ++k) {
          json element;
          if (!item(element, depth + 1)) return false;
          out.push_back(std::move(element));
        }
        if (h.indefinite()) ++pos_;
        return true;
      }
      case 5: {
        out = json::object();
        if (!h.indefinite() && h.arg > left() / 2) {
          return fail(h.at, "truncated: map of " + std::to_string(h.arg) + " pairs");
        }
        for (std::uint64_t k = 0; h.indefinite() ? !atBreak() : k < h.arg; ++k) {
          json name;
          json value;
          if (!item(name, depth + 1) || !item(value, depth + 1)) return false;
          out[key(std::move(name))] = std::move(value);
        }
        if (h.indefinite()) ++pos_;
        return true;
      }
      default:
        break;
    }
    // Major type 7: simple values and floats.
    double number = 0;
    switch (h.info) {
      case 20:
        out = false;
        return true;
      case 21:
        out = true;
        return true;
      case 24:
        if (h.arg < 32)
          return fail(h.at, "simple value " + std::to_string(h.arg) + " in two bytes");
        out = nullptr;
        return true;
      case 25:
        number = halfToDouble(static_cast<std::uint16_t>(h.arg));
        break;
      case 26:
        number = std::bit_cast<float>(static_cast<std::uint32_t>(h.arg));
        break;
      case 27:
        number = std::bit_cast<double>(h.arg);
        break;
      case 31:
        return fail(h.at, "break outside an indefinite-length item");
      default:  // null, undefined and unassigned simple values
        out = nullptr;
        return true;
    }
    if (std::isfinite(number)) {
      out = number;
    } else {
      out = nullptr;  // JSON has no NaN or Infinity
    }
    return true;
  }

  std::string_view in_;
  std::size_t pos_ = 0;
  bool senml_ = false;
  std::string error_;
};

TransformResult cborToJson(std::string_view bytes, bool senml) {
  CborToJson decoder(bytes, senml);
  auto value = decoder.run();
  if (!value) return failed(decoder.error());
  try {
    return {value->dump(), {}};
  } catch (const json::exception& e) {
    return failed("CBOR not representable as JSON: " + describeJsonError(e));
  }
}

// ---------------------------------------------------------------------------------------
// ct 40: link format

TransformResult linkFormatToJson(std::string_view bytes) {
  if (!registry::isValidUtf8(bytes)) return failed("invalid link-format: not valid UTF-8");
  const registry::LinkFormatResult parsed = registry::parseLinkFormat(bytes);
  if (!parsed.ok()) {
    return failed("invalid link-format at byte " + std::to_string(parsed.error->offset) + ": " +
                  parsed.error->message);
  }
  json links = json::array();
  for (const registry::Link& link : parsed.links) {
    json object = json::object();
    object["href"] = link.target;
    for (const registry::LinkAttribute& attribute : link.attributes) {
      if (attribute.name == "href") continue;
      auto it = object.find(attribute.name);
      if (it == object.end()) {
        object[attribute.name] = attribute.value ? json(*attribute.value) : json(true);
      } else if (attribute.value) {
        // rt="a" rt="b" means the same as rt="a b".
        if (it->is_string()) {
          it->get_ref<std::string&>().append(" ").append(*attribute.value);
        } else {
          *it = *attribute.value;
        }
      }
    }
    links.push_back(std::move(object));
  }
  try {
    return {links.dump(), {}};
  } catch (const json::exception& e) {
    return failed("invalid link-format: " + describeJsonError(e));
  }
}

TransformResult opaqueToJson(std::string_view bytes) {
  std::string payload = "{\"base64\":\"";
  payload.reserve(payload.size() + (bytes.size() + 2) / 3 * 4 + 2);
  appendBase64(payload, bytes, /*url=*/false);
  payload.append("\"}");
  return {std::move(payload), {}};
}

}  // namespace

TransformResult transformPayload(PayloadMode mode, std::optional<unsigned> content_format,
                                 std::string_view bytes) {
  if (mode == PayloadMode::Raw) return {std::string(bytes), {}};
  if (!content_format) return textToJson(bytes);
  switch (*content_format) {
    case content_format::kTextPlain:
      return textToJson(bytes);
    case content_format::kJson:
    case content_format::kSenmlJson:
      return jsonToJson(bytes);
    case content_format::kCbor:
      return cborToJson(bytes, /*senml=*/false);
    case content_format::kSenmlCbor:
      return cborToJson(bytes, /*senml=*/true);
    case content_format::kLinkFormat:
      return linkFormatToJson(bytes);
    default:
      return opaqueToJson(bytes);
  }
}

}  // namespace coap2mqtt::bridge
