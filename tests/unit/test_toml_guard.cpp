// The guard in front of toml11 (bridge/toml_reader.h, checkDocument): documents toml11 3.7
// does not survive (nested too deep, not UTF-8) are refused with file:line:col, and nothing
// a real config holds is.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "bridge/config_error.h"
#include "bridge/rules.h"
#include "bridge/toml_reader.h"

namespace coap2mqtt::bridge {
namespace {

using toml_reader::checkDocument;

TEST(TomlGuard, DeepArraysAreRefusedWhereTheyGetTooDeep) {
  const std::string text = "a = 1\nb = " + std::string(5000, '[');
  const auto error = checkDocument("r.toml", text);
  ASSERT_TRUE(error);
  EXPECT_EQ(error->toString(), "r.toml:2:37: arrays and inline tables nest deeper than 32 levels");
}

TEST(TomlGuard, DeepInlineTablesAndDottedKeysAreRefused) {
  std::string tables = "x = ";
  for (int i = 0; i < 40; ++i) tables += "{a=";
  EXPECT_TRUE(checkDocument("r.toml", tables));
  std::string key = "k";
  for (int i = 0; i < 40; ++i) key += ".k";
  const auto error = checkDocument("r.toml", "[t]\n" + key + " = 1\n");
  ASSERT_TRUE(error);
  EXPECT_EQ(error->line, 2u);
  EXPECT_EQ(error->message, "a dotted key of more than 32 levels");
}

TEST(TomlGuard, StringsCommentsAndOrdinaryDocumentsPass) {
  const std::string brackets(100, '[');
  const std::string dots(100, '.');
  EXPECT_FALSE(checkDocument("r.toml", "a = \"" + brackets + dots + "\\\"" + brackets + "\"\n"));
  EXPECT_FALSE(checkDocument("r.toml", "a = '" + brackets + "'\n# " + brackets + dots + "\n"));
  EXPECT_FALSE(
      checkDocument("r.toml", "a = \"\"\"\n" + brackets + "\n\"\"\"\nb = '''" + dots + "'''\n"));
  // Floats, times and many values on one line are not dotted keys.
  std::string floats = "f = [";
  for (int i = 0; i < 100; ++i) floats += "1.5, ";
  EXPECT_FALSE(checkDocument("r.toml", floats + "2.5]\nt = 07:32:00.999\n"));
  EXPECT_FALSE(checkDocument("r.toml", R"([[rule]]
match = { device = "*", path = "/sensors/*", rt = ["a", "b"] }
payload = { format = "json", pointer = "/e/0/v" }
a.b.c = [[1, 2], [3, [4, [5]]]]
)"));
}

TEST(TomlGuard, InvalidUtf8IsRefusedEvenInStrings) {
  // toml11 read past its buffer on this one (tests/fuzz/fuzz_config found it).
  const auto error = checkDocument("r.toml", "a = 1\n'a\xff'''e = 1\n");
  ASSERT_TRUE(error);
  EXPECT_EQ(error->toString(), "r.toml:2:3: not UTF-8 (TOML files are UTF-8)");
  EXPECT_TRUE(checkDocument("r.toml", "# caf\xc3\n"));
  EXPECT_FALSE(checkDocument("r.toml", "name = \"caf\xc3\xa9 \xe2\x82\xac\" # \xf0\x9f\x98\x80\n"));
}

TEST(TomlGuard, RuleFilesReportItInsteadOfCrashing) {
  RuleSet rules;
  std::vector<ConfigError> errors;
  parseRules("deep.toml", "[[rule]]\nx = " + std::string(2000, '['), "c2m", false, rules, errors);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].toString(),
            "deep.toml:2:37: arrays and inline tables nest deeper than 32 levels");
}

}  // namespace
}  // namespace coap2mqtt::bridge
