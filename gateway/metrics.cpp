#include "gateway/metrics.h"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <deque>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include <prometheus/check_names.h>
#include <prometheus/metric_family.h>
#include <prometheus/text_serializer.h>

namespace coap2mqtt::gateway::metrics {

namespace {

// prometheus-cpp 1.0.1 escapes label values but writes HELP text as it is given: a '\' or
// a newline there would break the exposition, so HELP is escaped here (format 0.0.4:
// "\\" and "\n").
std::string escapeHelp(std::string_view help) {
  std::string out;
  out.reserve(help.size());
  for (char c : help) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

bool endsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

void check(const std::vector<Family>& families) {
  std::set<std::string> names;
  for (const Family& f : families) {
    if (!prometheus::CheckMetricName(f.name)) {
      throw InvalidFamilies("not a valid metric name: \"" + f.name + "\"");
    }
    if (f.type == Type::Counter && !endsWith(f.name, "_total")) {
      throw InvalidFamilies("counter \"" + f.name + "\" does not end in _total");
    }
    if (!names.insert(f.name).second) {
      throw InvalidFamilies("two families named \"" + f.name + "\"");
    }
    std::set<std::vector<std::pair<std::string, std::string>>> series;
    for (const Sample& sample : f.samples) {
      auto labels = sample.labels;
      std::set<std::string> label_names;
      for (const auto& [name, value] : labels) {
        if (!prometheus::CheckLabelName(name) || name.rfind("__", 0) == 0) {
          throw InvalidFamilies("not a valid label name in \"" + f.name + "\": \"" + name + "\"");
        }
        if (!label_names.insert(name).second) {
          throw InvalidFamilies("label \"" + name + "\" twice in a sample of \"" + f.name + "\"");
        }
      }
      std::sort(labels.begin(), labels.end());
      if (!series.insert(std::move(labels)).second) {
        throw InvalidFamilies("two samples of \"" + f.name + "\" with the same labels");
      }
    }
  }
}

// ---- building the families ----------------------------------------------------------

class Builder {
 public:
  Family& family(std::string name, Type type, std::string help) {
    families_.push_back(Family{std::move(name), std::move(help), type, {}});
    return families_.back();
  }
  void counter(std::string name, std::string help, double value) {
    family(std::move(name), Type::Counter, std::move(help)).samples.push_back({{}, value});
  }
  void gauge(std::string name, std::string help, double value) {
    family(std::move(name), Type::Gauge, std::move(help)).samples.push_back({{}, value});
  }
  std::vector<Family> take() {
    return {std::make_move_iterator(families_.begin()), std::make_move_iterator(families_.end())};
  }

 private:
  std::deque<Family> families_;  // family() hands out references that stay valid
};

double d(std::uint64_t v) {
  return static_cast<double>(v);
}

// "2.04" for 204: the code as CoAP writes it.
std::string coapCode(unsigned code) {
  const unsigned detail = code % 100;
  return std::to_string(code / 100) + (detail < 10 ? ".0" : ".") + std::to_string(detail);
}

void addCoap(Builder& b, const StatsSnapshot& s) {
  const CoapStats& c = s.coap;
  b.counter("coap2mqtt_coap_requests_total", "CoAP requests sent to devices", d(c.requests_sent));
  b.counter("coap2mqtt_coap_responses_total", "CoAP responses received (notifications excluded)",
            d(c.responses));
  b.counter("coap2mqtt_coap_notifications_total",
            "CoAP observe notifications received, stale ones included", d(c.notifications));
  b.counter("coap2mqtt_coap_failures_total",
            "CoAP exchanges that failed: timeouts after the last retransmission, RST, "
            "undeliverable",
            d(c.failures));
  b.counter("coap2mqtt_coap_unknown_token_total",
            "CoAP responses with a token the gateway did not send, answered with RST",
            d(c.unknown_token));
  b.counter("coap2mqtt_coap_session_resets_total", "CoAP sessions renewed after a timeout",
            d(c.session_resets));
  b.counter("coap2mqtt_coap_extra_acks_total", "CON notifications acknowledged again",
            d(c.extra_acks));
  b.counter("coap2mqtt_dtls_handshakes_total", "DTLS handshakes completed with devices",
            d(s.coap.dtls_handshakes));
  b.counter("coap2mqtt_dtls_failures_total",
            "DTLS sessions to devices that failed (handshake, alert)", d(s.coap.dtls_failures));
  b.counter("coap2mqtt_dtls_sessions_kept_total",
            "DTLS sessions kept after a request timed out: the device answered the probe, no "
            "new handshake",
            d(s.coap.dtls_sessions_kept));
}

void addMqtt(Builder& b, const StatsSnapshot& s) {
  Family& published = b.family("coap2mqtt_mqtt_published_total", Type::Counter,
                               "Values published to MQTT by the rules, by QoS (the gateway's "
                               "own bridge/ and availability topics not counted)");
  for (std::size_t qos = 0; qos < s.published_by_qos.size(); ++qos) {
    published.samples.push_back({{{"qos", std::to_string(qos)}}, d(s.published_by_qos[qos])});
  }
  b.counter("coap2mqtt_mqtt_delivered_total", "QoS 1 and 2 messages acknowledged by the broker",
            d(s.mqtt_delivered));
  b.counter("coap2mqtt_mqtt_publish_failed_total", "Messages the MQTT client refused to take",
            d(s.mqtt_publish_failed));
  b.counter("coap2mqtt_mqtt_qos0_dropped_total",
            "QoS 0 messages dropped: their queue was full while the broker was away",
            d(s.mqtt_qos0_dropped));
  b.gauge("coap2mqtt_mqtt_connected", "1 while connected to the MQTT broker, else 0",
          s.mqtt_connected ? 1 : 0);
  b.counter("coap2mqtt_mqtt_reconnects_total", "Connections to the broker after the first one",
            d(s.mqtt_connects > 0 ? s.mqtt_connects - 1 : 0));
  b.gauge("coap2mqtt_outbox_messages",
          "QoS 1 and 2 messages stored on disk until the broker acknowledges them", d(s.outbox));
  b.counter("coap2mqtt_outbox_dropped_total",
            "Stored messages dropped, oldest first, because the outbox was full",
            d(s.outbox_dropped));
  b.counter("coap2mqtt_outbox_write_failures_total", "Failed writes of the outbox (e.g. disk full)",
            d(s.outbox_write_failures));
}

void addCommands(Builder& b, const StatsSnapshot& s) {
  Family& f = b.family("coap2mqtt_commands_total", Type::Counter,
                       "MQTT commands by result; answered ones also by the device's CoAP "
                       "response code");
  for (const auto& [code, n] : s.commands.answered_by_code) {
    f.samples.push_back({{{"result", "answered"}, {"code", coapCode(code)}}, d(n)});
  }
  const std::pair<const char*, std::uint64_t> others[] = {{"failed", s.commands.failed},
                                                          {"timeout", s.commands.timed_out},
                                                          {"queue_full", s.commands.queue_full},
                                                          {"rate_limited", s.commands.rate_limited},
                                                          {"refused", s.commands_refused}};
  for (const auto& [result, n] : others) f.samples.push_back({{{"result", result}}, d(n)});
  Family& refused = b.family("coap2mqtt_commands_refused_total", Type::Counter,
                             "MQTT commands refused before reaching a device, by reason");
  for (const auto& [reason, n] : s.commands_refused_by_reason) {
    refused.samples.push_back({{{"reason", reason}}, d(n)});
  }
}

void addProcess(Builder& b, const ProcessStats& p) {
  b.counter("process_cpu_seconds_total", "Total user and system CPU time spent in seconds",
            p.cpu_seconds);
  b.gauge("process_resident_memory_bytes", "Resident memory size in bytes", p.resident_bytes);
  b.gauge("process_virtual_memory_bytes", "Virtual memory size in bytes", p.virtual_bytes);
  b.gauge("process_start_time_seconds", "Start time of the process since unix epoch in seconds",
          p.start_time_seconds);
  if (p.open_fds) b.gauge("process_open_fds", "Number of open file descriptors", *p.open_fds);
  if (p.max_fds) b.gauge("process_max_fds", "Maximum number of open file descriptors", *p.max_fds);
}

template <class T>
bool parseNumber(std::string_view text, T& out) {
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return ec == std::errc() && end == text.data() + text.size();
}

std::string readSmallFile(const char* path) {
  std::ifstream in(path);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

}  // namespace

std::string render(const std::vector<Family>& families) {
  check(families);
  std::vector<prometheus::MetricFamily> out;
  out.reserve(families.size());
  for (const Family& f : families) {
    prometheus::MetricFamily pf;
    pf.name = f.name;
    pf.help = escapeHelp(f.help);
    pf.type =
        f.type == Type::Counter ? prometheus::MetricType::Counter : prometheus::MetricType::Gauge;
    for (const Sample& sample : f.samples) {
      prometheus::ClientMetric m;
      for (const auto& [name, value] : sample.labels) m.label.push_back({name, value});
      if (f.type == Type::Counter) {
        m.counter.value = sample.value;
      } else {
        m.gauge.value = sample.value;
      }
      pf.metric.push_back(std::move(m));
    }
    out.push_back(std::move(pf));
  }
  std::ostringstream text;
  prometheus::TextSerializer().Serialize(text, out);
  return text.str();
}

std::optional<ProcessStats> parseProcStat(std::string_view stat, std::string_view proc_stat,
                                          long ticks_per_second, long page_size) {
  if (ticks_per_second <= 0 || page_size <= 0) return std::nullopt;
  // "pid (comm) state ppid ...": comm may hold spaces and ')', so fields count from the
  // last ')'. After it, field 3 (state) is index 0.
  const auto close = stat.rfind(')');
  if (close == std::string_view::npos) return std::nullopt;
  std::vector<std::string_view> fields;
  std::string_view rest = stat.substr(close + 1);
  while (!rest.empty()) {
    const auto start = rest.find_first_not_of(" \n");
    if (start == std::string_view::npos) break;
    rest.remove_prefix(start);
    const auto end = rest.find_first_of(" \n");
    fields.push_back(rest.substr(0, end));
    rest.remove_prefix(end == std::string_view::npos ? rest.size() : end);
  }
  // utime 14, stime 15, starttime 22, vsize 23, rss 24 (proc(5), 1-based).
  constexpr std::size_t kUtime = 14 - 3, kStime = 15 - 3, kStart = 22 - 3, kVsize = 23 - 3,
                        kRss = 24 - 3;
  if (fields.size() <= kRss) return std::nullopt;
  unsigned long long utime = 0, stime = 0, start = 0, vsize = 0;
  long long rss = 0;
  if (!parseNumber(fields[kUtime], utime) || !parseNumber(fields[kStime], stime) ||
      !parseNumber(fields[kStart], start) || !parseNumber(fields[kVsize], vsize) ||
      !parseNumber(fields[kRss], rss)) {
    return std::nullopt;
  }
  std::optional<unsigned long long> btime;
  for (std::string_view text = proc_stat; !text.empty();) {
    const auto eol = text.find('\n');
    const std::string_view line = text.substr(0, eol);
    text.remove_prefix(eol == std::string_view::npos ? text.size() : eol + 1);
    constexpr std::string_view kKey = "btime ";
    if (line.rfind(kKey, 0) == 0) {
      unsigned long long v = 0;
      if (parseNumber(line.substr(kKey.size()), v)) btime = v;
    }
  }
  if (!btime) return std::nullopt;
  ProcessStats p;
  const double ticks = static_cast<double>(ticks_per_second);
  p.cpu_seconds = static_cast<double>(utime + stime) / ticks;
  p.start_time_seconds = static_cast<double>(*btime) + static_cast<double>(start) / ticks;
  p.virtual_bytes = static_cast<double>(vsize);
  p.resident_bytes = static_cast<double>(std::max(0LL, rss)) * static_cast<double>(page_size);
  return p;
}

std::optional<ProcessStats> readProcessStats() {
  auto p = parseProcStat(readSmallFile("/proc/self/stat"), readSmallFile("/proc/stat"),
                         ::sysconf(_SC_CLK_TCK), ::sysconf(_SC_PAGESIZE));
  if (!p) return std::nullopt;
  std::error_code ec;
  std::size_t fds = 0;
  for (std::filesystem::directory_iterator it("/proc/self/fd", ec), end; !ec && it != end;
       it.increment(ec)) {
    ++fds;
  }
  // The iterator's own descriptor is among those it listed.
  if (!ec && fds > 0) p->open_fds = static_cast<double>(fds - 1);
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY) {
    p->max_fds = static_cast<double>(limit.rlim_cur);
  }
  return p;
}

std::vector<Family> gatewayFamilies(const StatsSnapshot& s,
                                    const std::optional<ProcessStats>& process) {
  Builder b;
  b.family("coap2mqtt_build_info", Type::Gauge, "Always 1; the version is its label")
      .samples.push_back({{{"version", COAP2MQTT_VERSION}}, 1});
  b.gauge("coap2mqtt_uptime_seconds", "Seconds since the gateway started", d(s.uptime_s));
  b.counter("coap2mqtt_notifications_total",
            "Fresh CoAP notifications accepted from observed devices (stale ones are "
            "coap2mqtt_dropped_total{reason=\"stale_notification\"})",
            d(s.observe.notifications));
  Family& devices = b.family("coap2mqtt_devices", Type::Gauge, "Known devices by state");
  devices.samples.push_back({{{"state", "online"}}, d(s.devices_online)});
  devices.samples.push_back(
      {{{"state", "offline"}}, d(s.devices > s.devices_online ? s.devices - s.devices_online : 0)});
  b.gauge("coap2mqtt_observations", "Observe registrations that are delivering", d(s.observations));
  b.counter("coap2mqtt_observe_reregistrations_total",
            "Observations registered again after going quiet", d(s.observe.reregistrations));
  b.counter("coap2mqtt_observe_failures_total",
            "Observe registrations that failed (timeout, error, RST)", d(s.observe.failures));
  Family& dropped = b.family("coap2mqtt_dropped_total", Type::Counter,
                             "Messages, requests and answers dropped, by reason (as in "
                             "bridge/info's \"dropped\")");
  for (const auto& [reason, n] : droppedByReason(s))
    dropped.samples.push_back({{{"reason", reason}}, d(n)});
  addCoap(b, s);
  addMqtt(b, s);
  addCommands(b, s);
  if (process) addProcess(b, *process);
  return b.take();
}

}  // namespace coap2mqtt::gateway::metrics
