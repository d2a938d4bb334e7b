// RFC 6690 link-format parser: the RFC's own examples, what libcoap really emits, and a
// table of hostile inputs. Expectations are written as a canonical dump so the tables stay
// readable: <target>;name=[value];bare  with links joined by ','.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include "registry/link_format.h"

namespace coap2mqtt::registry {
namespace {

using namespace std::string_literals;

std::string dump(const LinkFormatResult& r) {
  if (!r.ok()) return "error@" + std::to_string(r.error->offset) + ": " + r.error->message;
  std::string out;
  for (const auto& link : r.links) {
    if (!out.empty()) out += ',';
    out += '<' + link.target + '>';
    for (const auto& a : link.attributes) {
      out += ';' + a.name;
      if (a.value) out += "=[" + *a.value + ']';
    }
  }
  return out;
}

using Strings = std::vector<std::string>;

// ---------------------------------------------------------------------------------------
// Documents that must parse.

struct ValidCase {
  const char* name;
  std::string input;
  std::string expected;  // dump() of the result
};

// ctest lists each case by its name, not by the struct's bytes.
void PrintTo(const ValidCase& c, std::ostream* os) {
  *os << c.name;
}

class ValidLinkFormat : public ::testing::TestWithParam<ValidCase> {};

TEST_P(ValidLinkFormat, ParsesToExpectedLinks) {
  const auto& c = GetParam();
  const auto r = parseLinkFormat(c.input);
  EXPECT_EQ(dump(r), c.expected) << "input: " << c.input;
}

const ValidCase kValidCases[] = {
    // RFC 6690 §5, first example: all links from /.well-known/core.
    {"rfc_5_if_sensor", R"(</sensors/temp>;if="sensor",</sensors/light>;if="sensor")",
     "</sensors/temp>;if=[sensor],</sensors/light>;if=[sensor]"},
    // RFC 6690 §5: a server that only points at its index.
    {"rfc_5_ct40", "</sensors>;ct=40", "</sensors>;ct=[40]"},
    // RFC 6690 §5: GET /sensors returns the resources with rt and if.
    {"rfc_5_rt_if",
     R"(</sensors/temp>;rt="temperature-c";if="sensor",</sensors/light>;rt="light-lux";if="sensor")",
     "</sensors/temp>;rt=[temperature-c];if=[sensor],</sensors/light>;rt=[light-lux];if=[sensor]"},
    // RFC 6690 §5: response to ?rt=light-lux.
    {"rfc_5_query_filter", R"(</sensors/light>;rt="light-lux";if="sensor")",
     "</sensors/light>;rt=[light-lux];if=[sensor]"},
    // RFC 6690 §5: the anchor/rel example on its own...
    {"rfc_5_anchor_alternate", R"(</t>;anchor="/sensors/temp";rel="alternate")",
     "</t>;anchor=[/sensors/temp];rel=[alternate]"},
    {"rfc_5_anchor_describedby",
     R"(<http://www.example.com/sensors/t123>;anchor="/sensors/temp";rel="describedby")",
     "<http://www.example.com/sensors/t123>;anchor=[/sensors/temp];rel=[describedby]"},
    // ...and the whole listing exactly as the RFC prints it, line breaks included (one of
    // them before a ';'): the reason we tolerate whitespace around separators.
    {"rfc_5_full_listing",
     "</sensors>;ct=40;title=\"Sensor Index\",\n"
     "</sensors/temp>;rt=\"temperature-c\";if=\"sensor\",\n"
     "</sensors/light>;rt=\"light-lux\";if=\"sensor\",\n"
     "<http://www.example.com/sensors/t123>;anchor=\"/sensors/temp\"\n"
     ";rel=\"describedby\",\n"
     "</t>;anchor=\"/sensors/temp\";rel=\"alternate\"",
     "</sensors>;ct=[40];title=[Sensor Index],"
     "</sensors/temp>;rt=[temperature-c];if=[sensor],"
     "</sensors/light>;rt=[light-lux];if=[sensor],"
     "<http://www.example.com/sensors/t123>;anchor=[/sensors/temp];rel=[describedby],"
     "</t>;anchor=[/sensors/temp];rel=[alternate]"},
    // RFC 6690 §5: sz on a large resource.
    {"rfc_5_firmware_sz", R"(</firmware/v2.1>;rt="firmware";sz=262144)",
     "</firmware/v2.1>;rt=[firmware];sz=[262144]"},
    // RFC 6690 §2.1: relative references and the empty reference are valid targets.
    {"relative_target", "<sensors/temp>;rt=x", "<sensors/temp>;rt=[x]"},
    {"empty_target", "<>", "<>"},
    {"empty_document", "", ""},
    {"whitespace_only_document", " \r\n\t ", ""},
    // Quoted strings may hide separators and escapes.
    {"quoted_separators", R"(</a>;title="x,y;z",</b>)", "</a>;title=[x,y;z],</b>"},
    {"escaped_quote", R"(</a>;title="say \"hi\" \\ ok")", R"(</a>;title=[say "hi" \ ok])"},
    {"escaped_plain_char", R"(</a>;title="\a\b")", "</a>;title=[ab]"},
    {"empty_quoted", R"(</a>;title="")", "</a>;title=[]"},
    {"utf8_in_quoted", "</a>;title=\"Temp\xc3\xa9rature \xe2\x82\xac \xf0\x9f\x8c\xa1\"",
     "</a>;title=[Temp\xc3\xa9rature \xe2\x82\xac \xf0\x9f\x8c\xa1]"},
    {"tab_in_quoted", "</a>;title=\"a\tb\"", "</a>;title=[a\tb]"},
    // Names are case-insensitive and stored lower-case; unknown ones are kept in order.
    {"case_insensitive_names", R"(</a>;RT="x";If=y;cT=0;OBS;X-Vendor=1)",
     "</a>;rt=[x];if=[y];ct=[0];obs;x-vendor=[1]"},
    {"unknown_attributes_in_order", R"(</a>;zeta=1;alpha;mid="m";exp=2)",
     "</a>;zeta=[1];alpha;mid=[m];exp=[2]"},
    // RFC 5987 ext-value for title*: kept raw as an unknown attribute.
    {"title_star", "</a>;title*=UTF-8'de'n%c3%a4chstes", "</a>;title*=[UTF-8'de'n%c3%a4chstes]"},
    // ptoken may contain '<', '=', '>' (RFC 6690 ptokenchar).
    {"ptoken_odd_chars", "</a>;foo=a=b<c>", "</a>;foo=[a=b<c>]"},
    // Whitespace leniency around ',' and ';' and at the ends.
    {"whitespace_around_separators", "  </a> ; rt=x ;\tobs , \r\n </b>\n", "</a>;rt=[x];obs,</b>"},
    {"many_links", "</a>,</b>,</c>,</d>", "</a>,</b>,</c>,</d>"},
    // A URI target may carry query, fragment, IPv6 literal, percent-encoding.
    {"uri_chars_in_target", "<coap://[::1]:5683/a%20b?x=1&y#f>",
     "<coap://[::1]:5683/a%20b?x=1&y#f>"},
    {"obs_with_value", "</a>;obs=1", "</a>;obs=[1]"},
};

INSTANTIATE_TEST_SUITE_P(Table, ValidLinkFormat, ::testing::ValuesIn(kValidCases),
                         [](const auto& info) { return std::string(info.param.name); });

// ---------------------------------------------------------------------------------------
// Documents that must be rejected, with where and what was expected.

struct ErrorCase {
  const char* name;
  std::string input;
  std::size_t offset;
  const char* message_part;  // substring of the error message
  std::size_t max_bytes = std::size_t{64} * 1024;
};

// ctest lists each case by its name, not by the struct's bytes.
void PrintTo(const ErrorCase& c, std::ostream* os) {
  *os << c.name;
}

class InvalidLinkFormat : public ::testing::TestWithParam<ErrorCase> {};

TEST_P(InvalidLinkFormat, FailsAtOffsetWithMessage) {
  const auto& c = GetParam();
  const auto r = parseLinkFormat(c.input, c.max_bytes);
  ASSERT_FALSE(r.ok()) << dump(r);
  EXPECT_TRUE(r.links.empty());
  EXPECT_EQ(r.error->offset, c.offset) << r.error->message;
  EXPECT_NE(r.error->message.find(c.message_part), std::string::npos) << r.error->message;
  EXPECT_LE(r.error->offset, std::max(c.input.size(), c.max_bytes));
}

std::string repeat(std::string_view s, std::size_t n) {
  std::string out;
  out.reserve(s.size() * n);
  for (std::size_t i = 0; i < n; ++i) out += s;
  return out;
}

std::string manyAttributes(std::size_t n) {
  return "</a>" + repeat(";a=1", n);
}

std::string manyLinks(std::size_t n) {
  std::string s = repeat("</x>,", n);
  s.pop_back();
  return s;
}

const ErrorCase kErrorCases[] = {
    {"lone_open_angle", "<", 1, "expected '>' to close the link target opened at offset 0"},
    {"not_a_link", "hello", 0, "expected '<' to start a link, found 'h'"},
    {"bare_path", "/sensors", 0, "expected '<'"},
    {"unterminated_target", "</a;rt=x", 8, "expected '>'"},
    {"space_in_target", "</a b>", 3,
     "expected a URI character or '>' in link target, found a space"},
    {"missing_close_angle_before_param", "</a ;rt=x", 3, "expected a URI character or '>'"},
    {"nested_open_angle", "<</a>", 1, "found '<'"},
    {"unterminated_quote", R"(</a>;title="abc)", 15,
     "expected '\"' to close the quoted-string opened at offset 11"},
    {"unterminated_quote_swallows_rest", R"(</a>;title="abc,</b>;rt=x)", 25, "expected '\"'"},
    {"backslash_at_end", R"(</a>;title="abc\)", 16, "expected '\"'"},
    {"escaped_quote_unterminated", R"(</a>;title="\")", 14, "expected '\"'"},
    {"double_comma", "</a>,,</b>", 5, "expected '<' to start a link, found ','"},
    {"trailing_comma", "</a>,", 5, "expected '<' to start a link after ','"},
    {"trailing_comma_space", "</a> , ", 7, "expected '<' to start a link after ','"},
    {"leading_comma", ",</a>", 0, "expected '<' to start a link, found ','"},
    {"missing_comma", "</a></b>", 4, "expected ';', ',' or end of input after link, found '<'"},
    {"equals_without_value", "</a>;rt=", 8, "expected a token or quoted-string after 'rt='"},
    {"equals_then_comma", "</a>;rt=,</b>", 8, "found ','"},
    {"equals_then_semicolon", "</a>;rt=;obs", 8, "found ';'"},
    {"space_before_equals", "</a>;rt =x", 8, "no whitespace is allowed around '='"},
    {"space_after_equals", "</a>;rt= x", 8, "expected a token or quoted-string"},
    {"space_inside_token", "</a>;rt=a b", 10, "found 'b'"},
    {"double_semicolon", "</a>;;rt=x", 5, "expected a parameter name after ';', found ';'"},
    {"trailing_semicolon", "</a>;", 5, "expected a parameter name after ';', found end of input"},
    {"semicolon_then_comma", "</a>;,</b>", 5, "found ','"},
    {"deeply_repeated_semicolons", "</a>" + repeat(";", 100000), 5, "expected a parameter name",
     200000},
    {"bad_name_char", "</a>;r@t=x", 6, "found '@'"},
    {"quote_without_name", R"(</a>;"x")", 5, "expected a parameter name"},
    {"nul_in_target", "</a\0b>"s, 3, "byte 0x00"},
    {"nul_in_quoted", "</a>;title=\"a\0b\""s, 13, "control byte 0x00"},
    {"nul_after_token", "</a>;rt=a\0"s, 9, "byte 0x00"},
    {"nul_only", "\0"s, 0, "byte 0x00"},
    {"non_ascii_in_target", "</caf\xc3\xa9>", 5, "byte 0xc3"},
    {"non_ascii_in_token", "</a>;rt=caf\xc3\xa9", 11, "byte 0xc3"},
    {"invalid_utf8_in_quoted", "</a>;title=\"\xff\"", 12, "expected valid UTF-8"},
    {"truncated_utf8_in_quoted", "</a>;title=\"\xe2\x82\"", 12, "expected valid UTF-8"},
    {"overlong_utf8_in_quoted", "</a>;title=\"\xc0\xaf\"", 12, "expected valid UTF-8"},
    {"surrogate_utf8_in_quoted", "</a>;title=\"\xed\xa0\x80\"", 12, "expected valid UTF-8"},
    {"non_ascii_after_backslash", "</a>;title=\"\\\xc3\xa9\"", 13,
     "expected a printable ASCII character after '\\'"},
    {"newline_in_quoted", "</a>;title=\"a\nb\"", 13, "control byte 0x0a"},
    {"hundred_k_open_angles", repeat("<", 100000), 65536, "expected at most 65536 bytes"},
    {"hundred_k_open_angles_large_limit", repeat("<", 100000), 1, "found '<'", 1 << 20},
    {"over_max_bytes", "</a>", 3, "expected at most 3 bytes of link-format, got 4", 3},
    {"too_many_attributes", manyAttributes(kMaxAttributesPerLink + 1),
     4 + 4 * kMaxAttributesPerLink + 1, "expected at most 64 attributes in one link"},
    {"too_many_links", manyLinks(kMaxLinks + 1), 5 * kMaxLinks, "expected at most 4096 links"},
    {"ct_not_a_number", "</a>;ct=abc", 8, "expected ct to be a content-format number"},
    {"ct_negative", "</a>;ct=-1", 8, "expected ct"},
    {"ct_too_large", "</a>;ct=65536", 8, "0-65535"},
    {"ct_leading_zero", "</a>;ct=040", 8, "no leading zeros"},
    {"ct_empty_quoted", R"(</a>;ct="")", 8, "expected ct"},
    {"ct_blank_quoted", R"(</a>;ct="  ")", 8, "expected ct"},
    {"ct_list_with_junk", R"(</a>;ct="0 x 60")", 8, "expected ct"},
    {"ct_bare", "</a>;ct", 7, "expected '=' and a value after 'ct'"},
    {"ct_bare_uppercase", "</a>;CT;obs", 7, "after 'ct'"},
    {"rt_bare", "</a>;rt,</b>", 7, "expected '=' and a value after 'rt'"},
    {"title_bare", "</a>;title", 10, "after 'title'"},
    {"anchor_bare", "</a>;anchor", 11, "after 'anchor'"},
    {"sz_negative", "</a>;sz=-1", 8, "expected sz to be a non-negative integer"},
    {"sz_leading_zero", "</a>;sz=01", 8, "without leading zeros"},
    {"sz_sign", "</a>;sz=+1", 8, "expected sz"},
    {"sz_huge_but_not_a_number", "</a>;sz=99999999999999999999999x", 8, "expected sz"},
    {"sz_not_a_number", "</a>;sz=big", 8, "expected sz"},
    {"sz_bare", "</a>;sz", 7, "after 'sz'"},
    // A later duplicate is still checked even though the first one wins.
    {"sz_bad_duplicate", "</a>;sz=1;sz=x", 13, "expected sz"},
};

INSTANTIATE_TEST_SUITE_P(Table, InvalidLinkFormat, ::testing::ValuesIn(kErrorCases),
                         [](const auto& info) { return std::string(info.param.name); });

// ---------------------------------------------------------------------------------------
// Convenience views derived from the attributes.

TEST(LinkFormatViews, CoapServerWellKnownCore) {
  // Captured from libcoap 4.3.1's coap-server (Debian 12): the payload of
  // GET coap://127.0.0.1:15683/.well-known/core. coap-client prints a '\n' after it that is
  // not part of the payload; we accept it either way.
  const std::string payload =
      R"(</>;title="General Info";ct=0,</time>;if="clock";rt="ticks";title="Internal Clock";)"
      R"(ct=0;obs,</async>;ct=0,</example_data>;title="Example Data";ct=0;obs)";
  for (const auto& text : {payload, payload + "\n"}) {
    const auto r = parseLinkFormat(text);
    ASSERT_TRUE(r.ok()) << dump(r);
    ASSERT_EQ(r.links.size(), 4u);

    EXPECT_EQ(r.links[0].target, "/");
    EXPECT_EQ(r.links[0].title, "General Info");
    EXPECT_EQ(r.links[0].ct, std::vector<unsigned>{0});
    EXPECT_FALSE(r.links[0].obs);

    const Link& time = r.links[1];
    EXPECT_EQ(time.target, "/time");
    EXPECT_EQ(time.ifs, Strings{"clock"});
    EXPECT_EQ(time.rt, Strings{"ticks"});
    EXPECT_EQ(time.title, "Internal Clock");
    EXPECT_EQ(time.ct, std::vector<unsigned>{0});
    EXPECT_TRUE(time.obs);
    ASSERT_EQ(time.attributes.size(), 5u);
    EXPECT_EQ(time.attributes[4].name, "obs");
    EXPECT_FALSE(time.attributes[4].value.has_value());

    EXPECT_EQ(r.links[2].target, "/async");
    EXPECT_FALSE(r.links[2].title.has_value());
    EXPECT_EQ(r.links[3].target, "/example_data");
    EXPECT_TRUE(r.links[3].obs);
  }
}

TEST(LinkFormatViews, RtAndIfSplitOnSpacesAcrossAttributes) {
  const auto r = parseLinkFormat(R"(</a>;rt="  core.s  oic.r.temp ";if=x;rt=third;if="a b")");
  ASSERT_TRUE(r.ok()) << dump(r);
  EXPECT_EQ(r.links[0].rt, (Strings{"core.s", "oic.r.temp", "third"}));
  EXPECT_EQ(r.links[0].ifs, (Strings{"x", "a", "b"}));
}

TEST(LinkFormatViews, RtEmptyQuotedYieldsNoItems) {
  const auto r = parseLinkFormat(R"(</a>;rt="")");
  ASSERT_TRUE(r.ok()) << dump(r);
  EXPECT_TRUE(r.links[0].rt.empty());
  ASSERT_NE(r.links[0].find("rt"), nullptr);
}

TEST(LinkFormatViews, CtNumberAndQuotedList) {
  const auto r = parseLinkFormat(R"(</a>;ct=40,</b>;ct="0 50 60",</c>;ct=65535;ct="42  11")");
  ASSERT_TRUE(r.ok()) << dump(r);
  EXPECT_EQ(r.links[0].ct, std::vector<unsigned>{40});
  EXPECT_EQ(r.links[1].ct, (std::vector<unsigned>{0, 50, 60}));
  EXPECT_EQ(r.links[2].ct, (std::vector<unsigned>{65535, 42, 11}));
}

TEST(LinkFormatViews, SzTitleAnchorFirstOccurrenceWins) {
  const auto r = parseLinkFormat(
      R"(</a>;sz=0;sz=7;title="one";title="two";anchor="/x";anchor="/y";sz=18446744073709551615)");
  ASSERT_TRUE(r.ok()) << dump(r);
  const Link& l = r.links[0];
  EXPECT_EQ(l.sz, std::optional<std::size_t>{0});
  EXPECT_EQ(l.title, "one");
  EXPECT_EQ(l.anchor, "/x");
  EXPECT_EQ(l.attributes.size(), 7u);  // every occurrence is still kept
}

// Issue 17, finding 2: a multicast answer with sz=9223372036854775808 ended the daemon
// (the parser took it, the store could not bind it). A well-formed size beyond kMaxLinkSz
// (INT64_MAX) is now no size: the link and its other attributes stay, and so does the
// attribute itself (a round trip gives the same links). Sizes beyond 64 bits, an error
// before, are treated alike.
TEST(LinkFormatViews, SzBeyondInt64MaxIsNoSize) {
  static_assert(kMaxLinkSz == 9223372036854775807u);
  for (const char* big : {"9223372036854775808", "18446744073709551615", "18446744073709551616",
                          "99999999999999999999999"}) {
    SCOPED_TRACE(big);
    const std::string text = std::string("</a>;rt=x;sz=") + big + ";obs,</b>;sz=12";
    const auto r = parseLinkFormat(text);
    ASSERT_TRUE(r.ok()) << dump(r);
    ASSERT_EQ(r.links.size(), 2u);
    const Link& a = r.links[0];
    EXPECT_FALSE(a.sz.has_value());
    EXPECT_TRUE(a.obs);
    EXPECT_EQ(a.rt, std::vector<std::string>{"x"});
    ASSERT_NE(a.find("sz"), nullptr);
    EXPECT_EQ(a.find("sz")->value, big);
    EXPECT_EQ(r.links[1].sz, std::optional<std::size_t>{12});
    const auto again = parseLinkFormat(serializeLinkFormat(r.links));
    ASSERT_TRUE(again.ok()) << dump(again);
    EXPECT_EQ(dump(again), dump(r));
    EXPECT_FALSE(again.links[0].sz.has_value());
  }
  // The largest that is kept; and a later sz within range still gives the size.
  auto r = parseLinkFormat("</a>;sz=9223372036854775807");
  ASSERT_TRUE(r.ok()) << dump(r);
  EXPECT_EQ(r.links[0].sz, std::optional<std::size_t>{kMaxLinkSz});
  r = parseLinkFormat("</a>;sz=9223372036854775808;sz=5");
  ASSERT_TRUE(r.ok()) << dump(r);
  EXPECT_EQ(r.links[0].sz, std::optional<std::size_t>{5});
}

TEST(LinkFormatViews, TitleUnquotedIsAccepted) {
  const auto r = parseLinkFormat("</a>;title=Kitchen");
  ASSERT_TRUE(r.ok()) << dump(r);
  EXPECT_EQ(r.links[0].title, "Kitchen");
}

TEST(LinkFormatViews, TitleStarIsNotTitle) {
  const auto r = parseLinkFormat("</a>;title*=UTF-8''x");
  ASSERT_TRUE(r.ok()) << dump(r);
  EXPECT_FALSE(r.links[0].title.has_value());
  ASSERT_NE(r.links[0].find("title*"), nullptr);
  EXPECT_EQ(r.links[0].find("title*")->value, "UTF-8''x");
}

TEST(LinkFormatViews, DefaultsWhenAbsent) {
  const auto r = parseLinkFormat("</a>");
  ASSERT_TRUE(r.ok());
  const Link& l = r.links[0];
  EXPECT_TRUE(l.rt.empty());
  EXPECT_TRUE(l.ifs.empty());
  EXPECT_TRUE(l.ct.empty());
  EXPECT_FALSE(l.obs);
  EXPECT_FALSE(l.sz.has_value());
  EXPECT_FALSE(l.title.has_value());
  EXPECT_FALSE(l.anchor.has_value());
  EXPECT_TRUE(l.attributes.empty());
}

TEST(LinkFind, FirstMatchCaseInsensitive) {
  const auto r = parseLinkFormat(R"(</a>;foo=1;obs;FOO=2)");
  ASSERT_TRUE(r.ok());
  const Link& l = r.links[0];
  ASSERT_NE(l.find("foo"), nullptr);
  EXPECT_EQ(l.find("foo")->value, "1");
  EXPECT_EQ(l.find("Foo"), l.find("foo"));
  ASSERT_NE(l.find("obs"), nullptr);
  EXPECT_FALSE(l.find("obs")->value.has_value());
  EXPECT_EQ(l.find("bar"), nullptr);
  EXPECT_EQ(l.find(""), nullptr);
}

// ---------------------------------------------------------------------------------------
// Limits and robustness.

TEST(LinkFormatLimits, ExactlyAtTheCapsIsAccepted) {
  const auto attrs = parseLinkFormat(manyAttributes(kMaxAttributesPerLink));
  ASSERT_TRUE(attrs.ok()) << dump(attrs);
  EXPECT_EQ(attrs.links[0].attributes.size(), kMaxAttributesPerLink);

  const auto links = parseLinkFormat(manyLinks(kMaxLinks));
  ASSERT_TRUE(links.ok()) << links.error->message;
  EXPECT_EQ(links.links.size(), kMaxLinks);

  const std::string doc = "</a>;rt=x";
  EXPECT_TRUE(parseLinkFormat(doc, doc.size()).ok());
  EXPECT_FALSE(parseLinkFormat(doc, doc.size() - 1).ok());
}

TEST(LinkFormatLimits, LargeValidDocumentWithRaisedLimit) {
  // 1 MiB in one quoted string: must be accepted when the caller allows it, in linear time
  // (a quadratic parser would make this test time out).
  const std::string doc = "</a>;title=\"" + repeat("x\\\"", 350000) + "\"";
  const auto r = parseLinkFormat(doc, doc.size());
  ASSERT_TRUE(r.ok()) << r.error->message;
  EXPECT_EQ(r.links[0].title->size(), 700000u);
}

TEST(LinkFormatLimits, EveryPrefixOfAValidDocumentIsHandled) {
  // Truncation at any byte (a lost block) must give a clean result, never a crash.
  const std::string doc =
      "</sensors>;ct=40;title=\"Sensor \\\"Index\\\"\",\n"
      "</t>;anchor=\"/sensors/temp\";rel=\"alternate\";ct=\"0 60\";obs;sz=12";
  std::size_t ok = 0;
  for (std::size_t n = 0; n <= doc.size(); ++n) {
    const auto r = parseLinkFormat(std::string_view(doc).substr(0, n));
    if (r.ok()) {
      ++ok;
    } else {
      EXPECT_TRUE(r.links.empty());
      EXPECT_LE(r.error->offset, n);
      EXPECT_FALSE(r.error->message.empty());
    }
  }
  EXPECT_GE(ok, 5u);  // "", and the prefixes ending right after a complete link or value
}

TEST(LinkFormatLimits, EveryByteValueInEveryPositionIsHandled) {
  // Cheap deterministic cousin of the fuzzer: substitute each byte with all 256 values.
  const std::string doc = R"(</a/b>;rt="x y";ct=0;obs,<c>;t*=v)";
  for (std::size_t i = 0; i < doc.size(); ++i) {
    for (int b = 0; b < 256; ++b) {
      std::string mutated = doc;
      mutated[i] = static_cast<char>(b);
      const auto r = parseLinkFormat(mutated);
      if (!r.ok()) {
        EXPECT_TRUE(r.links.empty());
        EXPECT_LE(r.error->offset, mutated.size());
        // Messages never carry raw control or non-ASCII bytes.
        for (char ch : r.error->message) {
          const auto u = static_cast<unsigned char>(ch);
          EXPECT_TRUE(u >= 0x20 && u < 0x7F) << "byte " << int(u) << " in: " << r.error->message;
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------
// targetPath.

struct PathCase {
  const char* target;
  std::optional<std::string> expected;
};

class TargetPath : public ::testing::TestWithParam<PathCase> {};

TEST_P(TargetPath, MapsTargetToDevicePath) {
  const auto& c = GetParam();
  EXPECT_EQ(targetPath(c.target), c.expected) << "target: " << c.target;
}

const PathCase kPathCases[] = {
    {"", "/"},
    {"/", "/"},
    {"/a/b", "/a/b"},
    {"a/b", "/a/b"},
    {"a", "/a"},
    {"/a/", "/a/"},
    {"/a//b", "/a//b"},
    {"coap://host:5683/a/b?x", "/a/b"},
    {"coap://host", "/"},
    {"coap://host/", "/"},
    {"coap://host?q", "/"},
    {"coap://[::1]:5683/a", "/a"},
    {"coaps+tcp://h/x", "/x"},
    {"http://www.example.com/sensors/t123", "/sensors/t123"},
    {"coap:/abs", "/abs"},
    {"//host/a", "/a"},
    {"/a?x#y", "/a"},
    {"/a#frag", "/a"},
    {"?x", "/"},
    {"#f", "/"},
    {"/a?../..", "/a"},  // dots in a query are not segments
    {"/a%20b/%2F", "/a%20b/%2F"},
    {"/a/./b", "/a/b"},
    {"./a", "/a"},
    {"./a:b", "/a:b"},
    {".", "/"},
    {"/a/.", "/a/"},
    {"/...", "/..."},
    {"/..a", "/..a"},
    {"/a..", "/a.."},
    // Path traversal is refused however it is spelled.
    {"..", std::nullopt},
    {"/..", std::nullopt},
    {"/a/../b", std::nullopt},
    {"/a/..", std::nullopt},
    {"../a", std::nullopt},
    {"/a/..?x", std::nullopt},
    {"coap://h/a/../b", std::nullopt},
    {"/%2e%2E/x", std::nullopt},
    {"/.%2e", std::nullopt},
    {"/%2e./x", std::nullopt},
    // Not a path on a device, or not a URI-reference at all.
    {"urn:ietf:x", std::nullopt},
    {"mailto:x@y", std::nullopt},
    {"1a:b", std::nullopt},
    {":x", std::nullopt},
    {"/a b", std::nullopt},
    {"/caf\xc3\xa9", std::nullopt},
    {"/a\"b", std::nullopt},
};

INSTANTIATE_TEST_SUITE_P(Table, TargetPath, ::testing::ValuesIn(kPathCases));

// ---------------------------------------------------------------------------------------
// serializeLinkFormat: the inverse of the parser. (More shapes in test_resource_directory's
// RdRoundTripTest, which reads registrations back through it.)

// Views as well as attributes, so that "the same links" means the same to every caller.
std::string dumpWithViews(const LinkFormatResult& r) {
  std::string out = dump(r);
  for (const auto& link : r.links) {
    out += "\n" + link.target + " rt:";
    for (const auto& v : link.rt) out += ' ' + v;
    out += " if:";
    for (const auto& v : link.ifs) out += ' ' + v;
    out += " ct:";
    for (unsigned v : link.ct) out += ' ' + std::to_string(v);
    out += link.obs ? " obs" : " -";
    out += " sz:" + (link.sz ? std::to_string(*link.sz) : "-"s);
    out += " title:" + link.title.value_or("-");
    out += " anchor:" + link.anchor.value_or("-");
  }
  return out;
}

TEST(SerializeLinkFormat, EveryValidDocumentRoundTrips) {
  for (const ValidCase& c : kValidCases) {
    SCOPED_TRACE(c.name);
    const LinkFormatResult original = parseLinkFormat(c.input);
    ASSERT_TRUE(original.ok()) << dump(original);
    const std::string text = serializeLinkFormat(original.links);
    const LinkFormatResult again = parseLinkFormat(text, text.size());
    ASSERT_TRUE(again.ok()) << dump(again) << " in " << text;
    EXPECT_EQ(dumpWithViews(again), dumpWithViews(original)) << text;
    EXPECT_EQ(serializeLinkFormat(again.links), text);  // a fixed point after one round
  }
}

TEST(SerializeLinkFormat, TokensWhereTheyCanBeQuotedStringsElse) {
  Link link;
  link.target = "/t";
  link.attributes = {{"rt", "temperature-c"},
                     {"if", "a b"},
                     {"x", "a,b;c"},
                     {"q", "say \"hi\" \\o/"},
                     {"e", ""},
                     {"obs", std::nullopt},
                     {"title", "short"},
                     {"anchor", "/x"},
                     {"p", "a=b<c>?@[]"},
                     {"u",
                      "K\xc3\xbc"
                      "che"},
                     {"title*", "UTF-8'de'n%c3%a4"}};
  Link bare;
  bare.target = "";
  const std::string text = serializeLinkFormat({link, bare});
  EXPECT_EQ(text,
            "</t>;rt=temperature-c;if=\"a b\";x=\"a,b;c\";q=\"say \\\"hi\\\" \\\\o/\";e=\"\";obs;"
            "title=\"short\";anchor=\"/x\";p=a=b<c>?@[];u=\"K\xc3\xbc"
            "che\";"
            "title*=UTF-8'de'n%c3%a4,<>");
  const LinkFormatResult parsed = parseLinkFormat(text);
  ASSERT_TRUE(parsed.ok()) << dump(parsed);
  ASSERT_EQ(parsed.links.size(), 2u);
  ASSERT_EQ(parsed.links[0].attributes.size(), link.attributes.size());
  for (std::size_t i = 0; i < link.attributes.size(); ++i) {
    EXPECT_EQ(parsed.links[0].attributes[i].name, link.attributes[i].name);
    EXPECT_EQ(parsed.links[0].attributes[i].value, link.attributes[i].value);
  }
  EXPECT_EQ(parsed.links[1].target, "");
}

TEST(SerializeLinkFormat, EmptyListAndViewsAreNotWritten) {
  EXPECT_EQ(serializeLinkFormat({}), "");
  EXPECT_TRUE(parseLinkFormat(serializeLinkFormat({})).ok());
  Link link;  // views without attributes: only attributes are the link's content
  link.target = "/v";
  link.rt = {"x"};
  link.obs = true;
  link.ct = {40};
  link.title = "t";
  EXPECT_EQ(serializeLinkFormat({link}), "</v>");
}

TEST(TargetPathNul, EmbeddedNulIsRefused) {
  EXPECT_EQ(targetPath("/a\0b"s), std::nullopt);
}

TEST(TargetPathParsed, EveryParsedTargetOfTheRfcListingMaps) {
  const auto r = parseLinkFormat(
      R"(</sensors>;ct=40,<http://www.example.com/sensors/t123>;anchor="/sensors/temp",</t>)");
  ASSERT_TRUE(r.ok());
  std::vector<std::string> paths;
  for (const auto& l : r.links) paths.push_back(targetPath(l.target).value_or("<none>"));
  EXPECT_EQ(paths, (Strings{"/sensors", "/sensors/t123", "/t"}));
}

}  // namespace
}  // namespace coap2mqtt::registry
