#include "gateway/config_files.h"

#include <glob.h>  // POSIX glob(3); bridge/glob.h is our own topic and path matcher

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <system_error>

namespace coap2mqtt::gateway {

namespace {

namespace fs = std::filesystem;

std::string escapeForGlob(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == '*' || c == '?' || c == '[' || c == '\\') out += '\\';
    out += c;
  }
  return out;
}

// Opens `path` for reading into `in`; nullopt when it could, else why not.
std::optional<ReadError> open(const std::string& path, std::ifstream& in) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) return ReadError{true, "is a directory"};
  in.open(path, std::ios::binary);
  if (!in) return ReadError{false, std::generic_category().message(errno)};
  return std::nullopt;
}

}  // namespace

std::optional<ReadError> readFile(const std::string& path, std::string& content) {
  std::ifstream in;
  if (auto error = open(path, in)) return error;
  content.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  return std::nullopt;
}

std::optional<ReadError> checkReadable(const std::string& path) {
  std::ifstream in;
  return open(path, in);
}

bool fileExists(const std::string& path) {
  std::error_code ec;
  return fs::exists(path, ec);
}

std::string resolvePath(const std::string& dir, const std::string& path) {
  if (path.empty() || path.front() == '/' || dir.empty()) return path;
  return (fs::path(dir) / path).string();
}

std::string resolveSecretPath(const std::string& dir, const std::string& path) {
  if (!path.empty() && path.front() != '/') {
    const char* credentials = std::getenv("CREDENTIALS_DIRECTORY");
    if (credentials != nullptr && *credentials != '\0') {
      std::string candidate = (fs::path(credentials) / path).string();
      if (fileExists(candidate)) return candidate;
    }
  }
  return resolvePath(dir, path);
}

bool isRulePattern(std::string_view entry) {
  return entry.find_first_of("*?[") != std::string_view::npos;
}

void loadRuleFiles(const std::vector<std::string>& entries, const std::string& base_dir,
                   std::string_view default_topic_base, bridge::RuleSet& out,
                   std::vector<bridge::ConfigError>& errors) {
  std::set<std::string> seen;  // a file matched by two entries is loaded once

  const auto loadFile = [&](const std::string& path) {
    std::error_code ec;
    const fs::path canonical = fs::weakly_canonical(path, ec);
    if (!seen.insert(ec ? path : canonical.string()).second) return;
    if (!fileExists(path)) {
      errors.push_back({path, 0, 0, "", "rule file not found"});
      return;
    }
    std::string content;
    if (auto error = readFile(path, content)) {
      errors.push_back({path, 0, 0, "",
                        error->directory ? "is a directory, not a rule file (use a pattern "
                                           "such as \"rules.d/*.toml\")"
                                         : "cannot read rule file: " + error->reason});
      return;
    }
    bridge::parseRules(path, content, default_topic_base, false, out, errors);
  };

  for (const std::string& entry : entries) {
    if (!isRulePattern(entry)) {
      loadFile(resolvePath(base_dir, entry));
      continue;
    }
    const std::string pattern = resolvePath(escapeForGlob(base_dir), entry);
    glob_t g{};
    // Start-up and reload only, on the loop thread.
    const int rc = ::glob(pattern.c_str(), 0, nullptr, &g);  // NOLINT(concurrency-mt-unsafe)
    if (rc == 0) {
      std::vector<std::string> paths(g.gl_pathv, g.gl_pathv + g.gl_pathc);
      std::sort(paths.begin(), paths.end());
      for (const auto& p : paths) {
        std::error_code ec;
        if (fs::is_regular_file(p, ec)) loadFile(p);
      }
    } else if (rc != GLOB_NOMATCH) {
      errors.push_back(
          {resolvePath(base_dir, entry), 0, 0, "", "cannot expand rule file pattern (read error)"});
    }
    globfree(&g);
  }
}

}  // namespace coap2mqtt::gateway
