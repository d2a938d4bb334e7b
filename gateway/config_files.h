#pragma once
// The disk side of loading the configuration: reading gateway.toml, expanding the rule
// file patterns of [gateway].rules with glob(3) and reading those files, and checking the
// files that settings name (password, TLS). bridge/ only parses text (bridge::parseRules
// takes a file's content and its name); config.cpp parses gateway.toml's text. Start-up
// and reload only: nothing here is on a per-message path.
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "bridge/config_error.h"
#include "bridge/rules.h"

namespace coap2mqtt::gateway {

// Why a file could not be read.
struct ReadError {
  bool directory = false;  // the path is a directory
  std::string reason;      // "is a directory", or the system's words ("Permission denied")
};

// Reads all of `path` into `content`. nullopt when it did, else why not.
std::optional<ReadError> readFile(const std::string& path, std::string& content);

// Whether `path` can be opened for reading (not read): nullopt when it can, else why not.
std::optional<ReadError> checkReadable(const std::string& path);

bool fileExists(const std::string& path);

// `path` as named in a file in the folder `dir`: unchanged when it is absolute, empty or
// `dir` is empty, else `dir`/`path`.
std::string resolvePath(const std::string& dir, const std::string& path);
// A secret's file (mqtt.password_file): a relative path names a systemd credential first
// ($CREDENTIALS_DIRECTORY/<path>, from the unit's LoadCredential=) when there is one, else
// the file relative to `dir`. The same gateway.toml thus works under systemd, where a
// dynamic user cannot read /etc/coap2mqtt/mqtt.pass itself, and when run by hand.
std::string resolveSecretPath(const std::string& dir, const std::string& path);

// Whether a [gateway].rules entry is a glob(3) pattern ('*', '?' or '[') rather than a
// file name.
bool isRulePattern(std::string_view entry);

// Expands each entry of [gateway].rules (relative to `base_dir`, the config file's
// folder) and parses every file it names with bridge::parseRules, a pattern's matches in
// sorted order; a file named twice is loaded once. A file name that names no file is an
// error; a pattern that matches nothing is fine (an empty rules.d). Errors (a missing or
// unreadable file, and every error in the files) are appended to `errors`.
void loadRuleFiles(const std::vector<std::string>& entries, const std::string& base_dir,
                   std::string_view default_topic_base, bridge::RuleSet& out,
                   std::vector<bridge::ConfigError>& errors);

}  // namespace coap2mqtt::gateway
