// libFuzzer target for the RFC 6690 parser and targetPath(). Besides "no crash, no UB, no
// hang", it checks the parser's promises: errors carry no links and point inside the input,
// caps hold, and every accepted document survives a serialise/re-parse round trip.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <string>
#include <string_view>

#include "registry/link_format.h"
#include "tests/fuzz/fuzz_check.h"

namespace coap2mqtt::registry {
namespace {

using fuzz::check;

// Every value re-emitted as a quoted-string; the parser accepts that for all attributes.
std::string serialise(const LinkFormatResult& r) {
  std::string out;
  for (const auto& link : r.links) {
    if (!out.empty()) out += ",\n";  // also exercises the whitespace leniency
    out += '<' + link.target + '>';
    for (const auto& a : link.attributes) {
      out += ';' + a.name;
      if (!a.value) continue;
      out += "=\"";
      for (char ch : *a.value) {
        if (ch == '"' || ch == '\\') out += '\\';
        out += ch;
      }
      out += '"';
    }
  }
  return out;
}

bool sameLink(const Link& a, const Link& b) {
  if (a.target != b.target || a.attributes.size() != b.attributes.size()) return false;
  for (std::size_t i = 0; i < a.attributes.size(); ++i) {
    if (a.attributes[i].name != b.attributes[i].name ||
        a.attributes[i].value != b.attributes[i].value) {
      return false;
    }
  }
  return a.rt == b.rt && a.ifs == b.ifs && a.ct == b.ct && a.obs == b.obs && a.sz == b.sz &&
         a.title == b.title && a.anchor == b.anchor;
}

void checkPath(std::string_view target) {
  const auto path = targetPath(target);
  if (!path) return;
  check(!path->empty() && (*path)[0] == '/', "targetPath result starts with '/'");
  check(path->find_first_of("?#") == std::string::npos, "targetPath drops query and fragment");
  // No segment may be ".." in any spelling.
  std::size_t start = 1;
  while (start <= path->size()) {
    std::size_t end = path->find('/', start);
    if (end == std::string::npos) end = path->size();
    std::string seg(path->substr(start, end - start));
    for (std::size_t p; (p = seg.find("%2e")) != std::string::npos ||
                        (p = seg.find("%2E")) != std::string::npos;) {
      seg.replace(p, 3, ".");
    }
    check(seg != "..", "targetPath refuses '..'");
    start = end + 1;
  }
}

void checkResult(std::string_view text, const LinkFormatResult& r) {
  if (!r.ok()) {
    check(r.links.empty(), "error results carry no links");
    check(r.error->offset <= text.size(), "error offset inside the input");
    check(!r.error->message.empty(), "error has a message");
    return;
  }
  check(r.links.size() <= kMaxLinks, "link cap");
  for (const auto& link : r.links) {
    check(link.attributes.size() <= kMaxAttributesPerLink, "attribute cap");
    for (const auto& a : link.attributes) {
      check(!a.name.empty(), "attribute names are not empty");
      for (char ch : a.name) check(!(ch >= 'A' && ch <= 'Z'), "attribute names are lower-case");
      check(link.find(a.name) != nullptr, "find() sees every attribute");
    }
    checkPath(link.target);
  }
}

}  // namespace
}  // namespace coap2mqtt::registry

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace coap2mqtt::registry;
  const std::string_view text(reinterpret_cast<const char*>(data), size);

  const auto r = parseLinkFormat(text);
  checkResult(text, r);
  if (r.ok()) {
    const std::string again = serialise(r);
    const auto r2 = parseLinkFormat(again, std::numeric_limits<std::size_t>::max());
    check(r2.ok(), "a serialised result parses again");
    check(r2.links.size() == r.links.size(), "round trip keeps the link count");
    for (std::size_t i = 0; i < r.links.size(); ++i) {
      check(sameLink(r.links[i], r2.links[i]), "round trip keeps every link");
    }
  }

  // The max_bytes limit is exact.
  if (size > 0) check(!parseLinkFormat(text, size - 1).ok(), "max_bytes is enforced");

  // targetPath is public and takes arbitrary text too.
  checkPath(text);
  return 0;
}
