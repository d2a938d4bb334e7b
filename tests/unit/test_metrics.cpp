// The Prometheus exposition (gateway/metrics.h): escaping, types, families, the gateway's
// families from a known snapshot, /proc parsing, and the Grafana dashboard in docs/.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "gateway/metrics.h"

namespace {

using coap2mqtt::gateway::StatsSnapshot;
using namespace coap2mqtt::gateway::metrics;

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

bool hasLine(const std::string& text, const std::string& line) {
  for (const auto& l : lines(text)) {
    if (l == line) return true;
  }
  return false;
}

TEST(MetricsRender, HelpTypeAndSamples) {
  const std::string text = render({
      {"a_total", "Things done", Type::Counter, {{{}, 42}}},
      {"b", "Depth", Type::Gauge, {{{{"state", "on"}}, 3}, {{{"state", "off"}}, 0}}},
  });
  EXPECT_EQ(text,
            "# HELP a_total Things done\n"
            "# TYPE a_total counter\n"
            "a_total 42\n"
            "# HELP b Depth\n"
            "# TYPE b gauge\n"
            "b{state=\"on\"} 3\n"
            "b{state=\"off\"} 0\n");
}

TEST(MetricsRender, LabelValuesAreEscaped) {
  const std::string text =
      render({{"x_total", "h", Type::Counter, {{{{"v", "back\\slash \"quoted\"\nnext"}}, 1}}}});
  EXPECT_TRUE(hasLine(text, R"(x_total{v="back\\slash \"quoted\"\nnext"} 1)")) << text;
  EXPECT_EQ(lines(text).size(), 3u) << "the newline must not split the sample line:\n" << text;
}

TEST(MetricsRender, HelpIsEscaped) {
  const std::string text = render({{"g", "a \\ and a\nnewline", Type::Gauge, {{{}, 1}}}});
  EXPECT_TRUE(hasLine(text, R"(# HELP g a \\ and a\nnewline)")) << text;
  EXPECT_EQ(lines(text).size(), 3u) << text;
}

TEST(MetricsRender, LargeCountersKeepEveryDigit) {
  const std::string text = render({{"n_total", "h", Type::Counter, {{{}, 9007199254740992.0}}},
                                   {"t", "h", Type::Gauge, {{{}, 1764800000.25}}}});
  EXPECT_TRUE(hasLine(text, "n_total 9007199254740992")) << text;
  EXPECT_TRUE(hasLine(text, "t 1764800000.25")) << text;
}

TEST(MetricsRender, RefusesWhatBreaksTheFormat) {
  EXPECT_THROW(render({{"requests", "h", Type::Counter, {{{}, 1}}}}), InvalidFamilies)
      << "a counter must end in _total";
  EXPECT_THROW(render({{"a", "h", Type::Gauge, {{{}, 1}}}, {"a", "h", Type::Gauge, {{{}, 2}}}}),
               InvalidFamilies)
      << "one family per name";
  EXPECT_THROW(render({{"a", "h", Type::Gauge, {{{{"k", "v"}}, 1}, {{{"k", "v"}}, 2}}}}),
               InvalidFamilies)
      << "no duplicate series";
  EXPECT_THROW(render({{"a",
                        "h",
                        Type::Gauge,
                        {{{{"k", "v"}, {"j", "w"}}, 1}, {{{"j", "w"}, {"k", "v"}}, 2}}}}),
               InvalidFamilies)
      << "label order does not make a new series";
  EXPECT_THROW(render({{"a", "h", Type::Gauge, {{{{"k", "v"}, {"k", "w"}}, 1}}}}), InvalidFamilies);
  EXPECT_THROW(render({{"9lives", "h", Type::Gauge, {{{}, 1}}}}), InvalidFamilies);
  EXPECT_THROW(render({{"a-b", "h", Type::Gauge, {{{}, 1}}}}), InvalidFamilies);
  EXPECT_THROW(render({{"a", "h", Type::Gauge, {{{{"bad-label", "v"}}, 1}}}}), InvalidFamilies);
  EXPECT_THROW(render({{"a", "h", Type::Gauge, {{{{"__reserved", "v"}}, 1}}}}), InvalidFamilies);
  EXPECT_NO_THROW(render({{"a", "h", Type::Gauge, {{{{"k", "v"}}, 1}, {{{"k", "w"}}, 2}}}}));
}

StatsSnapshot knownSnapshot() {
  StatsSnapshot s;
  s.devices = 5;
  s.devices_online = 3;
  s.observations = 7;
  s.uptime_s = 99;
  s.observe.notifications = 1234;
  s.observe.stale = 2;
  s.published = 1300;
  s.published_by_qos = {1000, 300, 0};
  s.mqtt_delivered = 290;
  s.mqtt_connected = true;
  s.mqtt_connects = 4;
  s.outbox = 10;
  s.outbox_dropped = 1;
  s.coap.requests_sent = 11;
  s.coap.failures = 6;
  s.coap.malformed = 9;
  s.coap.dtls_sessions_kept = 3;
  s.commands.answered = 5;
  s.commands.answered_by_code = {{204, 4}, {404, 1}};
  s.commands.timed_out = 2;
  s.commands_refused = 3;
  s.commands_refused_by_reason = {{"not_allowed", 2}, {"bad \"payload\"", 1}};
  return s;
}

TEST(GatewayMetrics, KnownSnapshotGivesKnownSamples) {
  const std::string text = render(gatewayFamilies(knownSnapshot(), std::nullopt));
  for (const char* line : {
           "coap2mqtt_notifications_total 1234",
           "coap2mqtt_mqtt_published_total{qos=\"0\"} 1000",
           "coap2mqtt_mqtt_published_total{qos=\"1\"} 300",
           "coap2mqtt_mqtt_published_total{qos=\"2\"} 0",
           "coap2mqtt_mqtt_delivered_total 290",
           "coap2mqtt_mqtt_connected 1",
           "coap2mqtt_mqtt_reconnects_total 3",
           "coap2mqtt_outbox_messages 10",
           "coap2mqtt_outbox_dropped_total 1",
           "coap2mqtt_devices{state=\"online\"} 3",
           "coap2mqtt_devices{state=\"offline\"} 2",
           "coap2mqtt_observations 7",
           "coap2mqtt_dropped_total{reason=\"stale_notification\"} 2",
           "coap2mqtt_dropped_total{reason=\"command_refused\"} 3",
           "coap2mqtt_dropped_total{reason=\"malformed_coap\"} 9",
           "coap2mqtt_commands_total{result=\"answered\",code=\"2.04\"} 4",
           "coap2mqtt_commands_total{result=\"answered\",code=\"4.04\"} 1",
           "coap2mqtt_commands_total{result=\"timeout\"} 2",
           "coap2mqtt_commands_total{result=\"refused\"} 3",
           "coap2mqtt_commands_refused_total{reason=\"bad \\\"payload\\\"\"} 1",
           "coap2mqtt_coap_requests_total 11",
           "coap2mqtt_coap_failures_total 6",
           "coap2mqtt_dtls_handshakes_total 0",
           "coap2mqtt_dtls_sessions_kept_total 3",
           "coap2mqtt_uptime_seconds 99",
           "coap2mqtt_build_info{version=\"" COAP2MQTT_VERSION "\"} 1",
           "# TYPE coap2mqtt_notifications_total counter",
           "# TYPE coap2mqtt_outbox_messages gauge",
           "# TYPE coap2mqtt_devices gauge",
       }) {
    EXPECT_TRUE(hasLine(text, line)) << "missing: " << line << "\n" << text;
  }
  EXPECT_EQ(text.find("process_"), std::string::npos) << "no process stats given";
}

// Every drop reason bridge/info lists is a sample of coap2mqtt_dropped_total.
TEST(GatewayMetrics, EveryDropReasonOfBridgeInfo) {
  const StatsSnapshot s = knownSnapshot();
  const auto info = coap2mqtt::gateway::Stats::statsJson(s);
  const std::string text = render(gatewayFamilies(s, std::nullopt));
  ASSERT_FALSE(info.at("dropped").empty());
  for (const auto& [reason, n] : info.at("dropped").items()) {
    EXPECT_TRUE(hasLine(text, "coap2mqtt_dropped_total{reason=\"" + reason + "\"} " +
                                  std::to_string(n.get<std::uint64_t>())))
        << reason;
  }
}

TEST(GatewayMetrics, EveryFamilyHasHelpAndTypeOnce) {
  ProcessStats p;
  p.cpu_seconds = 1.5;
  p.open_fds = 12;
  p.max_fds = 1024;
  const std::string text = render(gatewayFamilies(knownSnapshot(), p));
  std::map<std::string, int> help, type;
  std::set<std::string> sampled;
  const std::regex sample(R"(^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)$)");
  for (const auto& l : lines(text)) {
    std::smatch m;
    if (l.rfind("# HELP ", 0) == 0) {
      ++help[l.substr(7, l.find(' ', 7) - 7)];
    } else if (l.rfind("# TYPE ", 0) == 0) {
      ++type[l.substr(7, l.find(' ', 7) - 7)];
    } else {
      ASSERT_TRUE(std::regex_match(l, m, sample)) << l;
      sampled.insert(m[1]);
    }
  }
  for (const auto& name : sampled) {
    EXPECT_EQ(help[name], 1) << name;
    EXPECT_EQ(type[name], 1) << name;
  }
  for (const char* name : {"process_cpu_seconds_total", "process_resident_memory_bytes",
                           "process_virtual_memory_bytes", "process_open_fds", "process_max_fds",
                           "process_start_time_seconds"}) {
    EXPECT_TRUE(sampled.count(name)) << name;
  }
  EXPECT_TRUE(hasLine(text, "process_cpu_seconds_total 1.5")) << text;
  EXPECT_TRUE(hasLine(text, "process_max_fds 1024")) << text;
}

TEST(ProcessStats, ParsesProcStat) {
  // A comm with a space and a ')' (fields count from the last ')'); utime 150, stime 50
  // ticks, starttime 1000 ticks, vsize 123456789, rss 2000 pages.
  const std::string stat =
      "4242 (co ap)2mqtt) S 1 4242 4242 0 -1 4194560 1 0 0 0 150 50 0 0 20 0 3 0 1000 "
      "123456789 2000 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 17 1 0 0 0 0 0\n";
  const std::string proc_stat = "cpu  1 2 3\nintr 5\nbtime 1764800000\nprocesses 9\n";
  const auto p = parseProcStat(stat, proc_stat, 100, 4096);
  ASSERT_TRUE(p);
  EXPECT_DOUBLE_EQ(p->cpu_seconds, 2.0);
  EXPECT_DOUBLE_EQ(p->start_time_seconds, 1764800010.0);
  EXPECT_DOUBLE_EQ(p->virtual_bytes, 123456789.0);
  EXPECT_DOUBLE_EQ(p->resident_bytes, 2000.0 * 4096);
  EXPECT_FALSE(parseProcStat(stat, "cpu 1\n", 100, 4096)) << "no btime";
  EXPECT_FALSE(parseProcStat("4242 (x) S 1 2 3\n", proc_stat, 100, 4096)) << "too few fields";
  EXPECT_FALSE(parseProcStat("garbage", proc_stat, 100, 4096));
  EXPECT_FALSE(parseProcStat(stat, proc_stat, 0, 4096));
}

TEST(ProcessStats, ReadsThisProcess) {
  const auto p = readProcessStats();
  ASSERT_TRUE(p);
  EXPECT_GT(p->resident_bytes, 0);
  EXPECT_GE(p->virtual_bytes, p->resident_bytes);
  ASSERT_TRUE(p->open_fds);
  EXPECT_GE(*p->open_fds, 3) << "stdin, stdout, stderr at least";
  const auto now = std::chrono::duration_cast<std::chrono::seconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                       .count();
  EXPECT_LE(p->start_time_seconds, static_cast<double>(now) + 1);
  EXPECT_GT(p->start_time_seconds, static_cast<double>(now) - 24 * 3600)
      << "this test process started today";
}

// docs/grafana-dashboard.json imports as it is: well-formed JSON, the datasource an input,
// and every metric a panel queries is one the gateway exposes.
TEST(GrafanaDashboard, IsImportableAndQueriesExposedMetrics) {
  std::ifstream in(std::string(C2M_SOURCE_DIR) + "/docs/grafana-dashboard.json");
  ASSERT_TRUE(in) << "docs/grafana-dashboard.json missing";
  nlohmann::json dash;
  ASSERT_NO_THROW(dash = nlohmann::json::parse(in));
  ASSERT_TRUE(dash.contains("__inputs"));
  bool ds_input = false;
  for (const auto& input : dash["__inputs"]) {
    if (input.value("name", "") == "DS_PROMETHEUS" && input.value("type", "") == "datasource" &&
        input.value("pluginId", "") == "prometheus") {
      ds_input = true;
    }
  }
  EXPECT_TRUE(ds_input) << "the datasource must be an input (${DS_PROMETHEUS})";

  ProcessStats p;
  p.open_fds = 1;
  p.max_fds = 1;
  std::set<std::string> exposed;
  for (const auto& f : gatewayFamilies(knownSnapshot(), p)) exposed.insert(f.name);

  const std::regex metric(R"((coap2mqtt_[a-z0-9_]+|process_[a-z0-9_]+))");
  std::set<std::string> queried;
  std::size_t panels = 0;
  ASSERT_TRUE(dash["panels"].is_array());
  for (const auto& panel : dash["panels"]) {
    if (panel.value("type", "") == "row") continue;
    ++panels;
    EXPECT_EQ(panel["datasource"]["uid"], "${DS_PROMETHEUS}") << panel.value("title", "");
    ASSERT_TRUE(panel["targets"].is_array()) << panel.value("title", "");
    for (const auto& target : panel["targets"]) {
      const std::string expr = target.at("expr");
      for (std::sregex_iterator it(expr.begin(), expr.end(), metric), end; it != end; ++it) {
        queried.insert((*it)[1]);
      }
    }
  }
  EXPECT_GE(panels, 8u);
  for (const auto& name : queried) EXPECT_TRUE(exposed.count(name)) << name << " not exposed";
  for (const char* name :
       {"coap2mqtt_notifications_total", "coap2mqtt_mqtt_published_total",
        "coap2mqtt_outbox_messages", "coap2mqtt_devices", "coap2mqtt_dropped_total",
        "coap2mqtt_commands_total", "coap2mqtt_mqtt_connected", "process_resident_memory_bytes",
        "process_cpu_seconds_total"}) {
    EXPECT_TRUE(queried.count(name)) << "no panel shows " << name;
  }
}

}  // namespace
