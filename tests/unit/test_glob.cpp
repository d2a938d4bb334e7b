// Glob: table-driven cases for every construct in bridge/glob.h, the error messages, and a
// differential test against a slow reference matcher written straight from the header.
#include "bridge/glob.h"

#include <gtest/gtest.h>

#include <chrono>
#include <random>
#include <string>
#include <string_view>
#include <vector>

namespace coap2mqtt::bridge {
namespace {

using Kind = Glob::Kind;

Glob compileOk(std::string_view pattern, Kind kind) {
  std::string error;
  auto glob = Glob::compile(pattern, kind, &error);
  EXPECT_TRUE(glob.has_value()) << "pattern '" << pattern << "': " << error;
  return glob.value_or(Glob{});
}

struct MatchCase {
  const char* pattern;
  const char* text;
  bool matches;
};

void runTable(Kind kind, const std::vector<MatchCase>& cases) {
  for (const auto& c : cases) {
    SCOPED_TRACE(std::string("pattern '") + c.pattern + "' text '" + c.text + "'");
    EXPECT_EQ(compileOk(c.pattern, kind).matches(c.text), c.matches);
  }
}

TEST(Glob, LiteralsAreExactAndCaseSensitive) {
  runTable(Kind::Name, {
                           {"lamp", "lamp", true},
                           {"lamp", "lamp2", false},
                           {"lamp", "lam", false},
                           {"lamp", "Lamp", false},
                           {"lamp", "", false},
                           {"a/b", "a/b", true},
                           {"]", "]", true},
                           {"a-b", "a-b", true},
                           {"é", "é", true},
                       });
}

TEST(Glob, StarStaysInsideALevel) {
  runTable(Kind::Name, {
                           {"*", "", true},
                           {"*", "lamp", true},
                           {"*", "a/b", false},
                           {"*", "/", false},
                           {"lamp-*", "lamp-1", true},
                           {"lamp-*", "lamp-", true},
                           {"lamp-*", "lamp", false},
                           {"lamp-*", "lamp-a/b", false},
                           {"*-sensor", "node-sensor", true},
                           {"*-sensor", "node-sensor2", false},
                           {"a*b*c", "abc", true},
                           {"a*b*c", "aXXbYYc", true},
                           {"a*b*c", "abbbcc", true},
                           {"a*b*c", "acb", false},
                           {"a*b*c", "ab/c", false},
                           {"*/*", "a/b", true},
                           {"*/*", "/", true},
                           {"*/*", "a/b/c", false},
                           {"*/*", "ab", false},
                           {"*a", "bbba", true},
                           {"*a", "a/a", false},
                           {"a*", "a", true},
                       });
}

TEST(Glob, DoubleStarCrossesLevels) {
  runTable(Kind::Name, {
                           {"**", "", true},
                           {"**", "a/b/c", true},
                           {"***", "a/b/c", true},
                           {"a**", "a", true},
                           {"a**", "a/b/c", true},
                           {"a**", "b/a", false},
                           {"**c", "a/b/c", true},
                           {"a**c", "a/b/c", true},
                           {"a**c", "ac", true},
                           {"a**c", "a/b/d", false},
                           {"a/**", "a/", true},
                           {"a/**", "a/x/y", true},
                           {"a/**", "a", false},  // "**" is a run of characters, not a level
                           {"**x*", "a/b/xyz", true},
                           {"**x*", "a/xy/z", false},  // the last '*' cannot cross the '/'
                           {"**/*.json", "a/b/c.json", true},
                           {"**/*.json", "c.json", true},
                           {"**/*.json", "a/b.json/c", false},
                       });
}

TEST(Glob, DoubleStarAsAWholeLevelMatchesZeroOrMoreLevels) {
  runTable(Kind::Name, {
                           {"a/**/b", "a/b", true},
                           {"a/**/b", "a/x/b", true},
                           {"a/**/b", "a/x/y/b", true},
                           {"a/**/b", "a/xb", false},
                           {"a/**/b", "ab", false},
                           {"a/**/b", "a/x/yb", false},
                           {"**/b", "b", true},
                           {"**/b", "x/b", true},
                           {"**/b", "x/y/b", true},
                           {"**/b", "xb", false},
                           {"a/**/**/b", "a/b", true},
                           {"a/**/**/b", "a/x/y/z/b", true},
                           {"**/", "", true},
                           {"**/", "a/", true},
                           {"**/", "a", false},
                           {"a**/b", "a/b", true},  // not a whole level: a plain "**"
                           {"a**/b", "axy/b", true},
                           {"a**/b", "ab", false},
                       });
}

TEST(Glob, QuestionMarkIsOneCharacterButNotSlash) {
  runTable(Kind::Name, {
                           {"?", "a", true},
                           {"?", "", false},
                           {"?", "ab", false},
                           {"?", "/", false},
                           {"lamp-??", "lamp-01", true},
                           {"lamp-??", "lamp-1", false},
                           {"a?c", "abc", true},
                           {"a?c", "a/c", false},
                           {"??*", "ab", true},
                           {"??*", "a", false},
                       });
}

TEST(Glob, CharacterClasses) {
  runTable(Kind::Name, {
                           {"[abc]x", "ax", true},
                           {"[abc]x", "cx", true},
                           {"[abc]x", "dx", false},
                           {"[abc]x", "x", false},
                           {"[a-c]", "b", true},
                           {"[a-c]", "d", false},
                           {"[a-cx-z]", "y", true},
                           {"[a-cx-z]", "m", false},
                           {"[0-9][0-9]", "42", true},
                           {"[0-9][0-9]", "4a", false},
                           {"[!a]", "b", true},
                           {"[!a]", "a", false},
                           {"[!a]", "/", false},  // not even a negated class matches '/'
                           {"[!a-z]", "A", true},
                           {"[!a-z]", "q", false},
                           {"[-a]", "-", true},
                           {"[a-]", "-", true},
                           {"[a-]", "b", false},
                           {"[\\]]", "]", true},
                           {"[\\]a]", "a", true},
                           {"[\\-]", "-", true},
                           {"[\\!]", "!", true},
                           {"[!!]", "!", false},
                           {"[ -~]", "/", false},  // a range may span '/', never matches it
                           {"[ -~]", "q", true},
                           {"[é]", "é", false},  // classes are per byte
                           {"lamp-[0-9]*", "lamp-7-kitchen", true},
                           {"lamp-[0-9]*", "lamp-x", false},
                       });
}

TEST(Glob, EscapesMakeLiterals) {
  runTable(Kind::Name, {
                           {"\\*", "*", true},
                           {"\\*", "a", false},
                           {"\\*", "", false},
                           {"\\?", "?", true},
                           {"\\?", "a", false},
                           {"\\[a]", "[a]", true},
                           {"\\[a]", "a", false},
                           {"a\\\\b", "a\\b", true},
                           {"\\a", "a", true},
                           {"\\*\\*", "**", true},
                           {"\\*\\*", "a/b", false},
                       });
}

TEST(Glob, PathPatternsAreAnchoredAtTheRoot) {
  runTable(Kind::Path, {
                           {"**", "/", true},
                           {"**", "/a", true},
                           {"**", "/a/b/c", true},
                           {"**", "a/b", true},
                           {"**", "", true},
                           {"sensors/*", "/sensors/temp", true},
                           {"sensors/*", "sensors/temp", true},  // text normalised too
                           {"/sensors/*", "/sensors/temp", true},
                           {"sensors/*", "/sensors/a/b", false},
                           {"sensors/*", "/sensors", false},
                           {"sensors/*", "/sensors/", true},
                           {"sensors/*", "/x/sensors/temp", false},
                           {"/sensors/**", "/sensors/a/b", true},
                           {"/sensors/**", "/sensorsx", false},
                           {"**/temp", "/temp", true},
                           {"**/temp", "/a/temp", true},
                           {"**/temp", "/a/b/temp", true},
                           {"**/temp", "/atemp", false},
                           {"/", "/", true},
                           {"/", "", true},
                           {"/", "/a", false},
                           {"*", "/a", true},
                           {"*", "a", true},
                           {"*", "/a/b", false},
                           {"/.well-known/core", "/.well-known/core", true},
                           {"/.well-known/core", ".well-known/core", true},
                           {"/a/[!.]*", "/a/b", true},
                           {"/a/[!.]*", "/a/.hidden", false},
                       });
}

TEST(Glob, PatternIsNormalised) {
  struct Case {
    const char* pattern;
    Kind kind;
    const char* normalised;
  };
  const Case cases[] = {
      {"sensors/*", Kind::Path, "/sensors/*"},
      {"/sensors/*", Kind::Path, "/sensors/*"},
      {"**", Kind::Path, "/**"},
      {"*", Kind::Name, "*"},
      {"lamp", Kind::Name, "lamp"},
      {"/x", Kind::Name, "/x"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.pattern);
    EXPECT_EQ(compileOk(c.pattern, c.kind).pattern(), c.normalised);
  }
}

TEST(Glob, MatchesEverything) {
  struct Case {
    const char* pattern;
    Kind kind;
    bool all;
  };
  const Case cases[] = {
      {"**", Kind::Name, true},    {"***", Kind::Name, true},         {"*", Kind::Name, false},
      {"*/**", Kind::Name, false}, {"**a", Kind::Name, false},        {"?**", Kind::Name, false},
      {"**", Kind::Path, true},    {"/**", Kind::Path, true},         {"/**/**", Kind::Path, true},
      {"/*", Kind::Path, false},   {"sensors/**", Kind::Path, false}, {"**/x", Kind::Path, false},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.pattern);
    const Glob glob = compileOk(c.pattern, c.kind);
    EXPECT_EQ(glob.matchesEverything(), c.all);
    if (c.all) {
      for (const char* text : {"", "/", "a", "/a/b/c", "a/b", "x?*[]"}) {
        EXPECT_TRUE(glob.matches(text)) << text;
      }
    }
  }
}

TEST(Glob, DefaultConstructedMatchesNothing) {
  const Glob glob;
  EXPECT_FALSE(glob.matches(""));
  EXPECT_FALSE(glob.matches("a"));
  EXPECT_FALSE(glob.matchesEverything());
}

TEST(Glob, MalformedPatternsSayWhatWasExpected) {
  struct Case {
    const char* pattern;
    Kind kind;
    const char* message;  // a substring of the error
  };
  const Case cases[] = {
      {"", Kind::Name, "empty pattern"},
      {"", Kind::Path, "empty pattern"},
      {"[abc", Kind::Name, "unclosed '[' at offset 0: expected ']'"},
      {"a[", Kind::Name, "unclosed '[' at offset 1"},
      {"a[!", Kind::Name, "unclosed '[' at offset 1"},
      {"[a\\", Kind::Name, "unclosed '[' at offset 0"},
      {"[a\\]", Kind::Name, "unclosed '[' at offset 0"},
      {"x[", Kind::Path, "unclosed '[' at offset 1"},  // offsets as written, not normalised
      {"[]", Kind::Name, "empty character class at offset 0"},
      {"[!]", Kind::Name, "empty character class"},
      {"[]a]", Kind::Name, "empty character class"},
      {"abc\\", Kind::Name, "trailing '\\' at offset 3: expected a character to escape"},
      {"\\", Kind::Path, "trailing '\\' at offset 0"},
      {"[z-a]", Kind::Name, "reversed range 'z-a' at offset 1"},
      {"[/]", Kind::Name, "'/' in a character class"},
      {"[a/]", Kind::Path, "'/' in a character class"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.pattern);
    std::string error;
    EXPECT_FALSE(Glob::compile(c.pattern, c.kind, &error).has_value());
    EXPECT_NE(error.find(c.message), std::string::npos) << error;
  }
  // The error pointer is optional.
  EXPECT_FALSE(Glob::compile("[", Kind::Name, nullptr).has_value());
}

// --- differential test ------------------------------------------------------------------

// The semantics of glob.h, transcribed naively (exponential, fine for short inputs).
// `level_start`: the previous pattern item ended a level (start, '/', or a "**/").
bool reference(std::string_view p, std::string_view s, bool level_start) {
  if (p.empty()) return s.empty();
  if (p[0] == '*') {
    std::size_t run = 0;
    while (run < p.size() && p[run] == '*') ++run;
    if (run == 1) {
      for (std::size_t k = 0; k <= s.size(); ++k) {
        if (reference(p.substr(1), s.substr(k), false)) return true;
        if (k < s.size() && s[k] == '/') break;
      }
      return false;
    }
    if (level_start && run < p.size() && p[run] == '/') {
      const std::string_view rest = p.substr(run + 1);
      if (reference(rest, s, true)) return true;
      for (std::size_t k = 1; k <= s.size(); ++k) {
        if (s[k - 1] == '/' && reference(rest, s.substr(k), true)) return true;
      }
      return false;
    }
    for (std::size_t k = 0; k <= s.size(); ++k) {
      if (reference(p.substr(run), s.substr(k), false)) return true;
    }
    return false;
  }
  if (s.empty()) return false;
  if (p[0] == '?') return s[0] != '/' && reference(p.substr(1), s.substr(1), false);
  if (p[0] == '[') {  // only "[xy]" and "[!x]" here: no ranges, no escapes
    const std::size_t close = p.find(']');
    const bool negate = p[1] == '!';
    const std::string_view set = p.substr(negate ? 2 : 1, close - (negate ? 2 : 1));
    const bool in = set.find(s[0]) != std::string_view::npos;
    return s[0] != '/' && in != negate && reference(p.substr(close + 1), s.substr(1), false);
  }
  return p[0] == s[0] && reference(p.substr(1), s.substr(1), p[0] == '/');
}

TEST(Glob, AgreesWithTheReferenceOnRandomInputs) {
  std::mt19937 rng(20240601);  // fixed: failures must reproduce
  const std::vector<std::string> pieces = {"a", "b", "/", "?", "*", "**", "[ab]", "[!a]", "**/"};
  const std::string alphabet = "ab/";
  int matched = 0;
  for (int round = 0; round < 20000; ++round) {
    std::string pattern;
    const int n_pieces = 1 + static_cast<int>(rng() % 6);
    for (int i = 0; i < n_pieces; ++i) pattern += pieces[rng() % pieces.size()];
    std::string text;
    const int n_chars = static_cast<int>(rng() % 9);
    for (int i = 0; i < n_chars; ++i) text += alphabet[rng() % alphabet.size()];

    const Glob name = compileOk(pattern, Kind::Name);
    const bool want = reference(pattern, text, true);
    ASSERT_EQ(name.matches(text), want) << "Name pattern '" << pattern << "' text '" << text << "'";
    matched += want ? 1 : 0;

    const Glob path = compileOk(pattern, Kind::Path);
    const std::string p = pattern.front() == '/' ? pattern : "/" + pattern;
    const std::string t = !text.empty() && text.front() == '/' ? text : "/" + text;
    ASSERT_EQ(path.matches(text), reference(p, t, true))
        << "Path pattern '" << pattern << "' text '" << text << "'";
  }
  EXPECT_GT(matched, 1000);  // the generator exercises both outcomes
}

// Patterns that make naive backtracking exponential must stay fast. Without a bound these
// would not finish; with it they take milliseconds.
TEST(Glob, HostileInputsDoNotBlowUp) {
  struct Case {
    std::string pattern;
    std::string text;
    bool matches;
  };
  std::string slashes;
  for (int i = 0; i < 400; ++i) slashes += "aaaaaaaaaa/";
  const Case cases[] = {
      {"*a*a*a*a*a*a*a*a*a*a*b", std::string(5000, 'a'), false},
      {"**a**a**a**a**a**a**a**a**b", std::string(5000, 'a'), false},
      {"**a*a*a*a*a*a*a*a*b", std::string(2000, 'a'), false},
      {"**/*a*a*a*a*a*a*b", slashes, false},
      {"**a*a*a*a*a*a*b", slashes, false},
      {"a/**/**/**/**/**/b", "a/" + slashes + "c", false},
      {"**a*a*a*a*a*a*a", slashes + "aaaaaaa", true},
  };
  const auto start = std::chrono::steady_clock::now();
  for (const auto& c : cases) {
    SCOPED_TRACE(c.pattern);
    EXPECT_EQ(compileOk(c.pattern, Kind::Name).matches(c.text), c.matches);
  }
  // Generous: even sanitizer builds finish in well under a second.
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
}

}  // namespace
}  // namespace coap2mqtt::bridge
