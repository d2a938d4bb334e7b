// Observe benchmark (issue 5, acceptance 7): N simulated devices x 2 observed resources
// (/sensors/counter and /sensors/temp), all configured statically, in a fresh network
// namespace on its loopback (needs root).
//
//   bench_observe [--devices N] [--interval MS] [--steady S] [--qos 0|1] [--latency] [--non]
//                 [--dtls | --dtls-cert] [--callgrind]
//
// --dtls: every device speaks DTLS with a pre-shared key (coap2mqtt-sim --psk; the gateway
// reaches it over coaps://), and the table adds the handshakes and their rate at start-up.
// --dtls-cert: the same with certificates, both ways: a throwaway CA, one device certificate
// for all devices and the gateway's client certificate (P-256, made with the openssl CLI in
// the run's temporary directory); the devices ask for the gateway's certificate and check it
// against the CA (coap2mqtt-sim --cert --key --ca), the gateway checks theirs against it too
// (pki = { ca_file, cert_file, key_file }). One certificate cannot name 1,000 addresses, so
// the gateway's name check is off (check_name = false); the chain, the dates and the
// signatures are checked as in production.
//
// --non makes the simulator notify in NON messages (libcoap still sends every 5th as CON)
// instead of CON ones. A CON notification is ACKed only once its message is in the outbox,
// and the device sends the next one only after that ACK: CON paces the devices to what the
// gateway takes, NON does not (past that rate the outbox grows and finally drops its oldest).
//
// --latency observes one resource per device instead: the simulator's /sensors/stamp
// (--stamp), whose payload is the time the simulator built the notification (microseconds
// since the epoch), published untouched by a `payload = "raw"` rule. With the defaults
// (1,000 devices, every 1,000 ms) that is 1,000 msg/s, the rate of the design's target
// "p99 notification -> MQTT under 1 ms at 1 k msg/s". The simulator updates all devices
// at once, so those messages come as one burst of N per interval, not spread evenly.
//
// Measures:
//   - "all observed": from the gateway's spawn until every one of the 2N (--latency: N)
//     observations delivered its first value on MQTT (a mosquitto_sub tap in the
//     namespace, `-F '%U %t'`, with --latency `-F '%U %t %p'`, so each message carries the
//     time the tap got it), with the median and 99th percentile of the per-observation
//     first-value times;
//   - the gateway's and the simulator's CPU time over that span (with DTLS mostly the
//     handshakes: both sides of each);
//   - the gateway's VmRSS at that moment, after the steady state, and its VmHWM (peak);
//   - its CPU time (utime + stime from /proc/<pid>/stat) over --steady seconds of steady
//     state (after a 5 s settle), divided by the messages published in that window (as
//     counted by the tap): microseconds of gateway CPU per MQTT message, plus the
//     simulator's CPU in the same window for comparison;
//   - with --latency, over the same window: the median, 99th percentile and maximum of
//     each message's latency, the tap's receive time minus the simulator's time in the
//     payload (one clock, CLOCK_REALTIME, for both). It spans the simulator's send, the
//     gateway, mosquitto and the mosquitto_sub tap, so it is an upper bound of the
//     gateway's own part.
//   - with --callgrind, the gateway runs under valgrind's callgrind, its counters zeroed at
//     the window's start and dumped at its end: instructions per MQTT message, in all and
//     by library (our binary, libcoap, paho, libc, ...). On a shared machine, or a VM without
//     hardware counters, that number is stable where CPU time is not: it is the figure to
//     compare between builds (a regression shows as more instructions per message). The
//     gateway is ~50x slower under valgrind: use a rate it keeps up with (e.g. --devices
//     100 --interval 500, 400 msg/s) and compare runs at the same rate.
// Prints a table.
//
// A program rather than a script: it reuses the integration tests' RAII helpers (NetNs,
// NsMosquitto, Process), so a failed or interrupted run still deletes its namespace.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "bench/bench_util.h"
#include "bench/callgrind_costs.h"
#include "tests/integration/bridge_info.h"
#include "tests/integration/harness.h"
#include "tests/integration/netns.h"
#include "tests/integration/test_certs.h"

namespace {

using namespace coap2mqtt::test;
using coap2mqtt::bench::percentileOfSorted;
using coap2mqtt::bench::procStatusKb;
using coap2mqtt::bench::readCallgrindCosts;
using coap2mqtt::bench::smapsRollupKb;

constexpr int kCoapPort = 5683;
constexpr int kMqttPort = 1883;
constexpr const char* kTapReady = "c2m-bench/ready";
constexpr const char* kStampSuffix = "/sensors/stamp";

struct Options {
  int devices = 1000;
  int interval_ms = 1000;
  int steady_s = 30;
  int qos = 0;             // of the rules; 1 puts every message through the outbox
  bool latency = false;    // observe /sensors/stamp only and measure per-message latency
  bool non = false;        // NON notifications instead of CON
  bool dtls = false;       // coaps:// with a pre-shared key
  bool dtls_cert = false;  // coaps:// with certificates (both ways)
  bool callgrind = false;  // the gateway under valgrind --tool=callgrind
  bool anyDtls() const { return dtls || dtls_cert; }
};

constexpr const char* kBenchKey = "bench-psk-0123456789";

// Observed resources per device.
int resourcesPerDevice(const Options& o) {
  return o.latency ? 1 : 2;
}

double now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// utime + stime of `pid`, in seconds.
double cpuSeconds(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // Field 2 (comm) is in parentheses and may hold spaces: count from the last ')'.
  auto close = stat.rfind(')');
  if (close == std::string::npos) return -1;
  std::vector<std::string> fields;  // fields[0] is field 3 (state)
  std::string word;
  for (std::size_t i = close + 2; i <= stat.size(); ++i) {
    if (i == stat.size() || stat[i] == ' ') {
      fields.push_back(word);
      word.clear();
    } else {
      word.push_back(stat[i]);
    }
  }
  if (fields.size() < 13) return -1;
  const double ticks = static_cast<double>(::sysconf(_SC_CLK_TCK));
  return (std::strtod(fields[11].c_str(), nullptr) + std::strtod(fields[12].c_str(), nullptr)) /
         ticks;
}

// callgrind_control -z (zero the counters) or -d (dump them) for the gateway under valgrind.
void callgrindControl(const char* what, int pid) {
  const std::string command =
      std::string("callgrind_control ") + what + " " + std::to_string(pid) + " >/dev/null";
  if (std::system(command.c_str()) != 0) {
    throw std::runtime_error(command + " failed (is valgrind installed?)");
  }
}

// The window's dump (`callgrind_control -d` writes <out>.<n>): instructions per message, in
// all and for each library that spent at least 1 % of them.
template <typename Row>
void printInstructions(const std::string& out, std::size_t msgs, const Row& row) {
  std::ifstream in(out + ".1");
  if (!in) throw std::runtime_error("no callgrind dump at " + out + ".1");
  const auto costs = readCallgrindCosts(in);
  // Kept beside the run (the state directory goes) for callgrind_annotate --inclusive=yes
  // --tree=caller: who calls malloc, per message.
  std::filesystem::copy_file(out + ".1", "callgrind.bench_observe.out",
                             std::filesystem::copy_options::overwrite_existing);
  row("callgrind dump", "./callgrind.bench_observe.out");
  const double per = msgs > 0 ? 1.0 / static_cast<double>(msgs) : 0.0;
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.0f", static_cast<double>(costs.total) * per);
  row("gateway instructions per message (callgrind)", buf);
  std::vector<std::pair<std::uint64_t, std::string>> objects;
  for (const auto& [name, cost] : costs.by_object) objects.emplace_back(cost, name);
  std::sort(objects.rbegin(), objects.rend());
  for (const auto& [cost, name] : objects) {
    if (cost * 100 < costs.total) break;
    const std::string label = "  in " + name.substr(name.rfind('/') + 1);
    std::snprintf(buf, sizeof(buf), "%.0f (%.0f %%)", static_cast<double>(cost) * per,
                  100.0 * static_cast<double>(cost) / static_cast<double>(costs.total));
    row(label.substr(0, 52).c_str(), buf);
  }
  // The functions that spent the most, whichever library they are in.
  std::vector<std::pair<std::uint64_t, std::string>> functions;
  for (const auto& [name, cost] : costs.by_function) functions.emplace_back(cost, name);
  std::sort(functions.rbegin(), functions.rend());
  if (functions.size() > 12) functions.resize(12);
  std::printf("the %zu functions that spent the most instructions per message:\n",
              functions.size());
  for (const auto& [cost, name] : functions) {
    std::printf("  %8.0f  %s\n", static_cast<double>(cost) * per, name.substr(0, 100).c_str());
  }
}

// Device i's address with --address-step from 127.0.0.10.
std::string deviceAddress(int i) {
  const int n = 10 + i;
  return "127.0." + std::to_string(n / 256) + "." + std::to_string(n % 256);
}

std::string gatewayToml(const TempDir& dir, const Options& o) {
  std::string toml = "[gateway]\nname = \"bench-gw\"\nstate_dir = \"" + dir.path() +
                     "\"\n\n[coap]\nrequest_timeout = \"10s\"\nretry_interval = \"5s\"\n\n";
  for (int i = 0; i < o.devices; ++i) {
    toml += "[[coap.device]]\nname = \"dev" + std::to_string(i) + "\"\nuri = \"" +
            (o.anyDtls() ? "coaps://" : "coap://") + deviceAddress(i) + ":" +
            std::to_string(kCoapPort) + "\"\n";
    if (o.dtls) toml += "psk = { identity = \"bench\", key_file = \"bench.key\" }\n";
    if (o.dtls_cert) {
      toml +=
          "pki = { ca_file = \"ca.pem\", cert_file = \"gw.pem\", key_file = \"gw.key\", "
          "check_name = false }\n";
    }
  }
  toml += "\n[mqtt]\nuri = \"mqtt://127.0.0.1:" + std::to_string(kMqttPort) +
          "\"\nclient_id = \"gw-bench\"\nbase_topic = \"c2m\"\n";
  auto rule = [&](const char* name, const char* extra) {
    toml += std::string("\n[[rule]]\nname = \"") + name + "\"\nmatch = { path = \"/sensors/" +
            name + "\" }\ntopic = \"c2m/{device}/{path}\"\nqos = " + std::to_string(o.qos) + "\n" +
            extra;
  };
  if (o.latency) {
    rule("stamp", "payload = \"raw\"\n");  // the simulator's time, byte for byte
  } else {
    rule("counter", "");
    rule("temp", "");
  }
  return toml;
}

// Reads a `mosquitto_sub -F '%U %t'` or `-F '%U %t %p'` log incrementally: the first time
// each topic was seen, how many messages arrived and, for a payload that is a time in
// microseconds since the epoch (/sensors/stamp), how long after it the tap got it (the log
// grows by thousands of lines a second, so it is never read whole twice).
class TapReader {
 public:
  explicit TapReader(std::string file) : file_(std::move(file)) {}

  void poll() {
    std::ifstream in(file_, std::ios::binary);
    if (!in) return;
    in.seekg(static_cast<std::streamoff>(offset_));
    std::string chunk((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::size_t start = 0;
    for (std::size_t nl = chunk.find('\n'); nl != std::string::npos;
         start = nl + 1, nl = chunk.find('\n', start)) {
      const std::string line = chunk.substr(start, nl - start);
      const auto sp = line.find(' ');
      if (sp == std::string::npos) continue;
      const auto sp2 = line.find(' ', sp + 1);  // before the payload, if logged
      const std::string topic = line.substr(sp + 1, sp2 - (sp + 1));
      if (topic == kTapReady) {
        ready_ = true;
        continue;
      }
      const double t = std::strtod(line.c_str(), nullptr);
      ++count_;
      times_.push_back(t);
      first_.emplace(topic, t);
      if (sp2 != std::string::npos && topic.ends_with(kStampSuffix)) {
        const double sent = std::strtod(line.c_str() + sp2 + 1, nullptr) / 1e6;
        latencies_.emplace_back(t, t - sent);
      }
    }
    offset_ += start;
  }

  bool ready() const { return ready_; }
  std::size_t topics() const { return first_.size(); }
  std::size_t count() const { return count_; }
  // Messages received in [from, to).
  std::size_t countBetween(double from, double to) const {
    return static_cast<std::size_t>(
        std::count_if(times_.begin(), times_.end(), [&](double t) { return t >= from && t < to; }));
  }
  // Latencies (s) of the stamped messages received in [from, to), sorted.
  std::vector<double> latenciesBetween(double from, double to) const {
    std::vector<double> out;
    for (const auto& [t, latency] : latencies_) {
      if (t >= from && t < to) out.push_back(latency);
    }
    std::sort(out.begin(), out.end());
    return out;
  }
  std::vector<double> firstTimes() const {
    std::vector<double> out;
    for (const auto& [topic, t] : first_) out.push_back(t);
    std::sort(out.begin(), out.end());
    return out;
  }

 private:
  std::string file_;
  std::size_t offset_ = 0;
  bool ready_ = false;
  std::size_t count_ = 0;
  std::vector<double> times_;
  std::vector<std::pair<double, double>> latencies_;  // (received, latency), in s
  std::map<std::string, double> first_;
};

int run(const Options& o) {
  const std::size_t want =
      static_cast<std::size_t>(resourcesPerDevice(o)) * static_cast<std::size_t>(o.devices);
  NetNs ns;
  TempDir state;
  NsMosquitto broker(ns, kMqttPort);
  if (o.dtls_cert) {
    makeTestCa(state, "ca");
    makeTestCert(state, "device", "c2m-bench-device", "ca");
    makeTestCert(state, "gw", "c2m-bench-gw", "ca");
  }
  auto sim_command =
      ns.exec({simulatorBinary(), "--devices", std::to_string(o.devices), "--address",
               deviceAddress(0), "--address-step", "--port", std::to_string(kCoapPort),
               "--interval", std::to_string(o.interval_ms)});
  if (o.latency) sim_command.push_back("--stamp");  // exec() only puts `ip netns exec` in front
  if (o.non) sim_command.push_back("--non");
  if (o.dtls) {
    sim_command.push_back("--psk");
    sim_command.push_back(kBenchKey);
  }
  if (o.dtls_cert) {
    sim_command.insert(sim_command.end(), {"--cert", state.file("device.pem"), "--key",
                                           state.file("device.key"), "--ca", state.file("ca.pem")});
  }
  Process sim(sim_command, ns.file("sim.log"));
  if (!sim.waitForOutput("READY", 60s)) throw std::runtime_error("sim: " + sim.output());

  const std::string tap_log = ns.file("tap.log");
  Process tap(ns.exec({"mosquitto_sub", "-p", std::to_string(kMqttPort), "-F",
                       o.latency ? "%U %t %p" : "%U %t", "-t", "c2m/+/sensors/+", "-t", kTapReady}),
              tap_log);
  TapReader reader(tap_log);
  if (!waitUntil(
          [&] {
            ns.run({"mosquitto_pub", "-p", std::to_string(kMqttPort), "-t", kTapReady, "-m", "x"},
                   nullptr, 5s);
            std::this_thread::sleep_for(200ms);
            reader.poll();
            return reader.ready();
          },
          10s)) {
    throw std::runtime_error("tap: " + tap.output());
  }

  state.write("gateway.toml", gatewayToml(state, o));
  state.write("bench.key", kBenchKey);
  const double sim_cpu_spawn = cpuSeconds(sim.pid());
  const double t_spawn = now();
  std::vector<std::string> gateway_command{
      gatewayBinary(), "run", "-c", state.file("gateway.toml"), "-l", "info"};
  const std::string callgrind_out = state.file("callgrind.out");
  if (o.callgrind) {
    gateway_command.insert(gateway_command.begin(), {"valgrind", "--tool=callgrind",
                                                     "--callgrind-out-file=" + callgrind_out});
  }
  Process gateway(ns.exec(gateway_command), state.file("gateway.log"));
  const int pid = gateway.pid();

  double t_all = -1;
  long rss_all = -1;
  double cpu_all = -1;      // the gateway's CPU from its spawn until all were observed
  double sim_cpu_all = -1;  // the simulator's over the same span
  waitUntil(
      [&] {
        reader.poll();
        if (reader.topics() >= want) {
          t_all = now();
          rss_all = procStatusKb(pid, "VmRSS");
          cpu_all = cpuSeconds(pid);
          sim_cpu_all = cpuSeconds(sim.pid()) - sim_cpu_spawn;
          return true;
        }
        return !gateway.running();
      },
      300s);
  const auto firsts = reader.firstTimes();
  if (t_all < 0) {
    std::fprintf(stderr, "bench_observe: only %zu of %zu observations delivered a value\n%s\n",
                 reader.topics(), want, gateway.output().substr(0, 4000).c_str());
    return 1;
  }
  const double all_s = firsts.back() - t_spawn;
  const double first_s = firsts.front() - t_spawn;
  const double median_s = percentileOfSorted(firsts, 50) - t_spawn;
  const double p99_s = percentileOfSorted(firsts, 99) - t_spawn;

  // Steady state: settle, then CPU over the window and the messages the tap got in it.
  std::this_thread::sleep_for(5s);
  if (o.callgrind) callgrindControl("-z", pid);
  const double cpu0 = cpuSeconds(pid);
  const double sim_cpu0 = cpuSeconds(sim.pid());
  const double w0 = now();
  for (int s = 0; s < o.steady_s; ++s) {
    std::this_thread::sleep_for(1s);
    reader.poll();
  }
  const double cpu1 = cpuSeconds(pid);
  const double sim_cpu1 = cpuSeconds(sim.pid());
  const double w1 = now();
  // The dump holds what was counted since the zeroing: the window's instructions.
  if (o.callgrind) callgrindControl("-d", pid);
  std::this_thread::sleep_for(1s);  // what the tap got up to w1 is in the log by now
  reader.poll();
  const std::size_t msgs = reader.countBetween(w0, w1);
  const auto latencies = reader.latenciesBetween(w0, w1);
  const long rss_steady = procStatusKb(pid, "VmRSS");
  const long hwm = procStatusKb(pid, "VmHWM");
  const long pss = smapsRollupKb(pid, "Pss");
  const long private_dirty = smapsRollupKb(pid, "Private_Dirty");
  const double cpu_s = cpu1 - cpu0;
  const double window = w1 - w0;
  // The gateway's own counts, from the stats line it logs when it stops (whole run).
  gateway.stop(SIGTERM, 15s);
  const std::string log = gateway.output();
  auto statCount = [&](const std::string& key) {
    const long value = exitStat(log, key);
    return value < 0 ? std::string("?") : std::to_string(value);
  };

  std::printf("| %-52s | %14s |\n", "metric", "value");
  std::printf("|%s|%s|\n", std::string(54, '-').c_str(), std::string(16, '-').c_str());
  auto row = [](const char* name, const std::string& value) {
    std::printf("| %-52s | %14s |\n", name, value.c_str());
  };
  auto fmt = [](const char* f, double v) {
    char buf[64];
    std::snprintf(buf, sizeof(buf), f, v);
    return std::string(buf);
  };
  row("devices x observed resources",
      std::to_string(o.devices) + " x " + std::to_string(resourcesPerDevice(o)));
  row("sensor interval (ms)", std::to_string(o.interval_ms));
  row("spawn -> first value on MQTT (s)", fmt("%.3f", first_s));
  row("spawn -> median observation's first value (s)", fmt("%.3f", median_s));
  row("spawn -> p99 observation's first value (s)", fmt("%.3f", p99_s));
  row("spawn -> all observations delivered (s)", fmt("%.3f", all_s));
  row("gateway CPU, spawn -> all observed (s)", fmt("%.2f", cpu_all));
  row("simulator CPU, spawn -> all observed (s)", fmt("%.2f", sim_cpu_all));
  row("gateway VmRSS when all observed (KiB)", std::to_string(rss_all));
  row("gateway VmRSS after steady state (KiB)", std::to_string(rss_steady));
  row("gateway VmHWM (KiB)", std::to_string(hwm));
  row("gateway Pss after steady state (KiB)", std::to_string(pss));
  row("gateway Private_Dirty after steady state (KiB)", std::to_string(private_dirty));
  row("steady-state window (s)", fmt("%.1f", window));
  row("messages on MQTT in the window", std::to_string(msgs));
  row("messages per second", fmt("%.0f", static_cast<double>(msgs) / window));
  row("gateway CPU in the window (s)", fmt("%.2f", cpu_s));
  row("gateway CPU (% of one core)", fmt("%.1f", 100 * cpu_s / window));
  row("gateway CPU per message (us)",
      fmt("%.1f", msgs > 0 ? cpu_s * 1e6 / static_cast<double>(msgs) : -1.0));
  row("simulator CPU (% of one core)", fmt("%.1f", 100 * (sim_cpu1 - sim_cpu0) / window));
  if (o.callgrind) printInstructions(callgrind_out, msgs, row);
  row("notifications taken (whole run)", statCount("notifications"));
  if (o.anyDtls()) {
    const std::string handshakes = statCount("dtls_handshakes");
    row("DTLS handshakes (whole run)", handshakes);
    row("DTLS handshake failures (whole run)", statCount("dtls_failures"));
    row("DTLS handshakes per second, spawn -> all observed",
        fmt("%.0f", std::strtod(handshakes.c_str(), nullptr) / all_s));
  }
  row("QoS 1 acknowledged by the broker (whole run)", statCount("delivered"));
  row("left in the outbox at shutdown", statCount("outbox"));
  row("dropped from a full outbox", statCount("outbox_dropped"));
  if (o.latency) {
    row("stamped messages in the window", std::to_string(latencies.size()));
    if (!latencies.empty()) {
      row("sim -> MQTT tap latency, median (ms)",
          fmt("%.3f", 1e3 * percentileOfSorted(latencies, 50)));
      row("sim -> MQTT tap latency, p99 (ms)",
          fmt("%.3f", 1e3 * percentileOfSorted(latencies, 99)));
      row("sim -> MQTT tap latency, max (ms)", fmt("%.3f", 1e3 * latencies.back()));
    }
    std::printf(
        "latency: the tap's receive time minus the simulator's send time in the payload; it\n"
        "includes mosquitto and the mosquitto_sub tap, so it is an upper bound of the\n"
        "gateway's own part. The simulator sends each interval's %d notifications as one\n"
        "burst: the last of them wait for the gateway to handle the others.\n",
        o.devices);
  }
  std::fflush(stdout);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  if (int rc = coap2mqtt::bench::parseFlags(
          argc, argv, "bench_observe",
          "[--devices N] [--interval MS] [--steady S] [--qos 0|1] [--latency] [--non] "
          "[--dtls | --dtls-cert] [--callgrind]",
          {{"--devices", {&o.devices, 1, 60000}},
           {"--interval", {&o.interval_ms}},
           {"--steady", {&o.steady_s}},
           {"--qos", {&o.qos, 0, 2}}},
          {{"--latency", &o.latency},
           {"--non", &o.non},
           {"--dtls", &o.dtls},
           {"--dtls-cert", &o.dtls_cert},
           {"--callgrind", &o.callgrind}});
      rc != 0) {
    return rc;
  }
  if (o.dtls && o.dtls_cert) {
    std::fprintf(stderr, "bench_observe: --dtls and --dtls-cert exclude each other\n");
    return 2;
  }
  std::string why;
  if (!NetNs::available(&why)) {
    std::fprintf(stderr, "bench_observe: %s\n", why.c_str());
    return 1;
  }
  std::printf(
      "observe benchmark: %d simulated devices x %d observed resource(s), every %d ms, %s, QoS "
      "%d%s%s\n",
      o.devices, resourcesPerDevice(o), o.interval_ms, o.non ? "NON" : "CON", o.qos,
      o.latency ? ", with latency (/sensors/stamp)" : "",
      o.dtls        ? ", DTLS (PSK)"
      : o.dtls_cert ? ", DTLS (certificates, both ways)"
                    : "");
  try {
    return run(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_observe: %s\n", e.what());
    return 1;
  }
}
