#pragma once
// The admin API on MQTT: <base>/bridge/request/<op> → <base>/bridge/response/<op>, as a
// table of op → handler (the message format is gateway/admin_api.h).
#include <functional>
#include <map>
#include <string>

#include "gateway/admin_api.h"
#include "gateway/config.h"

namespace coap2mqtt::gateway {

class CommandRouter;
class Devices;
class MqttLink;
class MulticastSource;
class Stats;

class AdminApi {
 public:
  struct ReloadResult {
    std::string error;  // empty: applied
    admin::Json data = admin::Json::object();
  };
  using Reload = std::function<ReloadResult()>;

  AdminApi(const GatewayConfig& config, MqttLink& mqtt, Devices& devices,
           MulticastSource& multicast, CommandRouter& commands, const Stats& stats, Reload reload);

  std::string requestFilter() const;  // <base>/bridge/request/#
  // True when `topic` was an admin request (handled); false for any other topic.
  bool onMessage(const std::string& topic, const std::string& payload);

 private:
  using Handler = std::function<void(const admin::Request&)>;
  void respond(const admin::Request& request, const admin::Json& data, const std::string& error);
  void discover(const admin::Request& request);
  void rename(const admin::Request& request);
  void remove(const admin::Request& request);
  void read(const admin::Request& request);
  void reloadRules(const admin::Request& request);

  const GatewayConfig& config_;
  MqttLink& mqtt_;
  Devices& devices_;
  MulticastSource& multicast_;
  CommandRouter& commands_;
  const Stats& stats_;
  Reload reload_;
  std::string prefix_;  // <base>/bridge/request/
  std::map<std::string, Handler, std::less<>> handlers_;
};

}  // namespace coap2mqtt::gateway
