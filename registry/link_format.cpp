#include "registry/link_format.h"

#include <algorithm>
#include <cstdint>
#include <limits>

#include "registry/utf8.h"

namespace coap2mqtt::registry {
namespace {

constexpr bool isAlpha(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}
constexpr bool isDigit(unsigned char c) {
  return c >= '0' && c <= '9';
}
constexpr unsigned char toLower(unsigned char c) {
  return (c >= 'A' && c <= 'Z') ? static_cast<unsigned char>(c - 'A' + 'a') : c;
}

// Membership in a small set of punctuation; `set` never contains NUL, so NUL is never in it.
constexpr bool isOneOf(unsigned char c, std::string_view set) {
  return set.find(static_cast<char>(c)) != std::string_view::npos;
}

// RFC 3986 unreserved / reserved / '%': every byte a URI-reference may contain.
constexpr bool isUriChar(unsigned char c) {
  return isAlpha(c) || isDigit(c) || isOneOf(c, "-._~:/?#[]@!$&'()*+,;=%");
}

// RFC 6690 §2 ptokenchar.
constexpr bool isPtokenChar(unsigned char c) {
  return isAlpha(c) || isDigit(c) || isOneOf(c, "!#$%&'()*+-./:<=>?@[]^_`{|}~");
}

// RFC 5987 parmname (attr-char), which RFC 6690 uses for link-param names.
constexpr bool isParmnameChar(unsigned char c) {
  return isAlpha(c) || isDigit(c) || isOneOf(c, "!#$&+-.^_`|~");
}

// Whitespace we tolerate between links and parameters; real devices pretty-print.
constexpr bool isSpace(unsigned char c) {
  return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

// Error messages never echo raw bytes: they end up in logs.
std::string describe(unsigned char c) {
  if (c >= 0x21 && c <= 0x7E) return std::string("'") + static_cast<char>(c) + "'";
  if (c == ' ') return "a space";
  static constexpr char kHex[] = "0123456789abcdef";
  return std::string("byte 0x") + kHex[c >> 4] + kHex[c & 0xF];
}

bool equalsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (toLower(static_cast<unsigned char>(a[i])) != toLower(static_cast<unsigned char>(b[i])))
      return false;
  }
  return true;
}

// Splits on runs of SP/HTAB, ignoring leading and trailing ones.
template <typename F>
void forEachWord(std::string_view s, F&& f) {
  std::size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t')) ++i;
    const std::size_t start = i;
    while (i < s.size() && s[i] != ' ' && s[i] != '\t') ++i;
    if (i > start) f(s.substr(start, i - start));
  }
}

// RFC 6690's cardinal: "0" / %x31-39 *DIGIT, whatever its value.
bool isCardinal(std::string_view s) {
  if (s.empty() || (s.size() > 1 && s[0] == '0')) return false;
  return std::all_of(s.begin(), s.end(),
                     [](char ch) { return isDigit(static_cast<unsigned char>(ch)); });
}

// A cardinal no greater than `max`.
std::optional<std::uint64_t> parseCardinal(std::string_view s, std::uint64_t max) {
  if (s.empty() || (s.size() > 1 && s[0] == '0')) return std::nullopt;
  std::uint64_t v = 0;
  for (char ch : s) {
    if (!isDigit(static_cast<unsigned char>(ch))) return std::nullopt;
    const unsigned d = static_cast<unsigned>(ch - '0');
    if (v > (max - d) / 10) return std::nullopt;
    v = v * 10 + d;
  }
  return v;
}

class Parser {
 public:
  explicit Parser(std::string_view text) : text_(text) {}

  LinkFormatResult run() {
    LinkFormatResult result;
    skipSpace();
    if (atEnd()) return result;  // an empty link-value-list is valid
    for (;;) {
      if (result.links.size() == kMaxLinks) {
        return failed(pos_, "expected at most " + std::to_string(kMaxLinks) + " links");
      }
      Link link;
      if (!parseLinkValue(link)) return failed();
      result.links.push_back(std::move(link));
      // parseLinkValue stops at ',' or the end, having skipped whitespace.
      if (atEnd()) return result;
      ++pos_;  // ','
      skipSpace();
      if (atEnd()) return failed(pos_, "expected '<' to start a link after ','");
    }
  }

 private:
  bool atEnd() const { return pos_ >= text_.size(); }
  unsigned char peek() const { return static_cast<unsigned char>(text_[pos_]); }
  void skipSpace() {
    while (!atEnd() && isSpace(peek())) ++pos_;
  }
  std::string found() const { return atEnd() ? "end of input" : describe(peek()); }

  bool fail(std::size_t offset, std::string message) {
    error_ = LinkFormatError{offset, std::move(message)};
    return false;
  }
  LinkFormatResult failed() {
    LinkFormatResult r;
    r.error = std::move(error_);
    return r;
  }
  LinkFormatResult failed(std::size_t offset, std::string message) {
    fail(offset, std::move(message));
    return failed();
  }

  // link-value = "<" URI-Reference ">" *( ";" link-param )
  bool parseLinkValue(Link& link) {
    if (atEnd() || peek() != '<')
      return fail(pos_, "expected '<' to start a link, found " + found());
    const std::size_t open = pos_++;
    const std::size_t start = pos_;
    while (!atEnd() && peek() != '>') {
      if (!isUriChar(peek())) {
        return fail(pos_, "expected a URI character or '>' in link target, found " + found());
      }
      ++pos_;
    }
    if (atEnd()) {
      return fail(pos_,
                  "expected '>' to close the link target opened at offset " + std::to_string(open));
    }
    link.target.assign(text_.substr(start, pos_ - start));
    ++pos_;  // '>'

    for (;;) {
      skipSpace();
      if (atEnd() || peek() == ',') return true;
      if (peek() != ';') {
        std::string msg = "expected ';', ',' or end of input after link, found " + found();
        if (peek() == '=') msg += " (no whitespace is allowed around '=')";
        return fail(pos_, std::move(msg));
      }
      ++pos_;
      skipSpace();
      if (!parseParam(link)) return false;
    }
  }

  // link-param = parmname [ "*" ] [ "=" ( ptoken / quoted-string ) ]
  bool parseParam(Link& link) {
    if (link.attributes.size() == kMaxAttributesPerLink) {
      return fail(pos_, "expected at most " + std::to_string(kMaxAttributesPerLink) +
                            " attributes in one link");
    }
    const std::size_t name_start = pos_;
    LinkAttribute attr;
    while (!atEnd() && isParmnameChar(peek())) {
      attr.name.push_back(static_cast<char>(toLower(peek())));
      ++pos_;
    }
    if (attr.name.empty()) {
      return fail(pos_, "expected a parameter name after ';', found " + found());
    }
    if (!atEnd() && peek() == '*') {  // ext-name-star, e.g. title*
      attr.name.push_back('*');
      ++pos_;
    }
    std::size_t value_start = pos_;
    if (!atEnd() && peek() == '=') {
      ++pos_;
      value_start = pos_;
      std::string value;
      if (!atEnd() && peek() == '"') {
        if (!parseQuoted(value)) return false;
      } else if (!atEnd() && isPtokenChar(peek())) {
        while (!atEnd() && isPtokenChar(peek())) value.push_back(static_cast<char>(text_[pos_++]));
      } else {
        return fail(
            pos_, "expected a token or quoted-string after '" + attr.name + "=', found " + found());
      }
      attr.value = std::move(value);
    } else {
      // "rt =x" is a common slip; say so instead of complaining that rt has no value.
      std::size_t ahead = pos_;
      while (ahead < text_.size() && isSpace(static_cast<unsigned char>(text_[ahead]))) ++ahead;
      if (ahead > pos_ && ahead < text_.size() && text_[ahead] == '=') {
        return fail(ahead,
                    "expected ';', ',' or end of input after parameter name, found '=' "
                    "(no whitespace is allowed around '=')");
      }
    }
    if (!interpret(link, attr, name_start, value_start)) return false;
    link.attributes.push_back(std::move(attr));
    return true;
  }

  // quoted-string (RFC 2616): '"' *( qdtext / "\" CHAR ) '"'; escapes are resolved.
  bool parseQuoted(std::string& out) {
    const std::size_t open = pos_++;
    while (!atEnd()) {
      const unsigned char c = peek();
      if (c == '"') {
        ++pos_;
        return true;
      }
      if (c == '\\') {
        if (pos_ + 1 >= text_.size()) break;
        const unsigned char e = static_cast<unsigned char>(text_[pos_ + 1]);
        if (!((e >= 0x20 && e <= 0x7E) || e == '\t')) {
          return fail(pos_ + 1,
                      "expected a printable ASCII character after '\\', found " + describe(e));
        }
        out.push_back(static_cast<char>(e));
        pos_ += 2;
        continue;
      }
      if ((c < 0x20 && c != '\t') || c == 0x7F) {
        return fail(pos_, "expected text in quoted-string, found control " + describe(c));
      }
      // Quoted strings end up in MQTT payloads and JSON, where invalid UTF-8 is an error,
      // so we refuse it at the door.
      const std::size_t n = utf8SequenceLength(text_, pos_);
      if (n == 0) return fail(pos_, "expected valid UTF-8 in quoted-string, found " + describe(c));
      out.append(text_.substr(pos_, n));
      pos_ += n;
    }
    return fail(text_.size(), "expected '\"' to close the quoted-string opened at offset " +
                                  std::to_string(open));
  }

  bool needValue(const LinkAttribute& attr, std::size_t name_start) {
    if (attr.value) return true;
    return fail(name_start + attr.name.size(),
                "expected '=' and a value after '" + attr.name + "'");
  }

  // Fills Link's convenience views and checks the attributes whose syntax we rely on.
  bool interpret(Link& link, const LinkAttribute& attr, std::size_t name_start,
                 std::size_t value_start) {
    const std::string& n = attr.name;
    if (n == "rt" || n == "if") {
      if (!needValue(attr, name_start)) return false;
      auto& out = n == "rt" ? link.rt : link.ifs;
      forEachWord(*attr.value, [&](std::string_view w) { out.emplace_back(w); });
    } else if (n == "ct") {
      if (!needValue(attr, name_start)) return false;
      bool ok = true;
      std::size_t count = 0;
      forEachWord(*attr.value, [&](std::string_view w) {
        const auto v = parseCardinal(w, std::numeric_limits<std::uint16_t>::max());
        ok = ok && v.has_value();
        if (v) link.ct.push_back(static_cast<unsigned>(*v));
        ++count;
      });
      if (!ok || count == 0) {
        return fail(value_start,
                    "expected ct to be a content-format number 0-65535 (no leading zeros) or a "
                    "quoted space-separated list of them");
      }
    } else if (n == "sz") {
      if (!needValue(attr, name_start)) return false;
      const std::string_view value = *attr.value;
      if (!isCardinal(value)) {
        return fail(value_start, "expected sz to be a non-negative integer without leading zeros");
      }
      // Above kMaxLinkSz: well-formed, but no size we can use or store (see the header).
      const auto v = parseCardinal(value, kMaxLinkSz);
      if (v && !link.sz) link.sz = static_cast<std::size_t>(*v);
    } else if (n == "obs") {
      link.obs = true;  // RFC 7641 defines no value; tolerate one rather than drop the link
    } else if (n == "title") {
      if (!needValue(attr, name_start)) return false;
      if (!link.title) link.title = attr.value;
    } else if (n == "anchor") {
      if (!needValue(attr, name_start)) return false;
      if (!link.anchor) link.anchor = attr.value;
    }
    return true;
  }

  std::string_view text_;
  std::size_t pos_ = 0;
  std::optional<LinkFormatError> error_;
};

// A path segment that is "." or "..", possibly percent-encoded ("%2e", "%2E").
int dotSegment(std::string_view seg) {
  int dots = 0;
  std::size_t i = 0;
  while (i < seg.size()) {
    if (seg[i] == '.') {
      ++i;
    } else if (seg.size() - i >= 3 && seg[i] == '%' && seg[i + 1] == '2' &&
               (seg[i + 2] == 'e' || seg[i + 2] == 'E')) {
      i += 3;
    } else {
      return 0;
    }
    if (++dots > 2) return 0;
  }
  return dots;
}

void appendQuoted(std::string& out, std::string_view value) {
  out += '"';
  for (const char c : value) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  out += '"';
}

bool isPtoken(std::string_view value) {
  return !value.empty() && std::all_of(value.begin(), value.end(), [](char c) {
    return isPtokenChar(static_cast<unsigned char>(c));
  });
}

}  // namespace

const LinkAttribute* Link::find(std::string_view name) const {
  for (const auto& a : attributes) {
    if (equalsIgnoreCase(a.name, name)) return &a;
  }
  return nullptr;
}

LinkFormatResult parseLinkFormat(std::string_view text, std::size_t max_bytes) {
  if (text.size() > max_bytes) {
    LinkFormatResult r;
    r.error =
        LinkFormatError{max_bytes, "expected at most " + std::to_string(max_bytes) +
                                       " bytes of link-format, got " + std::to_string(text.size())};
    return r;
  }
  return Parser(text).run();
}

std::string serializeLinkFormat(const std::vector<Link>& links) {
  std::string out;
  for (const Link& link : links) {
    if (!out.empty()) out += ',';
    out += '<';
    out += link.target;
    out += '>';
    for (const LinkAttribute& a : link.attributes) {
      out += ';';
      out += a.name;
      if (!a.value) continue;
      out += '=';
      if (a.name != "anchor" && a.name != "title" && isPtoken(*a.value)) {
        out += *a.value;
      } else {
        appendQuoted(out, *a.value);
      }
    }
  }
  return out;
}

std::optional<std::string> targetPath(std::string_view target) {
  for (char ch : target) {
    if (!isUriChar(static_cast<unsigned char>(ch))) return std::nullopt;
  }
  // Query and fragment never name a different resource path.
  std::string_view rest = target.substr(0, target.find_first_of("?#"));

  // scheme ":" — only if the first ':' comes before any '/' (RFC 3986 §4.2).
  bool absolute = false;
  if (const auto colon = rest.find(':');
      colon != std::string_view::npos && colon < rest.find('/')) {
    const std::string_view scheme = rest.substr(0, colon);
    if (scheme.empty() || !isAlpha(static_cast<unsigned char>(scheme[0]))) return std::nullopt;
    for (char ch : scheme) {
      const auto c = static_cast<unsigned char>(ch);
      if (!(isAlpha(c) || isDigit(c) || c == '+' || c == '-' || c == '.')) return std::nullopt;
    }
    rest.remove_prefix(colon + 1);
    absolute = true;
  }
  if (rest.substr(0, 2) == "//") {  // authority: the host is the caller's concern
    rest.remove_prefix(2);
    const auto slash = rest.find('/');
    rest = slash == std::string_view::npos ? std::string_view{} : rest.substr(slash);
  } else if (absolute && !rest.empty() && rest[0] != '/') {
    return std::nullopt;  // "urn:x", "mailto:y": not a path on any device
  }

  // Relative references resolve against the device origin (RFC 6690 §2.1), whose path is
  // empty, so "a/b" and "/a/b" are the same resource. Walk the segments once.
  std::string out;
  out.reserve(rest.size() + 1);
  std::size_t i = rest.empty() || rest[0] != '/' ? 0 : 1;
  bool trailing_slash = rest.empty() || rest == "/";
  while (i <= rest.size() && !rest.empty()) {
    const auto end = std::min(rest.find('/', i), rest.size());
    const std::string_view seg = rest.substr(i, end - i);
    const int dots = dotSegment(seg);
    if (dots == 2) return std::nullopt;
    if (dots == 1) {
      trailing_slash = end == rest.size();  // "/a/." means "/a/"
    } else {
      out.push_back('/');
      out.append(seg);
      trailing_slash = false;
    }
    if (end == rest.size()) break;
    i = end + 1;
  }
  if (out.empty() || trailing_slash) out.push_back('/');
  return out;
}

}  // namespace coap2mqtt::registry
