// transformPayload: one table per Content-Format family, covering every rule in
// bridge/transform.h (including the edge cases it documents) and every error path.
#include "bridge/transform.h"

#include <gtest/gtest.h>

#include <initializer_list>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace coap2mqtt::bridge {
namespace {

using namespace std::string_literals;
namespace ct = content_format;

std::string bytes(std::initializer_list<int> values) {
  std::string out;
  for (int v : values) out.push_back(static_cast<char>(v));
  return out;
}

std::string repeat(const std::string& s, int n) {
  std::string out;
  for (int i = 0; i < n; ++i) out += s;
  return out;
}

struct OkCase {
  std::string input;
  std::string json;
};

void expectJson(std::optional<unsigned> format, const std::vector<OkCase>& cases) {
  for (const auto& c : cases) {
    SCOPED_TRACE("input '" + c.input + "'");
    const TransformResult result = transformPayload(PayloadMode::Json, format, c.input);
    EXPECT_TRUE(result.ok()) << *result.error;
    EXPECT_EQ(result.payload, c.json);
  }
}

struct ErrorCase {
  std::string input;
  const char* message;  // a substring of the error
};

void expectError(std::optional<unsigned> format, const std::vector<ErrorCase>& cases) {
  for (const auto& c : cases) {
    SCOPED_TRACE("input '" + c.input + "'");
    const TransformResult result = transformPayload(PayloadMode::Json, format, c.input);
    ASSERT_FALSE(result.ok());
    EXPECT_NE(result.error->find(c.message), std::string::npos) << *result.error;
    EXPECT_TRUE(result.payload.empty());
  }
}

// --- raw --------------------------------------------------------------------------------

TEST(Transform, RawNeverChangesBytesAndNeverFails) {
  const std::string binary = "\x00\xff\x00"s + "abc\x00"s;
  const std::vector<std::string> inputs = {
      "",         "21.5",        "{not json", binary,
      "\xff\xfe", bytes({0xff}), "</a>;;",    std::string(100000, 'x'),
  };
  const std::vector<std::optional<unsigned>> formats = {
      std::nullopt, ct::kTextPlain, ct::kLinkFormat, ct::kOctetStream, ct::kJson,
      ct::kCbor,    ct::kSenmlJson, ct::kSenmlCbor,  12345u,
  };
  for (const auto& format : formats) {
    for (const auto& input : inputs) {
      SCOPED_TRACE(format ? std::to_string(*format) : "absent");
      const TransformResult result = transformPayload(PayloadMode::Raw, format, input);
      EXPECT_TRUE(result.ok());
      EXPECT_EQ(result.payload, input);
      EXPECT_EQ(result.payload.size(), input.size());
    }
  }
}

// --- text (ct 0 and absent) ---------------------------------------------------------------

const std::vector<OkCase> kTextCases = {
    // numbers, emitted exactly as written
    {"21.5", "21.5"},
    {"-3", "-3"},
    {"0", "0"},
    {"-0", "-0"},
    {"1e3", "1e3"},
    {"1E+2", "1E+2"},
    {"2.5e-3", "2.5e-3"},
    {"21.50", "21.50"},
    {"12345678901234567890123", "12345678901234567890123"},
    {"1.7e308", "1.7e308"},
    {"1e-400", "1e-400"},  // underflows to 0: tiny, but finite
    // surrounding ASCII whitespace is ignored for numbers and booleans
    {" 42 ", "42"},
    {"\t-0.5\r\n", "-0.5"},
    {"\n\v\f 7", "7"},
    {" true\n", "true"},
    {"true", "true"},
    {"false", "false"},
    // not finite: strings
    {"1e400", "\"1e400\""},
    {"-1e400", "\"-1e400\""},
    {"1.8e308", "\"1.8e308\""},
    {"nan", "\"nan\""},
    {"NaN", "\"NaN\""},
    {"inf", "\"inf\""},
    {"-inf", "\"-inf\""},
    {"Infinity", "\"Infinity\""},
    // outside the JSON number grammar: strings, untouched
    {"+1", "\"+1\""},
    {".5", "\".5\""},
    {"5.", "\"5.\""},
    {"007", "\"007\""},
    {"0x1f", "\"0x1f\""},
    {"1,5", "\"1,5\""},
    {"1 2", "\"1 2\""},
    {"--1", "\"--1\""},
    {"1e", "\"1e\""},
    {"1e+", "\"1e+\""},
    {"-", "\"-\""},
    {"21.5 °C", "\"21.5 °C\""},
    {"\u00a042", "\"\u00a042\""},  // only ASCII whitespace is trimmed
    // booleans are exact and lower case; null is just text
    {"True", "\"True\""},
    {"FALSE", "\"FALSE\""},
    {"null", "\"null\""},
    {"yes", "\"yes\""},
    // strings keep every byte, escaped for JSON
    {"", "\"\""},
    {"   ", "\"   \""},
    {"hello", "\"hello\""},
    {"  hi  ", "\"  hi  \""},
    {"a\"b\\c\nd", "\"a\\\"b\\\\c\\nd\""},
    {"tab\there", "\"tab\\there\""},
    {"nul\0byte"s, "\"nul\\u0000byte\""},
    {"héllo wörld €", "\"héllo wörld €\""},
    {"😀", "\"😀\""},
    {"{\"a\":1}", "\"{\\\"a\\\":1}\""},  // text that looks like JSON stays text
};

TEST(Transform, TextPlain) {
  expectJson(ct::kTextPlain, kTextCases);
}
TEST(Transform, AbsentContentFormatIsText) {
  expectJson(std::nullopt, kTextCases);
}

TEST(Transform, TextMustBeUtf8) {
  const std::vector<ErrorCase> cases = {
      {bytes({0xff}), "not valid UTF-8"},
      {"ok" + bytes({0xc3}), "not valid UTF-8"},             // truncated sequence
      {bytes({0xc0, 0xaf}), "not valid UTF-8"},              // overlong '/'
      {bytes({0xe0, 0x80, 0xaf}), "not valid UTF-8"},        // overlong
      {bytes({0xed, 0xa0, 0x80}), "not valid UTF-8"},        // surrogate
      {bytes({0xf4, 0x90, 0x80, 0x80}), "not valid UTF-8"},  // above U+10FFFF
      {bytes({0x80}), "not valid UTF-8"},                    // lone continuation
      {"4" + bytes({0xff}) + "2", "not valid UTF-8"},
  };
  expectError(ct::kTextPlain, cases);
  expectError(std::nullopt, cases);
}

// --- JSON (ct 50, 110) ------------------------------------------------------------------

const std::vector<OkCase> kJsonCases = {
    {"{\"a\": 1, \"b\": [true, null]}", "{\"a\":1,\"b\":[true,null]}"},
    {" [ 1 , 2 ]\n", "[1,2]"},
    {"{\"b\":1,\"a\":2}", "{\"a\":2,\"b\":1}"},  // keys come out sorted
    {"{\"a\":1,\"a\":2}", "{\"a\":2}"},          // the last duplicate wins
    {"\"str\"", "\"str\""},
    {"42", "42"},
    {"-7", "-7"},
    {"18446744073709551615", "18446744073709551615"},
    {"1e3", "1000.0"},  // re-serialised, unlike text
    {"21.50", "21.5"},
    {"true", "true"},
    {"null", "null"},
    {"{}", "{}"},
    {"[]", "[]"},
    {"\"\\u00e9\\n\"", "\"é\\n\""},
    {"{\"k\":\"[{\\\"\"}", "{\"k\":\"[{\\\"\"}"},  // brackets inside strings are not nesting
    {repeat("[", 64) + repeat("]", 64), repeat("[", 64) + repeat("]", 64)},
    {"[{\"bn\":\"urn:dev:ow:10e2073a01080063:\",\"n\":\"temp\",\"u\":\"Cel\",\"v\":23.1}]",
     "[{\"bn\":\"urn:dev:ow:10e2073a01080063:\",\"n\":\"temp\",\"u\":\"Cel\",\"v\":23.1}]"},
};

const std::vector<ErrorCase> kJsonErrors = {
    {"", "invalid JSON"},
    {"{", "invalid JSON"},
    {"{\"a\":}", "invalid JSON"},
    {"[1,]", "invalid JSON"},
    {"tru", "invalid JSON"},
    {"{} x", "invalid JSON"},
    {"NaN", "invalid JSON"},
    {"'a'", "invalid JSON"},
    {"\"" + bytes({0xff}) + "\"", "invalid JSON"},
    {repeat("[", 65) + repeat("]", 65), "nested deeper than 64 levels"},
    {repeat("{\"a\":", 65) + "1" + repeat("}", 65), "nested deeper than 64 levels"},
    {repeat("[", 100000), "nested deeper than 64 levels"},
};

TEST(Transform, Json) {
  expectJson(ct::kJson, kJsonCases);
}
TEST(Transform, SenmlJsonIsJson) {
  expectJson(ct::kSenmlJson, kJsonCases);
}
TEST(Transform, InvalidJson) {
  expectError(ct::kJson, kJsonErrors);
  expectError(ct::kSenmlJson, kJsonErrors);
}

TEST(Transform, JsonWithANulByteIsInvalid) {
  // nlohmann's parser stops at a NUL byte as if the input ended there: "{}\0<anything>"
  // used to pass as {} (found by fuzz_transform).
  const std::vector<ErrorCase> cases = {
      {"{}\0garbage"s, "invalid JSON: NUL byte at byte 2"},
      {"8\0\0\0"s + bytes({0x82, 0x01}), "invalid JSON: NUL byte at byte 1"},
      {"[1]\0"s, "invalid JSON: NUL byte at byte 3"},
      {"\0"s, "invalid JSON: NUL byte at byte 0"},
      {"\"a\0\""s, "invalid JSON"},
  };
  expectError(ct::kJson, cases);
  expectError(ct::kSenmlJson, cases);
  for (const auto& c : cases) {
    SCOPED_TRACE(c.input);
    EXPECT_FALSE(jsonToCbor(c.input).ok());
    EXPECT_FALSE(jsonToCbor(c.input, /*senml=*/true).ok());
  }
  const TransformResult senml =
      resolveSenml(ct::kSenmlJson, R"([{"n":"a","v":1}])"s + "\0x"s, std::nullopt);
  ASSERT_FALSE(senml.ok());
  EXPECT_EQ(*senml.error, "invalid JSON: NUL byte at byte 17");
  // Escaped, a NUL is fine.
  expectJson(ct::kJson, {{"\"a\\u0000\"", "\"a\\u0000\""}});
}

TEST(Transform, JsonErrorsDoNotEchoThePayload) {
  const TransformResult result =
      transformPayload(PayloadMode::Json, ct::kJson, "{\"password\": secret-value}");
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.error->find("secret"), std::string::npos) << *result.error;
  EXPECT_EQ(result.error->find("[json.exception"), std::string::npos) << *result.error;
  EXPECT_NE(result.error->find("line 1, column"), std::string::npos) << *result.error;
}

// --- CBOR (ct 60, 112) ------------------------------------------------------------------

TEST(Transform, CborRfc8949AppendixA) {
  expectJson(
      ct::kCbor,
      {
          {bytes({0x00}), "0"},
          {bytes({0x17}), "23"},
          {bytes({0x18, 0x18}), "24"},
          {bytes({0x19, 0x03, 0xe8}), "1000"},
          {bytes({0x1a, 0x00, 0x0f, 0x42, 0x40}), "1000000"},
          {bytes({0x1b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}), "18446744073709551615"},
          {bytes({0x20}), "-1"},
          {bytes({0x38, 0x63}), "-100"},
          {bytes({0x3b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}), "-9223372036854775808"},
          {bytes({0x3b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}),
           "-1.8446744073709552e+19"},  // below INT64_MIN: a double
          {bytes({0xf9, 0x00, 0x00}), "0.0"},
          {bytes({0xf9, 0x3c, 0x00}), "1.0"},
          {bytes({0xf9, 0x7b, 0xff}), "65504.0"},
          {bytes({0xf9, 0x00, 0x01}), "5.960464477539063e-08"},
          {bytes({0xf9, 0xc4, 0x00}), "-4.0"},
          {bytes({0xfa, 0x47, 0xc3, 0x50, 0x00}), "100000.0"},
          {bytes({0xfb, 0x3f, 0xf1, 0x99, 0x99, 0x99, 0x99, 0x99, 0x9a}), "1.1"},
          {bytes({0xf9, 0x7c, 0x00}), "null"},  // Infinity
          {bytes({0xf9, 0x7e, 0x00}), "null"},  // NaN
          {bytes({0xf9, 0xfc, 0x00}), "null"},  // -Infinity
          {bytes({0xfa, 0x7f, 0x80, 0x00, 0x00}), "null"},
          {bytes({0xfb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0}), "null"},
          {bytes({0xf4}), "false"},
          {bytes({0xf5}), "true"},
          {bytes({0xf6}), "null"},
          {bytes({0xf7}), "null"},  // undefined
          {bytes({0xf0}), "null"},  // simple(16)
          {bytes({0xf8, 0xff}), "null"},
          {bytes({0xc0, 0x74, '2', '0', '1', '3', '-', '0', '3', '-', '2',
                  '1',  'T',  '2', '0', ':', '0', '4', ':', '0', '0', 'Z'}),
           "\"2013-03-21T20:04:00Z\""},  // tags are dropped
          {bytes({0xc1, 0x1a, 0x51, 0x4b, 0x67, 0xb0}), "1363896240"},
          {bytes({0xd7, 0x44, 0x01, 0x02, 0x03, 0x04}), "\"AQIDBA\""},
          {bytes({0xd8, 0x20, 0x63, 'a', 'b', 'c'}), "\"abc\""},
          {bytes({0x40}), "\"\""},
          {bytes({0x44, 0x01, 0x02, 0x03, 0x04}), "\"AQIDBA\""},
          {bytes({0x43, 0xfb, 0xff, 0x00}), "\"-_8A\""},  // base64url, no padding
          {bytes({0x60}), "\"\""},
          {bytes({0x61, 0x61}), "\"a\""},
          {bytes({0x62, 0x22, 0x5c}), "\"\\\"\\\\\""},
          {bytes({0x62, 0xc3, 0xbc}), "\"ü\""},
          {bytes({0x64, 0xf0, 0x90, 0x85, 0x91}), "\"𐅑\""},
          {bytes({0x80}), "[]"},
          {bytes({0x83, 0x01, 0x02, 0x03}), "[1,2,3]"},
          {bytes({0x83, 0x01, 0x82, 0x02, 0x03, 0x82, 0x04, 0x05}), "[1,[2,3],[4,5]]"},
          {bytes({0xa0}), "{}"},
          {bytes({0xa2, 0x01, 0x02, 0x03, 0x04}), "{\"1\":2,\"3\":4}"},
          {bytes({0xa2, 0x61, 0x61, 0x01, 0x61, 0x62, 0x82, 0x02, 0x03}), "{\"a\":1,\"b\":[2,3]}"},
          {bytes({0x5f, 0x42, 0x01, 0x02, 0x43, 0x03, 0x04, 0x05, 0xff}), "\"AQIDBAU\""},
          {bytes({0x7f, 0x65, 's', 't', 'r', 'e', 'a', 0x64, 'm', 'i', 'n', 'g', 0xff}),
           "\"streaming\""},
          {bytes({0x9f, 0xff}), "[]"},
          {bytes({0x9f, 0x01, 0x82, 0x02, 0x03, 0x9f, 0x04, 0x05, 0xff, 0xff}), "[1,[2,3],[4,5]]"},
          {bytes({0xbf, 0x61, 0x61, 0x01, 0x61, 0x62, 0x9f, 0x02, 0x03, 0xff, 0xff}),
           "{\"a\":1,\"b\":[2,3]}"},
          {bytes({0xbf, 0x63, 'F', 'u', 'n', 0xf5, 0x63, 'A', 'm', 't', 0x21, 0xff}),
           "{\"Amt\":-2,\"Fun\":true}"},
      });
}

TEST(Transform, CborNonStringKeysBecomeTheirJsonText) {
  expectJson(ct::kCbor, {
                            {bytes({0xa1, 0x20, 0x01}), "{\"-1\":1}"},
                            {bytes({0xa1, 0xf9, 0x3e, 0x00, 0x01}), "{\"1.5\":1}"},
                            {bytes({0xa1, 0xf5, 0x01}), "{\"true\":1}"},
                            {bytes({0xa1, 0xf6, 0x01}), "{\"null\":1}"},
                            {bytes({0xa1, 0x81, 0x01, 0x02}), "{\"[1]\":2}"},
                            {bytes({0xa1, 0x41, 0x01, 0x01}), "{\"AQ\":1}"},
                            {bytes({0xa2, 0x01, 0x02, 0x61, '1', 0x03}), "{\"1\":3}"},  // last wins
                        });
}

TEST(Transform, CborMapKeysThatAreMapsOrArraysAreBounded) {
  // Each level of maps used as keys escapes the level below again, so the key text doubled
  // per level: these 81 bytes (40 nested one-pair maps as keys) ran out of memory (found by
  // fuzz_transform).
  const std::string nested_keys =
      std::string(40, static_cast<char>(0xa1)) + std::string(41, static_cast<char>(0x00));
  expectError(ct::kCbor, {{nested_keys, "map key longer than 256 bytes as JSON text"}});
  expectError(ct::kSenmlCbor, {{nested_keys, "map key longer than 256 bytes as JSON text"}});
  // A few levels are fine.
  expectJson(ct::kCbor, {{bytes({0xa1, 0xa1, 0xa1, 0x00, 0x00, 0x00, 0x00}),
                          R"({"{\"{\\\"0\\\":0}\":0}":0})"}});
  // The limit is on the key's JSON text: ["<250 x a>"] is 254 bytes, ["<253 x a>"] 257.
  const auto array_key = [](std::size_t n) {
    return bytes({0xa1, 0x81, 0x78, static_cast<int>(n)}) + std::string(n, 'a') + bytes({0x01});
  };
  expectJson(ct::kCbor, {{array_key(250), "{\"[\\\"" + std::string(250, 'a') + "\\\"]\":1}"}});
  expectError(ct::kCbor, {{array_key(253), "invalid CBOR at byte 1: map key longer than 256"}});
  // Integer and string keys have no such limit.
  const std::string long_text_key =
      bytes({0xa1, 0x79, 0x03, 0xe8}) + std::string(1000, 'k') + bytes({0x01});
  expectJson(ct::kCbor, {{long_text_key, "{\"" + std::string(1000, 'k') + "\":1}"}});
}

TEST(Transform, CborRoundTripsWhatNlohmannEncodes) {
  const nlohmann::json docs[] = {
      nlohmann::json::parse(R"({"a":1,"b":[true,false,null],"c":"x","d":-5,"e":1.5})"),
      nlohmann::json::parse(R"([{"bn":"dev/","n":"temp","v":21.5},{"n":"hum","v":40}])"),
      nlohmann::json::parse(R"({"deep":{"er":{"est":[[[["ü"]]]]}},"big":4294967296})"),
      nlohmann::json::parse(R"("a long string that needs a one-byte length argument to encode")"),
  };
  for (const auto& doc : docs) {
    SCOPED_TRACE(doc.dump());
    const std::vector<std::uint8_t> cbor = nlohmann::json::to_cbor(doc);
    const TransformResult result =
        transformPayload(PayloadMode::Json, ct::kCbor, std::string(cbor.begin(), cbor.end()));
    ASSERT_TRUE(result.ok()) << *result.error;
    EXPECT_EQ(result.payload, doc.dump());
  }
}

TEST(Transform, SenmlCborLabelsBecomeNames) {
  // [{-2: "urn:dev:", 0: "temp", 1: "Cel", 2: 21.5 (half), 6: -1}, {0: "raw", 8: h'0102'},
  //  {9: 1, "x": 2}]
  const std::string senml = bytes(
      {0x83, 0xa5, 0x21, 0x68, 'u',  'r',  'n',  ':',  'd',  'e',  'v',  ':',  0x00, 0x64, 't',
       'e',  'm',  'p',  0x01, 0x63, 'C',  'e',  'l',  0x02, 0xf9, 0x4d, 0x60, 0x06, 0x20, 0xa2,
       0x00, 0x63, 'r',  'a',  'w',  0x08, 0x42, 0x01, 0x02, 0xa2, 0x09, 0x01, 0x61, 'x',  0x02});
  expectJson(
      ct::kSenmlCbor,
      {{senml,
        "[{\"bn\":\"urn:dev:\",\"n\":\"temp\",\"t\":-1,\"u\":\"Cel\",\"v\":21.5},"
        "{\"n\":\"raw\",\"vd\":\"AQI\"},{\"9\":1,\"x\":2}]"},
       {bytes({0xa6, 0x20, 0x01, 0x21, 0x01, 0x22, 0x01, 0x23, 0x01, 0x24, 0x01, 0x25, 0x01}),
        "{\"bn\":1,\"bs\":1,\"bt\":1,\"bu\":1,\"bv\":1,\"bver\":1}"},
       {bytes({0xa6, 0x03, 0x01, 0x04, 0x01, 0x05, 0x01, 0x07, 0x01, 0x27, 0x01, 0x18, 0x20, 0x01}),
        "{\"-8\":1,\"32\":1,\"s\":1,\"ut\":1,\"vb\":1,\"vs\":1}"}});
  // The same bytes as plain CBOR keep the numbers.
  expectJson(ct::kCbor, {{bytes({0xa2, 0x21, 0x01, 0x02, 0x03}), "{\"-2\":1,\"2\":3}"}});
}

TEST(Transform, InvalidCbor) {
  std::string deep_ok(64, static_cast<char>(0x81));
  deep_ok.push_back(0x00);
  expectJson(ct::kCbor, {{deep_ok, repeat("[", 64) + "0" + repeat("]", 64)}});
  std::string deep(65, static_cast<char>(0x81));
  deep.push_back(0x00);
  std::string tags;
  for (int i = 0; i < 100000; ++i) tags.push_back(static_cast<char>(0xc6));
  tags.push_back(0x01);
  expectJson(ct::kCbor, {{tags, "1"}});  // a tag chain is not nesting

  // Empty arrays and maps count as a level too, as "[]" does in JSON: 64 levels in all.
  expectJson(ct::kCbor, {{std::string(63, static_cast<char>(0x81)) + bytes({0x80}),
                          repeat("[", 64) + repeat("]", 64)},
                         {std::string(63, static_cast<char>(0x81)) + bytes({0xa0}),
                          repeat("[", 63) + "{}" + repeat("]", 63)}});
  const std::string deep_empty = std::string(64, static_cast<char>(0x81)) + bytes({0x80});
  const std::string deep_empty_map = std::string(64, static_cast<char>(0x81)) + bytes({0xa0});

  const std::vector<ErrorCase> cases = {
      {"", "invalid CBOR at byte 0: truncated"},
      {bytes({0x18}), "truncated: expected 1 argument bytes"},
      {bytes({0x1b, 0x00}), "truncated: expected 8 argument bytes"},
      {bytes({0x62, 0x61}), "truncated: string of 2 bytes"},
      {bytes({0x83, 0x01, 0x02}), "invalid CBOR at byte 0: truncated: array of 3 items"},
      {bytes({0x83, 0x01, 0x02, 0x82, 0x01}), "invalid CBOR at byte 3: truncated"},
      {bytes({0xa1, 0x01}), "truncated"},
      {bytes({0x9f, 0x01}), "truncated"},
      {bytes({0x5f, 0x41, 0x00}), "truncated"},
      {bytes({0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}), "truncated: array of"},
      {bytes({0xba, 0xff, 0xff, 0xff, 0xff}), "truncated: map of"},
      {bytes({0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}), "truncated: string of"},
      {bytes({0x1c}), "reserved additional information 28"},
      {bytes({0x1f}), "indefinite length is not allowed for major type 0"},
      {bytes({0x3f}), "indefinite length is not allowed for major type 1"},
      {bytes({0xdf, 0x00}), "indefinite length is not allowed for major type 6"},
      {bytes({0xff}), "break outside an indefinite-length item"},
      {bytes({0x82, 0x01, 0xff}), "break outside"},
      {bytes({0xbf, 0x01, 0xff}), "break outside"},  // a key without a value
      {bytes({0x01, 0x02}), "invalid CBOR at byte 1: trailing bytes"},
      {bytes({0x61, 0xff}), "text string is not valid UTF-8"},
      {bytes({0x62, 0xc3, 0x28}), "text string is not valid UTF-8"},
      {bytes({0x5f, 0x61, 0x61, 0xff}), "same type"},
      {bytes({0x7f, 0x7f, 0xff, 0xff}), "same type"},
      {bytes({0xf8, 0x10}), "simple value 16 in two bytes"},
      {deep, "nested deeper than 64 levels"},
      {deep_empty, "invalid CBOR at byte 64: nested deeper than 64 levels"},
      {deep_empty_map, "invalid CBOR at byte 64: nested deeper than 64 levels"},
      {std::string(100000, static_cast<char>(0x81)), "nested deeper than 64 levels"},
  };
  expectError(ct::kCbor, cases);
  expectError(ct::kSenmlCbor, cases);
}

// --- link format (ct 40) ----------------------------------------------------------------

TEST(Transform, LinkFormat) {
  expectJson(ct::kLinkFormat,
             {
                 {"</sensors/temp>;rt=\"temperature-c\";if=\"sensor\";obs,</a>",
                  "[{\"href\":\"/sensors/temp\",\"if\":\"sensor\",\"obs\":true,"
                  "\"rt\":\"temperature-c\"},{\"href\":\"/a\"}]"},
                 {"</a>;rt=\"x\";rt=\"y\"", "[{\"href\":\"/a\",\"rt\":\"x y\"}]"},
                 {"</a>;rt=\"x y\";ct=40;sz=12",
                  "[{\"ct\":\"40\",\"href\":\"/a\",\"rt\":\"x y\",\"sz\":\"12\"}]"},
                 {"</a>;foo;foo=\"x\"", "[{\"foo\":\"x\",\"href\":\"/a\"}]"},
                 {"</a>;foo=\"x\";foo", "[{\"foo\":\"x\",\"href\":\"/a\"}]"},
                 {"</a>;href=\"/b\"", "[{\"href\":\"/a\"}]"},  // the target wins
                 {"</a>;title=\"Température \\\"ext\\\"\"",
                  "[{\"href\":\"/a\",\"title\":\"Température \\\"ext\\\"\"}]"},
                 {"<coap://[fe80::1]/x>", "[{\"href\":\"coap://[fe80::1]/x\"}]"},
             });
}

TEST(Transform, EmptyLinkFormatIsAnEmptyArray) {
  // RFC 6690's link-value-list is optional: a device may have nothing to list.
  expectJson(ct::kLinkFormat, {{"", "[]"}});
}

TEST(Transform, InvalidLinkFormat) {
  expectError(ct::kLinkFormat, {
                                   {"<a", "invalid link-format at byte"},
                                   {"/a", "invalid link-format at byte 0"},
                                   {"</a>;rt=\"x", "invalid link-format at byte"},
                                   {"</a>,,</b>", "invalid link-format at byte"},
                                   {"</a>;title=\"" + bytes({0xff}) + "\"", "UTF-8"},
                               });
}

// --- everything else: base64 ------------------------------------------------------------

TEST(Transform, OtherFormatsAreBase64) {
  const std::vector<OkCase> cases = {
      {"", "{\"base64\":\"\"}"},
      {"f", "{\"base64\":\"Zg==\"}"},
      {"fo", "{\"base64\":\"Zm8=\"}"},
      {"foo", "{\"base64\":\"Zm9v\"}"},
      {"foob", "{\"base64\":\"Zm9vYg==\"}"},
      {"fooba", "{\"base64\":\"Zm9vYmE=\"}"},
      {"foobar", "{\"base64\":\"Zm9vYmFy\"}"},
      {bytes({0x00, 0xff, 0xfe}), "{\"base64\":\"AP/+\"}"},
      {bytes({0xfb, 0xff}), "{\"base64\":\"+/8=\"}"},  // standard alphabet, padded
      {"\0\0\0\0"s, "{\"base64\":\"AAAAAA==\"}"},
      {"21.5", "{\"base64\":\"MjEuNQ==\"}"},  // no sniffing: the format decides
  };
  for (unsigned format : {ct::kOctetStream, 41u, 47u, 51u, 61u, 111u, 11542u, 65535u}) {
    SCOPED_TRACE(format);
    expectJson(format, cases);
  }
}

// Issue 17, finding 7: with senml = "records" every record is a publish; a peer's pack
// could hold any number of them. kMaxSenmlRecords is the bound, in both modes.
TEST(Transform, SenmlPacksBeyondTheRecordLimitAreRefused) {
  const auto pack = [](std::size_t n) {
    std::string out = "[";
    for (std::size_t i = 0; i < n; ++i) {
      out += (i ? ",{" : "{") + std::string("\"n\":\"r") + std::to_string(i) + "\",\"v\":1}";
    }
    return out + "]";
  };
  for (const bool split : {false, true}) {
    RenderOptions options;
    options.split_senml = split;
    std::vector<RenderedPayload> out;
    EXPECT_EQ(renderPayload(options, ct::kSenmlJson, pack(kMaxSenmlRecords), out), std::nullopt);
    EXPECT_EQ(out.size(), split ? kMaxSenmlRecords : 1u);
    out.clear();
    const auto error = renderPayload(options, ct::kSenmlJson, pack(kMaxSenmlRecords + 1), out);
    ASSERT_TRUE(error.has_value()) << "split " << split;
    EXPECT_NE(error->find("more than the limit of 1024"), std::string::npos) << *error;
    EXPECT_TRUE(out.empty());
  }
  EXPECT_FALSE(resolveSenml(ct::kSenmlJson, pack(kMaxSenmlRecords + 1), 0).ok());
}

}  // namespace
}  // namespace coap2mqtt::bridge
