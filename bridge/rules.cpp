#include "bridge/rules.h"

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <limits>
#include <map>
#include <sstream>
#include <tuple>
#include <utility>

#include <toml.hpp>

#include "bridge/toml_reader.h"

namespace coap2mqtt::bridge {

namespace {

using toml_reader::checkDocument;
using toml_reader::equalsIgnoreCase;
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
  if (auto too_deep = checkDocument(file, content)) {
    errors.push_back(std::move(*too_deep));
    return std::nullopt;
  }
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

constexpr const char* kContentFormatExpected =
    "a Content-Format number (0..65535) or name such as \"application/json\"";

// One Content-Format: a number or a name. Reports and returns nullopt when invalid.
std::optional<unsigned> contentFormatValue(Reporter& report, const Value& v,
                                           const std::string& key) {
  if (v.is_integer()) {
    const auto n = v.as_integer();
    if (n < 0 || n > 65535) {
      report.error(
          v, key, std::string("expected ") + kContentFormatExpected + ", got " + std::to_string(n));
      return std::nullopt;
    }
    return static_cast<unsigned>(n);
  }
  if (v.is_string()) {
    const std::string& text = v.as_string().str;
    if (auto n = content_format::fromName(text)) return n;
    std::string message = "unknown Content-Format " + quote(text);
    if (auto guess = closestMatch(text, content_format::knownNames()); !guess.empty()) {
      message += "; did you mean " + quote(guess) + "?";
    } else {
      message += std::string("; expected ") + kContentFormatExpected;
    }
    report.error(v, key, message);
    return std::nullopt;
  }
  report.error(v, key, std::string("expected ") + kContentFormatExpected + ", got " + typeName(v));
  return std::nullopt;
}

// A byte count: an integer, or a string "<n>", "<n>B", "<n>KiB", "<n>MiB".
std::optional<std::size_t> parseBytes(std::string_view text) {
  std::size_t i = 0;
  std::uint64_t n = 0;
  while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
    if (n > (std::uint64_t{1} << 40)) return std::nullopt;
    n = n * 10 + static_cast<std::uint64_t>(text[i++] - '0');
  }
  if (i == 0) return std::nullopt;
  std::string_view unit = text.substr(i);
  while (!unit.empty() && unit.front() == ' ') unit.remove_prefix(1);
  std::uint64_t factor = 1;
  if (unit.empty() || unit == "B") {
    factor = 1;
  } else if (unit == "KiB") {
    factor = 1024;
  } else if (unit == "MiB") {
    factor = 1024 * 1024;
  } else {
    return std::nullopt;
  }
  return static_cast<std::size_t>(n * factor);
}

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
    TableReader r(report_, t, prefix,
                  {"name", "match", "mode", "interval", "topic", "payload", "qos", "retain",
                   "enabled", "value", "senml", "min_interval", "only_changes", "homeassistant"});
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
        names_.emplace(*name, r.find("name"));
      }
      rule.name = *name;
    }

    if (const Value* m = r.table("match")) {
      TableReader mr(report_, *m, prefix + ".match", {"device", "path", "rt", "if", "ct"});
      if (auto g = readGlob(mr, "device", Glob::Kind::Name)) rule.device = std::move(*g);
      if (auto g = readGlob(mr, "path", Glob::Kind::Path)) rule.path = std::move(*g);
      if (auto g = readGlob(mr, "rt", Glob::Kind::Name)) rule.rt = std::move(*g);
      if (auto g = readGlob(mr, "if", Glob::Kind::Name)) rule.ifs = std::move(*g);
      if (const Value* ct = mr.find("ct")) {
        if (ct->is_array()) {
          std::size_t index = 0;
          if (ct->as_array().empty()) {
            report_.error(*ct, mr.keyPath("ct"),
                          std::string("expected at least one ") + kContentFormatExpected);
          }
          for (const Value& item : ct->as_array()) {
            const std::string key = mr.keyPath("ct") + "[" + std::to_string(++index) + "]";
            if (auto n = contentFormatValue(report_, item, key)) rule.ct.push_back(*n);
          }
        } else if (auto n = contentFormatValue(report_, *ct, mr.keyPath("ct"))) {
          rule.ct.push_back(*n);
        }
      }
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

    if (auto p = r.choice<PayloadMode>("payload", {{"raw", PayloadMode::Raw},
                                                   {"json", PayloadMode::Json},
                                                   {"envelope", PayloadMode::Envelope}})) {
      rule.payload = *p;
    }
    const bool raw = rule.payload == PayloadMode::Raw && r.find("payload") != nullptr;
    if (auto pointer = r.string("value", false, "a JSON Pointer such as \"/temperature\"")) {
      std::string err;
      if (pointer->empty()) {
        r.invalid("value",
                  "an empty JSON Pointer selects the whole value; leave `value` out instead");
      } else if (!isValidJsonPointer(*pointer, &err)) {
        r.invalid("value", "invalid JSON Pointer " + quote(*pointer) + ": " + err);
      } else if (raw) {
        r.invalid("value",
                  "`value` needs payload = \"json\" or \"envelope\" (raw passes the "
                  "bytes unchanged)");
      } else {
        rule.value = *pointer;
      }
    }
    if (auto split = r.choice<bool>("senml", {{"pack", false}, {"records", true}})) {
      if (*split && raw) {
        r.invalid("senml", "senml = \"records\" needs payload = \"json\" or \"envelope\"");
      } else {
        rule.senml_records = *split;
      }
    }
    if (rule.topic.usesName() && !rule.senml_records) {
      r.invalid("topic",
                "{name} is the SenML record name: it needs senml = \"records\" in this rule");
    }
    if (auto q = r.integer("qos", 0, 2)) rule.qos = static_cast<int>(*q);
    if (auto b = r.boolean("retain")) rule.retain = *b;
    if (auto b = r.boolean("enabled")) rule.enabled = *b;
    if (auto d = r.duration("min_interval", std::chrono::milliseconds(0))) rule.min_interval = *d;
    if (auto b = r.boolean("only_changes")) rule.only_changes = *b;
    if (const Value* ha = r.table("homeassistant")) {
      rule.homeassistant = parseHomeAssistant(*ha, prefix + ".homeassistant");
    }

    if (report_.count() == errors_before) out_.rules.push_back(std::move(rule));
  }

  std::optional<HomeAssistant> parseHomeAssistant(const Value& t, const std::string& prefix) {
    TableReader r(
        report_, t, prefix,
        {"component", "unit", "device_class", "state_class", "name", "value_template", "icon"});
    HomeAssistant ha;
    if (auto c =
            r.string("component", true, "a Home Assistant MQTT component such as \"sensor\"")) {
      const auto& known = homeAssistantComponents();
      if (std::find(known.begin(), known.end(), *c) != known.end()) {
        ha.component = *c;
      } else {
        std::string message = "unknown Home Assistant component " + quote(*c);
        if (auto guess = closestMatch(*c, known); !guess.empty()) {
          message += "; did you mean " + quote(guess) + "?";
        } else {
          std::string list;
          for (const auto& k : known) list += (list.empty() ? "" : ", ") + k;
          message += "; expected one of: " + list;
        }
        r.invalid("component", message);
      }
    }
    const auto text = [&](const char* key, std::string& into) {
      if (auto v = r.string(key)) {
        if (v->empty()) {
          r.invalid(key, "expected a non-empty string (leave the key out for none)");
        } else {
          into = *v;
        }
      }
    };
    text("unit", ha.unit);
    text("device_class", ha.device_class);
    text("name", ha.name);
    text("value_template", ha.value_template);
    text("icon", ha.icon);
    if (auto sc = r.choice("state_class", {"measurement", "total", "total_increasing"})) {
      if (!ha.component.empty() && ha.component != "sensor") {
        r.invalid("state_class", "state_class only applies to component \"sensor\"");
      } else {
        ha.state_class = *sc;
      }
    }
    return ha;
  }

  void parseCommand(const Value& t, const std::string& prefix) {
    const std::size_t errors_before = report_.count();
    TableReader r(report_, t, prefix,
                  {"name", "topic", "method", "allow", "qos", "content_format", "result_topic",
                   "max_payload", "rate_limit", "timeout", "queue", "envelope"});
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

    if (const Value* v = r.find("content_format")) {
      if (auto n = contentFormatValue(report_, *v, r.keyPath("content_format"))) {
        cmd.content_format = *n;
      }
    }
    parseResultTopic(r, cmd);
    if (const Value* v = r.find("max_payload")) {
      constexpr std::size_t kMaxPayload = 16 * 1024 * 1024;
      std::optional<std::size_t> n;
      if (v->is_integer() && v->as_integer() >= 0) {
        n = static_cast<std::size_t>(v->as_integer());
      } else if (v->is_string()) {
        n = parseBytes(v->as_string().str);
      }
      if (!n || *n > kMaxPayload) {
        r.invalid("max_payload",
                  "expected a size in bytes from 0 to 16 MiB (an integer, or a string such as "
                  "\"64KiB\" or \"1MiB\"), got " +
                      (v->is_string()    ? quote(v->as_string().str)
                       : v->is_integer() ? std::to_string(v->as_integer())
                                         : std::string(typeName(*v))));
      } else {
        cmd.max_payload = *n;
      }
    }
    if (const Value* v = r.find("rate_limit")) {
      std::optional<RateLimit> rate;
      std::string shown;
      if (v->is_string()) {
        rate = parseRate(v->as_string().str);
        shown = quote(v->as_string().str);
      } else if (v->is_integer()) {
        shown = std::to_string(v->as_integer());
        if (v->as_integer() > 0 && v->as_integer() <= 1'000'000) {
          rate = RateLimit{static_cast<std::uint32_t>(v->as_integer()), std::chrono::seconds(1)};
        }
      } else if (v->is_floating()) {
        const double x = v->as_floating();
        shown = std::to_string(x);
        if (x > 0 && x <= 1000) {  // below 1/s: one command per 1/x seconds
          const auto ms = static_cast<std::int64_t>(1000.0 / x + 0.5);
          rate = RateLimit{1, std::chrono::milliseconds(std::max<std::int64_t>(ms, 1))};
        }
      } else {
        shown = typeName(*v);
      }
      if (!rate) {
        r.invalid("rate_limit",
                  "expected a rate such as \"10/s\", \"30/m\", \"1/500ms\" or a positive "
                  "number per second, got " +
                      shown);
      } else {
        cmd.rate_limit = *rate;
      }
    }
    if (auto d = r.duration("timeout", kMinInterval)) cmd.timeout = *d;
    if (auto q = r.integer("queue", 1, 10000)) cmd.queue = static_cast<std::size_t>(*q);
    if (auto b = r.boolean("envelope")) cmd.envelope = *b;

    if (report_.count() == errors_before) out_.commands.push_back(std::move(cmd));
  }

  // [[inbound]] (bridge/inbound.h): who may publish to or read /ps/<topic path>.
  void parseInbound(const Value& t, const std::string& prefix) {
    const std::size_t errors_before = report_.count();
    TableReader r(report_, t, prefix, {"name", "allow", "methods", "qos", "retain"});
    InboundRule in;
    in.file = report_.file();
    in.name = prefix;
    if (auto name = r.string("name")) {
      if (name->empty()) {
        r.invalid("name", "expected a non-empty string");
      } else {
        in.name = *name;
      }
    }
    static constexpr const char* kDenied =
        "devices may publish or subscribe only where `allow` names the devices and paths";
    if (const Value* allow = r.table("allow")) {
      TableReader ar(report_, *allow, prefix + ".allow", {"device", "path"});
      if (auto g = readGlob(ar, "device", Glob::Kind::Name, true,
                            std::string("a device name glob such as \"*\" (") + kDenied + ")")) {
        in.allow_device = std::move(*g);
      }
      if (auto g = readGlob(
              ar, "path", Glob::Kind::Path, true,
              std::string("a topic path glob such as \"/sensors/**\" (") + kDenied + ")")) {
        in.allow_path = std::move(*g);
      }
    } else if (r.find("allow") == nullptr) {
      report_.error(
          t, r.keyPath("allow"),
          std::string(kDenied) + ", e.g. allow = { device = \"*\", path = \"/sensors/**\" }");
    }
    if (r.find("methods") != nullptr) {
      in.post = in.put = in.get = false;
      bool any = false;
      const bool is_array = r.stringArray(
          "methods", "\"POST\", \"PUT\" or \"GET\"",
          [&](const Value& item, const std::string& key, const std::string& m) {
            if (equalsIgnoreCase(m, "POST")) {
              in.post = any = true;
            } else if (equalsIgnoreCase(m, "PUT")) {
              in.put = any = true;
            } else if (equalsIgnoreCase(m, "GET")) {
              in.get = any = true;
            } else {
              report_.error(
                  item, key,
                  "expected \"POST\", \"PUT\" or \"GET\" (GET includes observe), got " + quote(m));
              any = true;  // reported: not also as an empty list
            }
          });
      if (is_array && !any) {
        r.invalid("methods", "expected at least one of \"POST\", \"PUT\", \"GET\"");
      }
    }
    if (auto q = r.integer("qos", 0, 2)) in.qos = static_cast<int>(*q);
    if (auto b = r.boolean("retain")) in.retain = *b;
    if (report_.count() == errors_before) out_.inbound.push_back(std::move(in));
  }

  // result_topic: a publish template over the command's captures; by default the command
  // topic + "/result". It must not match the command topic itself (a command loop).
  void parseResultTopic(TableReader& r, CommandRule& cmd) {
    const auto text = r.string("result_topic", false, "a topic template");
    if (!text && r.find("result_topic") != nullptr) return;  // wrong type, reported
    const bool explicit_topic = text.has_value();
    const std::string source = explicit_topic ? *text : cmd.topic.text() + "/result";
    if (!explicit_topic && cmd.topic.text().empty()) return;  // topic invalid, reported
    std::string err;
    auto tmpl = TopicTemplate::compile(source, &err);
    const auto fail = [&](const std::string& message) { r.invalid("result_topic", message); };
    if (!tmpl) {
      // The default of a command topic with '+' or '#' is no topic: then no results.
      if (explicit_topic) fail("invalid topic template " + quote(source) + ": " + err);
      return;
    }
    if (tmpl->usesName() || tmpl->usesRt()) {
      fail("invalid topic template " + quote(source) +
           ": a result topic may only use {gateway}, {device}, {path} and {path[N]}");
      return;
    }
    const TopicVars sample{"gateway", "device", "a/b", "", ""};
    if (auto topic = tmpl->expand(sample); topic && cmd.topic.match(*topic)) {
      // A default that loops ("x/{device}/{path}" + "/result") means: no results; only an
      // explicit result_topic that loops is an error (existing configs keep loading).
      if (explicit_topic) {
        fail("would match the command topic " + quote(cmd.topic.text()) +
             " itself (each result would be taken as a new command)");
      }
      return;
    }
    cmd.result_topic = std::move(*tmpl);
  }

 private:
  // Where `name` was first used ("at line N" in this file, or "in <file>"); empty if new.
  std::string firstUse(const std::string& name) const {
    if (const auto it = names_.find(name); it != names_.end()) {
      return "at line " + std::to_string(it->second->location().line());
    }
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
  // Rule names of this file -> the `name` value, whose line is read only for a duplicate
  // (toml11 counts the lines from the file's start for each location()).
  std::map<std::string, const Value*> names_;
};

void sortByPosition(std::vector<ConfigError>& errors, std::size_t from) {
  std::stable_sort(errors.begin() + static_cast<std::ptrdiff_t>(from), errors.end(),
                   [](const ConfigError& a, const ConfigError& b) {
                     return std::tie(a.line, a.column) < std::tie(b.line, b.column);
                   });
}

}  // namespace

const std::vector<std::string>& homeAssistantComponents() {
  // The MQTT integration's discovery components (Home Assistant 2024.x).
  static const std::vector<std::string> kComponents{"alarm_control_panel",
                                                    "binary_sensor",
                                                    "button",
                                                    "camera",
                                                    "climate",
                                                    "cover",
                                                    "device_tracker",
                                                    "event",
                                                    "fan",
                                                    "humidifier",
                                                    "image",
                                                    "lawn_mower",
                                                    "light",
                                                    "lock",
                                                    "notify",
                                                    "number",
                                                    "scene",
                                                    "select",
                                                    "sensor",
                                                    "siren",
                                                    "switch",
                                                    "text",
                                                    "update",
                                                    "vacuum",
                                                    "valve",
                                                    "water_heater"};
  return kComponents;
}

std::optional<RateLimit> parseRate(std::string_view text) {
  const auto slash = text.find('/');
  if (slash == std::string_view::npos || slash == 0) return std::nullopt;
  std::uint64_t count = 0;
  for (char c : text.substr(0, slash)) {
    if (c < '0' || c > '9' || count > 1'000'000) return std::nullopt;
    count = count * 10 + static_cast<std::uint64_t>(c - '0');
  }
  if (count == 0 || count > 1'000'000) return std::nullopt;
  const std::string_view unit = text.substr(slash + 1);
  std::optional<std::chrono::milliseconds> period;
  if (unit == "s") {
    period = std::chrono::seconds(1);
  } else if (unit == "m" || unit == "min") {
    period = std::chrono::minutes(1);
  } else if (unit == "h") {
    period = std::chrono::hours(1);
  } else {
    period = parseDuration(unit);
    // A bare number after '/' would mean seconds; "10/5" reads too much like a fraction.
    if (!unit.empty() && unit.find_first_not_of("0123456789") == std::string_view::npos) {
      period.reset();
    }
  }
  if (!period || period->count() <= 0) return std::nullopt;
  return RateLimit{static_cast<std::uint32_t>(count), *period};
}

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
  const auto doc = parseDocument(file, content, errors);
  if (!doc) return;
  toml_reader::parseRulesOf(file, *doc, default_topic_base, allow_other_tables, out, errors);
}

void toml_reader::parseRulesOf(const std::string& file, const Value& doc,
                               std::string_view default_topic_base, bool allow_other_tables,
                               RuleSet& out, std::vector<ConfigError>& errors) {
  const std::size_t first_error = errors.size();
  Reporter report(file, errors);
  if (!allow_other_tables) {
    const std::vector<std::string> known{"rule", "command", "inbound"};
    for (const auto& [key, value] : doc.as_table()) {
      if (key != "rule" && key != "command" && key != "inbound") {
        report.error(value, key, unknownKeyMessage(key, known));
      }
    }
  }

  FileParser parser(report, default_topic_base, out);
  const Table& root = doc.as_table();
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
  if (const auto it = root.find("inbound"); it != root.end()) {
    parser.eachTable(
        it->second, "inbound",
        [&](const Value& t, const std::string& key, std::size_t) { parser.parseInbound(t, key); });
  }
  sortByPosition(errors, first_error);
}

}  // namespace coap2mqtt::bridge
