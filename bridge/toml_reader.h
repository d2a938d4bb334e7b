#pragma once
// Internal: typed, error-collecting access to TOML tables, shared by the rule-file parser
// (bridge/rules.cpp) and the gateway.toml loader (gateway/config.cpp). Include it from .cpp
// files only, so that toml11 stays out of every public header.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <toml.hpp>

#include "bridge/config_error.h"
#include "bridge/rules.h"

namespace coap2mqtt::bridge::toml_reader {

// std::map instead of toml11's default unordered_map: deterministic iteration, so the
// same file always yields the same error list.
using Value = toml::basic_value<toml::discard_comments, std::map, std::vector>;
using Table = Value::table_type;

// How messages render values. Rule files escape control characters as \xNN and show a
// minimum duration as "1s"; gateway.toml shows control characters as '?' and minimums in ms.
enum class MessageStyle { Rules, Gateway };

// "a string", "an integer", ... for "expected X, got <typeName>".
const char* typeName(const Value& v);

// `s` in double quotes, with '"' and '\\' escaped and control characters rendered per style.
std::string quote(std::string_view s, MessageStyle style = MessageStyle::Rules);

// "unknown key; did you mean "x"?" or "unknown key; expected one of: a, b".
std::string unknownKeyMessage(std::string_view key, const std::vector<std::string>& known);

bool equalsIgnoreCase(std::string_view a, std::string_view b);

// What toml11 3.7 must not see (found by tests/fuzz/fuzz_config): it parses nested arrays
// and inline tables by recursion (a file of 1,300 '[' ends the process on a stack
// overflow), dotted keys in quadratic time (2,000 levels: 5 s), and reads past its buffer
// on invalid UTF-8 in a literal-string key. TOML documents are UTF-8 and no config needs
// more than a few levels, so this refuses, before toml11 sees it, a document that is not
// UTF-8, whose arrays and inline tables nest deeper than kMaxNesting, or with a key of more
// than kMaxKeyLevels dotted levels: the error points at the first byte or level too many.
inline constexpr std::size_t kMaxNesting = 32;
inline constexpr std::size_t kMaxKeyLevels = 32;
std::optional<ConfigError> checkDocument(const std::string& file, std::string_view content);

// Appends errors for one file, located at a value's source position.
class Reporter {
 public:
  Reporter(const std::string& file, std::vector<ConfigError>& errors,
           MessageStyle style = MessageStyle::Rules)
      : file_(file), errors_(errors), style_(style) {}

  void error(const Value& where, std::string key, std::string message);
  std::size_t count() const { return errors_.size(); }
  const std::string& file() const { return file_; }

  std::string quote(std::string_view s) const { return toml_reader::quote(s, style_); }
  std::string formatMinimum(std::chrono::milliseconds d) const;

 private:
  const std::string& file_;
  std::vector<ConfigError>& errors_;
  MessageStyle style_;
};

// Typed access to one TOML table. Unknown keys are reported on construction; every getter
// reports a wrong type or value and returns nullopt then (and when the key is absent).
class TableReader {
 public:
  TableReader(Reporter& report, const Value& table, std::string prefix,
              const std::vector<std::string>& known);

  std::string keyPath(std::string_view key) const;
  const Value* find(std::string_view key) const;

  // Reports `key` as missing (at the table) or as invalid (at its value, if present).
  void missing(std::string_view key, std::string_view expected);
  void invalid(std::string_view key, std::string message);

  std::optional<std::string> string(std::string_view key, bool required = false,
                                    std::string_view expected = "a string");
  std::optional<std::int64_t> integer(std::string_view key, std::int64_t lo, std::int64_t hi);
  std::optional<bool> boolean(std::string_view key);
  // A duration string ("500ms", "30s", "5m") or an integer number of seconds, >= min.
  std::optional<std::chrono::milliseconds> duration(std::string_view key,
                                                    std::chrono::milliseconds min);

  // One of `choices` (compared case-insensitively when asked), mapped to its value.
  template <class E>
  std::optional<E> choice(std::string_view key,
                          const std::vector<std::pair<std::string, E>>& choices,
                          bool ignore_case = false) {
    std::string list;
    for (const auto& c : choices) list += (list.empty() ? "" : ", ") + report_.quote(c.first);
    const std::string expected = "one of " + list;
    const auto s = string(key, false, expected);
    if (!s) return std::nullopt;
    for (const auto& [text, value] : choices) {
      const bool same = ignore_case ? equalsIgnoreCase(text, *s) : text == *s;
      if (same) return value;
    }
    invalid(key, "expected " + expected + ", got " + report_.quote(*s));
    return std::nullopt;
  }
  // One of `choices`, exactly as written.
  std::optional<std::string> choice(std::string_view key, const std::vector<std::string>& choices);

  // An array of strings; each element is handed to `each` with its value and key path.
  // False when the key is absent or not an array (reported).
  template <class F>
  bool stringArray(std::string_view key, std::string_view expected, F&& each) {
    const Value* v = find(key);
    if (v == nullptr) return false;
    if (!v->is_array()) {
      report_.error(*v, keyPath(key),
                    "expected an array of " + std::string(expected) + ", got " + typeName(*v));
      return false;
    }
    std::size_t index = 0;
    for (const Value& item : v->as_array()) {
      const std::string item_key = keyPath(key) + "[" + std::to_string(++index) + "]";
      if (!item.is_string()) {
        report_.error(item, item_key,
                      "expected " + std::string(expected) + ", got " + typeName(item));
        continue;
      }
      each(item, item_key, item.as_string().str);
    }
    return true;
  }

  // A sub-table (inline or [a.b]); nullptr when absent or not a table (reported).
  const Value* table(std::string_view key);

 private:
  Reporter& report_;
  const Value& table_;
  std::string prefix_;
};

// bridge/rules.h's parseRules for a document already parsed: gateway.toml's loader reads
// its own tables and the rules from one parse (toml11 takes ~0.9 s for 10,000 devices).
void parseRulesOf(const std::string& file, const Value& doc, std::string_view default_topic_base,
                  bool allow_other_tables, RuleSet& out, std::vector<ConfigError>& errors);

}  // namespace coap2mqtt::bridge::toml_reader
