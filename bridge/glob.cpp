#include "bridge/glob.h"

#include <utility>

namespace coap2mqtt::bridge {
namespace {

std::optional<Glob> fail(std::string* error, std::string message) {
  if (error != nullptr) *error = std::move(message);
  return std::nullopt;
}

std::string at(std::size_t offset) {
  return " at offset " + std::to_string(offset);
}

}  // namespace

std::optional<Glob> Glob::compile(std::string_view pattern, Kind kind, std::string* error) {
  if (pattern.empty()) return fail(error, "empty pattern: expected e.g. \"*\" or \"**\"");

  Glob glob;
  glob.path_ = kind == Kind::Path;
  // Offsets in messages refer to the pattern as written, not as normalised.
  std::size_t shift = 0;
  if (glob.path_ && pattern.front() != '/') {
    glob.pattern_.reserve(pattern.size() + 1);
    // push_back, not `= "/"`: GCC 12 at -O2/-O3 reports a -Wrestrict false positive in the
    // inlined assign(const char*) after reserve() (GCC bug 105329).
    glob.pattern_.push_back('/');
    shift = 1;
  }
  glob.pattern_.append(pattern);

  const std::string_view p = glob.pattern_;
  auto& tokens = glob.tokens_;
  // True when the last token ends a level, i.e. a "**" here starts a whole level.
  auto atLevelStart = [&tokens] {
    return tokens.empty() || tokens.back().op == Token::Op::LevelsStar ||
           (tokens.back().op == Token::Op::Char && tokens.back().ch == '/');
  };

  for (std::size_t i = 0; i < p.size();) {
    const char c = p[i];
    if (c == '*') {
      std::size_t end = i;
      while (end < p.size() && p[end] == '*') ++end;
      if (end - i == 1) {
        tokens.push_back({Token::Op::Star, 0, 0});
      } else if (atLevelStart() && end < p.size() && p[end] == '/') {
        // "**/" as a whole level: zero or more whole levels; it swallows its '/'.
        if (tokens.empty() || tokens.back().op != Token::Op::LevelsStar) {
          tokens.push_back({Token::Op::LevelsStar, 0, 0});
        }
        ++end;
      } else {
        tokens.push_back({Token::Op::GlobStar, 0, 0});
      }
      i = end;
    } else if (c == '?') {
      tokens.push_back({Token::Op::Any, 0, 0});
      ++i;
    } else if (c == '\\') {
      if (i + 1 == p.size()) {
        return fail(error, "trailing '\\'" + at(i - shift) + ": expected a character to escape");
      }
      tokens.push_back({Token::Op::Char, p[i + 1], 0});
      i += 2;
    } else if (c == '[') {
      const std::size_t open = i;
      std::size_t j = i + 1;
      const bool negate = j < p.size() && p[j] == '!';
      if (negate) ++j;
      std::bitset<256> set;
      bool any = false;
      bool closed = false;
      while (j < p.size()) {
        if (p[j] == ']') {
          closed = true;
          ++j;
          break;
        }
        // One member, possibly escaped, possibly the start of a range.
        auto member = [&](std::size_t& k) -> std::optional<unsigned char> {
          if (p[k] == '\\') {
            if (k + 1 == p.size()) return std::nullopt;
            k += 2;
            return static_cast<unsigned char>(p[k - 1]);
          }
          return static_cast<unsigned char>(p[k++]);
        };
        const std::size_t member_at = j;
        auto lo = member(j);
        if (!lo) break;  // trailing '\' inside the class: reported as unclosed
        unsigned char hi = *lo;
        if (j + 1 < p.size() && p[j] == '-' && p[j + 1] != ']') {
          ++j;
          auto h = member(j);
          if (!h) break;
          hi = *h;
          if (hi < *lo) {
            return fail(error, "reversed range '" +
                                   std::string(p.substr(member_at, j - member_at)) + "'" +
                                   at(member_at - shift) + ": expected low-high");
          }
        }
        // A range may span '/' (it is simply never matched), but naming '/' alone is
        // certainly a mistake.
        if (*lo == '/' && hi == '/') {
          return fail(error, "'/' in a character class" + at(member_at - shift) +
                                 ": a class never matches '/', write it outside the class");
        }
        for (unsigned ch = *lo; ch <= hi; ++ch) set.set(ch);
        any = true;
      }
      if (!closed) return fail(error, "unclosed '['" + at(open - shift) + ": expected ']'");
      if (!any) {
        return fail(error, "empty character class" + at(open - shift) +
                               ": expected at least one character before ']' (escape a "
                               "literal ']' as \"\\]\")");
      }
      if (negate) set.flip();
      set.reset('/');  // '/' never matches a class, negated or not
      if (glob.classes_.size() >= 0xFFFF) return fail(error, "too many character classes");
      tokens.push_back({Token::Op::Class, 0, static_cast<std::uint16_t>(glob.classes_.size())});
      glob.classes_.push_back(set);
      i = j;
    } else {
      tokens.push_back({Token::Op::Char, c, 0});
      ++i;
    }
  }

  // Everything matches when, after the root '/', only stars remain and one of them may
  // cross levels: each token can match nothing and the "**" can match anything.
  std::size_t first = glob.path_ ? 1 : 0;
  bool only_stars = true;
  bool any_globstar = false;
  for (std::size_t k = first; k < tokens.size(); ++k) {
    const Token::Op op = tokens[k].op;
    if (op == Token::Op::GlobStar) any_globstar = true;
    if (op != Token::Op::Star && op != Token::Op::GlobStar && op != Token::Op::LevelsStar) {
      only_stars = false;
    }
  }
  glob.match_all_ = only_stars && any_globstar;
  glob.valid_ = true;
  return glob;
}

bool Glob::matches(std::string_view text) const {
  if (!valid_) return false;
  if (match_all_) return true;
  constexpr std::size_t kNone = static_cast<std::size_t>(-1);
  const std::size_t n = text.size();
  const std::size_t m = tokens_.size();

  // A path without its leading '/' is matched as if it had one: skip the pattern's '/'.
  std::size_t ti = (path_ && (text.empty() || text.front() != '/')) ? 1 : 0;
  std::size_t si = 0;
  // The classic two-star backtracking, with one resume point per kind of star: the most
  // recent '*' (stays inside a level) and the most recent "**" (crosses levels). A later
  // star of either kind makes earlier ones irrelevant, so two points suffice.
  std::size_t star_t = kNone, star_s = 0;
  std::size_t glob_t = kNone, glob_s = 0;

  while (true) {
    if (ti < m) {
      const Token& tok = tokens_[ti];
      switch (tok.op) {
        case Token::Op::Star:
          star_t = ti++;
          star_s = si;
          continue;
        case Token::Op::GlobStar:
        case Token::Op::LevelsStar:
          glob_t = ti++;
          glob_s = si;
          star_t = kNone;
          continue;
        case Token::Op::Char:
          if (si < n && text[si] == tok.ch) {
            ++ti;
            ++si;
            continue;
          }
          break;
        case Token::Op::Any:
          if (si < n && text[si] != '/') {
            ++ti;
            ++si;
            continue;
          }
          break;
        case Token::Op::Class:
          if (si < n && classes_[tok.klass].test(static_cast<unsigned char>(text[si]))) {
            ++ti;
            ++si;
            continue;
          }
          break;
      }
    } else if (si == n) {
      return true;
    }

    // Mismatch: let the innermost star take one more character.
    if (star_t != kNone) {
      if (star_s == n) return false;  // '*' ran to the end: no longer split can help
      if (text[star_s] != '/') {
        ti = star_t + 1;
        si = ++star_s;
        continue;
      }
      star_t = kNone;  // '*' cannot cross this '/': only a "**" before it can
    }
    if (glob_t == kNone || glob_s == n) return false;
    if (tokens_[glob_t].op == Token::Op::GlobStar) {
      ++glob_s;
    } else {
      // "**/" covers whole levels only: resume just after the next '/'.
      const std::size_t slash = text.find('/', glob_s);
      if (slash == std::string_view::npos) return false;
      glob_s = slash + 1;
    }
    ti = glob_t + 1;
    si = glob_s;
  }
}

}  // namespace coap2mqtt::bridge
