#include "bridge/toml_reader.h"

#include <algorithm>
#include <cctype>
#include <limits>

#include "bridge/rules.h"  // parseDuration, closestMatch
#include "registry/utf8.h"

namespace coap2mqtt::bridge::toml_reader {

namespace {

constexpr const char* kDurationExpected =
    "expected a duration such as \"500ms\", \"30s\" or \"5m\" (or an integer number of "
    "seconds)";

std::string formatDuration(std::chrono::milliseconds d) {
  const auto ms = d.count();
  if (ms != 0 && ms % 1000 == 0) return std::to_string(ms / 1000) + "s";
  return std::to_string(ms) + "ms";
}

}  // namespace

const char* typeName(const Value& v) {
  switch (v.type()) {
    case toml::value_t::boolean:
      return "a boolean";
    case toml::value_t::integer:
      return "an integer";
    case toml::value_t::floating:
      return "a float";
    case toml::value_t::string:
      return "a string";
    case toml::value_t::offset_datetime:
    case toml::value_t::local_datetime:
    case toml::value_t::local_date:
    case toml::value_t::local_time:
      return "a date/time";
    case toml::value_t::array:
      return "an array";
    case toml::value_t::table:
      return "a table";
    case toml::value_t::empty:
      break;
  }
  return "nothing";
}

std::string quote(std::string_view s, MessageStyle style) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      if (style == MessageStyle::Gateway) {
        out += '?';
        continue;
      }
      static constexpr char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[(c >> 4) & 0xf];
      out += kHex[c & 0xf];
    } else {
      out += c;
    }
  }
  return out + "\"";
}

std::string unknownKeyMessage(std::string_view key, const std::vector<std::string>& known) {
  if (auto guess = closestMatch(key, known); !guess.empty()) {
    return "unknown key; did you mean " + quote(guess) + "?";
  }
  std::string list;
  for (const auto& k : known) list += (list.empty() ? "" : ", ") + k;
  return "unknown key; expected one of: " + list;
}

bool equalsIgnoreCase(std::string_view a, std::string_view b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(), [](char x, char y) {
    return std::tolower(static_cast<unsigned char>(x)) ==
           std::tolower(static_cast<unsigned char>(y));
  });
}

void Reporter::error(const Value& where, std::string key, std::string message) {
  const auto loc = where.location();
  errors_.push_back({file_, loc.line(), loc.column(), std::move(key), std::move(message)});
}

std::string Reporter::formatMinimum(std::chrono::milliseconds d) const {
  return style_ == MessageStyle::Gateway ? std::to_string(d.count()) + "ms" : formatDuration(d);
}

TableReader::TableReader(Reporter& report, const Value& table, std::string prefix,
                         const std::vector<std::string>& known)
    : report_(report), table_(table), prefix_(std::move(prefix)) {
  for (const auto& [key, value] : table_.as_table()) {
    if (std::find(known.begin(), known.end(), key) == known.end()) {
      report_.error(value, keyPath(key), unknownKeyMessage(key, known));
    }
  }
}

std::string TableReader::keyPath(std::string_view key) const {
  return prefix_.empty() ? std::string(key) : prefix_ + "." + std::string(key);
}

const Value* TableReader::find(std::string_view key) const {
  const auto& t = table_.as_table();
  const auto it = t.find(std::string(key));
  return it == t.end() ? nullptr : &it->second;
}

void TableReader::missing(std::string_view key, std::string_view expected) {
  report_.error(table_, keyPath(key), "required key is missing; expected " + std::string(expected));
}

void TableReader::invalid(std::string_view key, std::string message) {
  if (const Value* v = find(key)) report_.error(*v, keyPath(key), std::move(message));
}

std::optional<std::string> TableReader::string(std::string_view key, bool required,
                                               std::string_view expected) {
  const Value* v = find(key);
  if (v == nullptr) {
    if (required) missing(key, expected);
    return std::nullopt;
  }
  if (!v->is_string()) {
    report_.error(*v, keyPath(key), "expected " + std::string(expected) + ", got " + typeName(*v));
    return std::nullopt;
  }
  return v->as_string().str;
}

std::optional<std::int64_t> TableReader::integer(std::string_view key, std::int64_t lo,
                                                 std::int64_t hi) {
  const Value* v = find(key);
  if (v == nullptr) return std::nullopt;
  const std::string expected =
      "expected an integer " + std::to_string(lo) + ".." + std::to_string(hi);
  if (!v->is_integer()) {
    report_.error(*v, keyPath(key), expected + ", got " + typeName(*v));
    return std::nullopt;
  }
  const auto n = v->as_integer();
  if (n < lo || n > hi) {
    report_.error(*v, keyPath(key), expected + ", got " + std::to_string(n));
    return std::nullopt;
  }
  return n;
}

std::optional<bool> TableReader::boolean(std::string_view key) {
  const Value* v = find(key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_boolean()) {
    report_.error(*v, keyPath(key), std::string("expected true or false, got ") + typeName(*v));
    return std::nullopt;
  }
  return v->as_boolean();
}

std::optional<std::chrono::milliseconds> TableReader::duration(std::string_view key,
                                                               std::chrono::milliseconds min) {
  const Value* v = find(key);
  if (v == nullptr) return std::nullopt;
  std::optional<std::chrono::milliseconds> d;
  std::string shown;
  if (v->is_string()) {
    shown = report_.quote(v->as_string().str);
    d = parseDuration(v->as_string().str);
  } else if (v->is_integer()) {
    const auto n = v->as_integer();
    shown = std::to_string(n);
    if (n >= 0 && n <= std::numeric_limits<std::int64_t>::max() / 1000) {
      d = std::chrono::seconds(n);
    }
  } else {
    shown = typeName(*v);
  }
  if (!d) {
    report_.error(*v, keyPath(key), std::string(kDurationExpected) + ", got " + shown);
    return std::nullopt;
  }
  if (*d < min) {
    report_.error(*v, keyPath(key),
                  "must be at least " + report_.formatMinimum(min) + ", got " + shown);
    return std::nullopt;
  }
  return d;
}

std::optional<std::string> TableReader::choice(std::string_view key,
                                               const std::vector<std::string>& choices) {
  std::vector<std::pair<std::string, std::string>> same;
  same.reserve(choices.size());
  for (const auto& c : choices) same.emplace_back(c, c);
  return choice<std::string>(key, same);
}

const Value* TableReader::table(std::string_view key) {
  const Value* v = find(key);
  if (v == nullptr) return nullptr;
  if (!v->is_table()) {
    report_.error(*v, keyPath(key), std::string("expected a table, got ") + typeName(*v));
    return nullptr;
  }
  return v;
}

std::optional<ConfigError> checkDocument(const std::string& file, std::string_view content) {
  std::size_t line = 1, column = 0;
  std::size_t depth = 0;  // open '[' and '{'
  std::size_t dots = 0;   // since the last key or value boundary: a key's levels - 1
  bool in_comment = false;
  auto refuse = [&](const char* what) { return ConfigError{file, line, column, "", what}; };
  auto startsWith = [&](std::size_t i, std::string_view s) {
    return content.substr(i, s.size()) == s;
  };
  for (std::size_t i = 0; i < content.size(); ++i) {
    const char c = content[i];
    if (static_cast<unsigned char>(c) >= 0x80) {  // UTF-8 everywhere, strings included
      const std::size_t n = registry::utf8SequenceLength(content, i);
      ++column;
      if (n == 0) return refuse("not UTF-8 (TOML files are UTF-8)");
      i += n - 1;
      continue;
    }
    if (c == '\n') {
      ++line;
      column = 0;
      dots = 0;
      in_comment = false;
      continue;
    }
    ++column;
    if (in_comment) continue;
    if (c == '#') {  // a comment, to the end of the line
      in_comment = true;
    } else if (c == '"' || c == '\'') {
      // A string: skipped whole (multi-line ones count their lines); escapes only in "...".
      const std::string_view close = startsWith(i, c == '"' ? "\"\"\"" : "\'\'\'")
                                         ? (c == '"' ? "\"\"\"" : "\'\'\'")
                                         : (c == '"' ? "\"" : "\'");
      i += close.size();
      while (i < content.size() && !startsWith(i, close)) {
        if (content[i] == '\n') {
          ++line;
          column = 0;
        } else {
          ++column;
        }
        if (static_cast<unsigned char>(content[i]) >= 0x80) {
          const std::size_t n = registry::utf8SequenceLength(content, i);
          if (n == 0) return refuse("not UTF-8 (TOML files are UTF-8)");
          i += n;
          continue;
        }
        if (c == '"' && content[i] == '\\') ++i;
        ++i;
      }
      i += close.size() - 1;
    } else if (c == '[' || c == '{') {
      if (++depth > kMaxNesting) {
        return refuse("arrays and inline tables nest deeper than 32 levels");
      }
      dots = 0;
    } else if (c == ']' || c == '}') {
      if (depth > 0) --depth;
      dots = 0;
    } else if (c == '=' || c == ',') {
      dots = 0;
    } else if (c == '.' && ++dots >= kMaxKeyLevels) {
      return refuse("a dotted key of more than 32 levels");
    }
  }
  return std::nullopt;
}

}  // namespace coap2mqtt::bridge::toml_reader
