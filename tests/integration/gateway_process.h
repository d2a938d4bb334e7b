#pragma once
// Starts the coap2mqtt binary under test on a generated gateway.toml.
#include <memory>
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

}  // namespace coap2mqtt::test
