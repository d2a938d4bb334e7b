// RFC 9176 Resource Directory: registration, update, removal, expiry and the lookup
// interface. Cases follow the RFC's own examples (§5, §5.3.1, §6.3, §6.4 and Appendix A's
// RFC 6690 payload); time is a fixed steady_clock point moved by hand.
#include <gtest/gtest.h>

#include <chrono>
#include <initializer_list>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "registry/link_format.h"
#include "registry/resource_directory.h"

namespace coap2mqtt::registry {
namespace {

using namespace std::chrono_literals;
using TimePoint = ResourceDirectory::TimePoint;
using Kind = RdEvent::Kind;

const TimePoint kT0 = TimePoint{} + 1000h;
constexpr std::string_view kSource = "coap://[2001:db8::1]:40123";

// RFC 9176 §5 (and RFC 6690 §5) sensor payload, as the brief and many devices write it.
constexpr std::string_view kNode1Payload =
    R"(</sensors/temp>;rt="temperature-c";if="sensor",</sensors/light>;rt="light-lux";if="sensor")";

// RFC 9176 §5 "Example registration payload".
constexpr std::string_view kRfcPayload =
    "</sensors/temp>;rt=temperature-c;if=sensor,\n"
    "<http://www.example.com/sensors/temp>;\n"
    "  anchor=\"/sensors/temp\";rel=describedby";

// RFC 6690 §5, the 6th response, which RFC 9176 §6.3 registers from two endpoints.
constexpr std::string_view kRfc6690Payload =
    "</sensors>;ct=40;title=\"Sensor Index\",\n"
    "</sensors/temp>;rt=\"temperature-c\";if=\"sensor\",\n"
    "</sensors/light>;rt=\"light-lux\";if=\"sensor\",\n"
    "<http://www.example.com/sensors/t123>;anchor=\"/sensors/temp\";rel=\"describedby\",\n"
    "</t>;anchor=\"/sensors/temp\";rel=\"alternate\"";

std::string kindName(Kind k) {
  switch (k) {
    case Kind::Registered:
      return "Registered";
    case Kind::Updated:
      return "Updated";
    case Kind::Removed:
      return "Removed";
    case Kind::Expired:
      return "Expired";
  }
  return "?";
}

// "Kind location ep" per event, for compact expectations.
std::vector<std::string> describe(const std::vector<RdEvent>& events) {
  std::vector<std::string> out;
  out.reserve(events.size());
  for (const auto& e : events) {
    out.push_back(kindName(e.kind) + ' ' + e.registration.location + ' ' + e.registration.ep);
  }
  return out;
}

// Target and attributes only; the convenience views derive from them.
bool sameLinks(const std::vector<Link>& a, const std::vector<Link>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (a[i].target != b[i].target) return false;
    if (a[i].attributes.size() != b[i].attributes.size()) return false;
    for (std::size_t j = 0; j < a[i].attributes.size(); ++j) {
      if (a[i].attributes[j].name != b[i].attributes[j].name ||
          a[i].attributes[j].value != b[i].attributes[j].value) {
        return false;
      }
    }
  }
  return true;
}

class RdTest : public ::testing::Test {
 protected:
  RdResult reg(const RdQuery& query, std::string_view payload, TimePoint now = kT0,
               std::string_view source = kSource, std::optional<unsigned> cf = 40u) {
    return rd_.registerEndpoint(query, payload, cf, source, now, events_);
  }
  std::string ep(const RdQuery& query) {
    const RdResult r = rd_.lookupEndpoints(query);
    EXPECT_EQ(r.code, 205u) << r.payload;
    EXPECT_EQ(r.content_format, 40u);
    return r.payload;
  }
  std::string res(const RdQuery& query) {
    const RdResult r = rd_.lookupResources(query);
    EXPECT_EQ(r.code, 205u) << r.payload;
    EXPECT_EQ(r.content_format, 40u);
    return r.payload;
  }

  ResourceDirectory rd_;
  std::vector<RdEvent> events_;
};

// ---------------------------------------------------------------------------------------
// Registration (RFC 9176 §5)

TEST_F(RdTest, RegistersNode1WithDefaults) {
  const RdResult r = reg({{"ep", "node1"}}, kNode1Payload);
  EXPECT_EQ(r.code, 201u);
  EXPECT_EQ(r.location, "/rd/1");
  ASSERT_EQ(describe(events_), std::vector<std::string>{"Registered /rd/1 node1"});

  const RdRegistration* reg = rd_.find("/rd/1");
  ASSERT_NE(reg, nullptr);
  EXPECT_EQ(reg->ep, "node1");
  EXPECT_EQ(reg->sector, "");
  EXPECT_EQ(reg->base, kSource);  // no base= : the request's source
  EXPECT_EQ(reg->et, "");
  EXPECT_EQ(reg->lifetime, 90000s);  // RFC 9176 default, 25 h
  EXPECT_EQ(reg->expires, kT0 + 90000s);
  ASSERT_EQ(reg->links.size(), 2u);
  EXPECT_EQ(reg->links[0].target, "/sensors/temp");
  EXPECT_EQ(reg->links[0].rt, std::vector<std::string>{"temperature-c"});
  EXPECT_EQ(reg->links[1].target, "/sensors/light");
  EXPECT_EQ(events_[0].registration.links.size(), 2u);
  EXPECT_EQ(rd_.size(), 1u);
}

TEST_F(RdTest, RegistersWithEveryParameter) {
  const RdResult r = reg({{"ep", "node7"},
                          {"d", "floor-3"},
                          {"lt", "60"},
                          {"base", "coap://127.0.0.1:5683"},
                          {"et", "tag:example.com,2020:platform"},
                          {"x-unknown", "kept-out"}},
                         "</t>;obs");
  ASSERT_EQ(r.code, 201u) << r.payload;
  const RdRegistration* reg = rd_.find(r.location);
  ASSERT_NE(reg, nullptr);
  EXPECT_EQ(reg->sector, "floor-3");
  EXPECT_EQ(reg->base, "coap://127.0.0.1:5683");
  EXPECT_EQ(reg->et, "tag:example.com,2020:platform");
  EXPECT_EQ(reg->lifetime, 60s);
  EXPECT_EQ(reg->expires, kT0 + 60s);
  ASSERT_EQ(reg->links.size(), 1u);
  EXPECT_TRUE(reg->links[0].obs);
}

TEST_F(RdTest, EmptyPayloadRegistersNoLinks) {
  const RdResult r = reg({{"ep", "bare"}}, "", kT0, kSource, std::nullopt);
  EXPECT_EQ(r.code, 201u);
  ASSERT_NE(rd_.find(r.location), nullptr);
  EXPECT_TRUE(rd_.find(r.location)->links.empty());
}

TEST_F(RdTest, SameEpAndSectorReplacesAndKeepsLocation) {
  ASSERT_EQ(reg({{"ep", "node1"}, {"lt", "100"}}, kNode1Payload).location, "/rd/1");
  ASSERT_EQ(reg({{"ep", "node1"}, {"d", "floor-3"}}, "</a>").location, "/rd/2");  // other d
  ASSERT_EQ(reg({{"ep", "node2"}}, "</b>").location, "/rd/3");

  const RdResult again = reg({{"ep", "node1"}, {"base", "coap://10.0.0.9"}}, "</only>", kT0 + 50s);
  EXPECT_EQ(again.code, 201u);  // RFC 9176 §5: same code and location as the original
  EXPECT_EQ(again.location, "/rd/1");
  EXPECT_EQ(describe(events_),
            (std::vector<std::string>{"Registered /rd/1 node1", "Registered /rd/2 node1",
                                      "Registered /rd/3 node2", "Updated /rd/1 node1"}));
  EXPECT_EQ(rd_.size(), 3u);
  const RdRegistration* reg1 = rd_.find("/rd/1");
  ASSERT_NE(reg1, nullptr);
  ASSERT_EQ(reg1->links.size(), 1u);
  EXPECT_EQ(reg1->links[0].target, "/only");
  EXPECT_EQ(reg1->base, "coap://10.0.0.9");
  EXPECT_EQ(reg1->lifetime, 90000s);  // parameters replaced too, lt back to the default
  EXPECT_EQ(reg1->expires, kT0 + 50s + 90000s);
  EXPECT_EQ(events_.back().registration.links.size(), 1u);
  ASSERT_NE(rd_.find("/rd/2"), nullptr);
  EXPECT_EQ(rd_.find("/rd/2")->links[0].target, "/a");  // the other sector is untouched
}

TEST_F(RdTest, LocationsAreNeverReused) {
  EXPECT_EQ(reg({{"ep", "a"}}, "").location, "/rd/1");
  EXPECT_EQ(reg({{"ep", "b"}}, "").location, "/rd/2");
  EXPECT_EQ(rd_.remove("/rd/2", events_).code, 202u);
  EXPECT_EQ(reg({{"ep", "c"}}, "").location, "/rd/3");
  rd_.expire(kT0 + 90000s, events_);
  EXPECT_EQ(rd_.size(), 0u);
  EXPECT_EQ(reg({{"ep", "b"}}, "").location, "/rd/4");
}

// Every rejected registration: 4.00 with a diagnostic, nothing stored, no event.
struct BadRegistration {
  const char* name;
  RdQuery query;
  std::string payload;
};

// ctest lists each case by its name, not by the struct's bytes.
void PrintTo(const BadRegistration& c, std::ostream* os) {
  *os << c.name;
}

class RdBadRegistrationTest : public ::testing::TestWithParam<BadRegistration> {};

TEST_P(RdBadRegistrationTest, IsBadRequest) {
  ResourceDirectory rd;
  std::vector<RdEvent> events;
  const auto& c = GetParam();
  const RdResult r = rd.registerEndpoint(c.query, c.payload, 40u, kSource, kT0, events);
  EXPECT_EQ(r.code, 400u) << r.payload;
  EXPECT_FALSE(r.payload.empty());
  EXPECT_TRUE(r.location.empty());
  EXPECT_TRUE(events.empty());
  EXPECT_EQ(rd.size(), 0u);
}

INSTANTIATE_TEST_SUITE_P(
    Rd, RdBadRegistrationTest,
    ::testing::Values(
        BadRegistration{"NoEp", {{"lt", "60"}}, "</t>"},
        BadRegistration{"EmptyEp", {{"ep", ""}}, "</t>"},
        BadRegistration{"Ep64Bytes", {{"ep", std::string(64, 'e')}}, "</t>"},
        BadRegistration{"EpTwice", {{"ep", "a"}, {"ep", "b"}}, "</t>"},
        BadRegistration{"EpNul", {{"ep", std::string("a\0b", 3)}}, "</t>"},
        BadRegistration{"EpC0Control", {{"ep", "a\x01"}}, "</t>"},
        BadRegistration{"EpNewline", {{"ep", "a\nb"}}, "</t>"},
        BadRegistration{"EpDel", {{"ep", "a\x7f"}}, "</t>"},
        BadRegistration{"EpC1Control", {{"ep", "a\xc2\x80"}}, "</t>"},
        BadRegistration{"EpC1ControlLast", {{"ep", "a\xc2\x9f"}}, "</t>"},
        BadRegistration{"EpBadUtf8", {{"ep", "a\xff"}}, "</t>"},
        BadRegistration{"EpTruncatedUtf8", {{"ep", "a\xc3"}}, "</t>"},
        BadRegistration{"EmptyD", {{"ep", "a"}, {"d", ""}}, "</t>"},
        BadRegistration{"D64Bytes", {{"ep", "a"}, {"d", std::string(64, 'd')}}, "</t>"},
        BadRegistration{"DControl", {{"ep", "a"}, {"d", "x\ty"}}, "</t>"},
        BadRegistration{"EtControl", {{"ep", "a"}, {"et", "x\x1b"}}, "</t>"},
        BadRegistration{"EtTwice", {{"ep", "a"}, {"et", "x"}, {"et", "y"}}, "</t>"},
        BadRegistration{"LtZero", {{"ep", "a"}, {"lt", "0"}}, "</t>"},
        BadRegistration{"LtTooBig", {{"ep", "a"}, {"lt", "4294967296"}}, "</t>"},
        BadRegistration{"LtHuge", {{"ep", "a"}, {"lt", "99999999999999999999999"}}, "</t>"},
        BadRegistration{"LtNegative", {{"ep", "a"}, {"lt", "-5"}}, "</t>"},
        BadRegistration{"LtPlus", {{"ep", "a"}, {"lt", "+5"}}, "</t>"},
        BadRegistration{"LtEmpty", {{"ep", "a"}, {"lt", ""}}, "</t>"},
        BadRegistration{"LtText", {{"ep", "a"}, {"lt", "abc"}}, "</t>"},
        BadRegistration{"LtSpace", {{"ep", "a"}, {"lt", " 60"}}, "</t>"},
        BadRegistration{"LtFraction", {{"ep", "a"}, {"lt", "1.5"}}, "</t>"},
        BadRegistration{"LtTwice", {{"ep", "a"}, {"lt", "1"}, {"lt", "2"}}, "</t>"},
        BadRegistration{"BaseHttp", {{"ep", "a"}, {"base", "http://h"}}, "</t>"},
        BadRegistration{"BaseNoScheme", {{"ep", "a"}, {"base", "h:5683"}}, "</t>"},
        BadRegistration{"BaseOneSlash", {{"ep", "a"}, {"base", "coap:/h"}}, "</t>"},
        BadRegistration{"BaseNoHost", {{"ep", "a"}, {"base", "coap://"}}, "</t>"},
        BadRegistration{"BaseOnlyPort", {{"ep", "a"}, {"base", "coap://:5683"}}, "</t>"},
        BadRegistration{"BaseSlash", {{"ep", "a"}, {"base", "coap://h/"}}, "</t>"},
        BadRegistration{"BasePath", {{"ep", "a"}, {"base", "coap://h/p"}}, "</t>"},
        BadRegistration{"BaseQuery", {{"ep", "a"}, {"base", "coap://h?q"}}, "</t>"},
        BadRegistration{"BaseFragment", {{"ep", "a"}, {"base", "coap://h#f"}}, "</t>"},
        BadRegistration{"BaseUserinfo", {{"ep", "a"}, {"base", "coap://u@h"}}, "</t>"},
        BadRegistration{"BaseEmptyPort", {{"ep", "a"}, {"base", "coap://h:"}}, "</t>"},
        BadRegistration{"BasePortTooBig", {{"ep", "a"}, {"base", "coap://h:65536"}}, "</t>"},
        BadRegistration{"BasePortText", {{"ep", "a"}, {"base", "coap://h:ab"}}, "</t>"},
        BadRegistration{"BaseZoneId", {{"ep", "a"}, {"base", "coap://[fe80::1%25eth0]"}}, "</t>"},
        BadRegistration{"BaseOpenBracket", {{"ep", "a"}, {"base", "coap://[::1"}}, "</t>"},
        BadRegistration{"BaseEmptyBrackets", {{"ep", "a"}, {"base", "coap://[]"}}, "</t>"},
        BadRegistration{"BaseSpace", {{"ep", "a"}, {"base", "coap://a b"}}, "</t>"},
        BadRegistration{"BaseBadPercent", {{"ep", "a"}, {"base", "coap://a%zz"}}, "</t>"},
        BadRegistration{
            "BaseTwice", {{"ep", "a"}, {"base", "coap://h"}, {"base", "coap://i"}}, "</t>"},
        BadRegistration{"LinkFormatUnclosed", {{"ep", "a"}}, "</t"},
        BadRegistration{"LinkFormatTrailingComma", {{"ep", "a"}}, "</t>,"},
        BadRegistration{"LinkFormatNotLinks", {{"ep", "a"}}, "{\"json\":1}"},
        BadRegistration{"LinkFormatBadCt", {{"ep", "a"}}, "</t>;ct=abc"}),
    [](const auto& info) { return std::string(info.param.name); });

// The edges of the accepted ranges.
struct GoodRegistration {
  const char* name;
  RdQuery query;
};

void PrintTo(const GoodRegistration& c, std::ostream* os) {
  *os << c.name;
}

class RdGoodRegistrationTest : public ::testing::TestWithParam<GoodRegistration> {};

TEST_P(RdGoodRegistrationTest, IsCreated) {
  ResourceDirectory rd;
  std::vector<RdEvent> events;
  const RdResult r = rd.registerEndpoint(GetParam().query, "</t>", 40u, kSource, kT0, events);
  EXPECT_EQ(r.code, 201u) << r.payload;
  EXPECT_EQ(rd.size(), 1u);
}

INSTANTIATE_TEST_SUITE_P(
    Rd, RdGoodRegistrationTest,
    ::testing::Values(
        GoodRegistration{"Ep63Bytes", {{"ep", std::string(63, 'e')}}},
        GoodRegistration{"EpUtf8",
                         {{"ep",
                           "k\xc3\xbc"
                           "che"}}},
        GoodRegistration{"EpNbspIsNotControl", {{"ep", "a\xc2\xa0"}}},
        GoodRegistration{"D63Bytes", {{"ep", "a"}, {"d", std::string(63, 'd')}}},
        GoodRegistration{"LtOne", {{"ep", "a"}, {"lt", "1"}}},
        GoodRegistration{"LtMax", {{"ep", "a"}, {"lt", "4294967295"}}},
        GoodRegistration{"LtLeadingZeros", {{"ep", "a"}, {"lt", "0060"}}},
        GoodRegistration{"BaseName", {{"ep", "a"}, {"base", "coap://h"}}},
        GoodRegistration{"BaseCoaps", {{"ep", "a"}, {"base", "coaps://h.example:5684"}}},
        GoodRegistration{"BaseUpperScheme", {{"ep", "a"}, {"base", "COAP://h"}}},
        GoodRegistration{"BaseIpv4", {{"ep", "a"}, {"base", "coap://192.0.2.1:61616"}}},
        GoodRegistration{"BaseIpv6", {{"ep", "a"}, {"base", "coap://[2001:db8::1]"}}},
        GoodRegistration{"BaseIpv6Port", {{"ep", "a"}, {"base", "coap://[2001:db8::1]:61616"}}},
        GoodRegistration{"BasePercent", {{"ep", "a"}, {"base", "coap://a%2db"}}},
        GoodRegistration{"UnknownParameter", {{"ep", "a"}, {"proxy", "on"}}}),
    [](const auto& info) { return std::string(info.param.name); });

TEST_F(RdTest, OtherContentFormatIsUnsupported) {
  for (const unsigned cf : {0u, 50u, 60u, 65088u}) {
    const RdResult r = reg({{"ep", "node1"}}, kNode1Payload, kT0, kSource, cf);
    EXPECT_EQ(r.code, 415u) << cf;
    EXPECT_FALSE(r.payload.empty());
  }
  // 4.15 is decided before the query is looked at.
  EXPECT_EQ(reg({}, "x", kT0, kSource, 50u).code, 415u);
  EXPECT_TRUE(events_.empty());
  EXPECT_EQ(rd_.size(), 0u);
  EXPECT_EQ(reg({{"ep", "node1"}}, kNode1Payload, kT0, kSource, std::nullopt).code, 201u);
  EXPECT_EQ(reg({{"ep", "node2"}}, kNode1Payload, kT0, kSource, 40u).code, 201u);
}

// ---------------------------------------------------------------------------------------
// Update, removal, read, expiry (RFC 9176 §5.3)

TEST_F(RdTest, UpdateRefreshesTheLifetime) {
  ASSERT_EQ(reg({{"ep", "node7"}, {"lt", "60"}}, "</t>;obs").location, "/rd/1");
  events_.clear();

  const RdResult u = rd_.update("/rd/1", {}, "", kT0 + 50s, events_);
  EXPECT_EQ(u.code, 204u);
  EXPECT_EQ(describe(events_), std::vector<std::string>{"Updated /rd/1 node7"});
  EXPECT_EQ(rd_.find("/rd/1")->lifetime, 60s);  // kept without lt
  EXPECT_EQ(rd_.find("/rd/1")->expires, kT0 + 110s);
  EXPECT_EQ(rd_.nextExpiry(), kT0 + 110s);
  events_.clear();

  rd_.expire(kT0 + 61s, events_);  // would have expired without the update
  EXPECT_TRUE(events_.empty());
  EXPECT_EQ(rd_.size(), 1u);

  rd_.expire(kT0 + 109s, events_);
  EXPECT_TRUE(events_.empty());
  rd_.expire(kT0 + 110s, events_);  // expires <= now
  EXPECT_EQ(describe(events_), std::vector<std::string>{"Expired /rd/1 node7"});
  EXPECT_EQ(rd_.size(), 0u);
  EXPECT_EQ(rd_.nextExpiry(), std::nullopt);
  ASSERT_EQ(events_[0].registration.links.size(), 1u);  // the state before
  EXPECT_EQ(events_[0].registration.links[0].target, "/t");
}

TEST_F(RdTest, UpdateChangesLifetimeBaseEtAndLinks) {
  ASSERT_EQ(reg({{"ep", "node1"}, {"lt", "500"}}, kNode1Payload).location, "/rd/1");
  events_.clear();
  const RdResult u = rd_.update(
      "/rd/1", {{"lt", "30"}, {"base", "coaps://new.example.com"}, {"et", "core.rd-group"}},
      "</new>;rt=x", kT0 + 10s, events_);
  EXPECT_EQ(u.code, 204u) << u.payload;
  const RdRegistration* r = rd_.find("/rd/1");
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->lifetime, 30s);
  EXPECT_EQ(r->expires, kT0 + 40s);
  EXPECT_EQ(r->base, "coaps://new.example.com");
  EXPECT_EQ(r->et, "core.rd-group");
  ASSERT_EQ(r->links.size(), 1u);
  EXPECT_EQ(r->links[0].target, "/new");
  ASSERT_EQ(events_.size(), 1u);
  EXPECT_EQ(events_[0].kind, Kind::Updated);
  EXPECT_EQ(events_[0].registration.base, "coaps://new.example.com");  // state after
  EXPECT_EQ(events_[0].registration.links.size(), 1u);

  // Repeating the unchanged ep is harmless.
  EXPECT_EQ(rd_.update("/rd/1", {{"ep", "node1"}}, "", kT0 + 20s, events_).code, 204u);
}

TEST_F(RdTest, UpdateOfUnknownLocationIsNotFound) {
  ASSERT_EQ(reg({{"ep", "node1"}}, kNode1Payload).code, 201u);
  events_.clear();
  for (const std::string_view loc : {"/rd/2", "/rd/", "/rd/01", "rd/1", "", "/rd/1/"}) {
    const RdResult r = rd_.update(loc, {{"lt", "0"}}, "garbage<", kT0, events_);
    EXPECT_EQ(r.code, 404u) << loc;
  }
  EXPECT_TRUE(events_.empty());
}

// A rejected update changes nothing: not the lifetime, not the links.
struct BadUpdate {
  const char* name;
  RdQuery query;
  std::string payload;
};

void PrintTo(const BadUpdate& c, std::ostream* os) {
  *os << c.name;
}

class RdBadUpdateTest : public ::testing::TestWithParam<BadUpdate> {};

TEST_P(RdBadUpdateTest, IsBadRequestAndChangesNothing) {
  ResourceDirectory rd;
  std::vector<RdEvent> events;
  ASSERT_EQ(
      rd.registerEndpoint({{"ep", "node1"}, {"lt", "60"}}, kNode1Payload, 40u, kSource, kT0, events)
          .code,
      201u);
  events.clear();
  const RdResult r = rd.update("/rd/1", GetParam().query, GetParam().payload, kT0 + 30s, events);
  EXPECT_EQ(r.code, 400u);
  EXPECT_FALSE(r.payload.empty());
  EXPECT_TRUE(events.empty());
  const RdRegistration* reg = rd.find("/rd/1");
  ASSERT_NE(reg, nullptr);
  EXPECT_EQ(reg->lifetime, 60s);
  EXPECT_EQ(reg->expires, kT0 + 60s);
  EXPECT_EQ(reg->base, kSource);
  EXPECT_EQ(reg->links.size(), 2u);
}

INSTANTIATE_TEST_SUITE_P(Rd, RdBadUpdateTest,
                         ::testing::Values(BadUpdate{"LtZero", {{"lt", "0"}}, ""},
                                           BadUpdate{"LtText", {{"lt", "soon"}}, ""},
                                           BadUpdate{"LtTooBig", {{"lt", "4294967296"}}, ""},
                                           BadUpdate{"BasePath", {{"base", "coap://h/x"}}, ""},
                                           BadUpdate{"BaseHttp", {{"base", "http://h"}}, ""},
                                           BadUpdate{"EtEmpty", {{"et", ""}}, ""},
                                           BadUpdate{"OtherEp", {{"ep", "node2"}}, ""},
                                           BadUpdate{"OtherD", {{"d", "floor-1"}}, ""},
                                           BadUpdate{"GoodLtBadLinks", {{"lt", "100"}}, "</t>;;"},
                                           BadUpdate{"BadLinks", {}, "<unclosed"}),
                         [](const auto& info) { return std::string(info.param.name); });

TEST_F(RdTest, RemoveDeletesAndReportsTheRemovedState) {
  ASSERT_EQ(reg({{"ep", "node1"}}, kNode1Payload).location, "/rd/1");
  ASSERT_EQ(reg({{"ep", "node2"}}, "</x>").location, "/rd/2");
  events_.clear();
  const RdResult r = rd_.remove("/rd/1", events_);
  EXPECT_EQ(r.code, 202u);
  EXPECT_EQ(describe(events_), std::vector<std::string>{"Removed /rd/1 node1"});
  EXPECT_EQ(events_[0].registration.links.size(), 2u);
  EXPECT_EQ(rd_.find("/rd/1"), nullptr);
  EXPECT_EQ(rd_.size(), 1u);
  events_.clear();

  EXPECT_EQ(rd_.remove("/rd/1", events_).code, 404u);
  EXPECT_EQ(rd_.remove("/rd/9", events_).code, 404u);
  EXPECT_EQ(rd_.read("/rd/1").code, 404u);
  EXPECT_EQ(rd_.update("/rd/1", {}, "", kT0, events_).code, 404u);
  EXPECT_TRUE(events_.empty());
  EXPECT_EQ(res({{"ep", "node1"}}), "");
}

TEST_F(RdTest, ExpiryRunsInExpiryOrder) {
  ASSERT_EQ(reg({{"ep", "long"}, {"lt", "30"}}, "").location, "/rd/1");
  ASSERT_EQ(reg({{"ep", "short"}, {"lt", "10"}}, "").location, "/rd/2");
  ASSERT_EQ(reg({{"ep", "mid"}, {"lt", "20"}}, "").location, "/rd/3");
  ASSERT_EQ(reg({{"ep", "mid-too"}, {"lt", "20"}}, "").location, "/rd/4");
  ASSERT_EQ(reg({{"ep", "later"}, {"lt", "5"}}, "", kT0 + 100s).location, "/rd/5");
  events_.clear();
  EXPECT_EQ(rd_.nextExpiry(), kT0 + 10s);

  rd_.expire(kT0 + 9s, events_);
  EXPECT_TRUE(events_.empty());
  rd_.expire(kT0 + 25s, events_);
  EXPECT_EQ(describe(events_), (std::vector<std::string>{"Expired /rd/2 short", "Expired /rd/3 mid",
                                                         "Expired /rd/4 mid-too"}));
  EXPECT_EQ(rd_.nextExpiry(), kT0 + 30s);
  events_.clear();

  rd_.expire(kT0 + 30s, events_);
  EXPECT_EQ(describe(events_), std::vector<std::string>{"Expired /rd/1 long"});
  EXPECT_EQ(rd_.nextExpiry(), kT0 + 105s);
  events_.clear();

  rd_.expire(kT0 + 1000s, events_);
  EXPECT_EQ(describe(events_), std::vector<std::string>{"Expired /rd/5 later"});
  EXPECT_EQ(rd_.nextExpiry(), std::nullopt);
  EXPECT_EQ(rd_.size(), 0u);
}

TEST_F(RdTest, NextExpiryIsEmptyWithoutRegistrations) {
  EXPECT_EQ(rd_.nextExpiry(), std::nullopt);
  rd_.expire(kT0, events_);
  EXPECT_TRUE(events_.empty());
}

TEST_F(RdTest, ReadReturnsTheLinksAsRegistered) {
  ASSERT_EQ(reg({{"ep", "node1"}}, kNode1Payload).location, "/rd/1");
  const RdResult r = rd_.read("/rd/1");
  EXPECT_EQ(r.code, 205u);
  EXPECT_EQ(r.content_format, 40u);
  EXPECT_EQ(r.payload,
            "</sensors/temp>;rt=temperature-c;if=sensor,"
            "</sensors/light>;rt=light-lux;if=sensor");
  EXPECT_EQ(rd_.read("/rd/2").code, 404u);
}

// ---------------------------------------------------------------------------------------
// Serialiser: whatever parseLinkFormat accepts comes back out as link-format that parses to
// the same links.

struct RoundTrip {
  const char* name;
  std::string input;
  std::string expected;  // the serialised form
};

void PrintTo(const RoundTrip& c, std::ostream* os) {
  *os << c.name;
}

class RdRoundTripTest : public ::testing::TestWithParam<RoundTrip> {};

TEST_P(RdRoundTripTest, SerialiseParsesBackToTheSameLinks) {
  const auto& c = GetParam();
  const LinkFormatResult original = parseLinkFormat(c.input);
  ASSERT_TRUE(original.ok()) << original.error->message;

  ResourceDirectory rd;
  std::vector<RdEvent> events;
  const RdResult created = rd.registerEndpoint({{"ep", "rt"}}, c.input, 40u, kSource, kT0, events);
  ASSERT_EQ(created.code, 201u) << created.payload;
  const RdResult read = rd.read(created.location);
  ASSERT_EQ(read.code, 205u);
  EXPECT_EQ(read.payload, c.expected);

  const LinkFormatResult again = parseLinkFormat(read.payload);
  ASSERT_TRUE(again.ok()) << again.error->message << " in " << read.payload;
  EXPECT_TRUE(sameLinks(original.links, again.links)) << read.payload;
}

INSTANTIATE_TEST_SUITE_P(
    Rd, RdRoundTripTest,
    ::testing::Values(
        RoundTrip{"Empty", "", ""}, RoundTrip{"TargetOnly", "</a/b>", "</a/b>"},
        RoundTrip{"Rfc6690Sixth", std::string(kRfc6690Payload),
                  "</sensors>;ct=40;title=\"Sensor Index\","
                  "</sensors/temp>;rt=temperature-c;if=sensor,"
                  "</sensors/light>;rt=light-lux;if=sensor,"
                  "<http://www.example.com/sensors/t123>;anchor=\"/sensors/temp\";rel=describedby,"
                  "</t>;anchor=\"/sensors/temp\";rel=alternate"},
        RoundTrip{"BareAttributes", "</t>;obs;foo", "</t>;obs;foo"},
        RoundTrip{"EmptyQuotedValue", "</t>;foo=\"\"", "</t>;foo=\"\""},
        RoundTrip{"MultipleRt", "</t>;rt=\"a b  c\";if=\"x y\"", "</t>;rt=\"a b  c\";if=\"x y\""},
        RoundTrip{"CtList", "</t>;ct=\"0 40 60\"", "</t>;ct=\"0 40 60\""},
        RoundTrip{"Comma", "</t>;title=\"a,b\";x=\"1,2\"", "</t>;title=\"a,b\";x=\"1,2\""},
        RoundTrip{"Semicolon", "</t>;x=\"a;b\"", "</t>;x=\"a;b\""},
        RoundTrip{"Quote", R"(</t>;title="say \"hi\"")", R"(</t>;title="say \"hi\"")"},
        RoundTrip{"Backslash", R"(</t>;x="C:\\dir\\";y="\\")", R"(</t>;x="C:\\dir\\";y="\\")"},
        RoundTrip{"BackslashBeforeQuote", R"(</t>;x="\\\"")", R"(</t>;x="\\\"")"},
        RoundTrip{"NeedlessEscapes", R"(</t>;x="\a\b")", "</t>;x=ab"},
        RoundTrip{"QuotedTokenUnquoted", "</t>;x=\"plain\"", "</t>;x=plain"},
        RoundTrip{"TokenWithPunctuation", "</t>;x=a=b<c>?@[]", "</t>;x=a=b<c>?@[]"},
        RoundTrip{"TitleAlwaysQuoted", "</t>;title=short", "</t>;title=\"short\""},
        RoundTrip{"Tab", "</t>;x=\"a\tb\"", "</t>;x=\"a\tb\""},
        RoundTrip{"Utf8",
                  "</t>;title=\"K\xc3\xbc"
                  "che \xe2\x82\xac\"",
                  "</t>;title=\"K\xc3\xbc"
                  "che \xe2\x82\xac\""},
        RoundTrip{"ExtNameStar", "</t>;title*=UTF-8'de'n%c3%a4chstes",
                  "</t>;title*=UTF-8'de'n%c3%a4chstes"},
        RoundTrip{"UpperCaseNames", "</t>;RT=x;Obs", "</t>;rt=x;obs"},
        RoundTrip{"RepeatedAttributes", "</t>;rt=a;rt=b;anchor=\"/x\";anchor=\"/y\"",
                  "</t>;rt=a;rt=b;anchor=\"/x\";anchor=\"/y\""},
        RoundTrip{"AbsoluteAndQueryTargets", "<coap://[::1]:5683/a?b=c>,<a/b#f>,<>",
                  "<coap://[::1]:5683/a?b=c>,<a/b#f>,<>"},
        RoundTrip{"Whitespace", " </a> ;\tx=1 ,\r\n </b>;y ", "</a>;x=1,</b>;y"}),
    [](const auto& info) { return std::string(info.param.name); });

// ---------------------------------------------------------------------------------------
// Lookup (RFC 9176 §6)

TEST_F(RdTest, RfcUpdateExampleResolvesAgainstTheNewBase) {
  // RFC 9176 §5.3.1: endpoint1, lt=500, base=coap://local-proxy-old.example.com, the
  // payload of the §5 example; lookups before and after the base changes.
  ASSERT_EQ(
      reg({{"ep", "endpoint1"}, {"lt", "500"}, {"base", "coap://local-proxy-old.example.com"}},
          kRfcPayload)
          .code,
      201u);
  EXPECT_EQ(res({{"ep", "endpoint1"}}),
            "<coap://local-proxy-old.example.com/sensors/temp>;rt=temperature-c;if=sensor,"
            "<http://www.example.com/sensors/temp>;"
            "anchor=\"coap://local-proxy-old.example.com/sensors/temp\";rel=describedby");

  ASSERT_EQ(rd_.update("/rd/1", {{"base", "coaps://new.example.com"}}, "", kT0, events_).code,
            204u);
  EXPECT_EQ(res({{"ep", "endpoint1"}}),
            "<coaps://new.example.com/sensors/temp>;rt=temperature-c;if=sensor,"
            "<http://www.example.com/sensors/temp>;"
            "anchor=\"coaps://new.example.com/sensors/temp\";rel=describedby");
}

TEST_F(RdTest, RfcMultipleEndpointExample) {
  // RFC 9176 §6.3: sensor1 and sensor2 register RFC 6690's payload with an et; a resource
  // lookup by et shows relative targets resolved and absolute ones unchanged.
  const std::string et = "tag:example.com,2020:platform";
  ASSERT_EQ(
      reg({{"ep", "sensor1"}, {"base", "coap://sensor1.example.com"}, {"et", et}}, kRfc6690Payload)
          .code,
      201u);
  ASSERT_EQ(
      reg({{"ep", "sensor2"}, {"base", "coap://sensor2.example.com"}, {"et", et}}, kRfc6690Payload)
          .code,
      201u);
  ASSERT_EQ(reg({{"ep", "other"}, {"base", "coap://other.example.com"}}, kRfc6690Payload).code,
            201u);

  std::string expected;
  for (const std::string host : {"sensor1", "sensor2"}) {
    const std::string b = "coap://" + host + ".example.com";
    if (!expected.empty()) expected += ',';
    for (const std::string_view part :
         {"<$/sensors>;ct=40;title=\"Sensor Index\",",
          "<$/sensors/temp>;rt=temperature-c;if=sensor,",
          "<$/sensors/light>;rt=light-lux;if=sensor,",
          "<http://www.example.com/sensors/t123>;anchor=\"$/sensors/temp\";rel=describedby,",
          "<$/t>;anchor=\"$/sensors/temp\";rel=alternate"}) {
      for (const char c : part) {
        if (c == '$') {
          expected += b;
        } else {
          expected += c;
        }
      }
    }
  }
  EXPECT_EQ(res({{"et", et}}), expected);

  // §6.4, the endpoint lookup by et (our attribute order: ep, base, rt, d, et).
  EXPECT_EQ(ep({{"et", et}}),
            "</rd/1>;ep=\"sensor1\";base=\"coap://sensor1.example.com\";rt=\"core.rd-ep\";"
            "et=\"tag:example.com,2020:platform\","
            "</rd/2>;ep=\"sensor2\";base=\"coap://sensor2.example.com\";rt=\"core.rd-ep\";"
            "et=\"tag:example.com,2020:platform\"");
}

TEST_F(RdTest, RfcPaginationExample) {
  // RFC 9176 §6.3: ten resources with ct=60 on a host at port 61616, five per page.
  std::string payload;
  for (int i = 0; i < 10; ++i) {
    if (i) payload += ',';
    payload += "</res/" + std::to_string(i) + ">;ct=60";
  }
  ASSERT_EQ(reg({{"ep", "paged"}, {"base", "coap://[2001:db8:3::123]:61616"}}, payload).code, 201u);
  const auto page = [](int first) {
    std::string out;
    for (int i = first; i < first + 5; ++i) {
      if (i > first) out += ',';
      out += "<coap://[2001:db8:3::123]:61616/res/" + std::to_string(i) + ">;ct=60";
    }
    return out;
  };
  EXPECT_EQ(res({{"page", "0"}, {"count", "5"}}), page(0));
  EXPECT_EQ(res({{"page", "1"}, {"count", "5"}}), page(5));
  EXPECT_EQ(res({{"page", "2"}, {"count", "5"}}), "");
}

// A directory with a few endpoints, and a table of lookups against it.
class RdLookupTest
    : public ::testing::TestWithParam<std::tuple<const char*, RdQuery, std::string>> {
 protected:
  void SetUp() override {
    std::vector<RdEvent> events;
    const auto add = [&](const RdQuery& q, std::string_view payload, std::string_view source) {
      ASSERT_EQ(rd_.registerEndpoint(q, payload, 40u, source, kT0, events).code, 201u);
    };
    add({{"ep", "node1"}}, kNode1Payload, "coap://[2001:db8::1]");  // /rd/1
    add({{"ep", "node2"}, {"d", "floor-3"}, {"et", "core.rd-group"}},
        "</lamp>;rt=\"light-dim light-onoff\";if=core.a;obs,"
        "<http://vendor.example/doc>;anchor=\"/lamp\";rel=describedby;x-vendor=acme",
        "coap://192.0.2.7:40000");  // /rd/2
    add({{"ep", "sensor3"}, {"base", "coaps://s3.example:5684"}},
        "<temp>;rt=temperature-c;ct=\"0 60\"", "coap://192.0.2.8");  // /rd/3
  }
  ResourceDirectory rd_;
};

const std::string kNode1Temp = "<coap://[2001:db8::1]/sensors/temp>;rt=temperature-c;if=sensor";
const std::string kNode1Light = "<coap://[2001:db8::1]/sensors/light>;rt=light-lux;if=sensor";
const std::string kNode2Lamp =
    "<coap://192.0.2.7:40000/lamp>;rt=\"light-dim light-onoff\";if=core.a;obs";
const std::string kNode2Doc =
    "<http://vendor.example/doc>;anchor=\"coap://192.0.2.7:40000/lamp\";rel=describedby;"
    "x-vendor=acme";
const std::string kSensor3Temp = "<coaps://s3.example:5684/temp>;rt=temperature-c;ct=\"0 60\"";

const std::string kEp1 = "</rd/1>;ep=\"node1\";base=\"coap://[2001:db8::1]\";rt=\"core.rd-ep\"";
const std::string kEp2 =
    "</rd/2>;ep=\"node2\";base=\"coap://192.0.2.7:40000\";rt=\"core.rd-ep\";d=\"floor-3\";"
    "et=\"core.rd-group\"";
const std::string kEp3 =
    "</rd/3>;ep=\"sensor3\";base=\"coaps://s3.example:5684\";rt=\"core.rd-ep\"";

std::string join(std::initializer_list<std::string> parts) {
  std::string out;
  for (const auto& p : parts) {
    if (!out.empty()) out += ',';
    out += p;
  }
  return out;
}

class RdResourceLookupTest : public RdLookupTest {};

TEST_P(RdResourceLookupTest, Matches) {
  const auto& [name, query, expected] = GetParam();
  const RdResult r = rd_.lookupResources(query);
  EXPECT_EQ(r.code, 205u) << r.payload;
  EXPECT_EQ(r.content_format, 40u);
  EXPECT_EQ(r.payload, expected);
  EXPECT_TRUE(parseLinkFormat(r.payload).ok());
}

INSTANTIATE_TEST_SUITE_P(
    Rd, RdResourceLookupTest,
    ::testing::Values(
        std::make_tuple("All", RdQuery{},
                        join({kNode1Temp, kNode1Light, kNode2Lamp, kNode2Doc, kSensor3Temp})),
        std::make_tuple("ByRt", RdQuery{{"rt", "temperature-c"}}, join({kNode1Temp, kSensor3Temp})),
        std::make_tuple("ByRtPrefix", RdQuery{{"rt", "light*"}}, join({kNode1Light, kNode2Lamp})),
        std::make_tuple("ByOneOfSeveralRt", RdQuery{{"rt", "light-onoff"}}, kNode2Lamp),
        std::make_tuple("ByWholeMultiValue", RdQuery{{"rt", "light-dim light-onoff"}}, kNode2Lamp),
        std::make_tuple("ByRtNoMatch", RdQuery{{"rt", "temperature"}}, ""),
        std::make_tuple("ByIf", RdQuery{{"if", "sensor"}}, join({kNode1Temp, kNode1Light})),
        std::make_tuple("ByCtListItem", RdQuery{{"ct", "60"}}, kSensor3Temp),
        std::make_tuple("ByEp", RdQuery{{"ep", "node1"}}, join({kNode1Temp, kNode1Light})),
        std::make_tuple("ByEpPrefix", RdQuery{{"ep", "node*"}},
                        join({kNode1Temp, kNode1Light, kNode2Lamp, kNode2Doc})),
        std::make_tuple("ByD", RdQuery{{"d", "floor-3"}}, join({kNode2Lamp, kNode2Doc})),
        std::make_tuple("ByEt", RdQuery{{"et", "core.rd-group"}}, join({kNode2Lamp, kNode2Doc})),
        std::make_tuple("ByBase", RdQuery{{"base", "coaps://s3.example:5684"}}, kSensor3Temp),
        std::make_tuple("ByBasePrefix", RdQuery{{"base", "coaps:*"}}, kSensor3Temp),
        std::make_tuple("ByHrefResolved", RdQuery{{"href", "coap://[2001:db8::1]/sensors/temp"}},
                        kNode1Temp),
        std::make_tuple("ByHrefPrefix", RdQuery{{"href", "coap://[2001:db8::1]/sensors/*"}},
                        join({kNode1Temp, kNode1Light})),
        std::make_tuple("ByHrefRelativeDoesNotMatch", RdQuery{{"href", "/sensors/temp"}}, ""),
        std::make_tuple("ByHrefOfTheRegistration", RdQuery{{"href", "/rd/2"}},
                        join({kNode2Lamp, kNode2Doc})),
        std::make_tuple("ByAnchorResolved", RdQuery{{"anchor", "coap://192.0.2.7:40000/lamp"}},
                        kNode2Doc),
        std::make_tuple("ByRel", RdQuery{{"rel", "describedby"}}, kNode2Doc),
        std::make_tuple("ByUnknownAttribute", RdQuery{{"x-vendor", "acme"}}, kNode2Doc),
        std::make_tuple("ByUnknownAttributeNoMatch", RdQuery{{"x-vendor", "other"}}, ""),
        std::make_tuple("ByBareAttribute", RdQuery{{"obs", ""}}, kNode2Lamp),
        std::make_tuple("ByPresence", RdQuery{{"if", "*"}},
                        join({kNode1Temp, kNode1Light, kNode2Lamp})),
        std::make_tuple("FilterNameCaseInsensitive", RdQuery{{"RT", "light-lux"}}, kNode1Light),
        std::make_tuple("AllFiltersMustMatch", RdQuery{{"ep", "node1"}, {"rt", "temperature-c"}},
                        kNode1Temp),
        std::make_tuple("AllFiltersMustMatchNone",
                        RdQuery{{"ep", "node2"}, {"rt", "temperature-c"}}, ""),
        std::make_tuple("SameFilterTwice", RdQuery{{"rt", "light-dim"}, {"rt", "light-onoff"}},
                        kNode2Lamp),
        std::make_tuple("Count", RdQuery{{"count", "2"}}, join({kNode1Temp, kNode1Light})),
        std::make_tuple("PageAndCount", RdQuery{{"count", "2"}, {"page", "1"}},
                        join({kNode2Lamp, kNode2Doc})),
        std::make_tuple("LastPartialPage", RdQuery{{"page", "2"}, {"count", "2"}}, kSensor3Temp),
        std::make_tuple("PageBeyondTheEnd", RdQuery{{"page", "3"}, {"count", "2"}}, ""),
        std::make_tuple("CountZero", RdQuery{{"count", "0"}}, ""),
        std::make_tuple("FilterThenPage", RdQuery{{"rt", "light*"}, {"page", "1"}, {"count", "1"}},
                        kNode2Lamp)),
    [](const auto& info) { return std::string(std::get<0>(info.param)); });

class RdEndpointLookupTest : public RdLookupTest {};

TEST_P(RdEndpointLookupTest, Matches) {
  const auto& [name, query, expected] = GetParam();
  const RdResult r = rd_.lookupEndpoints(query);
  EXPECT_EQ(r.code, 205u) << r.payload;
  EXPECT_EQ(r.content_format, 40u);
  EXPECT_EQ(r.payload, expected);
  EXPECT_TRUE(parseLinkFormat(r.payload).ok());
}

INSTANTIATE_TEST_SUITE_P(
    Rd, RdEndpointLookupTest,
    ::testing::Values(
        std::make_tuple("All", RdQuery{}, join({kEp1, kEp2, kEp3})),
        std::make_tuple("ByEp", RdQuery{{"ep", "node1"}}, kEp1),
        std::make_tuple("ByEpPrefix", RdQuery{{"ep", "node*"}}, join({kEp1, kEp2})),
        std::make_tuple("ByEpNoMatch", RdQuery{{"ep", "node"}}, ""),
        std::make_tuple("ByD", RdQuery{{"d", "floor-3"}}, kEp2),
        std::make_tuple("ByEt", RdQuery{{"et", "core.rd-group"}}, kEp2),
        std::make_tuple("ByBase", RdQuery{{"base", "coap://[2001:db8::1]"}}, kEp1),
        std::make_tuple("ByHrefLocation", RdQuery{{"href", "/rd/3"}}, kEp3),
        std::make_tuple("ByHrefLocationPrefix", RdQuery{{"href", "/rd/*"}},
                        join({kEp1, kEp2, kEp3})),
        std::make_tuple("ByHrefOfAResource", RdQuery{{"href", "coaps://s3.example:5684/temp"}},
                        kEp3),
        std::make_tuple("ByResourceRt", RdQuery{{"rt", "temperature-c"}}, join({kEp1, kEp3})),
        std::make_tuple("ByResourceRtPrefix", RdQuery{{"rt", "light*"}}, join({kEp1, kEp2})),
        std::make_tuple("ByResourceMultiValueRt", RdQuery{{"rt", "light-onoff"}}, kEp2),
        std::make_tuple("ByResourceIf", RdQuery{{"if", "core.a"}}, kEp2),
        std::make_tuple("ByResourceUnknownAttribute", RdQuery{{"x-vendor", "acme"}}, kEp2),
        std::make_tuple("EndpointAndResource", RdQuery{{"ep", "node*"}, {"rt", "temperature-c"}},
                        kEp1),
        std::make_tuple("NoneMatchesBoth", RdQuery{{"d", "floor-3"}, {"rt", "temperature-c"}}, ""),
        std::make_tuple("Count", RdQuery{{"count", "1"}}, kEp1),
        std::make_tuple("Page", RdQuery{{"page", "1"}, {"count", "2"}}, kEp3),
        std::make_tuple("PageBeyondTheEnd", RdQuery{{"page", "5"}, {"count", "2"}}, "")),
    [](const auto& info) { return std::string(std::get<0>(info.param)); });

// Lookup queries that cannot be answered: 4.00, for both lookup types.
class RdBadLookupTest : public ::testing::TestWithParam<std::pair<const char*, RdQuery>> {};

TEST_P(RdBadLookupTest, IsBadRequest) {
  ResourceDirectory rd;
  std::vector<RdEvent> events;
  ASSERT_EQ(rd.registerEndpoint({{"ep", "node1"}}, kNode1Payload, 40u, kSource, kT0, events).code,
            201u);
  const RdResult e = rd.lookupEndpoints(GetParam().second);
  EXPECT_EQ(e.code, 400u);
  EXPECT_FALSE(e.payload.empty());
  const RdResult r = rd.lookupResources(GetParam().second);
  EXPECT_EQ(r.code, 400u);
  EXPECT_FALSE(r.payload.empty());
}

INSTANTIATE_TEST_SUITE_P(
    Rd, RdBadLookupTest,
    ::testing::Values(std::make_pair("PageWithoutCount", RdQuery{{"page", "0"}}),
                      std::make_pair("CountText", RdQuery{{"count", "ten"}}),
                      std::make_pair("CountNegative", RdQuery{{"count", "-1"}}),
                      std::make_pair("CountEmpty", RdQuery{{"count", ""}}),
                      std::make_pair("CountHuge", RdQuery{{"count", "99999999999999999999"}}),
                      std::make_pair("PageText", RdQuery{{"page", "x"}, {"count", "1"}}),
                      std::make_pair("CountTwice", RdQuery{{"count", "1"}, {"count", "2"}})),
    [](const auto& info) { return std::string(info.param.first); });

TEST_F(RdTest, ResourceLookupResolvesTargetsAndAnchors) {
  // RFC 9176 §6.1: targets resolved against the base, anchors resolved only where present,
  // absolute targets and anchors unchanged.
  ASSERT_EQ(reg({{"ep", "r"}, {"base", "coap://h:1234"}},
                "</a>,<b/c>,<./d/../e>,</f/./g/../h>,<>,<?q=1>,<//other:5/x>,"
                "<coap://abs/./z>;anchor=\"coap://abs2/../y\",</i>;anchor=\"\",</j>;anchor=\"k\"")
                .code,
            201u);
  EXPECT_EQ(res({}),
            "<coap://h:1234/a>,<coap://h:1234/b/c>,<coap://h:1234/e>,<coap://h:1234/f/h>,"
            "<coap://h:1234>,<coap://h:1234?q=1>,<coap://other:5/x>,"
            "<coap://abs/./z>;anchor=\"coap://abs2/../y\","
            "<coap://h:1234/i>;anchor=\"coap://h:1234\","
            "<coap://h:1234/j>;anchor=\"coap://h:1234/k\"");
}

TEST_F(RdTest, EmptyDirectoryLookupsAreEmptyContent) {
  EXPECT_EQ(res({}), "");
  EXPECT_EQ(ep({}), "");
  EXPECT_EQ(res({{"rt", "x"}}), "");
}

TEST_F(RdTest, EndpointValuesAreQuotedAndEscaped) {
  ASSERT_EQ(reg({{"ep", "a\"b\\c,d;e f"}, {"d", "s\"1"}}, "").code, 201u);
  const std::string out = ep({});
  EXPECT_EQ(out,
            "</rd/1>;ep=\"a\\\"b\\\\c,d;e f\";base=\"coap://[2001:db8::1]:40123\";"
            "rt=\"core.rd-ep\";d=\"s\\\"1\"");
  const LinkFormatResult parsed = parseLinkFormat(out);
  ASSERT_TRUE(parsed.ok());
  ASSERT_EQ(parsed.links.size(), 1u);
  ASSERT_NE(parsed.links[0].find("ep"), nullptr);
  EXPECT_EQ(parsed.links[0].find("ep")->value, "a\"b\\c,d;e f");
  EXPECT_EQ(parsed.links[0].find("d")->value, "s\"1");
  EXPECT_EQ(ep({{"ep", "a\"b\\c,d;e f"}}), out);
}

TEST_F(RdTest, ResultsAreInRegistrationOrderPastNine) {
  for (int i = 1; i <= 12; ++i) {
    ASSERT_EQ(reg({{"ep", "n" + std::to_string(i)}}, "</x>").location, "/rd/" + std::to_string(i));
  }
  std::string expected;
  for (int i = 9; i <= 12; ++i) {
    if (!expected.empty()) expected += ',';
    expected += "</rd/" + std::to_string(i) + ">;ep=\"n" + std::to_string(i) +
                "\";base=\"coap://[2001:db8::1]:40123\";rt=\"core.rd-ep\"";
  }
  EXPECT_EQ(ep({{"page", "2"}, {"count", "4"}}), expected);
}

// ---------------------------------------------------------------------------------------
// Persistence: registrations() and restore()

RdRegistration restorable(std::string location, std::string ep, TimePoint expires,
                          std::string_view links = "</t>;obs") {
  RdRegistration r;
  r.location = std::move(location);
  r.ep = std::move(ep);
  r.base = "coap://127.0.0.1:40123";
  r.lifetime = 60s;
  r.expires = expires;
  LinkFormatResult parsed = parseLinkFormat(links);
  EXPECT_TRUE(parsed.ok());
  r.links = std::move(parsed.links);
  return r;
}

std::vector<std::string> locationsOf(const std::vector<RdRegistration>& regs) {
  std::vector<std::string> out;
  for (const auto& r : regs) out.push_back(r.location);
  return out;
}

TEST_F(RdTest, RestoreKeepsTheRegistrationAsItIsAndUpdatesFindIt) {
  RdRegistration r = restorable("/rd/5", "node5", kT0 + 30s, "</a>;rt=x,</b>");
  r.sector = "floor-1";
  r.et = "sensor-node";
  rd_.restore(r);
  EXPECT_TRUE(events_.empty());  // restoring is not news
  ASSERT_EQ(rd_.size(), 1u);
  const RdRegistration* got = rd_.find("/rd/5");
  ASSERT_NE(got, nullptr);
  EXPECT_EQ(got->ep, "node5");
  EXPECT_EQ(got->sector, "floor-1");
  EXPECT_EQ(got->base, "coap://127.0.0.1:40123");
  EXPECT_EQ(got->et, "sensor-node");
  EXPECT_EQ(got->lifetime, 60s);
  EXPECT_EQ(got->expires, kT0 + 30s);  // not recomputed from the lifetime
  EXPECT_TRUE(sameLinks(got->links, r.links));
  EXPECT_EQ(rd_.nextExpiry(), kT0 + 30s);
  EXPECT_EQ(rd_.read("/rd/5").payload, "</a>;rt=x,</b>");

  // The point of restoring: the endpoint's next update is a 2.04, not a 4.04.
  EXPECT_EQ(rd_.update("/rd/5", {}, "", kT0 + 20s, events_).code, 204u);
  EXPECT_EQ(describe(events_), std::vector<std::string>{"Updated /rd/5 node5"});
  EXPECT_EQ(rd_.find("/rd/5")->expires, kT0 + 20s + 60s);
  // And the same (ep, d) registering anew keeps the restored location.
  EXPECT_EQ(reg({{"ep", "node5"}, {"d", "floor-1"}}, "</c>").location, "/rd/5");
  EXPECT_EQ(rd_.size(), 1u);
}

TEST_F(RdTest, NewLocationsComeAfterEveryRestoredOne) {
  ASSERT_EQ(reg({{"ep", "a"}}, "").location, "/rd/1");
  rd_.restore(restorable("/rd/10", "ten", kT0 + 60s));
  EXPECT_EQ(reg({{"ep", "b"}}, "").location, "/rd/11");
  rd_.restore(restorable("/rd/3", "three", kT0 + 60s));  // lower: does not move it back
  EXPECT_EQ(reg({{"ep", "c"}}, "").location, "/rd/12");
  // Removed or expired, a restored location is still never handed out again.
  EXPECT_EQ(rd_.remove("/rd/10", events_).code, 202u);
  EXPECT_EQ(reg({{"ep", "d"}}, "").location, "/rd/13");
  EXPECT_EQ(locationsOf(rd_.registrations()),
            (std::vector<std::string>{"/rd/1", "/rd/3", "/rd/11", "/rd/12", "/rd/13"}));
}

TEST_F(RdTest, RestoreReplacesTheOneAtTheSameLocation) {
  ASSERT_EQ(reg({{"ep", "node1"}}, "</old>").location, "/rd/1");
  rd_.restore(restorable("/rd/1", "renamed", kT0 + 5s, "</new>"));
  ASSERT_EQ(rd_.size(), 1u);
  EXPECT_EQ(rd_.find("/rd/1")->ep, "renamed");
  EXPECT_EQ(rd_.read("/rd/1").payload, "</new>");
  EXPECT_EQ(rd_.nextExpiry(), kT0 + 5s);
  rd_.restore(restorable("/rd/1", "renamed", kT0 + 9s, "</newer>"));
  EXPECT_EQ(rd_.size(), 1u);
  EXPECT_EQ(rd_.read("/rd/1").payload, "</newer>");
  EXPECT_EQ(reg({{"ep", "x"}}, "").location, "/rd/2");
}

TEST_F(RdTest, RestoreKeepsEpAndSectorUnique) {
  ASSERT_EQ(reg({{"ep", "node1"}}, "</a>").location, "/rd/1");
  ASSERT_EQ(reg({{"ep", "node1"}, {"d", "other"}}, "</b>").location, "/rd/2");
  events_.clear();
  rd_.restore(restorable("/rd/7", "node1", kT0 + 60s, "</c>"));  // same ep, no d
  EXPECT_TRUE(events_.empty());
  EXPECT_EQ(locationsOf(rd_.registrations()), (std::vector<std::string>{"/rd/2", "/rd/7"}));
  EXPECT_EQ(ep({{"ep", "node1"}, {"d", "other"}}).substr(0, 7), "</rd/2>");
  const RdResult again = reg({{"ep", "node1"}}, "</d>");
  EXPECT_EQ(again.location, "/rd/7");
  EXPECT_EQ(describe(events_), std::vector<std::string>{"Updated /rd/7 node1"});
}

TEST_F(RdTest, RestoredPastItsExpiryGoesAtTheNextExpire) {
  rd_.restore(restorable("/rd/2", "stale", kT0 - 1s));
  rd_.restore(restorable("/rd/1", "fresh", kT0 + 60s));
  EXPECT_EQ(rd_.nextExpiry(), kT0 - 1s);
  rd_.expire(kT0, events_);
  EXPECT_EQ(describe(events_), std::vector<std::string>{"Expired /rd/2 stale"});
  EXPECT_EQ(locationsOf(rd_.registrations()), std::vector<std::string>{"/rd/1"});
  EXPECT_EQ(reg({{"ep", "new"}}, "").location, "/rd/3");
}

TEST_F(RdTest, RestoredOtherLocationsWorkButDoNotMoveTheCounter) {
  // Not "/rd/<n>" as registerEndpoint() writes it: kept, ordered after, never a number.
  rd_.restore(restorable("/rd/007", "leading-zero", kT0 + 60s));
  rd_.restore(restorable("/custom", "custom", kT0 + 60s));
  rd_.restore(restorable("/rd/1000000000000000000", "nineteen-digits", kT0 + 60s));
  rd_.restore(restorable("/rd/999999999999999999", "eighteen-digits", kT0 + 60s));
  // The counter is past the eighteen-digit one, and skips the taken nineteen-digit one.
  EXPECT_EQ(reg({{"ep", "n"}}, "").location, "/rd/1000000000000000001");
  EXPECT_EQ(locationsOf(rd_.registrations()),
            (std::vector<std::string>{"/rd/999999999999999999", "/custom", "/rd/007",
                                      "/rd/1000000000000000000", "/rd/1000000000000000001"}));
  EXPECT_EQ(rd_.find("/rd/1000000000000000000")->ep, "nineteen-digits");
  EXPECT_EQ(rd_.find("/rd/1000000000000000001")->ep, "n");
  EXPECT_EQ(rd_.update("/custom", {{"lt", "5"}}, "", kT0, events_).code, 204u);
  EXPECT_EQ(rd_.remove("/rd/007", events_).code, 202u);
}

TEST_F(RdTest, RegistrationsAreInLocationOrderPastNine) {
  for (int i = 1; i <= 12; ++i) {
    ASSERT_EQ(reg({{"ep", "n" + std::to_string(i)}}, "</x>").location, "/rd/" + std::to_string(i));
  }
  const std::vector<RdRegistration> all = rd_.registrations();
  ASSERT_EQ(all.size(), 12u);
  for (int i = 1; i <= 12; ++i) {
    EXPECT_EQ(all[static_cast<std::size_t>(i - 1)].location, "/rd/" + std::to_string(i));
    EXPECT_EQ(all[static_cast<std::size_t>(i - 1)].ep, "n" + std::to_string(i));
  }
  EXPECT_TRUE(ResourceDirectory().registrations().empty());
}

// What a restart does: every registration out of one directory and into a fresh one.
TEST_F(RdTest, RegistrationsRestoredIntoAFreshDirectoryBehaveTheSame) {
  ASSERT_EQ(reg({{"ep", "node1"}, {"lt", "100"}}, std::string(kRfc6690Payload)).code, 201u);
  ASSERT_EQ(reg({{"ep", "node2"}, {"d", "s"}, {"et", "e"}, {"base", "coap://10.0.0.2"}},
                kRfcPayload, kT0 + 5s)
                .code,
            201u);
  ASSERT_EQ(reg({{"ep", "gone"}}, "</g>").code, 201u);
  ASSERT_EQ(rd_.remove("/rd/3", events_).code, 202u);

  ResourceDirectory after;
  for (const RdRegistration& r : rd_.registrations()) after.restore(r);
  EXPECT_EQ(after.size(), rd_.size());
  EXPECT_EQ(after.nextExpiry(), rd_.nextExpiry());
  for (const RdQuery& q : {RdQuery{}, RdQuery{{"ep", "node2"}}, RdQuery{{"rt", "temperature-c"}}}) {
    EXPECT_EQ(after.lookupEndpoints(q).payload, rd_.lookupEndpoints(q).payload);
    EXPECT_EQ(after.lookupResources(q).payload, rd_.lookupResources(q).payload);
  }
  EXPECT_EQ(after.read("/rd/1").payload, rd_.read("/rd/1").payload);
  std::vector<RdEvent> events;
  // Only /rd/1 and /rd/2 were restored; the counter still comes from them.
  EXPECT_EQ(after.registerEndpoint({{"ep", "new"}}, "", 40u, kSource, kT0, events).location,
            "/rd/3");
}

// Acceptance 3 of issue 4: node7 registers </t>;obs with lt=60 and is gone 60 s later.
TEST_F(RdTest, AcceptanceNode7ExpiresAfterItsLifetime) {
  const RdResult r =
      reg({{"ep", "node7"}, {"lt", "60"}}, "</t>;obs", kT0, "coap://127.0.0.1:54321", std::nullopt);
  ASSERT_EQ(r.code, 201u);
  EXPECT_EQ(res({{"ep", "node7"}}), "<coap://127.0.0.1:54321/t>;obs");
  EXPECT_EQ(rd_.nextExpiry(), kT0 + 60s);
  events_.clear();
  rd_.expire(kT0 + 59s, events_);
  EXPECT_TRUE(events_.empty());
  rd_.expire(kT0 + 60s, events_);
  EXPECT_EQ(describe(events_), std::vector<std::string>{"Expired " + r.location + " node7"});
  EXPECT_EQ(res({{"ep", "node7"}}), "");
}

}  // namespace
}  // namespace coap2mqtt::registry

namespace coap2mqtt::registry {
namespace {

TEST(ResourceDirectoryLocations, ComeFromTheSourceSetAndFindEndpointFindsByEpAndSector) {
  ResourceDirectory rd;
  std::uint64_t next = 987654321012345678ull;
  rd.setLocationIds([&] { return next++; });
  std::vector<RdEvent> events;
  const auto now = std::chrono::steady_clock::now();
  auto a = rd.registerEndpoint({{"ep", "a"}}, "</x>", 40, "coap://127.0.0.1:1", now, events);
  auto b =
      rd.registerEndpoint({{"ep", "b"}, {"d", "s"}}, "</x>", 40, "coap://127.0.0.1:2", now, events);
  EXPECT_EQ(a.location, "/rd/987654321012345678");
  EXPECT_EQ(b.location, "/rd/987654321012345679");
  ASSERT_NE(rd.findEndpoint("b", "s"), nullptr);
  EXPECT_EQ(rd.findEndpoint("b", "s")->location, b.location);
  EXPECT_EQ(rd.findEndpoint("b", ""), nullptr);
  EXPECT_EQ(rd.findEndpoint("c", ""), nullptr);
}

}  // namespace
}  // namespace coap2mqtt::registry
