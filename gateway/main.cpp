// coap2mqtt: a CoAP → MQTT border gateway.
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <iostream>

#include <coap3/coap.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#include "bridge/config_error.h"
#include "gateway/config.h"
#include "gateway/gateway.h"

namespace {

using coap2mqtt::bridge::ConfigErrors;
using coap2mqtt::gateway::GatewayConfig;

// Pairs coap_startup()/coap_cleanup() for the whole process.
struct CoapRuntime {
  CoapRuntime() { coap_startup(); }
  ~CoapRuntime() { coap_cleanup(); }
  CoapRuntime(const CoapRuntime&) = delete;
  CoapRuntime& operator=(const CoapRuntime&) = delete;
};

void setupLogging(const std::string& level) {
  // Colours only on a terminal; journald and log files get plain text.
  auto logger = isatty(STDERR_FILENO) ? spdlog::stderr_color_mt("coap2mqtt")
                                      : spdlog::stderr_logger_mt("coap2mqtt");
  spdlog::set_default_logger(logger);
  spdlog::set_pattern(isatty(STDERR_FILENO) ? "%Y-%m-%d %H:%M:%S.%e %^%-5l%$ %v"
                                            : "%Y-%m-%d %H:%M:%S.%e %-5l %v");
  spdlog::set_level(spdlog::level::from_str(level));
  spdlog::flush_on(spdlog::level::info);
}

int printErrors(const ConfigErrors& e) {
  for (const auto& error : e.errors()) std::cerr << error.toString() << "\n";
  std::cerr << e.errors().size() << " error(s)\n";
  return 1;
}

int check(const std::string& path) {
  try {
    GatewayConfig config = coap2mqtt::gateway::loadConfig(path);
    std::cout << path << ": OK (" << config.devices.size() << " device(s), "
              << config.rules.rules.size() << " rule(s), " << config.rules.commands.size()
              << " command(s))\n";
    return 0;
  } catch (const ConfigErrors& e) {
    return printErrors(e);
  }
}

int run(const std::string& path, const std::string& log_level) {
  GatewayConfig config;
  try {
    config = coap2mqtt::gateway::loadConfig(path);
  } catch (const ConfigErrors& e) {
    return printErrors(e);
  }
  setupLogging(log_level.empty() ? config.log_level : log_level);
  // Block the signals before any thread exists so that only the loop's signalfd sees them.
  sigset_t set;
  sigemptyset(&set);
  for (int s : {SIGTERM, SIGINT, SIGHUP}) sigaddset(&set, s);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::signal(SIGPIPE, SIG_IGN);
  CoapRuntime coap_runtime;
  coap2mqtt::gateway::Gateway gateway(std::move(config));
  return gateway.run();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"coap2mqtt — bridges CoAP devices to MQTT"};
  app.set_version_flag("--version", std::string("coap2mqtt ") + COAP2MQTT_VERSION);
  std::string config_path = "/etc/coap2mqtt/gateway.toml";
  std::string log_level;
  app.add_option("-c,--config", config_path, "gateway configuration file");
  app.add_option("-l,--log-level", log_level,
                 "trace|debug|info|warn|error|critical|off (overrides the config)");
  app.fallthrough();
  auto* run_cmd = app.add_subcommand("run", "run the gateway in the foreground (default)");
  auto* check_cmd =
      app.add_subcommand("check", "validate the configuration and rules; exit 1 on error");
  app.require_subcommand(0, 1);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    if (*check_cmd) return check(config_path);
    (void)run_cmd;
    return run(config_path, log_level);
  } catch (const std::exception& e) {
    std::cerr << "coap2mqtt: " << e.what() << "\n";
    return 2;
  }
}
