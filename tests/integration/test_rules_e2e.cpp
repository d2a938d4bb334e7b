// The rule features of issue 6 on real processes: mosquitto, the simulator, the gateway.
// Home Assistant discovery, hot reload, envelope, value pointer, min_interval, only_changes,
// fan-out, SenML (JSON and CBOR packs, one message per record).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <csignal>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "tests/integration/gateway_process.h"
#include "tests/integration/harness.h"

namespace coap2mqtt::test {
namespace {

using Json = nlohmann::json;

// One simulated device (dev0), a broker, and a gateway whose rules live in rules.toml (so
// that SIGHUP re-reads them). Probes subscribe between the constructor and start().
struct Rig {
  TempDir dir;
  Mosquitto broker;
  int port = freeUdpPortRange(1);
  std::unique_ptr<Process> sim;
  std::unique_ptr<Process> gateway;

  explicit Rig(const std::string& interval_ms = "200",
               const std::vector<std::string>& sim_args = {}) {
    sim = startSim(dir, port, 1, interval_ms, "sim.log", sim_args);
  }

  void start(const std::string& rules) {
    dir.write("rules.toml", rules);
    std::string config = baseConfig(broker, dir) + simDevices(port, 1);
    config.replace(config.find("[coap]\n"), 0, "rules = [\"rules.toml\"]\n\n");
    gateway = startGateway(dir, config);
  }

  void reload(const std::string& rules) {
    dir.write("rules.toml", rules);
    ASSERT_EQ(kill(gateway->pid(), SIGHUP), 0);
  }

  std::string logs() const {
    return "--- gateway:\n" + (gateway ? gateway->output() : std::string()) + "--- sim:\n" +
           sim->output();
  }
};

// The "seq" of the simulator's counter JSON, or a bare number.
long seqOf(const std::string& payload) {
  Json j = Json::parse(payload, nullptr, false);
  if (j.is_number_integer()) return j.get<long>();
  if (j.is_object() && j.contains("seq") && j["seq"].is_number_integer()) {
    return j["seq"].get<long>();
  }
  ADD_FAILURE() << "no seq in " << payload;
  return -1;
}

std::int64_t nowEpochMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

bool startsWith(const std::string& s, const std::string& prefix) {
  return s.rfind(prefix, 0) == 0;
}

bool endsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool isHaConfig(const MqttMessage& m) {
  return startsWith(m.topic, "homeassistant/sensor/") && endsWith(m.topic, "/config");
}

std::string rule(const std::string& name, const std::string& path, const std::string& topic,
                 const std::string& extra = "") {
  return "[[rule]]\nname = \"" + name + "\"\nmatch = { path = \"" + path + "\" }\ntopic = \"" +
         topic + "\"\n" + extra + "\n";
}

const std::string kCounterRule = rule("counter", "/sensors/counter", "c2m/{device}/{path}");

// Acceptance 6: the discovery config is retained, names the topic the values go to and the
// device's availability; it is cleared when its rule goes away.
TEST(RulesEndToEnd, HomeAssistantConfigRetainedAndClearedOnReload) {
  Rig rig;
  MqttProbe values(rig.broker.port(), "c2m/#");
  const std::string temp_rule =
      rule("temp", "/sensors/temp", "c2m/{device}/{path}",
           "homeassistant = { component = \"sensor\", unit = \"°C\", device_class = "
           "\"temperature\" }\n");
  rig.start(temp_rule + kCounterRule);
  ASSERT_TRUE(values.waitForCount("c2m/dev0/sensors/temp", 2, 15s)) << rig.logs();

  // A client that subscribes afterwards gets the config because it is retained.
  MqttProbe late(rig.broker.port(), "homeassistant/#");
  ASSERT_TRUE(late.waitFor(
      [](const auto& msgs) {
        return std::any_of(msgs.begin(), msgs.end(), [](const MqttMessage& m) {
          return isHaConfig(m) && m.retained && !m.payload.empty();
        });
      },
      10s))
      << rig.logs();
  const auto msgs = late.messages();
  ASSERT_EQ(std::count_if(msgs.begin(), msgs.end(), isHaConfig), 1) << "one entity, one config";
  const MqttMessage config = *std::find_if(msgs.begin(), msgs.end(), isHaConfig);
  const Json j = Json::parse(config.payload, nullptr, false);
  ASSERT_TRUE(j.is_object()) << config.payload;
  EXPECT_EQ(j.value("state_topic", ""), "c2m/dev0/sensors/temp") << config.payload;
  EXPECT_EQ(j.value("availability_topic", ""), "c2m/dev0/availability") << config.payload;
  EXPECT_EQ(j.value("unit_of_measurement", ""), "°C") << config.payload;
  EXPECT_EQ(j.value("device_class", ""), "temperature") << config.payload;
  EXPECT_FALSE(j.value("unique_id", "").empty()) << config.payload;
  // The availability topic it names really carries the device's state.
  MqttProbe availability(rig.broker.port(), "c2m/dev0/availability");
  EXPECT_TRUE(availability.waitFor(
      [](const auto& m) { return !m.empty() && m.back().retained && m.back().payload == "online"; },
      10s));

  // The rule goes away: the config is cleared (an empty retained message).
  const std::size_t counters = values.messagesOn("c2m/dev0/sensors/counter").size();
  rig.reload(kCounterRule);
  ASSERT_TRUE(rig.gateway->waitForOutput("rules reloaded", 10s)) << rig.logs();
  EXPECT_TRUE(late.waitFor(
      [&](const auto& m) {
        return !m.empty() && m.back().topic == config.topic && m.back().payload.empty();
      },
      10s))
      << rig.logs();
  // Values keep flowing from the rule that stayed.
  EXPECT_TRUE(values.waitForCount("c2m/dev0/sensors/counter", counters + 2, 10s));
  // A newcomer sees the bridge's retained state but no discovery config any more.
  MqttProbe newcomer(rig.broker.port(), "#");
  ASSERT_TRUE(newcomer.waitFor(
      [](const auto& m) {
        return std::any_of(m.begin(), m.end(), [](const MqttMessage& x) {
          return x.retained && x.topic == "c2m/dev0/availability";
        });
      },
      10s));
  for (const auto& m : newcomer.messages()) {
    EXPECT_FALSE(startsWith(m.topic, "homeassistant/")) << m.topic << " " << m.payload;
  }
}

// Acceptance 5: a broken file changes nothing and says where it is broken; a changed topic
// moves the values without registering the observation again.
TEST(RulesEndToEnd, ReloadKeepsOldRulesOnErrorAndMovesTopicWithoutReobserving) {
  Rig rig;
  MqttProbe probe(rig.broker.port(), "#");
  const std::string counter_old = rule("counter", "/sensors/counter", "old/{device}/{path}");
  rig.start(counter_old);
  ASSERT_TRUE(probe.waitForCount("old/dev0/sensors/counter", 2, 15s)) << rig.logs();
  EXPECT_EQ(rig.sim->countInOutput("REQ dev0 GET /sensors/counter"), 1u) << rig.logs();

  // Line 8, column 8 of rules.toml: the value of `mode`.
  rig.reload(counter_old + "[[rule]]\nname = \"broken\"\nmode = \"sometimes\"\n");
  ASSERT_TRUE(rig.gateway->waitForOutput("reload failed", 10s)) << rig.logs();
  const std::string log = rig.gateway->output();
  EXPECT_NE(log.find(rig.dir.file("rules.toml") + ":8:8:"), std::string::npos)
      << "the error names file:line:col\n"
      << log;
  EXPECT_EQ(rig.gateway->countInOutput("rules reloaded"), 0u) << log;
  const std::size_t n = probe.messagesOn("old/dev0/sensors/counter").size();
  EXPECT_TRUE(probe.waitForCount("old/dev0/sensors/counter", n + 3, 10s)) << rig.logs();

  rig.reload(rule("counter", "/sensors/counter", "new/{device}/{path}"));
  ASSERT_TRUE(probe.waitForCount("new/dev0/sensors/counter", 1, 10s)) << rig.logs();
  const std::size_t old_after_switch = probe.messagesOn("old/dev0/sensors/counter").size();
  ASSERT_TRUE(probe.waitForCount("new/dev0/sensors/counter", 5, 10s)) << rig.logs();
  EXPECT_EQ(probe.messagesOn("old/dev0/sensors/counter").size(), old_after_switch)
      << "nothing goes to the old topic once the new one is in use";
  // The same observation goes on: no new registration, and the sequence continues.
  EXPECT_EQ(rig.sim->countInOutput("REQ dev0 GET /sensors/counter"), 1u) << rig.logs();
  const long last_old = seqOf(probe.messagesOn("old/dev0/sensors/counter").back().payload);
  const long first_new = seqOf(probe.messagesOn("new/dev0/sensors/counter").front().payload);
  EXPECT_GT(first_new, last_old);
  EXPECT_LE(first_new, last_old + 3) << "values were lost in the switch";
}

// payload = "envelope": {"device","path","value","ts","ct"} around the converted value.
TEST(RulesEndToEnd, EnvelopeWrapsTheConvertedValue) {
  Rig rig;
  MqttProbe probe(rig.broker.port(), "c2m/#");
  rig.start(rule("counter", "/sensors/counter", "c2m/{device}/{path}", "payload = \"envelope\"\n") +
            rule("temp", "/sensors/temp", "c2m/{device}/{path}", "payload = \"envelope\"\n"));
  ASSERT_TRUE(probe.waitForCount("c2m/dev0/sensors/counter", 3, 15s)) << rig.logs();
  ASSERT_TRUE(probe.waitForCount("c2m/dev0/sensors/temp", 1, 5s)) << rig.logs();
  long last = -1;
  for (const auto& m : probe.messagesOn("c2m/dev0/sensors/counter")) {
    const Json j = Json::parse(m.payload, nullptr, false);
    ASSERT_TRUE(j.is_object()) << m.payload;
    std::set<std::string> keys;
    for (const auto& [k, v] : j.items()) keys.insert(k);
    EXPECT_EQ(keys, (std::set<std::string>{"device", "path", "value", "ts", "ct"})) << m.payload;
    EXPECT_EQ(j["device"], "dev0");
    EXPECT_EQ(j["path"], "/sensors/counter");
    EXPECT_EQ(j["ct"], 50) << "application/json";
    ASSERT_TRUE(j["value"].is_object()) << "the JSON payload, not a string: " << m.payload;
    EXPECT_EQ(j["value"]["device"], "dev0");
    const long seq = j["value"].value("seq", -1L);
    EXPECT_GT(seq, last) << m.payload;
    last = seq;
    ASSERT_TRUE(j["ts"].is_number_integer()) << m.payload;
    EXPECT_LT(std::abs(j["ts"].get<std::int64_t>() - nowEpochMs()), 60'000) << m.payload;
  }
  // text/plain: the number as a JSON number, ct 0.
  const Json t = Json::parse(probe.messagesOn("c2m/dev0/sensors/temp").back().payload);
  EXPECT_TRUE(t["value"].is_number()) << t.dump();
  EXPECT_EQ(t["ct"], 0) << t.dump();
}

// value = "/seq": just that field of the JSON payload.
TEST(RulesEndToEnd, ValuePointerPublishesOneField) {
  Rig rig;
  MqttProbe probe(rig.broker.port(), "c2m/#");
  rig.start(rule("seq", "/sensors/counter", "c2m/{device}/seq", "value = \"/seq\"\n"));
  ASSERT_TRUE(probe.waitForCount("c2m/dev0/seq", 3, 15s)) << rig.logs();
  long last = -1;
  for (const auto& m : probe.messagesOn("c2m/dev0/seq")) {
    ASSERT_FALSE(m.payload.empty());
    EXPECT_TRUE(std::all_of(m.payload.begin(), m.payload.end(),
                            [](char c) { return c >= '0' && c <= '9'; }))
        << "a bare number: " << m.payload;
    const long seq = seqOf(m.payload);
    EXPECT_GT(seq, last);
    last = seq;
  }
  EXPECT_EQ(rig.gateway->countInOutput("value dropped"), 0u) << rig.logs();
}

// min_interval = "2s" on a 200 ms stream: a value per 2 s at most, and the latest value
// still arrives (trailing publish) after the stream stops.
TEST(RulesEndToEnd, MinIntervalLimitsRateAndPublishesTheLatestValue) {
  Rig rig;
  MqttProbe probe(rig.broker.port(), "c2m/#");
  // Fan-out: "all" sees every value, for comparison.
  rig.start(rule("slow", "/sensors/counter", "c2m/{device}/slow", "min_interval = \"2s\"\n") +
            rule("all", "/sensors/counter", "c2m/{device}/all"));
  ASSERT_TRUE(probe.waitForCount("c2m/dev0/slow", 1, 15s)) << rig.logs();
  const auto first = std::chrono::steady_clock::now();
  const std::size_t all_at_first = probe.messagesOn("c2m/dev0/all").size();
  ASSERT_TRUE(probe.waitForCount("c2m/dev0/all", all_at_first + 25, 20s)) << rig.logs();
  const auto elapsed = std::chrono::steady_clock::now() - first;
  const auto slow = probe.messagesOn("c2m/dev0/slow");
  // One at the start, then at most one per 2 s (+1 for rounding at the window's ends).
  const auto bound = 2 + static_cast<std::size_t>(elapsed / 2s);
  EXPECT_LE(slow.size(), bound) << "elapsed " << (elapsed / 1ms) << " ms";
  EXPECT_GE(slow.size(), 2u) << "the stream is rate-limited, not stopped";
  for (std::size_t i = 1; i < slow.size(); ++i) {
    EXPECT_GT(slow[i].received - slow[i - 1].received, 1500ms) << "i=" << i;
    EXPECT_GT(seqOf(slow[i].payload), seqOf(slow[i - 1].payload));
  }

  // Right after a value went out on "slow", a few more arrive, then the device stops: they
  // fall into the held-back window, and the last of them still comes out when it ends.
  const std::size_t slow_count = probe.messagesOn("c2m/dev0/slow").size();
  ASSERT_TRUE(probe.waitForCount("c2m/dev0/slow", slow_count + 1, 5s)) << rig.logs();
  const std::size_t all_count = probe.messagesOn("c2m/dev0/all").size();
  ASSERT_TRUE(probe.waitForCount("c2m/dev0/all", all_count + 3, 5s)) << rig.logs();
  rig.sim->stop();
  auto lastOn = [](const std::vector<MqttMessage>& msgs, const std::string& topic) {
    auto it = std::find_if(msgs.rbegin(), msgs.rend(),
                           [&](const MqttMessage& m) { return m.topic == topic; });
    return it == msgs.rend() ? std::string() : it->payload;
  };
  // Called under the probe's lock: the predicate reads `msgs`, not probe.messagesOn().
  EXPECT_TRUE(probe.waitFor(
      [&](const std::vector<MqttMessage>& msgs) {
        return std::count_if(msgs.begin(), msgs.end(),
                             [](const MqttMessage& m) { return m.topic == "c2m/dev0/slow"; }) >=
                   static_cast<long>(slow_count + 2) &&
               lastOn(msgs, "c2m/dev0/slow") == lastOn(msgs, "c2m/dev0/all");
      },
      6s))
      << "last value " << lastOn(probe.messages(), "c2m/dev0/all") << ", last slow value "
      << lastOn(probe.messages(), "c2m/dev0/slow") << "\n"
      << rig.logs();
}

// A value min_interval held back under the old rules must not come out on the old topic
// after a reload moved the rule to a new one.
TEST(RulesEndToEnd, ReloadMovesRateLimitedRuleWithoutLateValuesOnTheOldTopic) {
  Rig rig;
  MqttProbe probe(rig.broker.port(), "#");
  // "all" shows each notification as it passes.
  const std::string all = rule("all", "/sensors/counter", "all/{device}");
  rig.start(rule("slow", "/sensors/counter", "old/{device}/slow", "min_interval = \"2s\"\n") + all);
  ASSERT_TRUE(probe.waitForCount("old/dev0/slow", 1, 15s)) << rig.logs();
  // Right after a value went out, two more arrive: they are held back for ~2 s.
  ASSERT_TRUE(probe.waitForCount("old/dev0/slow", 2, 5s)) << rig.logs();
  const std::size_t seen = probe.messagesOn("all/dev0").size();
  ASSERT_TRUE(probe.waitForCount("all/dev0", seen + 2, 5s)) << rig.logs();
  rig.reload(rule("slow", "/sensors/counter", "new/{device}/slow", "min_interval = \"2s\"\n") +
             all);
  ASSERT_TRUE(rig.gateway->waitForOutput("rules reloaded", 5s)) << rig.logs();
  const std::size_t old_count = probe.messagesOn("old/dev0/slow").size();
  // Two values on the new topic take at least min_interval: by then the old topic's held-back
  // value would have been due.
  ASSERT_TRUE(probe.waitForCount("new/dev0/slow", 2, 10s)) << rig.logs();
  EXPECT_EQ(probe.messagesOn("old/dev0/slow").size(), old_count) << rig.logs();
  EXPECT_EQ(rig.sim->countInOutput("REQ dev0 GET /sensors/counter"), 1u) << rig.logs();
}

// A value held back by min_interval is still published when the device drops out and
// comes back (its observation is registered again) before the interval ends.
TEST(RulesEndToEnd, HeldBackValueSurvivesTheDeviceComingBack) {
  TempDir dir;
  Mosquitto broker;
  const int port = freeUdpPortRange(1);
  auto sim = startSim(dir, port, 1, "1000");
  MqttProbe probe(broker.port(), "c2m/#");
  std::string config = baseConfig(broker, dir) + simDevices(port, 1) +
                       rule("led", "/actuators/led", "c2m/{device}/led", "min_interval = \"8s\"\n");
  config.replace(config.find("request_timeout"), 0, "offline_after = \"1s\"\n");
  auto gateway = startGateway(dir, config);
  const auto logs = [&] {
    return "--- gateway:\n" + gateway->output() + "--- sim:\n" + sim->output();
  };
  ASSERT_TRUE(probe.waitForCount("c2m/dev0/led", 1, 15s)) << logs();
  EXPECT_EQ(probe.messagesOn("c2m/dev0/led").back().payload, "\"off\"");
  const std::string led = "coap://127.0.0.1:" + std::to_string(port) + "/actuators/led";
  ASSERT_TRUE(coapRequest("put", led, "on").ok);  // notified at once, held back for 8 s

  // The device goes quiet until the gateway calls it offline, then comes back.
  ASSERT_EQ(kill(sim->pid(), SIGSTOP), 0);
  const bool went_offline = gateway->waitForOutput("device dev0 is offline", 10s);
  ASSERT_EQ(kill(sim->pid(), SIGCONT), 0);
  ASSERT_TRUE(went_offline) << logs();
  ASSERT_TRUE(
      waitUntil([&] { return sim->countInOutput("REQ dev0 GET /actuators/led") >= 2; }, 10s))
      << "observed again\n"
      << logs();
  // The held-back "on" arrives when the 8 s are over.
  EXPECT_TRUE(probe.waitFor(
      [](const std::vector<MqttMessage>& msgs) {
        return !msgs.empty() && msgs.back().topic == "c2m/dev0/led" &&
               msgs.back().payload == "\"on\"";
      },
      20s))
      << logs();
}

// A device that shuts down cleanly (its observers get 4.04) and comes back later: one
// observation again, every value published once.
// DISABLED: fails today, outside the rules code (observe engine). The returning simulator
// gets 5-11 registrations (REQ ... GET /sensors/counter) instead of 1, the gateway RSTs
// notifications of registrations it no longer knows (stats unknown_token > 0) and keeps
// "registering again" although the device notifies. One cause seen in the log: after the
// 4.04 the failure path arms retryWatch() while the silence timer (armMaxAge) stays armed,
// so two registration chains run side by side; cancelling it there was not enough.
TEST(RulesEndToEnd, DeviceBackAfterCleanShutdownIsObservedOnce) {
  TempDir dir;
  Mosquitto broker;
  const int port = freeUdpPortRange(1);
  auto sim = startSim(dir, port, 1, "200");
  MqttProbe probe(broker.port(), "c2m/#");
  auto gateway = startGateway(dir, baseConfig(broker, dir) + simDevices(port, 1) + kCounterRule);
  ASSERT_TRUE(probe.waitForCount("c2m/dev0/sensors/counter", 3, 15s)) << gateway->output();
  sim->stop();
  // Gone for a few retries, longer than the silence timer (4 intervals, at least ~4 s).
  ASSERT_TRUE(waitUntil([&] { return gateway->countInOutput("retrying in") >= 5; }, 15s))
      << gateway->output();
  sim = startSim(dir, port, 1, "200", "sim2.log");
  const std::size_t before = probe.messagesOn("c2m/dev0/sensors/counter").size();
  ASSERT_TRUE(probe.waitForCount("c2m/dev0/sensors/counter", before + 10, 15s))
      << gateway->output();
  const auto msgs = probe.messagesOn("c2m/dev0/sensors/counter");
  std::set<long> seen;
  for (std::size_t i = before; i < msgs.size(); ++i) {
    EXPECT_TRUE(seen.insert(seqOf(msgs[i].payload)).second)
        << "published twice: " << msgs[i].payload;
  }
  EXPECT_EQ(sim->countInOutput("REQ dev0 GET /sensors/counter"), 1u) << sim->output();
}

// only_changes on a value that never changes (/info, polled): published once.
TEST(RulesEndToEnd, OnlyChangesPublishesAConstantValueOnce) {
  Rig rig;
  MqttProbe probe(rig.broker.port(), "c2m/#");
  rig.start(
      rule("info", "/info", "c2m/{device}/info", "interval = \"200ms\"\nonly_changes = true\n") +
      rule("info-all", "/info", "c2m/{device}/info-all", "interval = \"200ms\"\n"));
  // Polled five times or more, every answer the same.
  ASSERT_TRUE(waitUntil([&] { return rig.sim->countInOutput("REQ dev0 GET /info") >= 5; }, 15s))
      << rig.logs();
  ASSERT_TRUE(probe.waitForCount("c2m/dev0/info-all", 5, 5s)) << rig.logs();
  const auto info = probe.messagesOn("c2m/dev0/info");
  ASSERT_EQ(info.size(), 1u) << rig.logs();
  EXPECT_EQ(Json::parse(info.front().payload).value("model", ""), "c2m-sim")
      << info.front().payload;
}

// Two rules on one resource: both topics get every value, from one observation.
TEST(RulesEndToEnd, TwoRulesOnOneResourceFanOut) {
  Rig rig;
  MqttProbe probe(rig.broker.port(), "#");
  rig.start(rule("json", "/sensors/counter", "a/{device}/{path}") +
            rule("seq", "/sensors/counter", "b/{device}/seq", "value = \"/seq\"\nqos = 1\n"));
  ASSERT_TRUE(probe.waitForCount("a/dev0/sensors/counter", 3, 15s)) << rig.logs();
  ASSERT_TRUE(probe.waitForCount("b/dev0/seq", 3, 5s)) << rig.logs();
  std::set<long> a;
  std::set<long> b;
  for (const auto& m : probe.messagesOn("a/dev0/sensors/counter")) a.insert(seqOf(m.payload));
  for (const auto& m : probe.messagesOn("b/dev0/seq")) b.insert(seqOf(m.payload));
  // The same values on both (up to the one that may be in flight on the other topic).
  std::size_t common = 0;
  for (long s : a) common += b.count(s);
  EXPECT_GE(common + 1, std::min(a.size(), b.size()));
  EXPECT_EQ(probe.messagesOn("b/dev0/seq").front().qos, 1);
  EXPECT_EQ(rig.sim->countInOutput("REQ dev0 GET /sensors/counter"), 1u) << rig.logs();
}

// ---- SenML (RFC 8428) -------------------------------------------------------------------
// coap2mqtt-sim --senml serves /sensors/senml (ct 110) and /sensors/senml-cbor (ct 112), the
// same pack in both, and logs every pack it serves as "SENML <device> <pack>" before any
// notification carries it (see tests/sim/simulator.cpp):
//   [{"bn":"dev0/","bt":<epoch s>,"n":"seq","v":<seq>},
//    {"n":"temp","t":-0.5,"u":"Cel","v":<temperature>},
//    {"n":"even","vb":<seq is even>},{"n":"trend","vs":"up"|"down"|"steady"}]

// The packs dev0 logged so far, by their seq.
std::map<long, Json> senmlPacks(const Process& sim) {
  std::map<long, Json> packs;
  std::istringstream lines(sim.output());
  const std::string prefix = "SENML dev0 ";
  for (std::string line; std::getline(lines, line);) {
    if (!startsWith(line, prefix)) continue;
    Json pack = Json::parse(line.substr(prefix.size()), nullptr, false);
    if (!pack.is_array() || pack.size() != 4 || !pack[0].contains("v")) {
      ADD_FAILURE() << "unexpected SENML line: " << line;
      continue;
    }
    const long seq = pack[0]["v"].get<long>();
    packs[seq] = std::move(pack);
  }
  return packs;
}

// What the gateway must make of one of those packs (RFC 8428 §4.6), written out by hand:
// absolute names (base name + name) and absolute times (base time + time), no base fields,
// in chronological order: the temperature, taken 0.5 s before the rest, comes first.
Json resolvedPack(const Json& pack) {
  const double bt = pack[0]["bt"].get<double>();
  return Json::array({
      {{"n", "dev0/temp"}, {"t", bt - 0.5}, {"u", "Cel"}, {"v", pack[1]["v"]}},
      {{"n", "dev0/seq"}, {"t", bt}, {"v", pack[0]["v"]}},
      {{"n", "dev0/even"}, {"t", bt}, {"vb", pack[2]["vb"]}},
      {{"n", "dev0/trend"}, {"t", bt}, {"vs", pack[3]["vs"]}},
  });
}

// The seq record of a resolved pack as published (the second record), or -1.
long resolvedSeq(const Json& records) {
  if (!records.is_array() || records.size() != 4 || !records[1].contains("v")) return -1;
  return records[1]["v"].get<long>();
}

// The simulator's pack itself, as it is on the wire, for the failure messages.
std::string packText(const std::map<long, Json>& packs, long seq) {
  const auto it = packs.find(seq);
  return it == packs.end() ? "(no SENML line for seq " + std::to_string(seq) + ")"
                           : it->second.dump();
}

// payload = "json" on the SenML JSON resource: one message per notification, the resolved
// records of the pack the device sent; the values move on in order.
TEST(RulesEndToEnd, SenmlJsonPackPublishesResolvedRecords) {
  Rig rig("200", {"--senml"});
  MqttProbe probe(rig.broker.port(), "c2m/#");
  // Matched by the ct the device advertises: the CBOR twin and the other sensors stay out.
  rig.start(
      "[[rule]]\nname = \"senml\"\nmatch = { path = \"/sensors/*\", ct = "
      "\"application/senml+json\" }\ntopic = \"c2m/{device}/{path}\"\npayload = \"json\"\n");
  ASSERT_TRUE(probe.waitForCount("c2m/dev0/sensors/senml", 6, 15s)) << rig.logs();
  const auto msgs = probe.messagesOn("c2m/dev0/sensors/senml");
  const auto packs = senmlPacks(*rig.sim);
  long last = -1;
  std::set<std::string> temperatures;
  for (const auto& m : msgs) {
    const Json got = Json::parse(m.payload, nullptr, false);
    const long seq = resolvedSeq(got);
    ASSERT_GE(seq, 0) << m.payload;
    EXPECT_GT(seq, last) << "in order: " << m.payload;
    last = seq;
    const auto pack = packs.find(seq);
    ASSERT_NE(pack, packs.end()) << "the device never sent seq " << seq << "\n" << rig.logs();
    EXPECT_EQ(got, resolvedPack(pack->second))
        << "published " << m.payload << "\nfrom pack " << pack->second.dump();
    // Absolute times: the device's clock, seconds since the epoch (not relative to now).
    EXPECT_LT(std::abs(got[1]["t"].get<double>() * 1000 - static_cast<double>(nowEpochMs())),
              60'000)
        << m.payload;
    EXPECT_EQ(got[2]["vb"], seq % 2 == 0) << m.payload;
    temperatures.insert(got[0]["v"].dump());
  }
  EXPECT_GE(msgs.size(), 6u);
  EXPECT_GE(temperatures.size(), msgs.size() / 2) << "the values change from pack to pack";
  for (const auto& m : probe.messages()) {
    EXPECT_TRUE(startsWith(m.topic, "c2m/bridge/") || m.topic == "c2m/dev0/availability" ||
                m.topic == "c2m/dev0/sensors/senml")
        << "only the ct 110 resource matches: " << m.topic;
  }
  EXPECT_EQ(rig.gateway->countInOutput("value dropped"), 0u) << rig.logs();
}

// senml = "records" with {name} in the topic: one message per record, on the record's own
// topic, in the pack's resolved (chronological) order, pack after pack.
TEST(RulesEndToEnd, SenmlRecordsPublishOneMessagePerRecordOnItsOwnTopic) {
  Rig rig("200", {"--senml"});
  MqttProbe probe(rig.broker.port(), "senml/#");
  rig.start(rule("records", "/sensors/senml", "senml/{name}",
                 "senml = \"records\"\npayload = \"json\"\nqos = 1\n"));
  ASSERT_TRUE(probe.waitForCount("senml/dev0/trend", 5, 15s)) << rig.logs();
  const auto msgs = probe.messages();
  const auto packs = senmlPacks(*rig.sim);
  // The probe subscribed before the gateway started: the messages come in whole packs of
  // four (temp, seq, even, trend), each record on "senml/" + its name.
  ASSERT_GE(msgs.size(), 20u);
  long last = -1;
  for (std::size_t i = 0; i + 4 <= msgs.size(); i += 4) {
    const Json seq_record = Json::parse(msgs[i + 1].payload, nullptr, false);
    ASSERT_TRUE(seq_record.is_object() && seq_record.contains("v")) << msgs[i + 1].payload;
    const long seq = seq_record["v"].get<long>();
    EXPECT_GT(seq, last) << "packs in order";
    last = seq;
    const auto pack = packs.find(seq);
    ASSERT_NE(pack, packs.end()) << "the device never sent seq " << seq << "\n" << rig.logs();
    const Json expected = resolvedPack(pack->second);
    for (std::size_t k = 0; k < 4; ++k) {
      const MqttMessage& m = msgs[i + k];
      EXPECT_EQ(m.topic, "senml/" + expected[k]["n"].get<std::string>()) << "message " << i + k;
      EXPECT_EQ(Json::parse(m.payload, nullptr, false), expected[k])
          << "message " << i + k << ": " << m.payload << "\nfrom pack " << pack->second.dump();
      EXPECT_EQ(m.qos, 1);
    }
  }
  std::set<std::string> topics;
  for (const auto& m : msgs) topics.insert(m.topic);
  EXPECT_EQ(topics, (std::set<std::string>{"senml/dev0/temp", "senml/dev0/seq", "senml/dev0/even",
                                           "senml/dev0/trend"}));
}

// The same pack as SenML CBOR (integer labels, float64 and integer values) arrives as the
// same resolved JSON as the SenML JSON one, byte for byte.
TEST(RulesEndToEnd, SenmlCborPackArrivesAsTheSameResolvedJson) {
  Rig rig("200", {"--senml"});
  MqttProbe probe(rig.broker.port(), "c2m/#");
  rig.start(rule("json", "/sensors/senml", "c2m/{device}/json") +
            rule("cbor", "/sensors/senml-cbor", "c2m/{device}/cbor"));
  ASSERT_TRUE(probe.waitForCount("c2m/dev0/cbor", 6, 15s)) << rig.logs();
  ASSERT_TRUE(probe.waitForCount("c2m/dev0/json", 6, 5s)) << rig.logs();
  const auto packs = senmlPacks(*rig.sim);
  std::map<long, std::string> from_json;
  for (const auto& m : probe.messagesOn("c2m/dev0/json")) {
    from_json[resolvedSeq(Json::parse(m.payload, nullptr, false))] = m.payload;
  }
  long last = -1;
  std::size_t compared = 0;
  for (const auto& m : probe.messagesOn("c2m/dev0/cbor")) {
    const Json got = Json::parse(m.payload, nullptr, false);
    const long seq = resolvedSeq(got);
    ASSERT_GE(seq, 0) << m.payload;
    EXPECT_GT(seq, last) << "in order: " << m.payload;
    last = seq;
    ASSERT_TRUE(packs.count(seq)) << "the device never sent seq " << seq << "\n" << rig.logs();
    EXPECT_EQ(got, resolvedPack(packs.at(seq)))
        << "published " << m.payload << "\nfrom pack " << packText(packs, seq);
    if (const auto it = from_json.find(seq); it != from_json.end()) {
      EXPECT_EQ(m.payload, it->second) << "seq " << seq;
      ++compared;
    }
  }
  EXPECT_GE(compared, 5u) << "the same packs went out on both resources";
  EXPECT_EQ(rig.gateway->countInOutput("value dropped"), 0u) << rig.logs();
}

}  // namespace
}  // namespace coap2mqtt::test
