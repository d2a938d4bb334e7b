#include "bridge/rules.h"

#include <glob.h>  // POSIX glob(3); our own matcher is "bridge/glob.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <system_error>
#include <tuple>
#include <utility>

#include <toml.hpp>

#include "bridge/toml_reader.h"

namespace coap2mqtt::bridge {

namespace {

using toml_reader::quote;
using toml_reader::Reporter;
using toml_reader::Table;
using toml_reader::TableReader;
using toml_reader::typeName;
using toml_reader::unknownKeyMessage;
using toml_reader::Value;

constexpr std::chrono::milliseconds kMinInterval{100};

std::optional<Glob> readGlob(TableReader& r, std::string_view key, Glob::Kind kind,
                             bool required = false, std::string_view expected = "a glob") {
  const auto s = r.string(key, required, expected);
  if (!s) return std::nullopt;
  std::string err;
  auto g = Glob::compile(*s, kind, &err);
  if (!g) r.invalid(key, "invalid glob " + quote(*s) + ": " + err);
  return g;
}

std::string stripAnsi(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\x1b' && i + 1 < s.size() && s[i + 1] == '[') {
      i += 2;
      while (i < s.size() && !std::isalpha(static_cast<unsigned char>(s[i]))) ++i;
      continue;
    }
    out += s[i];
  }
  return out;
}

std::string trim(std::string_view s) {
  const auto b = s.find_first_not_of(" \t\r");
  if (b == std::string_view::npos) return {};
  const auto e = s.find_last_not_of(" \t\r");
  return std::string(s.substr(b, e - b + 1));
}

// toml11 3.x reports a syntax error as a formatted text:
//   [error] toml::parse_key_value_pair: missing value after key-value separator '='
//    --> file.toml
//      |
//    2 | b =
//      |     ^--- expected value, but got nothing
// (and for duplicates two such locations, the offending one last). Its exception's own
// location() is often the start of the line, so the position is read from the text.
ConfigError syntaxError(const std::string& file, const std::string& what,
                        const toml::source_location& fallback) {
  std::vector<std::string> lines;
  {
    std::istringstream in(stripAnsi(what));
    for (std::string l; std::getline(in, l);) lines.push_back(l);
  }
  std::string header = lines.empty() ? std::string("syntax error") : trim(lines.front());
  if (header.rfind("[error]", 0) == 0) header = trim(header.substr(7));
  if (header.rfind("toml::", 0) == 0) {
    if (const auto colon = header.find(": "); colon != std::string::npos) {
      header = header.substr(colon + 2);
    }
  }

  struct Mark {
    std::size_t line = 0;
    std::size_t column = 0;
    std::string comment;
  };
  std::vector<Mark> marks;
  for (std::size_t i = 1; i + 1 < lines.size(); ++i) {
    const std::string& l = lines[i];
    std::size_t p = 0;
    while (p < l.size() && l[p] == ' ') ++p;
    const std::size_t digits = p;
    while (p < l.size() && std::isdigit(static_cast<unsigned char>(l[p]))) ++p;
    if (p == digits || l.compare(p, 3, " | ") != 0) continue;
    const std::string& caret = lines[i + 1];
    const auto bar = caret.find("| ");
    if (bar == std::string::npos || caret.find_first_not_of(' ') != bar) continue;
    std::size_t c = bar + 2;
    while (c < caret.size() && caret[c] == ' ') ++c;
    if (c >= caret.size() || (caret[c] != '^' && caret[c] != '~')) continue;
    Mark m;
    m.line = std::stoul(l.substr(digits, p - digits));
    m.column = c - (bar + 2) + 1;
    std::size_t e = c;
    while (e < caret.size() && caret[e] != ' ') ++e;
    m.comment = trim(caret.substr(std::min(e, caret.size())));
    marks.push_back(std::move(m));
    ++i;
  }

  while (!header.empty() && header.back() == '.') header.pop_back();
  ConfigError err{file, fallback.line(), fallback.column(), "", header};
  if (!marks.empty()) {
    const Mark& last = marks.back();
    err.line = last.line;
    err.column = last.column;
    if (!last.comment.empty()) err.message += ": " + last.comment;
    if (marks.size() > 1) {
      const Mark& first = marks.front();
      err.message += " (line " + std::to_string(first.line) +
                     (first.comment.empty() ? "" : ": " + first.comment) + ")";
    }
  }
  err.message = "TOML syntax error: " + err.message;
  return err;
}

std::optional<Value> parseDocument(const std::string& file, std::string_view content,
                                   std::vector<ConfigError>& errors) {
  std::istringstream in{std::string(content)};
  try {
    return toml::parse<toml::discard_comments, std::map, std::vector>(in, file);
  } catch (const toml::exception& e) {
    errors.push_back(syntaxError(file, e.what(), e.location()));
  } catch (const std::exception& e) {
    errors.push_back({file, 0, 0, "", std::string("cannot parse: ") + e.what()});
  }
  return std::nullopt;
}

Glob defaultGlob(std::string_view pattern, Glob::Kind kind) {
  auto g = Glob::compile(pattern, kind, nullptr);
  return g ? *g : Glob();
}

// ---- command delivery keys (issue 7, branch wt-cmd) ------------------------------------
// Kept apart from parseCommand so that the merge with wt-bridge (same key names) is
// mechanical.

const std::vector<std::string> kCommandDeliveryKeys{
    "content_format", "result_topic", "max_payload", "rate_limit", "timeout", "queue", "envelope"};

constexpr std::pair<const char*, unsigned> kContentFormatNames[] = {
    {"text/plain", content_format::kTextPlain},
    {"application/link-format", content_format::kLinkFormat},
    {"application/octet-stream", content_format::kOctetStream},
    {"application/json", content_format::kJson},
    {"application/cbor", content_format::kCbor},
    {"application/senml+json", content_format::kSenmlJson},
    {"application/senml+cbor", content_format::kSenmlCbor},
};

// "10/s", "100/m", "5/h", "3/500ms", "20/10s": a count per duration.
std::optional<CommandRule::RateLimit> parseRateLimit(std::string_view text) {
  const auto slash = text.find('/');
  if (slash == std::string_view::npos || slash == 0) return std::nullopt;
  unsigned count = 0;
  for (char c : text.substr(0, slash)) {
    if (c < '0' || c > '9' || count > 1'000'000) return std::nullopt;
    count = count * 10 + static_cast<unsigned>(c - '0');
  }
  std::string per(text.substr(slash + 1));
  if (!per.empty() && std::isalpha(static_cast<unsigned char>(per.front()))) per = "1" + per;
  const auto d = parseDuration(per);
  if (count == 0 || !d || d->count() <= 0) return std::nullopt;
  return CommandRule::RateLimit{count, *d};
}

void parseCommandDelivery(TableReader& r, CommandRule& cmd) {
  if (const Value* v = r.find("content_format")) {
    if (v->is_integer()) {
      if (auto n = r.integer("content_format", 0, 65535)) {
        cmd.content_format = static_cast<unsigned>(*n);
      }
    } else if (v->is_string()) {
      if (auto ct = contentFormatFromName(v->as_string().str)) {
        cmd.content_format = *ct;
      } else {
        std::string names;
        for (const auto& [name, number] : kContentFormatNames) {
          names += (names.empty() ? "" : ", ") + quote(name);
        }
        r.invalid("content_format", "unknown content format " + quote(v->as_string().str) +
                                        "; expected a number 0..65535 or one of " + names);
      }
    } else {
      r.invalid("content_format", std::string("expected a number or a name such as "
                                              "\"application/cbor\", got ") +
                                      typeName(*v));
    }
  }
  if (auto text = r.string("result_topic", false, "a topic template")) {
    std::string err;
    if (auto t = TopicTemplate::compile(*text, &err)) {
      cmd.result_topic = std::move(*t);
    } else {
      r.invalid("result_topic", "invalid topic template " + quote(*text) + ": " + err);
    }
  }
  if (auto n = r.integer("max_payload", 0, std::int64_t{16} * 1024 * 1024)) {
    cmd.max_payload = static_cast<std::size_t>(*n);
  }
  if (auto text = r.string("rate_limit", false, "a rate such as \"10/s\"")) {
    if (auto limit = parseRateLimit(*text)) {
      cmd.rate_limit = *limit;
    } else {
      r.invalid("rate_limit",
                "expected a rate such as \"10/s\", \"100/m\" or \"3/500ms\", got " + quote(*text));
    }
  }
  if (auto d = r.duration("timeout", kMinInterval)) cmd.timeout = *d;
  if (auto n = r.integer("queue", 0, 100000)) cmd.queue = static_cast<std::size_t>(*n);
  if (auto b = r.boolean("envelope")) cmd.envelope = *b;
}

// ---- end of command delivery keys ---------------------------------------------------------

class FileParser {
 public:
  FileParser(Reporter& report, std::string_view default_topic_base, RuleSet& out)
      : report_(report), out_(out) {
    default_topic_text_ = default_topic_base.empty()
                              ? std::string("{device}/{path}")
                              : std::string(default_topic_base) + "/{device}/{path}";
    default_topic_ = TopicTemplate::compile(default_topic_text_, &default_topic_error_);
  }

  // `[[name]]` entries: an array of tables.
  template <class F>
  void eachTable(const Value& v, const std::string& name, F&& parse) {
    if (!v.is_array()) {
      report_.error(v, name,
                    std::string("expected an array of tables (write [[") + name +
                        "]] for each entry), got " + typeName(v));
      return;
    }
    std::size_t index = 0;
    for (const Value& item : v.as_array()) {
      ++index;
      const std::string key = name + "[" + std::to_string(index) + "]";
      if (!item.is_table()) {
        report_.error(item, key, std::string("expected a table, got ") + typeName(item));
        continue;
      }
      parse(item, key, index);
    }
  }

  void parseRule(const Value& t, const std::string& prefix) {
    const std::size_t errors_before = report_.count();
    TableReader r(
        report_, t, prefix,
        {"name", "match", "mode", "interval", "topic", "payload", "qos", "retain", "enabled"});
    Rule rule;
    rule.file = report_.file();
    rule.device = defaultGlob("*", Glob::Kind::Name);
    rule.path = defaultGlob("**", Glob::Kind::Path);

    if (auto name = r.string("name", true, "a string naming the rule (unique)")) {
      if (name->empty()) {
        r.invalid("name", "expected a non-empty string");
      } else if (const std::string where = firstUse(*name); !where.empty()) {
        r.invalid("name", "duplicate rule name " + quote(*name) + " (already used " + where + ")");
      } else {
        const auto loc = r.find("name")->location();
        names_.emplace(*name, "at line " + std::to_string(loc.line()));
      }
      rule.name = *name;
    }

    if (const Value* m = r.table("match")) {
      TableReader mr(report_, *m, prefix + ".match", {"device", "path", "rt"});
      if (auto g = readGlob(mr, "device", Glob::Kind::Name)) rule.device = std::move(*g);
      if (auto g = readGlob(mr, "path", Glob::Kind::Path)) rule.path = std::move(*g);
      if (auto g = readGlob(mr, "rt", Glob::Kind::Name)) rule.rt = std::move(*g);
    }

    if (auto mode = r.choice<Mode>("mode", {{"observe", Mode::Observe}, {"poll", Mode::Poll}})) {
      rule.mode = *mode;
    }
    if (auto d = r.duration("interval", kMinInterval)) rule.interval = *d;

    if (auto text = r.string("topic", false, "a topic template")) {
      std::string err;
      if (auto t2 = TopicTemplate::compile(*text, &err)) {
        rule.topic = std::move(*t2);
      } else {
        r.invalid("topic", "invalid topic template " + quote(*text) + ": " + err);
      }
    } else if (r.find("topic") == nullptr) {
      if (default_topic_) {
        rule.topic = *default_topic_;
      } else {
        report_.error(t, r.keyPath("topic"),
                      "the default topic " + quote(default_topic_text_) + " is invalid (" +
                          default_topic_error_ + "); set topic explicitly");
      }
    }

    if (auto p = r.choice<PayloadMode>("payload",
                                       {{"raw", PayloadMode::Raw}, {"json", PayloadMode::Json}})) {
      rule.payload = *p;
    }
    if (auto q = r.integer("qos", 0, 2)) rule.qos = static_cast<int>(*q);
    if (auto b = r.boolean("retain")) rule.retain = *b;
    if (auto b = r.boolean("enabled")) rule.enabled = *b;

    if (report_.count() == errors_before) out_.rules.push_back(std::move(rule));
  }

  void parseCommand(const Value& t, const std::string& prefix) {
    const std::size_t errors_before = report_.count();
    std::vector<std::string> known{"name", "topic", "method", "allow", "qos"};
    known.insert(known.end(), kCommandDeliveryKeys.begin(), kCommandDeliveryKeys.end());
    TableReader r(report_, t, prefix, known);
    CommandRule cmd;
    cmd.file = report_.file();
    cmd.name = prefix;
    if (auto name = r.string("name")) {
      if (name->empty()) {
        r.invalid("name", "expected a non-empty string");
      } else {
        cmd.name = *name;
      }
    }
    if (auto text = r.string("topic", true,
                             "a command topic pattern such as \"coap2mqtt/{device}/{path}/set\"")) {
      std::string err;
      if (auto ct = CommandTopic::compile(*text, &err)) {
        cmd.topic = std::move(*ct);
      } else {
        r.invalid("topic", "invalid command topic " + quote(*text) + ": " + err);
      }
    }
    if (auto m = r.choice<Method>("method",
                                  {{"PUT", Method::Put},
                                   {"POST", Method::Post},
                                   {"GET", Method::Get},
                                   {"DELETE", Method::Delete}},
                                  true)) {
      cmd.method = *m;
    }
    static constexpr const char* kDenied =
        "commands are refused unless `allow` names the devices and paths";
    if (const Value* allow = r.table("allow")) {
      TableReader ar(report_, *allow, prefix + ".allow", {"device", "path"});
      const std::string expect_device =
          std::string("a device name glob such as \"*\" (") + kDenied + ")";
      const std::string expect_path =
          std::string("a path glob such as \"/actuators/*\" (") + kDenied + ")";
      if (auto g = readGlob(ar, "device", Glob::Kind::Name, true, expect_device)) {
        cmd.allow_device = std::move(*g);
      }
      if (auto g = readGlob(ar, "path", Glob::Kind::Path, true, expect_path)) {
        cmd.allow_path = std::move(*g);
      }
    } else if (r.find("allow") == nullptr) {
      report_.error(
          t, r.keyPath("allow"),
          std::string(kDenied) + ", e.g. allow = { device = \"*\", path = \"/actuators/*\" }");
    }
    if (auto q = r.integer("qos", 0, 2)) cmd.qos = static_cast<int>(*q);
    parseCommandDelivery(r, cmd);

    if (report_.count() == errors_before) out_.commands.push_back(std::move(cmd));
  }

 private:
  // Where `name` was first used ("at line N" in this file, or "in <file>"); empty if new.
  std::string firstUse(const std::string& name) const {
    if (const auto it = names_.find(name); it != names_.end()) return it->second;
    for (const Rule& r : out_.rules) {
      if (r.name == name) return "in " + r.file;
    }
    return {};
  }

  Reporter& report_;
  RuleSet& out_;
  std::string default_topic_text_;
  std::string default_topic_error_;
  std::optional<TopicTemplate> default_topic_;
  std::map<std::string, std::string> names_;  // rule names of this file -> where
};

void sortByPosition(std::vector<ConfigError>& errors, std::size_t from) {
  std::stable_sort(errors.begin() + static_cast<std::ptrdiff_t>(from), errors.end(),
                   [](const ConfigError& a, const ConfigError& b) {
                     return std::tie(a.line, a.column) < std::tie(b.line, b.column);
                   });
}

bool hasWildcard(std::string_view pattern) {
  return pattern.find_first_of("*?[") != std::string_view::npos;
}

std::string escapeForGlob(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == '*' || c == '?' || c == '[' || c == '\\') out += '\\';
    out += c;
  }
  return out;
}

std::string joinPath(std::string_view dir, std::string_view rel) {
  if (dir.empty() || (!rel.empty() && rel.front() == '/')) return std::string(rel);
  std::string out(dir);
  if (out.back() != '/') out += '/';
  return out + std::string(rel);
}

}  // namespace

const char* toString(Method m) {
  switch (m) {
    case Method::Get:
      return "GET";
    case Method::Put:
      return "PUT";
    case Method::Post:
      return "POST";
    case Method::Delete:
      return "DELETE";
  }
  return "?";
}

std::optional<unsigned> contentFormatFromName(std::string_view name) {
  for (const auto& [known, number] : kContentFormatNames) {
    if (toml_reader::equalsIgnoreCase(known, name)) return number;
  }
  if (name.empty() || name.size() > 5) return std::nullopt;
  unsigned n = 0;
  for (char c : name) {
    if (c < '0' || c > '9') return std::nullopt;
    n = n * 10 + static_cast<unsigned>(c - '0');
  }
  if (n > 65535) return std::nullopt;
  return n;
}

std::optional<std::chrono::milliseconds> parseDuration(std::string_view text) {
  using Limit = std::numeric_limits<std::int64_t>;
  if (text.empty()) return std::nullopt;
  const auto isDigit = [](char c) { return c >= '0' && c <= '9'; };
  std::int64_t total = 0;
  std::size_t i = 0;
  for (bool first_group = true; i < text.size(); first_group = false) {
    if (!isDigit(text[i])) return std::nullopt;
    std::int64_t n = 0;
    for (; i < text.size() && isDigit(text[i]); ++i) {
      if (n > (Limit::max() - 9) / 10) return std::nullopt;
      n = n * 10 + (text[i] - '0');
    }
    std::size_t j = i;
    while (j < text.size() && std::isalpha(static_cast<unsigned char>(text[j]))) ++j;
    const std::string_view unit = text.substr(i, j - i);
    i = j;
    std::int64_t factor = 0;
    if (unit.empty()) {
      if (!first_group || i != text.size()) return std::nullopt;
      factor = 1000;  // a bare integer: seconds
    } else if (unit == "ms") {
      factor = 1;
    } else if (unit == "s") {
      factor = 1000;
    } else if (unit == "m") {
      factor = 60'000;
    } else if (unit == "h") {
      factor = 3'600'000;
    } else {
      return std::nullopt;
    }
    if (n > Limit::max() / factor || total > Limit::max() - n * factor) return std::nullopt;
    total += n * factor;
  }
  return std::chrono::milliseconds(total);
}

std::string closestMatch(std::string_view word, const std::vector<std::string>& candidates) {
  // Optimal string alignment distance: insertions, deletions, substitutions and adjacent
  // transpositions ("qso" -> "qos") each cost 1. Case is ignored.
  const auto lower = [](char c) { return std::tolower(static_cast<unsigned char>(c)); };
  const auto distance = [&](std::string_view a, std::string_view b) {
    std::vector<std::vector<std::size_t>> d(a.size() + 1, std::vector<std::size_t>(b.size() + 1));
    for (std::size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
    for (std::size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
    for (std::size_t i = 1; i <= a.size(); ++i) {
      for (std::size_t j = 1; j <= b.size(); ++j) {
        const std::size_t cost = lower(a[i - 1]) == lower(b[j - 1]) ? 0 : 1;
        d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
        if (i > 1 && j > 1 && lower(a[i - 1]) == lower(b[j - 2]) &&
            lower(a[i - 2]) == lower(b[j - 1])) {
          d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
        }
      }
    }
    return d[a.size()][b.size()];
  };
  std::string best;
  std::size_t best_distance = 3;
  for (const auto& c : candidates) {
    const std::size_t dist = distance(word, c);
    // A distance as large as the candidate itself is a replacement, not a typo.
    if (dist < best_distance && dist < c.size()) {
      best = c;
      best_distance = dist;
    }
  }
  return best;
}

void parseRules(const std::string& file, std::string_view content,
                std::string_view default_topic_base, bool allow_other_tables, RuleSet& out,
                std::vector<ConfigError>& errors) {
  const std::size_t first_error = errors.size();
  const auto doc = parseDocument(file, content, errors);
  if (!doc) return;

  Reporter report(file, errors);
  if (!allow_other_tables) {
    const std::vector<std::string> known{"rule", "command"};
    for (const auto& [key, value] : doc->as_table()) {
      if (key != "rule" && key != "command") {
        report.error(value, key, unknownKeyMessage(key, known));
      }
    }
  }

  FileParser parser(report, default_topic_base, out);
  const Table& root = doc->as_table();
  if (const auto it = root.find("rule"); it != root.end()) {
    parser.eachTable(it->second, "rule", [&](const Value& t, const std::string& key, std::size_t) {
      parser.parseRule(t, key);
    });
  }
  if (const auto it = root.find("command"); it != root.end()) {
    parser.eachTable(
        it->second, "command",
        [&](const Value& t, const std::string& key, std::size_t) { parser.parseCommand(t, key); });
  }
  sortByPosition(errors, first_error);
}

void loadRuleFiles(const std::vector<std::string>& globs, const std::string& base_dir,
                   std::string_view default_topic_base, RuleSet& out,
                   std::vector<ConfigError>& errors) {
  namespace fs = std::filesystem;
  std::set<std::string> seen;  // a file matched by two patterns is loaded once

  const auto loadFile = [&](const std::string& path) {
    std::error_code ec;
    const fs::path canonical = fs::weakly_canonical(path, ec);
    if (!seen.insert(ec ? path : canonical.string()).second) return;
    if (!fs::exists(path, ec)) {
      errors.push_back({path, 0, 0, "", "rule file not found"});
      return;
    }
    if (fs::is_directory(path, ec)) {
      errors.push_back({path, 0, 0, "",
                        "is a directory, not a rule file (use a pattern such as "
                        "\"rules.d/*.toml\")"});
      return;
    }
    std::ifstream in(path, std::ios::binary);
    if (!in) {
      errors.push_back(
          {path, 0, 0, "",
           std::string("cannot read rule file: ") + std::generic_category().message(errno)});
      return;
    }
    const std::string content{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
    parseRules(path, content, default_topic_base, false, out, errors);
  };

  for (const std::string& pattern : globs) {
    if (!hasWildcard(pattern)) {
      loadFile(joinPath(base_dir, pattern));
      continue;
    }
    const std::string full = (!pattern.empty() && pattern.front() == '/')
                                 ? pattern
                                 : joinPath(escapeForGlob(base_dir), pattern);
    glob_t g{};
    // Start-up and reload only, on the loop thread.
    const int rc = ::glob(full.c_str(), 0, nullptr, &g);  // NOLINT(concurrency-mt-unsafe)
    if (rc == 0) {
      std::vector<std::string> paths(g.gl_pathv, g.gl_pathv + g.gl_pathc);
      std::sort(paths.begin(), paths.end());
      for (const auto& p : paths) {
        std::error_code ec;
        if (fs::is_regular_file(p, ec)) loadFile(p);
      }
    } else if (rc != GLOB_NOMATCH) {
      errors.push_back(
          {joinPath(base_dir, pattern), 0, 0, "", "cannot expand rule file pattern (read error)"});
    }
    globfree(&g);
  }
}

}  // namespace coap2mqtt::bridge
