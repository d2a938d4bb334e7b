#pragma once
// What every benchmark needs: medians, /proc readings of the gateway and the flag parsing
// of `--name VALUE` options.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace coap2mqtt::bench {

template <typename T>
T median(std::vector<T> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// The `pct`th percentile of `sorted` (ascending, not empty): no copy, no sort.
template <typename T>
const T& percentileOfSorted(const std::vector<T>& sorted, std::size_t pct) {
  return sorted[sorted.size() * pct / 100];
}

// A "Name:   123 kB" field of a /proc/<pid>/ file, in KiB; -1 when absent.
inline long procFieldKb(int pid, const std::string& file, const std::string& field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/" + file);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) == 0) {
      return std::strtol(line.c_str() + field.size() + 1, nullptr, 10);
    }
  }
  return -1;
}

// VmRSS, VmHWM, ...
inline long procStatusKb(int pid, const std::string& field) {
  return procFieldKb(pid, "status", field);
}

// Pss (shared library pages divided among the processes that map them) and Private_Dirty
// (the process's own heap and stacks) say more about what a process costs than VmRSS,
// which counts every shared page whole.
inline long smapsRollupKb(int pid, const std::string& field) {
  return procFieldKb(pid, "smaps_rollup", field);
}

// An integer option: `flag` names it in errors.
inline int parseInt(const std::string& flag, const char* value, long min = 1,
                    long max = 100000000) {
  if (value == nullptr) throw std::invalid_argument(flag + " needs a value");
  char* end = nullptr;
  const long v = std::strtol(value, &end, 10);
  if (*end != '\0' || end == value || v < min || v > max) {
    throw std::invalid_argument(flag + ": bad value " + value + " (" + std::to_string(min) +
                                " to " + std::to_string(max) + ")");
  }
  return static_cast<int>(v);
}

struct IntFlag {
  int* value;
  long min = 1;
  long max = 100000000;
};

// Parses `--name VALUE` options into `flags` and bare `--name` ones into `switches` (set to
// true). Returns 0 to go on, or the exit code (2) after printing the error or `usage` to
// stderr.
inline int parseFlags(int argc, char** argv, const char* program, const std::string& usage,
                      const std::map<std::string, IntFlag>& flags,
                      const std::map<std::string, bool*>& switches = {}) {
  try {
    for (int i = 1; i < argc; ++i) {
      if (const auto on = switches.find(argv[i]); on != switches.end()) {
        *on->second = true;
        continue;
      }
      const auto flag = flags.find(argv[i]);
      if (flag == flags.end()) {
        std::fprintf(stderr, "usage: %s %s\n", program, usage.c_str());
        return 2;
      }
      *flag->second.value = parseInt(flag->first, i + 1 < argc ? argv[i + 1] : nullptr,
                                     flag->second.min, flag->second.max);
      ++i;
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", program, e.what());
    return 2;
  }
  return 0;
}

}  // namespace coap2mqtt::bench
