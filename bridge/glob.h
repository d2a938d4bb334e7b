#pragma once
// Glob patterns for device names and resource paths.
//   *      any run of characters except '/'
//   **     any run of characters including '/'
//   ?      one character except '/'
//   [abc] [a-z] [!x]   character classes ('/' never matches a class)
//   \x     the literal character x
//   **/    when "**" is a whole level (at the start or after '/', followed by '/'): zero or
//          more whole levels, so "a/**/b" matches "a/b", "a/x/b" and "a/x/y/b"
// Path globs are anchored at the root: a pattern without a leading '/' gets one, so
// "sensors/*" and "/sensors/*" mean the same, and "**" matches every path. A path text
// without a leading '/' is matched as if it had one ("" is "/").
// Matching is iterative with at most two backtrack points: no recursion, and polynomial
// (never exponential) time on hostile patterns and texts.
#include <bitset>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace coap2mqtt::bridge {

class Glob {
 public:
  enum class Kind { Name, Path };

  Glob() = default;  // matches nothing until assigned from compile()
  // nullopt and *error set (with what was expected) on a malformed pattern: unclosed '[',
  // empty class "[]" or "[!]", reversed range "[z-a]", a '/' member ("[/]"), trailing '\',
  // empty pattern. A ']' inside a class must be escaped: "[\]]".
  static std::optional<Glob> compile(std::string_view pattern, Kind kind, std::string* error);

  bool matches(std::string_view text) const;
  const std::string& pattern() const { return pattern_; }  // as normalised
  bool matchesEverything() const { return match_all_; }

 private:
  // Compiled form of pattern_, so matches() never re-parses the text.
  struct Token {
    enum class Op : std::uint8_t { Char, Any, Class, Star, GlobStar, LevelsStar };
    Op op = Op::Char;
    char ch = 0;              // for Char
    std::uint16_t klass = 0;  // index into classes_, for Class
  };

  std::string pattern_;
  std::vector<Token> tokens_;
  std::vector<std::bitset<256>> classes_;
  bool path_ = false;  // Kind::Path: tokens_ starts with '/', texts are normalised the same way
  bool match_all_ = false;
  bool valid_ = false;
};

}  // namespace coap2mqtt::bridge
