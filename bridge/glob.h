#pragma once
// Glob patterns for device names and resource paths.
//   *      any run of characters except '/'
//   **     any run of characters including '/'
//   ?      one character except '/'
//   [abc] [a-z] [!x]   character classes ('/' never matches a class)
//   \x     the literal character x
// Path globs are anchored at the root: a pattern without a leading '/' gets one, so
// "sensors/*" and "/sensors/*" mean the same, and "**" matches every path.
#include <optional>
#include <string>
#include <string_view>

namespace coap2mqtt::bridge {

class Glob {
 public:
  enum class Kind { Name, Path };

  Glob() = default;  // matches nothing until assigned from compile()
  // nullopt and *error set (with what was expected) on a malformed pattern: unclosed '[',
  // empty class "[]", trailing '\', empty pattern.
  static std::optional<Glob> compile(std::string_view pattern, Kind kind, std::string* error);

  bool matches(std::string_view text) const;
  const std::string& pattern() const { return pattern_; }  // as normalised
  bool matchesEverything() const { return match_all_; }

 private:
  std::string pattern_;
  bool match_all_ = false;
  bool valid_ = false;
};

}  // namespace coap2mqtt::bridge
