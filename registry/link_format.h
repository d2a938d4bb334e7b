#pragma once
// RFC 6690 CoRE Link Format: a pure parser, no I/O. Hostile input yields an error value.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace coap2mqtt::registry {

struct LinkAttribute {
  std::string name;                  // lower-cased parameter name, e.g. "rt"
  std::optional<std::string> value;  // unquoted, escapes resolved; nullopt for bare "obs"
};

struct Link {
  std::string target;                     // URI-reference exactly as written between '<' and '>'
  std::vector<LinkAttribute> attributes;  // every attribute in order, unknown ones included

  // Convenience views derived from `attributes` by the parser.
  std::vector<std::string> rt;   // space-separated values of every rt= split into items
  std::vector<std::string> ifs;  // likewise for if=
  std::vector<unsigned> ct;      // ct values (RFC 7252 allows a quoted list)
  bool obs = false;
  std::optional<std::size_t> sz;  // at most kMaxLinkSz; see parseLinkFormat
  std::optional<std::string> title;
  std::optional<std::string> anchor;

  // First value of attribute `name`, if present.
  const LinkAttribute* find(std::string_view name) const;
};

struct LinkFormatError {
  std::size_t offset = 0;  // byte offset into the input where parsing failed
  std::string message;     // what was expected
};

struct LinkFormatResult {
  std::vector<Link> links;
  std::optional<LinkFormatError> error;  // set => links is empty
  bool ok() const { return !error.has_value(); }
};

// Hard caps so a hostile document cannot make us allocate without bound; exceeding either
// is an error, not a silent truncation.
inline constexpr std::size_t kMaxLinks = 4096;
inline constexpr std::size_t kMaxAttributesPerLink = 64;
// The largest sz the parser reports: INT64_MAX, what the registry's database can hold
// (and more than any CoAP resource can be: Size2 is at most 2^32-1).
inline constexpr std::size_t kMaxLinkSz = std::min<std::uint64_t>(
    std::numeric_limits<std::size_t>::max(), std::numeric_limits<std::int64_t>::max());

// Parses a whole link-format document (RFC 6690 §2). Never throws, never loops forever;
// linear in the input size. Inputs larger than `max_bytes` are rejected.
// Leniency: optional whitespace (SP, HTAB, CR, LF) is accepted around ',' and ';' and at
// either end of the document. Anything else outside the ABNF is an error: no whitespace
// around '=', no empty link-values (",,", trailing ','), no empty parameters (";;").
// Known attributes are checked: ct is a content-format (0-65535) or a quoted
// space-separated list of them, sz a cardinal; rt/if/ct/sz/title/anchor need a value.
// An sz that is a well-formed cardinal above kMaxLinkSz (a datagram claiming
// sz=9223372036854775808 or 99999999999999999999999) is not an error but no size: it stays
// in `attributes` as written and leaves `sz` to a later sz attribute of the link, if any.
// Any value may be a token or a quoted-string (RFC 6690 wants title/anchor quoted; we do
// not insist). Quoted strings must be valid UTF-8 without control bytes other than HTAB.
// For title, anchor and sz the first occurrence wins (for sz, the first within
// kMaxLinkSz); every occurrence stays in attributes.
LinkFormatResult parseLinkFormat(std::string_view text,
                                 std::size_t max_bytes = std::size_t{64} * 1024);

// Writes `links` as a link-format document (RFC 6690 §2), the inverse of parseLinkFormat:
// links joined by ',' without whitespace, each "<target>" followed by ";name" (no value) or
// ";name=value" for every entry of `attributes`, in order. A value goes out as a ptoken
// when it can, else as a quoted-string with '"' and '\' escaped; anchor and title are
// always quoted, as RFC 6690's ABNF has them. Only `target` and `attributes` are written:
// the convenience views (rt, ifs, ct, obs, sz, title, anchor) are derived from the
// attributes by the parser and ignored here.
// Round trip: for links that parseLinkFormat produced, parsing the output yields the same
// targets and attributes (and so the same views). Caller-built links round-trip only if
// they could have been parsed: a target of URI characters (no '>'), lower-case parmname
// names (optionally ending in '*'), values of valid UTF-8 without control characters other
// than HTAB, and well-formed values for the attributes the parser checks (ct, sz, ...).
// The output can be a little longer than the parsed input (title/anchor gain quotes), so
// parse it back with a max_bytes that allows for that.
std::string serializeLinkFormat(const std::vector<Link>& links);

// The resource path for a link target relative to the device: "/a/b" for "</a/b>",
// "a/b" -> "/a/b", "coap://host:5683/a/b?x" -> "/a/b" (absolute URIs yield their path,
// whatever the host). "" and "/" -> "/". Query and fragment are dropped, "." segments
// removed, percent-encoding left as is. Returns nullopt for targets with a ".." segment
// (also when percent-encoded; we refuse path traversal), for absolute URIs whose path is
// not rooted ("urn:x"), and for text that is not a URI-reference.
std::optional<std::string> targetPath(std::string_view target);

}  // namespace coap2mqtt::registry
