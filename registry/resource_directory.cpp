#include "registry/resource_directory.h"

#include <algorithm>
#include <cstdint>
#include <limits>

#include "registry/utf8.h"

namespace coap2mqtt::registry {
namespace {

constexpr unsigned kCreated = 201;
constexpr unsigned kDeleted = 202;
constexpr unsigned kChanged = 204;
constexpr unsigned kContent = 205;
constexpr unsigned kBadRequest = 400;
constexpr unsigned kNotFound = 404;
constexpr unsigned kUnsupportedContentFormat = 415;

constexpr unsigned kLinkFormat = 40;
constexpr unsigned kTextPlain = 0;

constexpr std::size_t kMaxNameBytes = 63;                // RFC 9176 §5: ep and d
constexpr std::uint64_t kMaxLifetime = 4294967295;       // RFC 9176 §5: lt 1..2^32-1
constexpr std::chrono::seconds kDefaultLifetime{90000};  // RFC 9176 §5: 25 h
constexpr std::string_view kLocationPrefix = "/rd/";

RdResult fail(unsigned code, std::string diagnostic) {
  RdResult r;
  r.code = code;
  r.payload = std::move(diagnostic);
  r.content_format = kTextPlain;  // a diagnostic payload; meaningful only for 2.05
  return r;
}

RdResult done(unsigned code) {
  RdResult r;
  r.code = code;
  return r;
}

constexpr bool isAlpha(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}
constexpr bool isDigit(unsigned char c) {
  return c >= '0' && c <= '9';
}
constexpr bool isHexDigit(unsigned char c) {
  return isDigit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}
constexpr char toLower(char c) {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}
std::string lowered(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(), toLower);
  return out;
}

// ";name=" and `value` as a quoted-string, '"' and '\' escaped: the endpoint lookup's
// attributes, which RFC 9176 §6.3 shows quoted whatever they contain.
void appendQuotedParam(std::string& out, std::string_view name, std::string_view value) {
  out += ';';
  out += name;
  out += "=\"";
  for (const char c : value) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  out += '"';
}

// ---------------------------------------------------------------------------------------
// RFC 3986 §5.2 reference resolution, enough for link targets and anchors against a
// registration base ("coap://host:port").

struct UriParts {
  std::optional<std::string_view> scheme;
  std::optional<std::string_view> authority;
  std::string_view path;
  std::optional<std::string_view> query;
  std::optional<std::string_view> fragment;
};

// RFC 3986 Appendix B, by hand.
UriParts splitUri(std::string_view s) {
  UriParts p;
  const std::size_t colon = s.find(':');
  if (colon != std::string_view::npos && colon > 0 && colon < s.find_first_of("/?#") &&
      isAlpha(static_cast<unsigned char>(s[0])) &&
      std::all_of(s.begin(), s.begin() + static_cast<std::ptrdiff_t>(colon), [](char c) {
        const auto u = static_cast<unsigned char>(c);
        return isAlpha(u) || isDigit(u) || c == '+' || c == '-' || c == '.';
      })) {
    p.scheme = s.substr(0, colon);
    s.remove_prefix(colon + 1);
  }
  if (s.substr(0, 2) == "//") {
    s.remove_prefix(2);
    const std::size_t end = std::min(s.find_first_of("/?#"), s.size());
    p.authority = s.substr(0, end);
    s.remove_prefix(end);
  }
  if (const std::size_t hash = s.find('#'); hash != std::string_view::npos) {
    p.fragment = s.substr(hash + 1);
    s = s.substr(0, hash);
  }
  if (const std::size_t q = s.find('?'); q != std::string_view::npos) {
    p.query = s.substr(q + 1);
    s = s.substr(0, q);
  }
  p.path = s;
  return p;
}

// RFC 3986 §5.2.4.
std::string removeDotSegments(std::string_view in) {
  std::string out;
  while (!in.empty()) {
    if (in.substr(0, 3) == "../") {
      in.remove_prefix(3);
    } else if (in.substr(0, 2) == "./" || in.substr(0, 3) == "/./") {
      in.remove_prefix(2);  // "./x" -> "x", "/./x" -> "/x"
    } else if (in == "/.") {
      in = "/";
    } else if (in.substr(0, 4) == "/../" || in == "/..") {
      in = in.size() == 3 ? std::string_view("/") : in.substr(3);
      const std::size_t slash = out.rfind('/');
      out.erase(slash == std::string::npos ? 0 : slash);
    } else if (in == "." || in == "..") {
      in = {};
    } else {
      const std::size_t next = in.find('/', 1);
      const std::size_t n = next == std::string_view::npos ? in.size() : next;
      out.append(in.substr(0, n));
      in.remove_prefix(n);
    }
  }
  return out;
}

// RFC 3986 §5.2.2 and §5.3. Absolute references come back exactly as written: RFC 9176 §6.1
// returns links "submitted as a (full) URI ... unmodified".
std::string resolveReference(std::string_view base, std::string_view reference) {
  const UriParts r = splitUri(reference);
  if (r.scheme) return std::string(reference);
  const UriParts b = splitUri(base);

  std::optional<std::string_view> authority;
  std::string path;
  std::optional<std::string_view> query;
  if (r.authority) {
    authority = r.authority;
    path = removeDotSegments(r.path);
    query = r.query;
  } else {
    authority = b.authority;
    if (r.path.empty()) {
      path = b.path;
      query = r.query ? r.query : b.query;
    } else {
      if (r.path.front() == '/') {
        path = removeDotSegments(r.path);
      } else if (b.authority && b.path.empty()) {
        path = removeDotSegments("/" + std::string(r.path));
      } else {
        const std::size_t slash = b.path.rfind('/');
        const std::string_view dir =
            slash == std::string_view::npos ? std::string_view() : b.path.substr(0, slash + 1);
        path = removeDotSegments(std::string(dir) + std::string(r.path));
      }
      query = r.query;
    }
  }

  std::string out;
  if (b.scheme) {
    out += *b.scheme;
    out += ':';
  }
  if (authority) {
    out += "//";
    out += *authority;
  }
  out += path;
  if (query) {
    out += '?';
    out += *query;
  }
  if (r.fragment) {
    out += '#';
    out += *r.fragment;
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// Registration parameters.

// RFC 9176 §5: UTF-8 without characters U+0000..U+001F and U+007F..U+009F. The message
// never echoes the value: it ends up in logs and in the response.
std::optional<std::string> checkText(std::string_view name, std::string_view value,
                                     std::size_t max_bytes) {
  if (value.empty() || value.size() > max_bytes) {
    return std::string(name) + (max_bytes < 1024
                                    ? " must be 1.." + std::to_string(max_bytes) + " bytes"
                                    : " must not be empty");
  }
  for (std::size_t i = 0; i < value.size();) {
    const auto c = static_cast<unsigned char>(value[i]);
    const std::size_t n = utf8SequenceLength(value, i);
    if (n == 0) return std::string(name) + " must be valid UTF-8";
    const bool c1_control = n == 2 && c == 0xC2 && static_cast<unsigned char>(value[i + 1]) < 0xA0;
    if (c < 0x20 || c == 0x7F || c1_control) {
      return std::string(name) + " must not contain control characters";
    }
    i += n;
  }
  return std::nullopt;
}

// Decimal seconds 1..2^32-1.
std::optional<std::chrono::seconds> parseLifetime(std::string_view s) {
  if (s.empty() || s.size() > 20) return std::nullopt;
  std::uint64_t v = 0;
  for (const char c : s) {
    if (!isDigit(static_cast<unsigned char>(c))) return std::nullopt;
    v = v * 10 + static_cast<unsigned>(c - '0');
    if (v > kMaxLifetime) return std::nullopt;
  }
  if (v == 0) return std::nullopt;
  return std::chrono::seconds(static_cast<std::chrono::seconds::rep>(v));
}

// "coap://host[:port]" or "coaps://host[:port]": no userinfo, path, query or fragment
// (RFC 9176 §5 wants a base suitable for resolving the registration's references; with
// Limited Link Format that is scheme://authority). IPv6 literals must not carry a zone.
bool validBase(std::string_view base) {
  const std::size_t sep = base.find("://");
  if (sep == std::string_view::npos) return false;
  const std::string scheme = lowered(base.substr(0, sep));
  if (scheme != "coap" && scheme != "coaps") return false;
  std::string_view rest = base.substr(sep + 3);
  std::string_view host;
  if (!rest.empty() && rest.front() == '[') {
    const std::size_t close = rest.find(']');
    if (close == std::string_view::npos || close < 3) return false;
    host = rest.substr(1, close - 1);
    const bool ok = std::all_of(host.begin(), host.end(), [](char c) {
      return isHexDigit(static_cast<unsigned char>(c)) || c == ':' || c == '.';
    });
    if (!ok || host.find(':') == std::string_view::npos) return false;
    rest.remove_prefix(close + 1);
  } else {
    const std::size_t end = std::min(rest.find(':'), rest.size());
    host = rest.substr(0, end);
    if (host.empty()) return false;
    for (std::size_t i = 0; i < host.size(); ++i) {  // unreserved / pct-encoded
      const auto c = static_cast<unsigned char>(host[i]);
      if (c == '%') {
        if (i + 2 >= host.size() || !isHexDigit(static_cast<unsigned char>(host[i + 1])) ||
            !isHexDigit(static_cast<unsigned char>(host[i + 2]))) {
          return false;
        }
        i += 2;
      } else if (!isAlpha(c) && !isDigit(c) && c != '-' && c != '.' && c != '_' && c != '~') {
        return false;
      }
    }
    rest.remove_prefix(end);
  }
  if (rest.empty()) return true;
  if (rest.front() != ':') return false;
  rest.remove_prefix(1);
  if (rest.empty() || rest.size() > 5) return false;
  unsigned port = 0;
  for (const char c : rest) {
    if (!isDigit(static_cast<unsigned char>(c))) return false;
    port = port * 10 + static_cast<unsigned>(c - '0');
  }
  return port <= 65535;
}

// The registration parameters RFC 9176 defines and we store. Anything else in the query
// (extra-attrs) is accepted and not kept: RdRegistration has no place for it.
struct Params {
  std::optional<std::string> ep, d, base, et;
  std::optional<std::chrono::seconds> lt;
};

// Fills `params` from `query`; the error text on failure.
std::optional<std::string> parseParams(const RdQuery& query, Params& params) {
  std::optional<std::string_view> lt;
  for (const auto& [key, value] : query) {
    std::optional<std::string>* slot = nullptr;
    if (key == "ep") {
      slot = &params.ep;
    } else if (key == "d") {
      slot = &params.d;
    } else if (key == "base") {
      slot = &params.base;
    } else if (key == "et") {
      slot = &params.et;  // RFC 9176 allows several; one is all RdRegistration stores
    } else if (key == "lt") {
      if (lt) return std::string("lt given twice");
      lt = value;
      continue;
    } else {
      continue;
    }
    if (*slot) return key + " given twice";
    *slot = value;
  }
  if (params.ep) {
    if (auto e = checkText("ep", *params.ep, kMaxNameBytes)) return e;
  }
  if (params.d) {
    if (auto e = checkText("d", *params.d, kMaxNameBytes)) return e;
  }
  if (params.et) {
    if (auto e = checkText("et", *params.et, std::numeric_limits<std::size_t>::max())) return e;
  }
  if (lt) {
    params.lt = parseLifetime(*lt);
    if (!params.lt) return std::string("lt must be a number of seconds 1..4294967295");
  }
  if (params.base && !validBase(*params.base)) {
    return std::string("base must be coap://host[:port] or coaps://host[:port]");
  }
  return std::nullopt;
}

std::optional<std::string> parseLinks(std::string_view payload, std::vector<Link>& links) {
  LinkFormatResult parsed = parseLinkFormat(payload);
  if (!parsed.ok()) {
    return "bad link-format at byte " + std::to_string(parsed.error->offset) + ": " +
           parsed.error->message;
  }
  links = std::move(parsed.links);
  return std::nullopt;
}

// now + lifetime, saturating rather than overflowing the clock's representation.
std::chrono::steady_clock::time_point expiryOf(std::chrono::steady_clock::time_point now,
                                               std::chrono::seconds lifetime) {
  using TP = std::chrono::steady_clock::time_point;
  const auto room = std::chrono::duration_cast<std::chrono::seconds>(TP::max() - now);
  return lifetime >= room ? TP::max() : now + lifetime;
}

// n of a location "/rd/<n>" as registerEndpoint() makes them: decimal without leading
// zeros, at most 18 digits so that n + 1 cannot overflow. nullopt for any other text.
std::optional<std::uint64_t> locationId(std::string_view location) {
  if (location.substr(0, kLocationPrefix.size()) != kLocationPrefix) return std::nullopt;
  const std::string_view digits = location.substr(kLocationPrefix.size());
  if (digits.empty() || digits.size() > 18 || digits.front() == '0') return std::nullopt;
  std::uint64_t n = 0;
  for (const char c : digits) {
    if (!isDigit(static_cast<unsigned char>(c))) return std::nullopt;
    n = n * 10 + static_cast<unsigned>(c - '0');
  }
  return n;
}

// Location order: "/rd/<n>" by n (so /rd/9 before /rd/10), then other (restored) text.
bool locationLess(std::string_view a, std::string_view b) {
  const std::optional<std::uint64_t> na = locationId(a);
  const std::optional<std::uint64_t> nb = locationId(b);
  if (na && nb) return *na < *nb;
  if (na || nb) return na.has_value();
  return a < b;
}

// ---------------------------------------------------------------------------------------
// Lookup (RFC 9176 §6).

// One search criterion: an attribute name and a value, which with a trailing '*' is a
// prefix (RFC 6690 §4.1).
struct Filter {
  std::string name;
  std::string value;
  bool prefix = false;

  bool matches(std::string_view v) const {
    return prefix ? v.substr(0, value.size()) == value : v == value;
  }
};

// Attributes whose value is a space-separated list (RFC 6690 relation-types, and ct per
// RFC 7252 §7.2.1): a filter matches any one item, or the whole value.
bool isMultiValued(std::string_view name) {
  return name == "rt" || name == "if" || name == "rel" || name == "rev" || name == "ct";
}

bool attributeMatches(const Filter& f, std::string_view name, std::string_view value) {
  if (name != f.name) return false;
  if (f.matches(value)) return true;
  if (!isMultiValued(name)) return false;
  std::size_t i = 0;
  while (i < value.size()) {
    while (i < value.size() && (value[i] == ' ' || value[i] == '\t')) ++i;
    const std::size_t start = i;
    while (i < value.size() && value[i] != ' ' && value[i] != '\t') ++i;
    if (i > start && f.matches(value.substr(start, i - start))) return true;
  }
  return false;
}

// A registered link as the lookup interface shows it: target and anchor resolved.
Link resolveLink(const RdRegistration& reg, const Link& link) {
  Link out = link;
  out.target = resolveReference(reg.base, link.target);
  for (auto& a : out.attributes) {
    if (a.name == "anchor" && a.value) a.value = resolveReference(reg.base, *a.value);
  }
  if (out.anchor) out.anchor = resolveReference(reg.base, *out.anchor);
  return out;
}

bool linkMatches(const Filter& f, const Link& link) {
  if (f.name == "href") return f.matches(link.target);
  return std::any_of(link.attributes.begin(), link.attributes.end(), [&](const LinkAttribute& a) {
    return attributeMatches(f, a.name, a.value.value_or(std::string()));
  });
}

// The registration's own attributes: what an endpoint lookup shows, minus the constant rt.
bool endpointMatches(const Filter& f, const RdRegistration& reg) {
  if (f.name == "href") return f.matches(reg.location);
  if (f.name == "ep") return f.matches(reg.ep);
  if (f.name == "base") return f.matches(reg.base);
  if (f.name == "d") return !reg.sector.empty() && f.matches(reg.sector);
  if (f.name == "et") return !reg.et.empty() && f.matches(reg.et);
  return false;
}

struct LookupQuery {
  std::vector<Filter> filters;
  std::optional<std::size_t> page;
  std::optional<std::size_t> count;
};

std::optional<std::size_t> parseIndex(std::string_view s) {
  if (s.empty() || s.size() > 9) return std::nullopt;
  std::size_t v = 0;
  for (const char c : s) {
    if (!isDigit(static_cast<unsigned char>(c))) return std::nullopt;
    v = v * 10 + static_cast<std::size_t>(c - '0');
  }
  return v;
}

std::optional<std::string> parseLookupQuery(const RdQuery& query, LookupQuery& out) {
  for (const auto& [key, value] : query) {
    if (key == "page" || key == "count") {
      auto& slot = key == "page" ? out.page : out.count;
      if (slot) return key + " given twice";
      slot = parseIndex(value);
      if (!slot) return key + " must be a number 0..999999999";
      continue;
    }
    Filter f{lowered(key), value, false};
    if (!f.value.empty() && f.value.back() == '*') {
      f.value.pop_back();
      f.prefix = true;
    }
    out.filters.push_back(std::move(f));
  }
  if (out.page && !out.count) return std::string("page needs count");
  return std::nullopt;
}

// The slice [page*count, page*count+count) of `n` items, or all of them without count.
std::pair<std::size_t, std::size_t> pageRange(const LookupQuery& q, std::size_t n) {
  if (!q.count) return {0, n};
  const std::size_t page = q.page.value_or(0);
  const std::size_t first = std::min(n, page * *q.count);  // both < 1e9: no overflow
  return {first, std::min(n, first + *q.count)};
}

RdResult content(std::string payload) {
  RdResult r;
  r.code = kContent;
  r.payload = std::move(payload);
  r.content_format = kLinkFormat;
  return r;
}

}  // namespace

RdResult ResourceDirectory::registerEndpoint(const RdQuery& query, std::string_view payload,
                                             std::optional<unsigned> content_format,
                                             std::string_view source_base, TimePoint now,
                                             std::vector<RdEvent>& events) {
  if (content_format && *content_format != kLinkFormat) {
    return fail(kUnsupportedContentFormat, "registrations must be application/link-format (40)");
  }
  Params params;
  if (auto e = parseParams(query, params)) return fail(kBadRequest, std::move(*e));
  if (!params.ep) return fail(kBadRequest, "ep is required");
  std::vector<Link> links;
  if (auto e = parseLinks(payload, links)) return fail(kBadRequest, std::move(*e));

  RdRegistration reg;
  reg.ep = std::move(*params.ep);
  reg.sector = params.d.value_or(std::string());
  reg.base = params.base ? std::move(*params.base) : std::string(source_base);
  reg.et = params.et.value_or(std::string());
  reg.lifetime = params.lt.value_or(kDefaultLifetime);
  reg.expires = expiryOf(now, reg.lifetime);
  reg.links = std::move(links);

  // RFC 9176 §5: the same (ep, d) replaces the registration and keeps its location.
  auto existing = std::find_if(registrations_.begin(), registrations_.end(), [&](const auto& kv) {
    return kv.second.ep == reg.ep && kv.second.sector == reg.sector;
  });
  RdEvent::Kind kind = RdEvent::Kind::Registered;
  if (existing != registrations_.end()) {
    reg.location = existing->first;
    existing->second = reg;
    kind = RdEvent::Kind::Updated;
  } else {
    // A restored location need not be one restore() could account for in next_id_
    // ("/rd/<19 digits>"): never hand out one that is taken.
    do {
      const std::uint64_t id = location_ids_ ? location_ids_() % kMaxRandomId : next_id_++;
      reg.location = std::string(kLocationPrefix) + std::to_string(id);
    } while (registrations_.find(reg.location) != registrations_.end());
    registrations_.emplace(reg.location, reg);
  }
  RdResult r = done(kCreated);
  r.location = reg.location;
  events.push_back(RdEvent{kind, std::move(reg)});
  return r;
}

RdResult ResourceDirectory::update(std::string_view location, const RdQuery& query,
                                   std::string_view payload, TimePoint now,
                                   std::vector<RdEvent>& events) {
  const auto it = registrations_.find(location);
  if (it == registrations_.end()) return fail(kNotFound, "no such registration");
  RdRegistration& reg = it->second;

  Params params;
  if (auto e = parseParams(query, params)) return fail(kBadRequest, std::move(*e));
  if ((params.ep && *params.ep != reg.ep) || (params.d && *params.d != reg.sector)) {
    return fail(kBadRequest, "ep and d cannot change in an update; register anew");
  }
  std::optional<std::vector<Link>> links;
  if (!payload.empty()) {
    links.emplace();
    if (auto e = parseLinks(payload, *links)) return fail(kBadRequest, std::move(*e));
  }

  // Validated; now change. RFC 9176 §5.3.1: the timeout restarts with the (possibly new)
  // lifetime whether or not lt was given.
  if (params.lt) reg.lifetime = *params.lt;
  if (params.base) reg.base = std::move(*params.base);
  if (params.et) reg.et = std::move(*params.et);
  if (links) reg.links = std::move(*links);
  reg.expires = expiryOf(now, reg.lifetime);
  events.push_back(RdEvent{RdEvent::Kind::Updated, reg});
  return done(kChanged);
}

RdResult ResourceDirectory::remove(std::string_view location, std::vector<RdEvent>& events) {
  const auto it = registrations_.find(location);
  if (it == registrations_.end()) return fail(kNotFound, "no such registration");
  events.push_back(RdEvent{RdEvent::Kind::Removed, std::move(it->second)});
  registrations_.erase(it);
  return done(kDeleted);
}

RdResult ResourceDirectory::read(std::string_view location) const {
  const RdRegistration* reg = find(location);
  if (!reg) return fail(kNotFound, "no such registration");
  return content(serializeLinkFormat(reg->links));
}

RdResult ResourceDirectory::lookupEndpoints(const RdQuery& query) const {
  LookupQuery q;
  if (auto e = parseLookupQuery(query, q)) return fail(kBadRequest, std::move(*e));

  std::vector<const RdRegistration*> matches;
  for (const auto& entry : registrations_) {
    const RdRegistration& reg = entry.second;
    std::vector<Link> resolved;
    if (!q.filters.empty()) {
      resolved.reserve(reg.links.size());
      for (const auto& link : reg.links) resolved.push_back(resolveLink(reg, link));
    }
    // RFC 9176 §6.2: an endpoint matches a criterion if it or any of its links does.
    const bool all = std::all_of(q.filters.begin(), q.filters.end(), [&](const Filter& f) {
      return endpointMatches(f, reg) ||
             std::any_of(resolved.begin(), resolved.end(),
                         [&](const Link& l) { return linkMatches(f, l); });
    });
    if (all) matches.push_back(&reg);
  }
  std::sort(matches.begin(), matches.end(), [](const RdRegistration* a, const RdRegistration* b) {
    return locationLess(a->location, b->location);
  });

  std::string out;
  const auto [first, last] = pageRange(q, matches.size());
  for (std::size_t i = first; i < last; ++i) {
    const RdRegistration& reg = *matches[i];
    if (!out.empty()) out += ',';
    out += '<';
    out += reg.location;
    out += '>';
    appendQuotedParam(out, "ep", reg.ep);
    appendQuotedParam(out, "base", reg.base);
    appendQuotedParam(out, "rt", "core.rd-ep");
    if (!reg.sector.empty()) appendQuotedParam(out, "d", reg.sector);
    if (!reg.et.empty()) appendQuotedParam(out, "et", reg.et);
  }
  return content(std::move(out));
}

RdResult ResourceDirectory::lookupResources(const RdQuery& query) const {
  LookupQuery q;
  if (auto e = parseLookupQuery(query, q)) return fail(kBadRequest, std::move(*e));

  std::vector<Link> matches;
  for (const RdRegistration* reg : inLocationOrder()) {
    for (const auto& link : reg->links) {
      Link resolved = resolveLink(*reg, link);
      // RFC 9176 §6.2: a link matches a criterion if it or its endpoint does.
      const bool all = std::all_of(q.filters.begin(), q.filters.end(), [&](const Filter& f) {
        return linkMatches(f, resolved) || endpointMatches(f, *reg);
      });
      if (all) matches.push_back(std::move(resolved));
    }
  }

  // RFC 9176 §6.1: targets and anchors resolved; a link registered without an anchor is
  // returned without one.
  const auto [first, last] = pageRange(q, matches.size());
  matches.erase(matches.begin() + static_cast<std::ptrdiff_t>(last), matches.end());
  matches.erase(matches.begin(), matches.begin() + static_cast<std::ptrdiff_t>(first));
  return content(serializeLinkFormat(matches));
}

void ResourceDirectory::expire(TimePoint now, std::vector<RdEvent>& events) {
  std::vector<decltype(registrations_)::iterator> due;
  for (auto it = registrations_.begin(); it != registrations_.end(); ++it) {
    if (it->second.expires <= now) due.push_back(it);
  }
  std::sort(due.begin(), due.end(), [](const auto& a, const auto& b) {
    if (a->second.expires != b->second.expires) return a->second.expires < b->second.expires;
    return locationLess(a->first, b->first);
  });
  for (const auto& it : due) {
    events.push_back(RdEvent{RdEvent::Kind::Expired, std::move(it->second)});
    registrations_.erase(it);
  }
}

std::optional<ResourceDirectory::TimePoint> ResourceDirectory::nextExpiry() const {
  std::optional<TimePoint> next;
  for (const auto& [location, reg] : registrations_) {
    if (!next || reg.expires < *next) next = reg.expires;
  }
  return next;
}

const RdRegistration* ResourceDirectory::findEndpoint(std::string_view ep,
                                                      std::string_view d) const {
  for (const auto& [location, reg] : registrations_) {
    if (reg.ep == ep && reg.sector == d) return &reg;
  }
  return nullptr;
}

const RdRegistration* ResourceDirectory::find(std::string_view location) const {
  const auto it = registrations_.find(location);
  return it == registrations_.end() ? nullptr : &it->second;
}

void ResourceDirectory::restore(RdRegistration registration) {
  // (ep, d) stays unique: registerEndpoint() would otherwise update one of the two and
  // lookups would list the endpoint twice.
  for (auto it = registrations_.begin(); it != registrations_.end();) {
    const RdRegistration& other = it->second;
    if (other.location != registration.location && other.ep == registration.ep &&
        other.sector == registration.sector) {
      it = registrations_.erase(it);
    } else {
      ++it;
    }
  }
  if (const std::optional<std::uint64_t> id = locationId(registration.location)) {
    next_id_ = std::max(next_id_, *id + 1);
  }
  std::string location = registration.location;
  registrations_.insert_or_assign(std::move(location), std::move(registration));
}

std::vector<RdRegistration> ResourceDirectory::registrations() const {
  std::vector<RdRegistration> out;
  const std::vector<const RdRegistration*> ordered = inLocationOrder();
  out.reserve(ordered.size());
  for (const RdRegistration* reg : ordered) out.push_back(*reg);
  return out;
}

std::vector<const RdRegistration*> ResourceDirectory::inLocationOrder() const {
  std::vector<const RdRegistration*> out;
  out.reserve(registrations_.size());
  for (const auto& entry : registrations_) out.push_back(&entry.second);
  std::sort(out.begin(), out.end(), [](const RdRegistration* a, const RdRegistration* b) {
    return locationLess(a->location, b->location);
  });
  return out;
}

}  // namespace coap2mqtt::registry
