// libFuzzer target for the two files a user writes: a rule file (bridge::parseRules, on the
// text itself) and gateway.toml (gateway::loadConfig, which reads the file and the rule
// files it names). Both are read at start-up and on every reload, so bad input must give
// errors, never a crash, a hang or an exception of another kind. Besides that it checks:
//  - every error names a file, and one in the input a line inside it (or 0 for "unknown");
//  - loadConfig either returns a config or throws bridge::ConfigErrors with at least one
//    error, nothing else.
//
// Input: byte 0 says which parser (even: the rule file, odd: gateway.toml); the rest is the
// file's text. gateway.toml is written to a scratch file, with its rule globs resolved next
// to it (an empty directory, so only [[rule]]/[[command]] tables in the file itself count).
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include "bridge/config_error.h"
#include "bridge/rules.h"
#include "gateway/config.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

using coap2mqtt::fuzz::check;

std::size_t lineCount(std::string_view text) {
  std::size_t lines = 1;
  for (char c : text) lines += c == '\n';
  return lines;
}

// `others`: errors may also name other files (a rule file, a password file), but never none.
void checkErrors(const std::vector<coap2mqtt::bridge::ConfigError>& errors, const std::string& file,
                 std::string_view text, bool others = false) {
  for (const auto& e : errors) {
    check(others ? !e.file.empty() : e.file == file, "an error names the file");
    if (e.file != file) continue;
    check(e.line <= lineCount(text) + 1, "an error's line is inside the input");
    check(!e.message.empty(), "an error says what is wrong");
    check(e.toString().rfind(file, 0) == 0, "the message starts with the file");
  }
}

std::string scratchFile() {
  char dir[] = "/tmp/fuzz_config.XXXXXX";
  check(mkdtemp(dir) != nullptr, "scratch directory");
  return std::string(dir) + "/gateway.toml";
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace coap2mqtt;
  if (size == 0) return 0;
  const std::string_view text(reinterpret_cast<const char*>(data) + 1, size - 1);

  if (data[0] % 2 == 0) {
    bridge::RuleSet rules;
    std::vector<bridge::ConfigError> errors;
    bridge::parseRules("rules.toml", text, "c2m", data[0] % 4 == 2, rules, errors);
    checkErrors(errors, "rules.toml", text);
    return 0;
  }

  static const std::string path = scratchFile();
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    check(static_cast<bool>(out), "scratch file written");
  }
  try {
    const auto config = gateway::loadConfig(path);
    check(!config.mqtt.base_topic.empty(), "a loaded config has a base topic");
  } catch (const bridge::ConfigErrors& e) {
    check(!e.errors().empty(), "ConfigErrors carries errors");
    checkErrors(e.errors(), path, text, true);
  }
  return 0;
}
