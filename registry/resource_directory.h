#pragma once
// RFC 9176 CoRE Resource Directory, the pure part: registrations, lifetimes and lookups.
// The gateway maps CoAP requests on /rd, /rd/<id>, /rd-lookup/{ep,res} onto these calls;
// nothing here does I/O or reads a clock.
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "registry/link_format.h"

namespace coap2mqtt::registry {

// Uri-Query options, each split at the first '=' ("obs" alone → {"obs", ""}).
using RdQuery = std::vector<std::pair<std::string, std::string>>;

struct RdResult {
  unsigned code = 0;     // CoAP code as class*100+detail: 201, 204, 202, 205, 400, 404, 415
  std::string location;  // for 201: the registration resource, e.g. "/rd/3"
  std::string payload;   // 205: link-format; 4.xx: a short diagnostic text
  unsigned content_format = 40;
};

struct RdRegistration {
  std::string location;  // "/rd/<n>", stable for the registration's life
  std::string ep;        // endpoint name (required)
  std::string sector;    // d=, may be empty
  std::string base;      // base= or else the request's source, e.g. "coap://127.0.0.1:40123"
  std::string et;        // endpoint type, may be empty
  std::chrono::seconds lifetime{90000};  // lt=, RFC 9176 default 25 h
  std::chrono::steady_clock::time_point expires{};
  std::vector<Link> links;
};

struct RdEvent {
  enum class Kind { Registered, Updated, Removed, Expired };
  Kind kind;
  RdRegistration registration;  // state after the change (before, for Removed/Expired)
};

class ResourceDirectory {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;

  // POST /rd?ep=…[&d=…][&lt=…][&base=…][&et=…] with a link-format body (ct 40 or absent).
  // 2.01 with the location. A registration with the same (ep, d) replaces the old one and
  // keeps its location. 4.00 for a missing ep, bad lt (not 1..2^32-1 s), bad base, bad
  // link-format; 4.15 for another content-format.
  RdResult registerEndpoint(const RdQuery& query, std::string_view payload,
                            std::optional<unsigned> content_format, std::string_view source_base,
                            TimePoint now, std::vector<RdEvent>& events);
  // POST /rd/<n>[?lt=…][&base=…]: refreshes the lifetime; a non-empty link-format body
  // replaces the links (an extension; RFC 9176 updates carry no body). 2.04 or 4.04.
  RdResult update(std::string_view location, const RdQuery& query, std::string_view payload,
                  TimePoint now, std::vector<RdEvent>& events);
  // DELETE /rd/<n>: 2.02 or 4.04.
  RdResult remove(std::string_view location, std::vector<RdEvent>& events);
  // GET /rd/<n>: the registration's links, 2.05 or 4.04.
  RdResult read(std::string_view location) const;

  // GET /rd-lookup/ep?…: one link per matching registration,
  //   </rd/3>;ep="node7";base="coap://…";rt="core.rd-ep"[;d="…"][;et="…"]
  // Filters: ep, d, base, et, href (the location) and any link attribute; a value ending in
  // '*' is a prefix match; several filters must all match. page/count paginate.
  RdResult lookupEndpoints(const RdQuery& query) const;
  // GET /rd-lookup/res?…: every matching resource link, target (and anchor, if the link
  // has one) resolved against the registration's base; a link registered without an anchor
  // is returned without one (RFC 9176 §6.1). Filters as above, on the link's attributes,
  // plus ep/d/base/et/href of its registration.
  RdResult lookupResources(const RdQuery& query) const;

  // Removes every registration whose lifetime has run out by `now`; an Expired event each.
  void expire(TimePoint now, std::vector<RdEvent>& events);
  std::optional<TimePoint> nextExpiry() const;

  // Where new locations' numbers come from: sequential (1, 2, ...) unless set. A gateway
  // on a LAN sets a random source (RFC 9176 §7: a location must not be guessable, or anyone
  // could update or delete a registration they did not make).
  void setLocationIds(std::function<std::uint64_t()> next) { location_ids_ = std::move(next); }

  const RdRegistration* find(std::string_view location) const;
  // The registration of endpoint `ep` in sector `d`, if any.
  const RdRegistration* findEndpoint(std::string_view ep, std::string_view d) const;
  std::size_t size() const { return registrations_.size(); }

  // Persistence. The caller saves registrations (after each event) and, after a restart,
  // hands them back through restore() with `expires` converted to this run's clock.
  //
  // restore() inserts `registration` as it is: location, lifetime, expires and links are
  // kept and nothing is validated; no event. A registration already at that location is
  // replaced, and so is one at another location with the same (ep, d), which keeps
  // (ep, d) unique as registerEndpoint() does: the one restored last wins. For a location
  // "/rd/<n>" (n decimal, no leading zeros, at most 18 digits) later registerEndpoint()
  // calls never hand out n or anything below it again, and never a location in use. A
  // registration already past its expiry goes at the next expire() with an Expired event,
  // like any other.
  void restore(RdRegistration registration);
  // Every registration, ordered by location: "/rd/<n>" by n, then any other location by
  // its text. The order of lookups and of registerEndpoint()'s locations.
  std::vector<RdRegistration> registrations() const;

 private:
  std::vector<const RdRegistration*> inLocationOrder() const;

  std::map<std::string, RdRegistration, std::less<>> registrations_;  // by location
  std::uint64_t next_id_ = 1;
  std::function<std::uint64_t()> location_ids_;
  // Random ids stay within what restore() reads back as "/rd/<n>" (18 digits).
  static constexpr std::uint64_t kMaxRandomId = 1'000'000'000'000'000'000ull;
};

}  // namespace coap2mqtt::registry
