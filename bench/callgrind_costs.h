#pragma once
// Instructions by ELF object from a callgrind dump (valgrind's callgrind format, version 1),
// for a per-message instruction count: on a shared, noisy machine (or a VM without
// hardware counters, where `perf stat -e instructions` is "not supported") the number of
// instructions a message costs is stable where its CPU time is not.
//
// Only what the count needs is read: the event list, the `ob=`/`cob=` and `fn=`/`cfn=`
// name tables (with or without name compression), and the exclusive cost lines; the inclusive cost
// line that follows each `calls=` line is skipped, so nothing is counted twice.
#include <cstdint>
#include <istream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace coap2mqtt::bench {

struct CallgrindCosts {
  std::uint64_t total = 0;                           // the first event (Ir), whole dump
  std::map<std::string, std::uint64_t> by_object;    // exclusive, by `ob=` name
  std::map<std::string, std::uint64_t> by_function;  // exclusive, by `fn=` name
  std::string event;                                 // the first event's name ("Ir")
};

namespace detail {

// "(3) /usr/lib/libc.so.6" defines id 3; "(3)" refers to it; a bare name has no id.
inline std::string objectName(const std::string& spec, std::map<std::string, std::string>& ids) {
  if (spec.empty() || spec[0] != '(') return spec;
  const auto close = spec.find(')');
  if (close == std::string::npos) return spec;
  const std::string id = spec.substr(0, close + 1);
  if (close + 1 < spec.size()) {
    std::string name = spec.substr(close + 1);
    name.erase(0, name.find_first_not_of(' '));
    ids[id] = name;
    return name;
  }
  const auto it = ids.find(id);
  return it == ids.end() ? id : it->second;
}

inline bool isCostLine(const std::string& line) {
  const char c = line.empty() ? '\0' : line[0];
  return (c >= '0' && c <= '9') || c == '+' || c == '-' || c == '*';
}

}  // namespace detail

inline CallgrindCosts readCallgrindCosts(std::istream& in) {
  CallgrindCosts out;
  std::map<std::string, std::string> ids;     // objects' compressed names
  std::map<std::string, std::string> fn_ids;  // functions' (a table of their own)
  std::size_t positions = 1;                  // "positions: line" unless the header says otherwise
  std::string object;
  std::string function;
  bool skip_next_cost = false;
  std::string line;
  while (std::getline(in, line)) {
    if (detail::isCostLine(line)) {
      if (skip_next_cost) {
        skip_next_cost = false;
        continue;
      }
      std::istringstream words(line);
      std::string word;
      for (std::size_t i = 0; i < positions && words >> word; ++i) {
      }
      std::uint64_t cost = 0;
      if (words >> cost) {
        out.by_object[object] += cost;
        out.by_function[function] += cost;
      }
      continue;
    }
    const auto eq = line.find('=');
    const auto colon = line.find(':');
    if (eq != std::string::npos && (colon == std::string::npos || eq < colon)) {
      const std::string key = line.substr(0, eq);
      const std::string value = line.substr(eq + 1);
      if (key == "ob") {
        object = detail::objectName(value, ids);
      } else if (key == "cob") {
        detail::objectName(value, ids);  // may define a name used by a later ob=
      } else if (key == "fn") {
        function = detail::objectName(value, fn_ids);
      } else if (key == "cfn") {
        detail::objectName(value, fn_ids);
      } else if (key == "calls") {
        skip_next_cost = true;
      }
      continue;
    }
    if (colon == std::string::npos) continue;
    const std::string key = line.substr(0, colon);
    std::istringstream value(line.substr(colon + 1));
    if (key == "positions") {
      positions = 0;
      for (std::string w; value >> w;) ++positions;
    } else if (key == "events") {
      value >> out.event;
    } else if (key == "totals" || key == "summary") {
      value >> out.total;
    }
  }
  if (out.total == 0) {
    for (const auto& [name, cost] : out.by_object) out.total += cost;
  }
  return out;
}

}  // namespace coap2mqtt::bench
