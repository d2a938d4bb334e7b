#pragma once
// The daemon's command line: `coap2mqtt [-c FILE] [-l LEVEL] [run|check|devices|discover]`.
// Its own file so that CLI11, a header library whose templates cost more to compile than
// the rest of main (25 s of 33 at -O2, over a minute under ASan+UBSan), is compiled once,
// apart, and left uninstrumented in the sanitizer trees like the other third-party code.
#include <optional>
#include <string>
#include <vector>

namespace coap2mqtt::gateway {

struct CommandLine {
  enum class Command { Run, Check, Devices, Discover };
  Command command = Command::Run;
  std::string config_path = "/etc/coap2mqtt/gateway.toml";
  std::string log_level;  // empty: the config's
  bool json = false;      // devices --json
  // discover
  std::string timeout = "6s";
  std::vector<std::string> groups;
  std::vector<std::string> interfaces;
  // Set when parsing alone ends the run (--help, --version, a bad argument): what was to be
  // printed has been, and this is the exit status.
  std::optional<int> exit_status;
};

CommandLine parseCommandLine(int argc, const char* const* argv);

}  // namespace coap2mqtt::gateway
