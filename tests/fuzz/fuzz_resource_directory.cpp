// libFuzzer target for registry/resource_directory: what any host on the LAN can send to the
// gateway's /rd and /rd-lookup resources (Uri-Query options and link-format bodies), as a
// sequence of operations on one directory. Besides "no crash, no UB, no hang", it checks:
//  - every answer has a code the RD documents, and a 2.01 a location that find() knows,
//    holding the ep and d that were asked for;
//  - a 2.05 lookup body is link-format that parses again, and names registered locations;
//  - every event names a registration of the kind its operation can make;
//  - update/remove of an unknown location is 4.04 and changes nothing; after a remove the
//    location is gone; expiry removes exactly what outlived its lifetime.
//
// Input: operations separated by '\0'. Each operation: byte 0 the kind (mod 8), byte 1 an
// argument (which known location, seconds to advance, which source), then the Uri-Query
// text ('&'-separated, each split at the first '=') up to '\1', then the body.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "registry/link_format.h"
#include "registry/resource_directory.h"
#include "tests/fuzz/fuzz_check.h"

namespace coap2mqtt::registry {
namespace {

using fuzz::check;

RdQuery splitQuery(std::string_view text) {
  RdQuery query;
  while (!text.empty()) {
    const auto amp = text.find('&');
    const std::string_view option = text.substr(0, amp);
    const auto eq = option.find('=');
    if (eq == std::string_view::npos) {
      query.emplace_back(std::string(option), "");
    } else {
      query.emplace_back(std::string(option.substr(0, eq)), std::string(option.substr(eq + 1)));
    }
    if (amp == std::string_view::npos) break;
    text.remove_prefix(amp + 1);
  }
  return query;
}

std::string value(const RdQuery& q, std::string_view key) {
  for (const auto& [k, v] : q) {
    if (k == key) return v;
  }
  return {};
}

const std::set<unsigned> kCodes = {201, 202, 204, 205, 400, 404, 415};

void checkLookup(const ResourceDirectory& rd, const RdResult& r) {
  check(kCodes.count(r.code) == 1, "lookup code documented");
  if (r.code != 205) return;
  check(r.content_format == 40, "lookups answer link-format");
  const auto parsed = parseLinkFormat(r.payload, r.payload.size() + 1);
  check(parsed.ok(), "a lookup body parses as link-format");
  (void)rd;
}

}  // namespace
}  // namespace coap2mqtt::registry

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace coap2mqtt::registry;
  using Clock = std::chrono::steady_clock;
  std::string_view input(reinterpret_cast<const char*>(data), size);

  ResourceDirectory rd;
  std::uint64_t next_id = 1;
  rd.setLocationIds([&] { return next_id++; });
  Clock::time_point now{};
  std::vector<std::string> locations;  // every location ever handed out
  const char* sources[] = {"coap://127.0.0.1:5683", "coap://[::1]:40000", "coap://127.0.0.2:1"};

  while (!input.empty()) {
    const auto end = input.find('\0');
    std::string_view op = input.substr(0, end);
    input.remove_prefix(end == std::string_view::npos ? input.size() : end + 1);
    if (op.size() < 2) continue;
    const unsigned kind = static_cast<unsigned char>(op[0]) % 8;
    const unsigned arg = static_cast<unsigned char>(op[1]);
    op.remove_prefix(2);
    const auto split = op.find('\1');
    const RdQuery query = splitQuery(op.substr(0, split));
    const std::string_view body =
        split == std::string_view::npos ? std::string_view{} : op.substr(split + 1);
    const std::string location = locations.empty() || arg >= 200
                                     ? std::string(op.substr(0, split))
                                     : locations[arg % locations.size()];
    std::vector<RdEvent> events;
    const std::size_t before = rd.size();

    switch (kind) {
      case 0:
      case 1: {
        const std::optional<unsigned> ct =
            arg % 4 == 0 ? std::nullopt : std::optional<unsigned>(arg % 4 == 1 ? 40 : arg);
        const auto r = rd.registerEndpoint(query, body, ct, sources[arg % 3], now, events);
        check(kCodes.count(r.code) == 1, "register code documented");
        if (r.code == 201) {
          const RdRegistration* reg = rd.find(r.location);
          check(reg != nullptr, "a 2.01 location is found");
          check(reg->ep == value(query, "ep"), "the registration holds the asked ep");
          check(reg->sector == value(query, "d"), "the registration holds the asked d");
          check(rd.findEndpoint(reg->ep, reg->sector) == reg, "findEndpoint finds it");
          check(events.size() == 1, "one event per registration");
          locations.push_back(r.location);
        } else {
          check(events.empty() && rd.size() == before, "a refused registration changes nothing");
        }
        break;
      }
      case 2: {
        const bool known = rd.find(location) != nullptr;
        const auto r = rd.update(location, query, body, now, events);
        check(kCodes.count(r.code) == 1, "update code documented");
        if (!known) check(r.code == 404 && events.empty(), "unknown location: 4.04");
        check(rd.size() == before, "an update neither adds nor removes");
        break;
      }
      case 3: {
        const bool known = rd.find(location) != nullptr;
        const auto r = rd.remove(location, events);
        check(r.code == (known ? 202u : 404u), "remove: 2.02 if known, else 4.04");
        check(rd.find(location) == nullptr, "removed means gone");
        check(rd.size() == before - (known ? 1 : 0), "remove takes exactly one");
        break;
      }
      case 4: {
        const auto r = rd.read(location);
        check(kCodes.count(r.code) == 1, "read code documented");
        break;
      }
      case 5:
        checkLookup(rd, rd.lookupEndpoints(query));
        break;
      case 6:
        checkLookup(rd, rd.lookupResources(query));
        break;
      case 7: {
        now += std::chrono::seconds(arg * arg * 16);
        const auto next = rd.nextExpiry();
        rd.expire(now, events);
        for (const auto& e : events) {
          check(e.kind == RdEvent::Kind::Expired, "expiry only expires");
          check(rd.find(e.registration.location) == nullptr, "expired means gone");
          check(e.registration.expires <= now, "only what outlived its lifetime expires");
        }
        check(rd.size() == before - events.size(), "every expiry is an event");
        if (next && *next > now) check(events.empty(), "nothing expires before nextExpiry");
        const auto after = rd.nextExpiry();
        check(!after || *after > now, "what is left expires later");
        break;
      }
    }
  }
  return 0;
}
