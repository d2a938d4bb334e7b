#include "bridge/topic_template.h"

#include <utility>

#include "registry/utf8.h"

namespace coap2mqtt::bridge {
namespace {

constexpr std::size_t kMaxTopicBytes = 65535;  // MQTT string length limit
constexpr unsigned kMaxPathIndex = 65535;

template <typename T>
std::optional<T> fail(std::string* error, std::string message) {
  if (error != nullptr) *error = std::move(message);
  return std::nullopt;
}

std::string at(std::size_t offset) {
  return " at offset " + std::to_string(offset);
}

// One pass over an expanded topic: everything a broker would refuse in a PUBLISH, plus the
// empty levels we refuse by policy.
bool validPublishTopic(std::string_view topic) {
  if (topic.empty() || topic.size() > kMaxTopicBytes || topic.front() == '$') return false;
  if (topic.front() == '/' || topic.back() == '/') return false;
  char prev = 0;
  for (char c : topic) {
    if (c == '+' || c == '#' || c == '\0') return false;
    if (c == '/' && prev == '/') return false;
    prev = c;
  }
  return registry::isValidUtf8(topic);  // strict: brokers disconnect on anything else
}

// Segment `index` of "a/b/c" (0-based); nullopt past the end. "" has no segments.
std::optional<std::string_view> pathSegment(std::string_view path, unsigned index) {
  if (path.empty()) return std::nullopt;
  std::size_t start = 0;
  for (unsigned k = 0; k < index; ++k) {
    const std::size_t slash = path.find('/', start);
    if (slash == std::string_view::npos) return std::nullopt;
    start = slash + 1;
  }
  const std::size_t end = path.find('/', start);
  return path.substr(start, end == std::string_view::npos ? path.size() - start : end - start);
}

// Where a template or pattern has an empty level, or npos.
std::size_t emptyLevelAt(std::string_view text) {
  if (text.front() == '/') return 0;
  const std::size_t twice = text.find("//");
  if (twice != std::string_view::npos) return twice + 1;
  if (text.back() == '/') return text.size() - 1;
  return std::string_view::npos;
}

}  // namespace

bool isValidPublishTopic(std::string_view topic) {
  return validPublishTopic(topic);
}

// ---------------------------------------------------------------------------------------
// TopicTemplate

std::optional<TopicTemplate> TopicTemplate::compile(std::string_view text, std::string* error) {
  using R = TopicTemplate;
  if (text.empty()) return fail<R>(error, "empty topic template");
  if (text.front() == '$') {
    return fail<R>(error,
                   "topic template starts with '$': such topics are reserved for the "
                   "broker (e.g. $SYS)");
  }
  if (!registry::isValidUtf8(text)) return fail<R>(error, "topic template is not valid UTF-8");

  TopicTemplate tmpl;
  tmpl.text_ = std::string(text);
  std::string literal;
  auto flushLiteral = [&] {
    if (literal.empty()) return;
    Token token;
    token.literal = std::move(literal);
    tmpl.tokens_.push_back(std::move(token));
    literal.clear();
  };

  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '+' || c == '#') {
      return fail<R>(error, std::string("'") + c + "'" + at(i) +
                                ": wildcards are not allowed in a publish topic");
    }
    if (c == '\0') return fail<R>(error, "NUL character" + at(i));
    if (c == '}') return fail<R>(error, "unbalanced '}'" + at(i) + ": no '{' before it");
    if (c != '{') {
      literal.push_back(c);
      continue;
    }
    const std::size_t close = text.find('}', i + 1);
    const std::size_t nested = text.find('{', i + 1);
    if (close == std::string_view::npos || nested < close) {
      return fail<R>(error, "unbalanced '{'" + at(i) + ": expected '}'");
    }
    const std::string_view name = text.substr(i + 1, close - i - 1);
    Token token;
    if (name == "gateway") {
      token.var = Var::Gateway;
    } else if (name == "device") {
      token.var = Var::Device;
    } else if (name == "path") {
      token.var = Var::Path;
    } else if (name == "rt") {
      token.var = Var::Rt;
    } else if (name == "name") {
      token.var = Var::Name;
    } else if (name.size() > 6 && name.substr(0, 5) == "path[" && name.back() == ']') {
      const std::string_view digits = name.substr(5, name.size() - 6);
      unsigned index = 0;
      bool ok = !digits.empty();
      for (char d : digits) {
        if (d < '0' || d > '9' || index > kMaxPathIndex) {
          ok = false;
          break;
        }
        index = index * 10 + static_cast<unsigned>(d - '0');
      }
      if (!ok || index > kMaxPathIndex) {
        return fail<R>(error, "bad index in {" + std::string(name) + "}" + at(i) +
                                  ": expected {path[N]} with N a number from 0 to " +
                                  std::to_string(kMaxPathIndex));
      }
      token.var = Var::PathSegment;
      token.index = index;
    } else {
      return fail<R>(error,
                     "unknown variable {" + std::string(name) + "}" + at(i) +
                         ": expected {gateway}, {device}, {path}, {path[N]}, {rt} or {name}");
    }
    flushLiteral();
    tmpl.tokens_.push_back(std::move(token));
    i = close;
  }
  flushLiteral();

  if (const std::size_t empty = emptyLevelAt(text); empty != std::string_view::npos) {
    return fail<R>(error, "empty topic level" + at(empty) +
                              ": no leading, trailing or doubled '/' in a topic");
  }
  return tmpl;
}

std::optional<std::string> TopicTemplate::expand(const TopicVars& vars) const {
  if (tokens_.empty()) return std::nullopt;  // default-constructed: nothing to publish to
  auto value = [&vars](const Token& token) -> std::optional<std::string_view> {
    switch (token.var) {
      case Var::Literal:
        return std::string_view(token.literal);
      case Var::Gateway:
        return vars.gateway;
      case Var::Device:
        return vars.device;
      case Var::Path:
        return vars.path;
      case Var::PathSegment:
        return pathSegment(vars.path, token.index);
      case Var::Rt:
        return vars.rt;
      case Var::Name:
        return vars.name;
    }
    return std::nullopt;
  };

  // Size first so the result is allocated exactly once.
  std::size_t size = 0;
  for (const Token& token : tokens_) {
    auto v = value(token);
    if (!v) return std::nullopt;
    size += v->size();
  }
  if (size > kMaxTopicBytes) return std::nullopt;
  std::string topic;
  topic.reserve(size);
  for (const Token& token : tokens_) topic.append(*value(token));
  if (!isValidPublishTopic(topic)) return std::nullopt;
  return topic;
}

bool TopicTemplate::usesName() const {
  for (const Token& token : tokens_) {
    if (token.var == Var::Name) return true;
  }
  return false;
}

bool TopicTemplate::usesRt() const {
  for (const Token& token : tokens_) {
    if (token.var == Var::Rt) return true;
  }
  return false;
}

// ---------------------------------------------------------------------------------------
// CommandTopic

std::optional<CommandTopic> CommandTopic::compile(std::string_view text, std::string* error) {
  using R = CommandTopic;
  if (text.empty()) return fail<R>(error, "empty command topic");
  if (text.front() == '$') {
    return fail<R>(error,
                   "command topic starts with '$': such topics are reserved for the "
                   "broker ($share subscriptions are not supported)");
  }
  if (!registry::isValidUtf8(text)) return fail<R>(error, "command topic is not valid UTF-8");
  if (const std::size_t empty = emptyLevelAt(text); empty != std::string_view::npos) {
    return fail<R>(error, "empty topic level" + at(empty) +
                              ": no leading, trailing or doubled '/' in a command topic");
  }

  CommandTopic topic;
  topic.text_ = std::string(text);
  bool device = false;
  bool multi = false;
  std::size_t start = 0;
  while (start <= text.size()) {
    std::size_t end = text.find('/', start);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view level = text.substr(start, end - start);
    const bool last = end == text.size();
    Token token;
    if (level == "{device}") {
      if (device) return fail<R>(error, "{device} appears twice" + at(start));
      device = true;
      token.kind = Level::Device;
    } else if (level == "{path}" || level == "#") {
      if (multi) {
        return fail<R>(error, "second multi-level capture '" + std::string(level) + "'" +
                                  at(start) + ": at most one of {path} and '#'");
      }
      if (level == "#" && !last)
        return fail<R>(error, "'#'" + at(start) + " must be the last level");
      multi = true;
      token.kind = level == "#" ? Level::Hash : Level::Path;
    } else if (level == "+") {
      token.kind = Level::Plus;
    } else if (level.front() == '{' && level.back() == '}' &&
               level.find_first_of("{}", 1) == level.size() - 1) {
      return fail<R>(error, "unknown variable " + std::string(level) + at(start) +
                                ": expected {device} or {path}");
    } else if (const std::size_t bad = level.find_first_of("{}+#"); bad != std::string_view::npos) {
      const char c = level[bad];
      if (c == '{' || c == '}') {
        return fail<R>(error, "level \"" + std::string(level) + "\"" + at(start) +
                                  " mixes text and a variable: {device} and {path} must be "
                                  "whole levels, and '{' '}' are not allowed in text");
      }
      return fail<R>(error,
                     std::string("'") + c + "'" + at(start + bad) + " must be a whole level");
    } else if (level.find('\0') != std::string_view::npos) {
      return fail<R>(error, "NUL character" + at(start + level.find('\0')));
    } else {
      token.literal = std::string(level);
    }
    topic.levels_.push_back(std::move(token));
    start = end + 1;
  }
  if (!device) return fail<R>(error, "command topic has no {device} level");
  return topic;
}

std::optional<CommandTopic::Captures> CommandTopic::match(std::string_view topic) const {
  if (levels_.empty() || topic.empty() || topic.front() == '$') return std::nullopt;

  // Levels are taken from the front up to the multi-level capture and from the back after
  // it; what is left in the middle is the capture. No allocation besides the captures.
  std::string_view rest = topic;
  bool more = true;  // whether `rest` still holds at least one level ("" is one empty level)
  auto front = [&]() -> std::optional<std::string_view> {
    if (!more) return std::nullopt;
    const std::size_t slash = rest.find('/');
    if (slash == std::string_view::npos) {
      more = false;
      return rest;
    }
    std::string_view level = rest.substr(0, slash);
    rest.remove_prefix(slash + 1);
    return level;
  };
  auto back = [&]() -> std::optional<std::string_view> {
    if (!more) return std::nullopt;
    const std::size_t slash = rest.rfind('/');
    if (slash == std::string_view::npos) {
      more = false;
      return rest;
    }
    std::string_view level = rest.substr(slash + 1);
    rest.remove_suffix(rest.size() - slash);
    return level;
  };

  Captures captures;
  auto single = [&](const Token& token, std::string_view level) {
    switch (token.kind) {
      case Level::Literal:
        return level == token.literal;
      case Level::Device:
        if (level.empty()) return false;
        captures.device = std::string(level);
        return true;
      case Level::Plus:
        return true;
      case Level::Path:
      case Level::Hash:
        break;
    }
    return false;
  };

  std::size_t k = 0;
  while (k < levels_.size() && levels_[k].kind != Level::Path && levels_[k].kind != Level::Hash) {
    auto level = front();
    if (!level || !single(levels_[k], *level)) return std::nullopt;
    ++k;
  }
  if (k == levels_.size()) {
    if (more) return std::nullopt;  // the topic has more levels than the pattern
    return captures;
  }
  for (std::size_t j = levels_.size() - 1; j > k; --j) {
    auto level = back();
    if (!level || !single(levels_[j], *level)) return std::nullopt;
  }
  if (levels_[k].kind == Level::Hash) return captures;  // like MQTT, "a/#" also takes "a"
  // {path}: one or more levels, none of them empty.
  if (!more || rest.empty() || emptyLevelAt(rest) != std::string_view::npos) return std::nullopt;
  captures.path.reserve(rest.size() + 1);
  captures.path.push_back('/');
  captures.path.append(rest);
  return captures;
}

std::optional<CommandTopic::Captures> CommandTopic::matchWithEmptyLevels(
    std::string_view topic) const {
  if (topic.empty() || emptyLevelAt(topic) == std::string_view::npos) return std::nullopt;
  // Every empty level becomes a marker no pattern literal can equal (literal levels are
  // never empty), then the ordinary match decides.
  constexpr char kMarker = '\x01';
  std::string marked;
  marked.reserve(topic.size() + 4);
  char prev = '/';
  for (char c : topic) {
    if (c == '/' && prev == '/') marked.push_back(kMarker);
    marked.push_back(c);
    prev = c;
  }
  if (prev == '/') marked.push_back(kMarker);
  if (marked.find(kMarker) == std::string::npos) return std::nullopt;
  if (topic.find(kMarker) != std::string_view::npos) return std::nullopt;
  auto captures = match(marked);
  if (!captures) return std::nullopt;
  std::erase(captures->device, kMarker);
  std::erase(captures->path, kMarker);
  return captures;
}

std::string CommandTopic::subscriptionFilter() const {
  std::string filter;
  filter.reserve(text_.size());
  for (const Token& token : levels_) {
    if (!filter.empty()) filter.push_back('/');
    switch (token.kind) {
      case Level::Literal:
        filter.append(token.literal);
        break;
      case Level::Device:
      case Level::Plus:
        filter.push_back('+');
        break;
      case Level::Path:
      case Level::Hash:
        filter.push_back('#');
        return filter;
    }
  }
  return filter;
}

}  // namespace coap2mqtt::bridge
