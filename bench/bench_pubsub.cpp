// /ps benchmark (issue 20, acceptance 6): N devices publish CON to the gateway's /ps once per
// interval each (coap2mqtt-pub, each device from an address of its own on 127.2.0.0/16, so
// each is a pushed device of its own), through an [[inbound]] entry with no rule (the topic is
// the path) at --qos (1: every publish through the outbox, its 2.04 after the commit) to a
// real mosquitto and an in-process subscriber.
//
//   bench_pubsub [--devices N] [--interval MS] [--seconds S] [--qos 0|1] [--non]
//
// Measures: publishes sent and answered 2.04; messages on MQTT (distinct "d<i>:<seq>"
// payloads; lost = sent - distinct); the gateway's CPU time (utime + stime) over the steady
// window (from 5 s after the start to 2 s before the last round) divided by the messages the
// subscriber got in that window: microseconds of gateway CPU per message, comparable with
// bench_observe's "gateway CPU per message"; its VmRSS at the end. No root needed.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <thread>

#include "bench/bench_util.h"
#include "tests/integration/harness.h"

namespace {

using namespace coap2mqtt::test;
using coap2mqtt::bench::procStatusKb;

struct Options {
  int devices = 1000;
  int interval_ms = 1000;
  int seconds = 30;
  int qos = 1;
  bool non = false;
};

double cpuSeconds(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto close = stat.rfind(')');
  if (close == std::string::npos) return -1;
  std::istringstream fields(stat.substr(close + 2));
  std::string f;
  double utime = 0, stime = 0;
  for (int i = 3; fields >> f; ++i) {
    if (i == 14) utime = std::strtod(f.c_str(), nullptr);
    if (i == 15) {
      stime = std::strtod(f.c_str(), nullptr);
      break;
    }
  }
  return (utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

int run(const Options& o) {
  TempDir state;
  Mosquitto broker;
  MqttProbe tap(broker.port(), "bench/#");
  const int port = freeUdpPort();
  state.write("gateway.toml",
              "[gateway]\nname = \"bench-gw\"\nstate_dir = \"" + state.path() +
                  "\"\n\n[coap]\nlisten = [\"127.0.0.1:" + std::to_string(port) +
                  "\"]\n\n[coap.limits]\nmax_devices = " + std::to_string(o.devices + 10) +
                  "\nmax_sessions = " + std::to_string(o.devices + 100) + "\n\n[mqtt]\nuri = \"" +
                  broker.uri() + "\"\nbase_topic = \"c2m\"\n\n[[inbound]]\nallow = { device = " +
                  "\"*\", path = \"/bench/**\" }\nqos = " + std::to_string(o.qos) + "\n");
  Process gateway({gatewayBinary(), "run", "-c", state.file("gateway.toml"), "-l", "info"},
                  state.file("gateway.log"));
  if (!gateway.waitForOutput("serves publishes", 20s)) {
    std::fprintf(stderr, "gateway: %s\n", gateway.output().c_str());
    return 1;
  }
  const int pid = gateway.pid();
  // coap2mqtt-pub is built next to the simulator.
  const std::string sim = simulatorBinary();
  std::vector<std::string> argv{sim.substr(0, sim.rfind('/') + 1) + "coap2mqtt-pub",
                                "--devices",
                                std::to_string(o.devices),
                                "--address",
                                "127.2.0.1",
                                "--address-step",
                                "--gateway",
                                "127.0.0.1:" + std::to_string(port),
                                "--interval",
                                std::to_string(o.interval_ms),
                                "--count",
                                std::to_string(o.seconds * 1000 / o.interval_ms)};
  if (o.non) argv.push_back("--non");
  Process pub(argv, state.file("pub.log"));
  if (!pub.waitForOutput("READY", 30s)) {
    std::fprintf(stderr, "publisher: %s\n", pub.output().c_str());
    return 1;
  }
  const auto t0 = std::chrono::steady_clock::now();
  std::this_thread::sleep_until(t0 + 5s);
  const double cpu0 = cpuSeconds(pid);
  const auto w0 = std::chrono::steady_clock::now();
  std::this_thread::sleep_until(t0 + std::chrono::seconds(std::max(6, o.seconds - 2)));
  const double cpu1 = cpuSeconds(pid);
  const auto w1 = std::chrono::steady_clock::now();
  pub.stop(0, std::chrono::seconds(o.seconds + 120));
  const std::size_t want = static_cast<std::size_t>(o.devices) *
                           static_cast<std::size_t>(o.seconds * 1000 / o.interval_ms);
  std::set<std::string> distinct;
  std::size_t total = 0;
  waitUntil(
      [&] {
        const auto ms = tap.messages();
        total = ms.size();
        distinct.clear();
        for (const auto& m : ms) distinct.insert(m.payload);
        return distinct.size() >= want;
      },
      60s);
  std::size_t in_window = 0;
  for (const auto& m : tap.messages()) in_window += m.received >= w0 && m.received < w1;
  const double window = std::chrono::duration<double>(w1 - w0).count();
  const double cpu = cpu1 - cpu0;
  const long rss = procStatusKb(pid, "VmRSS");
  std::string pub_line;
  {
    std::istringstream lines(pub.output());
    for (std::string l; std::getline(lines, l);) {
      if (l.rfind("SENT ", 0) == 0) pub_line = l;
    }
  }
  auto row = [](const char* name, const std::string& value) {
    std::printf("| %-44s | %28s |\n", name, value.c_str());
  };
  auto fmt = [](const char* f, double v) {
    char buf[64];
    std::snprintf(buf, sizeof buf, f, v);
    return std::string(buf);
  };
  std::printf("| %-44s | %28s |\n|%s|%s|\n", "metric", "value", std::string(46, '-').c_str(),
              std::string(30, '-').c_str());
  row("devices x publishes each",
      std::to_string(o.devices) + " x " + std::to_string(o.seconds * 1000 / o.interval_ms));
  row("interval (ms), type, qos", std::to_string(o.interval_ms) + ", " + (o.non ? "NON" : "CON") +
                                      ", " + std::to_string(o.qos));
  row("publisher", pub_line);
  row("messages on MQTT (distinct)", std::to_string(distinct.size()));
  row("messages on MQTT (all)", std::to_string(total));
  row("lost", std::to_string(want - std::min(want, distinct.size())));
  row("steady window (s)", fmt("%.1f", window));
  row("messages in the window", std::to_string(in_window));
  row("gateway CPU (% of one core)", fmt("%.1f", 100 * cpu / window));
  row("gateway CPU per message (us)",
      fmt("%.1f", in_window > 0 ? cpu * 1e6 / static_cast<double>(in_window) : -1.0));
  row("gateway VmRSS at the end (KiB)", std::to_string(rss));
  return distinct.size() >= want ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  bool non = false;
  if (int rc = coap2mqtt::bench::parseFlags(
          argc, argv, "bench_pubsub",
          "[--devices N] [--interval MS] [--seconds S] [--qos 0|1] [--non]\n",
          {{"--devices", {&o.devices, 1, 60000}},
           {"--interval", {&o.interval_ms, 10, 60000}},
           {"--seconds", {&o.seconds, 8, 3600}},
           {"--qos", {&o.qos, 0, 1}}},
          {{"--non", &non}});
      rc != 0) {
    return rc;
  }
  o.non = non;
  try {
    return run(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_pubsub: %s\n", e.what());
    return 1;
  }
}
