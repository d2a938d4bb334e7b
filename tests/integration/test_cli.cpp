// The command line: `check` on good and broken configs, --version.
#include <gtest/gtest.h>

#include <cctype>
#include <filesystem>

#include "tests/integration/harness.h"

namespace coap2mqtt::test {
namespace {

struct RunResult {
  int status = -1;
  std::string output;
};

RunResult runGateway(const TempDir& dir, std::vector<std::string> args) {
  args.insert(args.begin(), gatewayBinary());
  Process p(args, dir.file("cli.log"));
  RunResult r;
  r.status = p.stop(0, 20s);  // signal 0: just wait for it to exit
  r.output = p.output();
  return r;
}

TEST(Cli, VersionPrintsAndExitsZero) {
  TempDir dir;
  auto r = runGateway(dir, {"--version"});
  EXPECT_EQ(r.status, 0);
  EXPECT_NE(r.output.find("coap2mqtt "), std::string::npos) << r.output;
}

TEST(Cli, EveryShippedConfigPassesCheck) {
  TempDir dir;
  int checked = 0;
  for (const auto& entry :
       std::filesystem::recursive_directory_iterator(sourceDir() + "/configs")) {
    if (entry.path().filename() != "gateway.toml") continue;
    auto r = runGateway(dir, {"check", "-c", entry.path().string()});
    EXPECT_EQ(r.status, 0) << entry.path() << "\n" << r.output;
    EXPECT_NE(r.output.find("OK"), std::string::npos) << r.output;
    ++checked;
  }
  EXPECT_GE(checked, 2);
}

// True when `text` contains ":<digits>:<digits>: " (no std::regex: GCC 12 warns inside it
// under the sanitizers).
bool hasLineColumn(const std::string& text) {
  auto digits = [&](std::size_t& i) {
    const std::size_t start = i;
    while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) ++i;
    return i > start;
  };
  for (std::size_t pos = text.find(':'); pos != std::string::npos; pos = text.find(':', pos + 1)) {
    std::size_t i = pos + 1;
    if (digits(i) && i < text.size() && text[i] == ':' && digits(++i) &&
        text.compare(i, 2, ": ") == 0) {
      return true;
    }
  }
  return false;
}

struct BrokenCase {
  const char* name;
  const char* toml;
  int line;  // where the error must point
  const char* mentions;
};

class CheckRejects : public ::testing::TestWithParam<BrokenCase> {};

TEST_P(CheckRejects, WithFileLineColumnAndExitOne) {
  const BrokenCase& c = GetParam();
  TempDir dir;
  dir.write("gateway.toml", c.toml);
  auto r = runGateway(dir, {"check", "-c", dir.file("gateway.toml")});
  EXPECT_EQ(r.status, 1) << r.output;
  const std::string where = dir.file("gateway.toml") + ":" + std::to_string(c.line) + ":";
  EXPECT_NE(r.output.find(where), std::string::npos) << "expected " << where << " in:\n"
                                                     << r.output;
  EXPECT_NE(r.output.find(c.mentions), std::string::npos) << r.output;
  EXPECT_TRUE(hasLineColumn(r.output)) << r.output;
}

void PrintTo(const BrokenCase& c, std::ostream* os) {
  *os << c.name;
}

INSTANTIATE_TEST_SUITE_P(
    BrokenConfigs, CheckRejects,
    ::testing::Values(
        BrokenCase{"BadToml", "[mqtt]\nuri = \"mqtt://127.0.0.1:1883\"\nbase_topic = = \"x\"\n", 3,
                   ""},
        BrokenCase{"UnknownMethod",
                   "[[command]]\ntopic = \"c/{device}/{path}/set\"\nmethod = \"PATCH\"\n"
                   "allow = { device = \"*\", path = \"/a/*\" }\n",
                   3, "method"},
        BrokenCase{"BadGlob",
                   "[[rule]]\nname = \"r\"\nmatch = { device = \"*\", path = \"/a/[bc\" }\n", 3,
                   "path"},
        BrokenCase{"MissingUri", "[[coap.device]]\nname = \"boiler\"\n", 1, "uri"}),
    [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace coap2mqtt::test
