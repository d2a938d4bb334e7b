#include "bridge/transform.h"

#include <bit>
#include <charconv>
#include <cmath>
#include <limits>
#include <utility>

#include <nlohmann/json.hpp>

#include "bridge/json_parse.h"
#include "registry/link_format.h"
#include "registry/utf8.h"

namespace coap2mqtt::bridge {
namespace {

using nlohmann::json;  // std::map objects: sorted keys, O(log n) inserts on hostile input

// Bounds the recursion of the CBOR decoder and of json::dump() on hostile input.
constexpr unsigned kMaxDepth = 64;
// Bounds the JSON text of a CBOR map key that is an array or a map. Each level of maps used
// as keys escapes the quotes of the level below again, so unbounded key text doubles with
// every level: 40 nested one-pair maps (81 bytes) would need terabytes.
constexpr std::size_t kMaxKeyText = 256;

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

std::optional<json> textValue(std::string_view bytes, std::string& error) {
  if (!registry::isValidUtf8(bytes)) {
    error = "text payload is not valid UTF-8";
    return std::nullopt;
  }
  const std::string_view trimmed = trimAscii(bytes);
  if (isJsonNumber(trimmed) && isFiniteNumber(trimmed)) return json::parse(trimmed);
  if (trimmed == "true") return json(true);
  if (trimmed == "false") return json(false);
  return json(std::string(bytes));
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

std::optional<json> jsonValue(std::string_view bytes, std::string& error) {
  return parseJson(bytes, &error);
}

TransformResult jsonToJson(std::string_view bytes) {
  std::string error;
  auto value = jsonValue(bytes, error);
  if (!value) return failed(std::move(error));
  return {value->dump(), {}};
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

  bool key(json&& k, std::size_t at, std::string& out) {
    if (k.is_string()) {
      out = std::move(k.get_ref<std::string&>());
    } else if (k.is_number_unsigned()) {
      const auto v = k.get<std::uint64_t>();
      out = senml_ && v <= 8 ? senmlName(static_cast<std::int64_t>(v)) : std::to_string(v);
    } else if (k.is_number_integer()) {
      const auto v = k.get<std::int64_t>();
      const char* name = senml_ ? senmlName(v) : nullptr;
      out = name != nullptr ? name : std::to_string(v);
    } else {
      out = k.dump();
      if (out.size() > kMaxKeyText) {
        return fail(at,
                    "map key longer than " + std::to_string(kMaxKeyText) + " bytes as JSON text");
      }
    }
    return true;
  }

  // depth: how many arrays and maps enclose this item; one more is one level too many.
  bool item(json& out, unsigned depth) {
    Head h;
    if (!head(h)) return false;
    while (h.major == 6) {  // a tag: keep the content, drop the tag (RFC 8949 §6.1)
      if (!head(h)) return false;
    }
    if ((h.major == 4 || h.major == 5) && depth >= kMaxDepth) {
      return fail(h.at, "nested deeper than " + std::to_string(kMaxDepth) + " levels");
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
          std::string text;
          const std::size_t key_at = pos_;
          if (!item(name, depth + 1) || !key(std::move(name), key_at, text) ||
              !item(value, depth + 1)) {
            return false;
          }
          out[std::move(text)] = std::move(value);
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

std::optional<json> linkFormatValue(std::string_view bytes, std::string& error) {
  if (!registry::isValidUtf8(bytes)) {
    error = "invalid link-format: not valid UTF-8";
    return std::nullopt;
  }
  const registry::LinkFormatResult parsed = registry::parseLinkFormat(bytes);
  if (!parsed.ok()) {
    error = "invalid link-format at byte " + std::to_string(parsed.error->offset) + ": " +
            parsed.error->message;
    return std::nullopt;
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
  return links;
}

TransformResult linkFormatToJson(std::string_view bytes) {
  std::string error;
  auto links = linkFormatValue(bytes, error);
  if (!links) return failed(std::move(error));
  try {
    return {links->dump(), {}};
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

json opaqueValue(std::string_view bytes) {
  std::string text;
  appendBase64(text, bytes, /*url=*/false);
  return json{{"base64", std::move(text)}};
}

std::optional<json> cborValue(std::string_view bytes, bool senml, std::string& error) {
  CborToJson decoder(bytes, senml);
  auto value = decoder.run();
  if (!value) error = decoder.error();
  return value;
}

// ---------------------------------------------------------------------------------------
// Content-Format names (IANA "CoAP Content-Formats" registry)

struct FormatName {
  unsigned number;
  const char* name;
};
constexpr FormatName kFormatNames[] = {
    {0, "text/plain"},  // also "text/plain; charset=utf-8"
    {16, "application/cose; cose-type=\"cose-encrypt0\""},
    {40, "application/link-format"},
    {41, "application/xml"},
    {42, "application/octet-stream"},
    {47, "application/exi"},
    {50, "application/json"},
    {51, "application/json-patch+json"},
    {52, "application/merge-patch+json"},
    {60, "application/cbor"},
    {61, "application/cwt"},
    {62, "application/multipart-core"},
    {63, "application/cbor-seq"},
    {110, "application/senml+json"},
    {111, "application/sensml+json"},
    {112, "application/senml+cbor"},
    {113, "application/sensml+cbor"},
    {114, "application/senml-exi"},
    {115, "application/sensml-exi"},
    {310, "application/senml+xml"},
    {311, "application/sensml+xml"},
    {10000, "application/vnd.ocf+cbor"},
};

bool sameIgnoringCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const auto lower = [](char c) {
      return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
    };
    if (lower(a[i]) != lower(b[i])) return false;
  }
  return true;
}

// ---------------------------------------------------------------------------------------
// SenML (RFC 8428)

constexpr double kRelativeTimeLimit = 268435456.0;  // 2^28, §4.5.3
constexpr std::uint64_t kSenmlVersion = 10;

// A double that is a whole number small enough to be exact becomes an integer, so that
// 20 + 0 stays 20 and not 20.0.
json number(double value) {
  if (std::trunc(value) == value && std::fabs(value) < 9007199254740992.0) {
    return static_cast<std::int64_t>(value);
  }
  return value;
}

bool validSenmlName(std::string_view name) {
  if (name.empty()) return false;
  const auto alnum = [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
  };
  if (!alnum(name.front())) return false;
  for (char c : name) {
    if (!alnum(c) && c != '-' && c != ':' && c != '.' && c != '/' && c != '_') return false;
  }
  return true;
}

struct ResolvedRecords {
  json records = json::array();  // times relative to now stay relative here
  std::vector<bool> relative;    // per record: whether its "t" is relative to now
};

// Applies the base values (§4.6) without resolving relative times.
std::optional<std::string> resolveBase(const json& pack, ResolvedRecords& out) {
  if (!pack.is_array()) return std::string("SenML: expected an array of records");
  // With senml = "records" every record is a publish: a peer must not choose how many.
  if (pack.size() > kMaxSenmlRecords) {
    return "SenML: " + std::to_string(pack.size()) + " records, more than the limit of " +
           std::to_string(kMaxSenmlRecords);
  }
  std::string base_name;
  double base_time = 0;
  std::optional<std::string> base_unit;
  std::optional<double> base_value;
  std::optional<double> base_sum;
  std::optional<std::uint64_t> version;
  std::size_t index = 0;
  for (const json& record : pack) {
    ++index;
    const std::string where = "SenML record " + std::to_string(index) + ": ";
    if (!record.is_object()) return where + "expected an object";
    for (const auto& [key, value] : record.items()) {
      if (!key.empty() && key.back() == '_') {
        return where + "label \"" + key + "\" must be understood (RFC 8428 §4.4)";
      }
    }
    const auto str = [&](const char* key, std::optional<std::string>& into) -> bool {
      const auto it = record.find(key);
      if (it == record.end()) return true;
      if (!it->is_string()) return false;
      into = it->get<std::string>();
      return true;
    };
    const auto num = [&](const char* key, std::optional<double>& into) -> bool {
      const auto it = record.find(key);
      if (it == record.end()) return true;
      if (!it->is_number()) return false;
      into = it->get<double>();
      return true;
    };
    std::optional<std::string> bn, bu, n, u, vs, vd;
    std::optional<double> bt, bv, bs, v, s, t, ut;
    for (const auto& [key, ok] : {std::pair{"bn", str("bn", bn)},
                                  {"bu", str("bu", bu)},
                                  {"n", str("n", n)},
                                  {"u", str("u", u)},
                                  {"vs", str("vs", vs)},
                                  {"vd", str("vd", vd)}}) {
      if (!ok) return where + "\"" + key + "\" must be a string";
    }
    for (const auto& [key, ok] : {std::pair{"bt", num("bt", bt)},
                                  {"bv", num("bv", bv)},
                                  {"bs", num("bs", bs)},
                                  {"v", num("v", v)},
                                  {"s", num("s", s)},
                                  {"t", num("t", t)},
                                  {"ut", num("ut", ut)}}) {
      if (!ok) return where + "\"" + key + "\" must be a number";
    }
    if (const auto it = record.find("bver"); it != record.end()) {
      if (!it->is_number_unsigned()) return where + "\"bver\" must be an unsigned integer";
      version = it->get<std::uint64_t>();
      if (*version > kSenmlVersion) {
        return where + "version " + std::to_string(*version) + " is newer than " +
               std::to_string(kSenmlVersion);
      }
    }
    const auto vb = record.find("vb");
    if (vb != record.end() && !vb->is_boolean()) return where + "\"vb\" must be true or false";

    if (bn) base_name = *bn;
    if (bt) base_time = *bt;
    if (bu) base_unit = *bu;
    if (bv) base_value = *bv;
    if (bs) base_sum = *bs;

    const int values = (v ? 1 : 0) + (vs ? 1 : 0) + (vd ? 1 : 0) + (vb != record.end() ? 1 : 0);
    if (values > 1) return where + "more than one value field";

    json resolved = json::object();
    for (const auto& [key, value] : record.items()) {
      // Unknown fields stay; unknown base fields cannot be resolved and are dropped.
      if (!key.empty() && key.front() == 'b') continue;
      resolved[key] = value;
    }
    const std::string name = base_name + n.value_or("");
    if (!validSenmlName(name)) {
      return where + (name.empty() ? std::string("no name (neither \"bn\" nor \"n\")")
                                   : "invalid name \"" + name + "\"");
    }
    resolved["n"] = name;
    if (!u && base_unit) resolved["u"] = *base_unit;
    if (v) {
      if (base_value) resolved["v"] = number(*base_value + *v);
    } else if (values == 0 && !s && base_value) {
      resolved["v"] = number(*base_value);
    }
    if (s) {
      if (base_sum) resolved["s"] = number(*base_sum + *s);
    } else if (base_sum) {
      resolved["s"] = number(*base_sum);
    }
    if (values == 0 && !resolved.contains("v") && !resolved.contains("s")) {
      return where + "no value (\"v\", \"vs\", \"vb\", \"vd\") and no sum (\"s\")";
    }
    const double time = base_time + t.value_or(0);  // the pack's base time, not just bt
    resolved["t"] = number(time);
    if (version && *version != kSenmlVersion) resolved["bver"] = *version;
    out.relative.push_back(time < kRelativeTimeLimit);
    out.records.push_back(std::move(resolved));
  }
  // bver applies to the whole pack: a later record may carry it.
  if (version && *version != kSenmlVersion) {
    for (json& r : out.records) r["bver"] = *version;
  }
  return std::nullopt;
}

// Relative times -> now + offset; then chronological order when every time is absolute.
json resolveTimes(const ResolvedRecords& base, std::optional<std::int64_t> now_ms,
                  std::vector<std::size_t>* order) {
  json records = base.records;
  bool all_absolute = true;
  for (std::size_t i = 0; i < records.size(); ++i) {
    if (!base.relative[i]) continue;
    if (!now_ms) {
      all_absolute = false;
      continue;
    }
    const double offset = records[i]["t"].get<double>();
    // Whole milliseconds: now_ms / 1000 + offset, computed so that integers stay exact.
    const double t = static_cast<double>(*now_ms) / 1000.0 + offset;
    records[i]["t"] = number(t);
  }
  std::vector<std::size_t> idx(records.size());
  for (std::size_t i = 0; i < idx.size(); ++i) idx[i] = i;
  if (all_absolute) {
    std::stable_sort(idx.begin(), idx.end(), [&](std::size_t a, std::size_t b) {
      return records[a]["t"].get<double>() < records[b]["t"].get<double>();
    });
  }
  json sorted = json::array();
  for (std::size_t i : idx) sorted.push_back(std::move(records[i]));
  if (order != nullptr) *order = std::move(idx);
  return sorted;
}

std::optional<ResolvedRecords> senmlRecords(unsigned content_format, std::string_view bytes,
                                            std::string& error) {
  const std::optional<json> pack = content_format == content_format::kSenmlCbor
                                       ? cborValue(bytes, /*senml=*/true, error)
                                       : jsonValue(bytes, error);
  if (!pack) return std::nullopt;
  ResolvedRecords records;
  if (auto failure = resolveBase(*pack, records)) {
    error = std::move(*failure);
    return std::nullopt;
  }
  return records;
}

bool isSenml(std::optional<unsigned> content_format) {
  return content_format && (*content_format == content_format::kSenmlJson ||
                            *content_format == content_format::kSenmlCbor);
}

// The JSON form of a non-SenML payload.
std::optional<json> decodeValue(std::optional<unsigned> content_format, std::string_view bytes,
                                std::string& error) {
  if (!content_format) return textValue(bytes, error);
  switch (*content_format) {
    case content_format::kTextPlain:
      return textValue(bytes, error);
    case content_format::kJson:
      return jsonValue(bytes, error);
    case content_format::kCbor:
      return cborValue(bytes, /*senml=*/false, error);
    case content_format::kLinkFormat:
      return linkFormatValue(bytes, error);
    default:
      return opaqueValue(bytes);
  }
}

std::string dumpJson(const json& value) {
  // Every string in a decoded value is valid UTF-8 (the decoders check); replace anyway
  // rather than throw on the per-message path.
  return value.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string envelope(const RenderOptions& options, std::optional<unsigned> content_format,
                     std::string_view value) {
  std::string out;
  out.reserve(value.size() + options.device.size() + options.path.size() + 64);
  out.append("{\"device\":").append(dumpJson(json(std::string(options.device))));
  out.append(",\"path\":").append(dumpJson(json(std::string(options.path))));
  out.append(",\"value\":").append(value);
  out.append(",\"ts\":").append(std::to_string(options.now_ms));
  out.append(",\"ct\":").append(content_format ? std::to_string(*content_format) : "null");
  out.push_back('}');
  return out;
}

std::optional<std::string> pointAt(const json& value, std::string_view pointer, json& out) {
  try {
    const json::json_pointer p{std::string(pointer)};
    if (!value.contains(p)) {
      return "value pointer \"" + std::string(pointer) + "\" does not resolve in the payload";
    }
    out = value.at(p);
    return std::nullopt;
  } catch (const json::exception& e) {
    return "value pointer \"" + std::string(pointer) + "\": " + describeJsonError(e);
  }
}

// Appends one CBOR head (RFC 8949 §3).
void cborHead(std::string& out, std::uint8_t major, std::uint64_t arg) {
  const auto put = [&](std::uint64_t v, int bytes) {
    for (int k = bytes - 1; k >= 0; --k) out.push_back(static_cast<char>((v >> (8 * k)) & 0xFF));
  };
  const auto m = static_cast<std::uint8_t>(major << 5);
  if (arg < 24) {
    out.push_back(static_cast<char>(m | arg));
  } else if (arg <= 0xFF) {
    out.push_back(static_cast<char>(m | 24));
    put(arg, 1);
  } else if (arg <= 0xFFFF) {
    out.push_back(static_cast<char>(m | 25));
    put(arg, 2);
  } else if (arg <= 0xFFFFFFFF) {
    out.push_back(static_cast<char>(m | 26));
    put(arg, 4);
  } else {
    out.push_back(static_cast<char>(m | 27));
    put(arg, 8);
  }
}

std::optional<std::int64_t> senmlLabel(const std::string& name) {
  for (std::int64_t label = -6; label <= 8; ++label) {
    const char* n = senmlName(label);
    if (n != nullptr && name == n) return label;
  }
  return std::nullopt;
}

}  // namespace

namespace content_format {

std::optional<unsigned> fromName(std::string_view text) {
  std::string_view base = text;
  std::string_view parameter;
  if (const auto semi = text.find(';'); semi != std::string_view::npos) {
    base = trimAscii(text.substr(0, semi));
    parameter = trimAscii(text.substr(semi + 1));
  }
  if (!parameter.empty()) {
    if (sameIgnoringCase(base, "text/plain") && sameIgnoringCase(parameter, "charset=utf-8")) {
      return kTextPlain;
    }
    for (const auto& f : kFormatNames) {
      if (sameIgnoringCase(text, f.name)) return f.number;
    }
    return std::nullopt;
  }
  for (const auto& f : kFormatNames) {
    if (sameIgnoringCase(base, f.name)) return f.number;
  }
  return std::nullopt;
}

const char* name(unsigned content_format) {
  for (const auto& f : kFormatNames) {
    if (f.number == content_format) return f.name;
  }
  return nullptr;
}

std::vector<std::string> knownNames() {
  std::vector<std::string> names;
  for (const auto& f : kFormatNames) names.emplace_back(f.name);
  return names;
}

}  // namespace content_format

TransformResult resolveSenml(unsigned content_format, std::string_view bytes,
                             std::optional<std::int64_t> now_ms) {
  std::string error;
  auto records = senmlRecords(content_format, bytes, error);
  if (!records) return failed(std::move(error));
  return {dumpJson(resolveTimes(*records, now_ms, nullptr)), {}};
}

bool isValidJsonPointer(std::string_view pointer, std::string* error) {
  try {
    const json::json_pointer p{std::string(pointer)};
    (void)p;
    return true;
  } catch (const json::exception& e) {
    if (error != nullptr) *error = describeJsonError(e);
    return false;
  }
}

std::optional<std::string> renderPayload(const RenderOptions& options,
                                         std::optional<unsigned> content_format,
                                         std::string_view bytes,
                                         std::vector<RenderedPayload>& out) {
  if (options.mode == PayloadMode::Raw) {
    out.push_back(
        {std::string(), std::string(bytes), options.want_key ? std::string(bytes) : std::string()});
    return std::nullopt;
  }
  const bool envelope_mode = options.mode == PayloadMode::Envelope;

  // The common case: no SenML, no pointer; the transform's text is the value.
  if (!isSenml(content_format) && options.value_pointer.empty()) {
    TransformResult value = transformPayload(PayloadMode::Json, content_format, bytes);
    if (!value.ok()) return std::move(*value.error);
    RenderedPayload r;
    if (envelope_mode) {
      r.payload = envelope(options, content_format, value.payload);
      if (options.want_key) r.key = std::move(value.payload);
    } else {
      if (options.want_key) r.key = value.payload;
      r.payload = std::move(value.payload);
    }
    out.push_back(std::move(r));
    return std::nullopt;
  }

  // Each item: (name, value with times resolved, value with relative times kept).
  struct Item {
    std::string name;
    json value;
    json key;
  };
  std::vector<Item> items;
  std::string error;
  if (isSenml(content_format)) {
    auto records = senmlRecords(*content_format, bytes, error);
    if (!records) return error;
    std::vector<std::size_t> order;
    json resolved = resolveTimes(*records, options.now_ms, &order);
    // The keys keep relative times relative, so "the same reading, a second later" is
    // no change for only_changes.
    if (options.split_senml) {
      for (std::size_t i = 0; i < resolved.size(); ++i) {
        std::string name = resolved[i]["n"].get<std::string>();
        json key = options.want_key ? std::move(records->records[order[i]]) : json();
        items.push_back({std::move(name), std::move(resolved[i]), std::move(key)});
      }
    } else {
      json keys;
      if (options.want_key) {
        keys = json::array();
        for (std::size_t i : order) keys.push_back(std::move(records->records[i]));
      }
      items.push_back({std::string(), std::move(resolved), std::move(keys)});
    }
  } else {
    auto value = decodeValue(content_format, bytes, error);
    if (!value) return error;
    items.push_back({std::string(), std::move(*value), json()});
  }

  std::vector<RenderedPayload> rendered;
  rendered.reserve(items.size());
  for (Item& item : items) {
    json value;
    json key;
    if (!options.value_pointer.empty()) {
      if (auto failure = pointAt(item.value, options.value_pointer, value)) return failure;
      if (!item.key.is_null()) {
        if (pointAt(item.key, options.value_pointer, key)) key = value;
      }
    } else {
      value = std::move(item.value);
      key = std::move(item.key);
    }
    RenderedPayload r;
    r.name = std::move(item.name);
    std::string text = dumpJson(value);
    if (options.want_key) r.key = key.is_null() ? text : dumpJson(key);
    r.payload = envelope_mode ? envelope(options, content_format, text) : std::move(text);
    rendered.push_back(std::move(r));
  }
  for (auto& r : rendered) out.push_back(std::move(r));
  return std::nullopt;
}

TransformResult jsonToCbor(std::string_view json_text, bool senml) {
  std::string error;
  auto value = jsonValue(json_text, error);
  if (!value) return failed(std::move(error));
  try {
    if (!senml) {
      std::string out;
      json::to_cbor(*value, out);
      return {std::move(out), {}};
    }
    if (!value->is_array()) return failed("SenML: expected an array of records");
    std::string out;
    cborHead(out, 4, value->size());
    std::size_t index = 0;
    for (const json& record : *value) {
      ++index;
      if (!record.is_object()) {
        return failed("SenML record " + std::to_string(index) + ": expected an object");
      }
      cborHead(out, 5, record.size());
      for (const auto& [key, item] : record.items()) {
        if (const auto label = senmlLabel(key)) {
          if (*label < 0) {
            cborHead(out, 1, static_cast<std::uint64_t>(-1 - *label));
          } else {
            cborHead(out, 0, static_cast<std::uint64_t>(*label));
          }
        } else {
          cborHead(out, 3, key.size());
          out.append(key);
        }
        json::to_cbor(item, out);
      }
    }
    return {std::move(out), {}};
  } catch (const json::exception& e) {
    return failed("cannot encode as CBOR: " + describeJsonError(e));
  }
}

std::string responseToJson(std::optional<unsigned> content_format, std::string_view bytes) {
  if (bytes.empty()) return "null";
  TransformResult r = transformPayload(PayloadMode::Json, content_format, bytes);
  if (r.ok()) return std::move(r.payload);
  if (registry::isValidUtf8(bytes)) return dumpJson(json(std::string(bytes)));
  return opaqueToJson(bytes).payload;
}

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

std::optional<nlohmann::json> parseJson(std::string_view text, std::string* error) {
  // nlohmann's lexer takes a NUL byte for the end of the input and would ignore whatever
  // follows it ("{}\0garbage" parses as {}). JSON has no place for one (RFC 8259: not
  // outside strings, only escaped inside them), so refuse it.
  if (const std::size_t nul = text.find('\0'); nul != std::string_view::npos) {
    *error = "invalid JSON: NUL byte at byte " + std::to_string(nul);
    return std::nullopt;
  }
  if (!jsonDepthWithin(text, kMaxDepth)) {
    *error = "invalid JSON: nested deeper than " + std::to_string(kMaxDepth) + " levels";
    return std::nullopt;
  }
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    *error = "invalid JSON: " + describeJsonError(e);
  }
  return std::nullopt;
}

}  // namespace coap2mqtt::bridge
