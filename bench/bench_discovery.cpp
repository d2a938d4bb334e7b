// Discovery benchmark: full multicast discovery rounds of 1,000 simulated devices, each in
// a fresh network namespace (needs root), then a restart from the registry database.
//
//   bench_discovery [--devices N] [--leisure MS] [--rounds R] [--interval MS]
//
// Per round (fresh namespace, broker, simulator, state dir):
//   - "request -> last answer": from the moment the gateway's multicast GET reached the
//     group (a listener of ours joined to it in the namespace) to the timestamp of the
//     gateway's last "discovery: new device" log line (ms resolution). The devices answer
//     after a random delay in [0, leisure), so this is at least ~leisure.
//   - "request -> all bridged": until a value of every device's /sensors/counter was seen
//     on MQTT (a mosquitto_sub tap, polled: +~20 ms).
//   - RSS (VmRSS of the gateway) when the round closed and when all observations were up,
//     and VmHWM (peak) at the end.
//   - restart: SIGTERM, start again with multicast discovery off; time from spawn to the
//     "registry: N known device(s)" line and until every device's value arrived again.
// Prints one line per round and the medians.
//
// It is a program rather than a shell script because it reuses the integration tests'
// RAII helpers (NetNs, NsMosquitto, NsMqttTap, Process): a failed or interrupted run still
// deletes its namespace and kills its processes, which is fiddly to get right in sh.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "bench/bench_util.h"
#include "tests/integration/harness.h"
#include "tests/integration/netns.h"

namespace {

using namespace coap2mqtt::test;
using SystemClock = std::chrono::system_clock;
using coap2mqtt::bench::median;
using coap2mqtt::bench::procStatusKb;

constexpr int kCoapPort = 5683;
constexpr int kMqttPort = 1883;
constexpr const char* kGroup = "224.0.1.187";

struct Options {
  int devices = 1000;
  int leisure_ms = 5000;  // libcoap servers' own default leisure is up to 5 s
  int rounds = 3;
  int interval_ms = 5000;  // sensor period of the simulated devices
};

struct Result {
  double last_answer_s = -1;       // request -> last answer processed
  double first_answer_s = -1;      // request -> first answer processed
  double all_bridged_s = -1;       // request -> a value from every device on MQTT
  std::size_t answered = 0;        // "discovery: N device(s) answered"
  std::size_t bridged = 0;         // devices with a value on MQTT
  long rss_round_kb = -1;          // VmRSS when the round closed
  long rss_observing_kb = -1;      // VmRSS when every observation delivered a value
  long hwm_kb = -1;                // VmHWM at the end of the round
  double restart_registry_s = -1;  // spawn -> "registry: N known device(s)"
  double restart_bridged_s = -1;   // spawn -> a value from every device again
  long restart_rss_kb = -1;        // VmRSS once all were bridged again
};

double seconds(SystemClock::duration d) {
  return std::chrono::duration<double>(d).count();
}

// "2024-05-01 12:34:56.789 info  ..." (local time) -> time point.
std::optional<SystemClock::time_point> logTime(const std::string& line) {
  std::tm tm{};
  const char* rest = strptime(line.c_str(), "%Y-%m-%d %H:%M:%S", &tm);
  if (rest == nullptr || *rest != '.') return std::nullopt;
  tm.tm_isdst = -1;
  time_t t = mktime(&tm);
  int ms = std::atoi(rest + 1);
  return SystemClock::from_time_t(t) + std::chrono::milliseconds(ms);
}

std::vector<SystemClock::time_point> logTimesOf(const std::string& log, const std::string& needle) {
  std::vector<SystemClock::time_point> out;
  std::istringstream in(log);
  std::string line;
  while (std::getline(in, line)) {
    if (line.find(needle) == std::string::npos) continue;
    if (auto t = logTime(line)) out.push_back(*t);
  }
  return out;
}

std::string gatewayToml(const TempDir& dir, bool multicast, int window_ms) {
  return "[gateway]\nname = \"bench-gw\"\nstate_dir = \"" + dir.path() +
         "\"\n\n[coap]\nrequest_timeout = \"10s\"\nretry_interval = \"5s\"\n\n"
         "[coap.discovery]\nmulticast = [" +
         (multicast ? std::string("\"") + kGroup + "\"" : std::string()) +
         "]\ninterfaces = [\"lo\"]\nport = " + std::to_string(kCoapPort) + "\nwindow = \"" +
         std::to_string(window_ms) +
         "ms\"\ninterval = \"1h\"\n\n"
         "[mqtt]\nuri = \"mqtt://127.0.0.1:" +
         std::to_string(kMqttPort) +
         "\"\nclient_id = \"gw-bench\"\nbase_topic = \"c2m\"\n\n"
         "[[rule]]\nname = \"counter\"\nmatch = { path = \"/sensors/counter\" }\n"
         "topic = \"c2m/{device}/{path}\"\n";
}

// Devices with a counter value on the tap.
std::size_t bridgedCount(const NsMqttTap& tap) {
  return tap.topics().size();
}

// A socket in the namespace joined to the group: tells when the gateway's request went out.
class GroupListener {
 public:
  explicit GroupListener(const NetNs& ns) : fd_(ns.socket(AF_INET, SOCK_DGRAM)) {
    int one = 1;
    ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sockaddr_in local{};
    local.sin_family = AF_INET;
    local.sin_port = htons(kCoapPort);
    inet_pton(AF_INET, kGroup, &local.sin_addr);
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&local), sizeof(local)) != 0) {
      throw std::runtime_error(std::string("bind group: ") + std::strerror(errno));
    }
    ip_mreqn mreq{};
    mreq.imr_multiaddr = local.sin_addr;
    inet_pton(AF_INET, "127.0.0.1", &mreq.imr_address);
    if (::setsockopt(fd_, IPPROTO_IP, IP_ADD_MEMBERSHIP, &mreq, sizeof(mreq)) != 0) {
      throw std::runtime_error(std::string("join group: ") + std::strerror(errno));
    }
  }
  ~GroupListener() { ::close(fd_); }
  GroupListener(const GroupListener&) = delete;
  GroupListener& operator=(const GroupListener&) = delete;

  std::optional<SystemClock::time_point> waitForRequest(std::chrono::milliseconds timeout) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0) return std::nullopt;
    auto t = SystemClock::now();
    char buf[1500];
    if (::recv(fd_, buf, sizeof(buf), 0) < 0) return std::nullopt;
    return t;
  }

 private:
  int fd_;
};

Result runRound(const Options& o, int round) {
  Result r;
  const int window_ms = o.leisure_ms + 3000;
  NetNs ns(NetNs::Options{.multicast_lo = true});
  TempDir state;
  NsMosquitto broker(ns, kMqttPort);
  Process sim(ns.exec({simulatorBinary(), "--devices", std::to_string(o.devices), "--address",
                       "127.0.0.10", "--address-step", "--port", std::to_string(kCoapPort),
                       "--multicast", kGroup, "--leisure", std::to_string(o.leisure_ms),
                       "--interval", std::to_string(o.interval_ms)}),
              ns.file("sim.log"));
  if (!sim.waitForOutput("READY", 60s)) throw std::runtime_error("sim: " + sim.output());
  GroupListener listener(ns);
  auto tap = std::make_unique<NsMqttTap>(ns, kMqttPort, "c2m/+/sensors/counter");

  state.write("gateway.toml", gatewayToml(state, true, window_ms));
  auto gateway = std::make_unique<Process>(
      ns.exec({gatewayBinary(), "run", "-c", state.file("gateway.toml"), "-l", "debug"}),
      state.file("gateway.log"));
  auto t_req = listener.waitForRequest(20s);
  if (!t_req) throw std::runtime_error("no multicast request seen: " + gateway->output());

  // The round closes after the window; observations of the devices found so far start
  // meanwhile. Watch both.
  const std::size_t want = static_cast<std::size_t>(o.devices);
  bool closed = false;
  std::optional<SystemClock::time_point> t_bridged;
  waitUntil(
      [&] {
        if (!closed && gateway->output().find("device(s) answered") != std::string::npos) {
          closed = true;
          r.rss_round_kb = procStatusKb(gateway->pid(), "VmRSS");
        }
        if (!t_bridged && bridgedCount(*tap) >= want) {
          t_bridged = SystemClock::now();
          r.rss_observing_kb = procStatusKb(gateway->pid(), "VmRSS");
        }
        return closed && t_bridged;
      },
      std::chrono::milliseconds(window_ms) + 120s);
  if (!closed) throw std::runtime_error("the round did not close: " + gateway->output());
  const std::string log = gateway->output();
  auto answers = logTimesOf(log, "discovery: new device ");
  if (!answers.empty()) {
    r.first_answer_s = seconds(*std::min_element(answers.begin(), answers.end()) - *t_req);
    r.last_answer_s = seconds(*std::max_element(answers.begin(), answers.end()) - *t_req);
  }
  auto pos = log.find("device(s) answered");
  auto start = log.rfind("discovery: ", pos);
  r.answered = std::strtoul(log.c_str() + start + std::strlen("discovery: "), nullptr, 10);
  r.bridged = bridgedCount(*tap);
  if (t_bridged) r.all_bridged_s = seconds(*t_bridged - *t_req);
  r.hwm_kb = procStatusKb(gateway->pid(), "VmHWM");

  // Restart from the database, multicast off.
  gateway->stop(SIGTERM, 15s);
  gateway.reset();
  tap = std::make_unique<NsMqttTap>(ns, kMqttPort, "c2m/+/sensors/counter");
  state.write("gateway.toml", gatewayToml(state, false, window_ms));
  const auto t_spawn = SystemClock::now();
  gateway = std::make_unique<Process>(
      ns.exec({gatewayBinary(), "run", "-c", state.file("gateway.toml"), "-l", "debug"}),
      state.file("gateway-restart.log"));
  if (gateway->waitForOutput(" known device(s)", 60s)) {
    auto t = logTimesOf(gateway->output(), " known device(s)");
    if (!t.empty()) r.restart_registry_s = seconds(t.front() - t_spawn);
  }
  if (waitUntil([&] { return bridgedCount(*tap) >= r.bridged; }, 120s)) {
    r.restart_bridged_s = seconds(SystemClock::now() - t_spawn);
  }
  r.restart_rss_kb = procStatusKb(gateway->pid(), "VmRSS");
  std::printf(
      "round %d: answered %zu, request->first %.3f s, ->last answer processed %.3f s, ->all %zu "
      "bridged %.3f s | RSS round %ld KiB, observing %ld KiB, peak %ld KiB | restart: registry "
      "%.3f s, all bridged %.3f s, RSS %ld KiB\n",
      round, r.answered, r.first_answer_s, r.last_answer_s, r.bridged, r.all_bridged_s,
      r.rss_round_kb, r.rss_observing_kb, r.hwm_kb, r.restart_registry_s, r.restart_bridged_s,
      r.restart_rss_kb);
  std::fflush(stdout);
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  if (int rc =
          coap2mqtt::bench::parseFlags(argc, argv, "bench_discovery",
                                       "[--devices N] [--leisure MS] [--rounds R] [--interval MS]",
                                       {{"--devices", {&o.devices, 1, 60000}},
                                        {"--leisure", {&o.leisure_ms}},
                                        {"--rounds", {&o.rounds}},
                                        {"--interval", {&o.interval_ms}}});
      rc != 0) {
    return rc;
  }
  std::string why;
  if (!NetNs::available(&why)) {
    std::fprintf(stderr, "bench_discovery: %s\n", why.c_str());
    return 1;
  }
  std::printf(
      "discovery of %d simulated devices (leisure %d ms, window %d ms, sensors every %d "
      "ms), %d round(s)\n",
      o.devices, o.leisure_ms, o.leisure_ms + 3000, o.interval_ms, o.rounds);
  std::vector<Result> results;
  try {
    for (int i = 1; i <= o.rounds; ++i) results.push_back(runRound(o, i));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_discovery: %s\n", e.what());
    return 1;
  }
  auto med = [&](auto field) {
    std::vector<std::remove_cvref_t<decltype(results[0].*field)>> v;
    for (const auto& r : results) v.push_back(r.*field);
    return median(v);
  };
  std::printf(
      "median: request->last answer processed %.3f s, ->all bridged %.3f s; gateway RSS after "
      "the round %ld KiB, with %d observations %ld KiB (peak %ld KiB); restart: registry "
      "loaded %.3f s, all bridged %.3f s after spawn\n",
      med(&Result::last_answer_s), med(&Result::all_bridged_s), med(&Result::rss_round_kb),
      o.devices, med(&Result::rss_observing_kb), med(&Result::hwm_kb),
      med(&Result::restart_registry_s), med(&Result::restart_bridged_s));
  for (const auto& r : results) {
    if (r.answered != static_cast<std::size_t>(o.devices) ||
        r.bridged != static_cast<std::size_t>(o.devices)) {
      std::printf("WARNING: a round missed devices (answered %zu, bridged %zu of %d)\n", r.answered,
                  r.bridged, o.devices);
    }
  }
  return 0;
}
