#include "gateway/command_line.h"

#include <CLI/CLI.hpp>

namespace coap2mqtt::gateway {

CommandLine parseCommandLine(int argc, const char* const* argv) {
  CommandLine out;
  CLI::App app{"coap2mqtt — bridges CoAP devices to MQTT"};
  app.set_version_flag("--version", std::string("coap2mqtt ") + COAP2MQTT_VERSION);
  app.add_option("-c,--config", out.config_path, "gateway configuration file");
  app.add_option("-l,--log-level", out.log_level,
                 "trace|debug|info|warn|error|critical|off (overrides the config)");
  app.fallthrough();
  app.add_subcommand("run", "run the gateway in the foreground (default)");
  auto* check_cmd =
      app.add_subcommand("check", "validate the configuration and rules; exit 1 on error");
  auto* devices_cmd = app.add_subcommand("devices", "list what the registry knows");
  devices_cmd->add_flag("--json", out.json, "print JSON");
  auto* discover_cmd =
      app.add_subcommand("discover", "one multicast /.well-known/core round; print who answers");
  discover_cmd->add_option("--timeout", out.timeout, "how long to collect answers (default 6s)");
  discover_cmd->add_option("--group", out.groups, "multicast group (default: from the config)");
  discover_cmd->add_option("--interface", out.interfaces, "interface (default: from the config)");
  app.require_subcommand(0, 1);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    out.exit_status = app.exit(e);
    return out;
  }
  if (*check_cmd) out.command = CommandLine::Command::Check;
  if (*devices_cmd) out.command = CommandLine::Command::Devices;
  if (*discover_cmd) out.command = CommandLine::Command::Discover;
  return out;
}

}  // namespace coap2mqtt::gateway
