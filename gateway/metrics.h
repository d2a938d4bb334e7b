#pragma once
// The Prometheus view of the one stats model (gateway/stats.h): which metric families the
// gateway exposes, built from a StatsSnapshot plus the process's own numbers from /proc,
// and their text exposition format 0.0.4 (rendered by prometheus-cpp's TextSerializer).
// Pure apart from readProcessStats(); no sockets (the endpoint is gateway/metrics_server.h).
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "gateway/stats.h"

namespace coap2mqtt::gateway::metrics {

// The Content-Type of GET /metrics.
inline constexpr const char* kContentType = "text/plain; version=0.0.4; charset=utf-8";

enum class Type { Counter, Gauge };

struct Sample {
  std::vector<std::pair<std::string, std::string>> labels;  // name, value (any UTF-8)
  double value = 0;
};

struct Family {
  std::string name;
  std::string help;  // any text: '\' and newlines are escaped
  Type type = Type::Gauge;
  std::vector<Sample> samples;
};

// The families break the exposition format's rules: a name is not a valid metric or label
// name, a counter's name does not end in "_total", two families share a name, or two
// samples of one family have the same labels. A programming error, not bad input.
struct InvalidFamilies : std::logic_error {
  using std::logic_error::logic_error;
};

// Text exposition format 0.0.4: "# HELP", "# TYPE", one line per sample, label values
// escaped ('\\', '"', newline). Throws InvalidFamilies (see above).
std::string render(const std::vector<Family>& families);

// The standard process metrics (as the Prometheus client libraries name them).
struct ProcessStats {
  double cpu_seconds = 0;  // user + system
  double resident_bytes = 0;
  double virtual_bytes = 0;
  double start_time_seconds = 0;  // since the epoch
  std::optional<double> open_fds;
  std::optional<double> max_fds;  // the soft RLIMIT_NOFILE
};

// Reads /proc/<pid>/stat's text (`stat`) and /proc/stat's (`proc_stat`, for btime).
// nullopt if either does not have the fields it should.
std::optional<ProcessStats> parseProcStat(std::string_view stat, std::string_view proc_stat,
                                          long ticks_per_second, long page_size);

// This process's numbers from /proc/self; nullopt where /proc cannot be read.
std::optional<ProcessStats> readProcessStats();

// Every family the gateway exposes (README "Metrics" lists them). `process` nullopt:
// the process_* families are left out.
std::vector<Family> gatewayFamilies(const StatsSnapshot& s,
                                    const std::optional<ProcessStats>& process);

}  // namespace coap2mqtt::gateway::metrics
