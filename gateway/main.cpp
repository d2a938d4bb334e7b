// coap2mqtt: a CoAP → MQTT border gateway.
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <iostream>

#include <coap3/coap.h>

#include <nlohmann/json.hpp>

#include "bridge/config_error.h"
#include "gateway/command_line.h"
#include "gateway/config.h"
#include "gateway/config_credentials.h"
#include "gateway/event_loop.h"
#include "gateway/gateway.h"
#include "gateway/logging.h"
#include "gateway/multicast_discovery.h"
#include "registry/link_format.h"
#include "registry/store.h"

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

int printErrors(const ConfigErrors& e) {
  for (const auto& error : e.errors()) std::cerr << error.toString() << "\n";
  std::cerr << e.errors().size() << " error(s)\n";
  return 1;
}

int check(const std::string& path) {
  try {
    GatewayConfig config = coap2mqtt::gateway::loadConfig(path);
    for (const auto& warning : coap2mqtt::gateway::secretFileWarnings(config)) {
      std::cerr << "warning: " << warning << "\n";
    }
    std::cout << path << ": OK (" << config.devices.size() << " device(s), "
              << config.rules.rules.size() << " rule(s), " << config.rules.commands.size()
              << " command(s), " << config.rules.inbound.size() << " inbound)\n";
    return 0;
  } catch (const ConfigErrors& e) {
    return printErrors(e);
  }
}

std::string joined(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& i : items) out += (out.empty() ? "" : " ") + i;
  return out;
}

// Reads the registry database (read-only: safe while the daemon runs).
int devices(const std::string& path, bool json) {
  GatewayConfig config;
  try {
    config = coap2mqtt::gateway::loadConfig(path);
  } catch (const ConfigErrors& e) {
    return printErrors(e);
  }
  const std::string db = config.state_dir + "/registry.db";
  std::vector<coap2mqtt::registry::Device> all;
  try {
    coap2mqtt::registry::Store store(db, coap2mqtt::registry::Store::Mode::ReadOnly);
    all = store.loadAll();
  } catch (const std::exception& e) {
    std::cerr << "coap2mqtt: " << e.what() << "\n";
    return 1;
  }
  if (json) {
    nlohmann::json list = nlohmann::json::array();
    for (const auto& d : all) {
      nlohmann::json resources = nlohmann::json::array();
      for (const auto& r : d.resources) {
        nlohmann::json res{
            {"path", r.path}, {"obs", r.obs}, {"rt", r.rt}, {"if", r.ifs}, {"ct", r.ct}};
        if (r.sz) res["sz"] = *r.sz;
        if (r.title) res["title"] = *r.title;
        resources.push_back(std::move(res));
      }
      auto ms = [](std::chrono::system_clock::time_point t) {
        return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
      };
      list.push_back({{"name", d.name},
                      {"friendly_name", d.friendly_name},
                      {"uri", d.uri},
                      {"source", coap2mqtt::registry::toString(d.source)},
                      {"online", d.online},
                      {"first_seen", ms(d.first_seen)},
                      {"last_seen", ms(d.last_seen)},
                      {"resources", std::move(resources)}});
    }
    std::cout << list.dump(2) << "\n";
    return 0;
  }
  std::printf("%-28s %-8s %-10s %-36s %s\n", "NAME", "ONLINE", "SOURCE", "URI", "RESOURCES");
  for (const auto& d : all) {
    std::string resources;
    for (const auto& r : d.resources) {
      resources += (resources.empty() ? "" : " ") + r.path + (r.obs ? "(obs)" : "");
    }
    std::printf("%-28s %-8s %-10s %-36s %s\n", d.name.c_str(), d.online ? "yes" : "no",
                coap2mqtt::registry::toString(d.source), d.uri.c_str(), resources.c_str());
  }
  std::printf("%zu device(s)\n", all.size());
  return 0;
}

// One multicast round, printed as it comes in; nothing is stored.
int discover(const std::string& path, const std::string& timeout_text,
             const std::vector<std::string>& groups, const std::vector<std::string>& interfaces) {
  GatewayConfig config;
  try {
    config = coap2mqtt::gateway::loadConfig(path);
  } catch (const ConfigErrors& e) {
    return printErrors(e);
  }
  auto& d = config.coap.discovery;
  if (!groups.empty()) d.multicast = groups;
  if (!interfaces.empty()) d.interfaces = interfaces;
  if (d.multicast.empty()) d.multicast = {"224.0.1.187"};
  auto window = coap2mqtt::gateway::parseDuration(timeout_text);
  if (!window) {
    std::cerr << "coap2mqtt: --timeout: expected a duration such as 6s, got " << timeout_text
              << "\n";
    return 2;
  }
  std::vector<coap2mqtt::gateway::MulticastDiscovery::Target> targets;
  for (const auto& g : d.multicast) {
    if (d.interfaces.empty()) targets.push_back({g, ""});
    for (const auto& i : d.interfaces) targets.push_back({g, i});
  }
  coap2mqtt::gateway::EventLoop loop;
  coap2mqtt::gateway::MulticastDiscovery discovery(loop, d.port);
  std::size_t found = 0;
  const bool started = discovery.start(
      targets, *window, d.query,
      [](const coap2mqtt::gateway::DiscoveryAnswer& a) {
        std::cout << a.uri << "\n";
        auto links = coap2mqtt::registry::parseLinkFormat(a.payload);
        for (const auto& link : links.links) {
          std::cout << "  " << link.target;
          if (!link.rt.empty()) std::cout << " rt=" << joined(link.rt);
          if (link.obs) std::cout << " obs";
          std::cout << "\n";
        }
        std::cout.flush();
      },
      [&](std::size_t n) {
        found = n;
        loop.stop();
      });
  if (!started) {
    std::cerr << "coap2mqtt: could not send the discovery request\n";
    return 1;
  }
  loop.run();
  std::cout << found << " device(s) answered\n";
  return 0;
}

int run(const std::string& path, const std::string& log_level) {
  GatewayConfig config;
  try {
    config = coap2mqtt::gateway::loadConfig(path);
  } catch (const ConfigErrors& e) {
    return printErrors(e);
  }
  coap2mqtt::gateway::setupLogging(log_level.empty() ? config.log_level : log_level);
  // Block the signals before any thread exists so that only the loop's signalfd sees them.
  sigset_t set;
  sigemptyset(&set);
  for (int s : {SIGTERM, SIGINT, SIGHUP}) sigaddset(&set, s);
  if (coap2mqtt::gateway::testStallOnSigusr1().count() > 0) sigaddset(&set, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::signal(SIGPIPE, SIG_IGN);
  CoapRuntime coap_runtime;
  coap2mqtt::gateway::Gateway gateway(std::move(config));
  return gateway.run();
}

}  // namespace

int main(int argc, char** argv) {
  using coap2mqtt::gateway::CommandLine;
  const CommandLine cl = coap2mqtt::gateway::parseCommandLine(argc, argv);
  if (cl.exit_status) return *cl.exit_status;
  try {
    switch (cl.command) {
      case CommandLine::Command::Check:
        return check(cl.config_path);
      case CommandLine::Command::Devices:
        return devices(cl.config_path, cl.json);
      case CommandLine::Command::Discover:
        return discover(cl.config_path, cl.timeout, cl.groups, cl.interfaces);
      case CommandLine::Command::Run:
        break;
    }
    return run(cl.config_path, cl.log_level);
  } catch (const std::exception& e) {
    std::cerr << "coap2mqtt: " << e.what() << "\n";
    return 2;
  }
}
