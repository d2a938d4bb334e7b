#pragma once
// Starts the coap2mqtt binary under test on a generated gateway.toml.
#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "tests/integration/harness.h"

namespace coap2mqtt::test {

// Writes `toml` to dir/gateway.toml and runs `coap2mqtt run -c … -l debug`.
inline std::unique_ptr<Process> startGateway(const TempDir& dir, const std::string& toml) {
  dir.write("gateway.toml", toml);
  return std::make_unique<Process>(
      std::vector<std::string>{gatewayBinary(), "run", "-c", dir.file("gateway.toml"), "-l",
                               "debug"},
      dir.file("gateway.log"));
}

// The [mqtt] and [gateway] tables most tests share.
inline std::string baseConfig(const Mosquitto& broker, const TempDir& dir,
                              const std::string& base_topic = "c2m") {
  return "[gateway]\nname = \"test-gw\"\nstate_dir = \"" + dir.path() +
         "\"\n\n[coap]\nrequest_timeout = \"3s\"\nretry_interval = \"1s\"\n\n[mqtt]\nuri = \"" +
         broker.uri() + "\"\nclient_id = \"gw-under-test\"\nbase_topic = \"" + base_topic +
         "\"\n\n";
}

// [[coap.device]] tables dev0..dev<count-1> for a simulator on consecutive ports.
inline std::string simDevices(int port, int count) {
  std::string out;
  for (int i = 0; i < count; ++i) {
    out += "[[coap.device]]\nname = \"dev" + std::to_string(i) +
           "\"\nuri = \"coap://127.0.0.1:" + std::to_string(port + i) + "\"\n\n";
  }
  return out;
}

// The device simulator with `count` devices on 127.0.0.1:port.., ready when returned.
// `extra_args` go to the simulator as well (e.g. "--senml").
inline std::unique_ptr<Process> startSim(const TempDir& dir, int port, int count,
                                         const std::string& interval_ms = "200",
                                         const std::string& log = "sim.log",
                                         const std::vector<std::string>& extra_args = {}) {
  std::vector<std::string> argv{simulatorBinary(),    "--devices",  std::to_string(count),
                                "--address",          "127.0.0.1",  "--port",
                                std::to_string(port), "--interval", interval_ms};
  argv.insert(argv.end(), extra_args.begin(), extra_args.end());
  auto sim = std::make_unique<Process>(std::move(argv), dir.file(log));
  EXPECT_TRUE(sim->waitForOutput("READY", 10s)) << sim->output();
  return sim;
}

// The /sensors/counter values the simulator never sent, by device name (its SKIP lines: a
// CON notification still unacknowledged at a tick makes libcoap send only the newest value
// later). A gap there is not the gateway's loss.
inline std::map<std::string, std::set<long>> simSkippedValues(const Process& sim) {
  std::map<std::string, std::set<long>> out;
  std::istringstream lines(sim.output());
  std::string word;
  std::string device;
  long from = 0;
  long to = 0;
  for (std::string line; std::getline(lines, line);) {
    std::istringstream fields(line);
    if (!(fields >> word) || word != "SKIP" || !(fields >> device >> from >> to)) continue;
    for (long v = from; v <= to; ++v) out[device].insert(v);
  }
  return out;
}

}  // namespace coap2mqtt::test
