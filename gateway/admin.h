#pragma once
// The admin API on MQTT: <base>/bridge/request/<op> → <base>/bridge/response/<op>, as a
// table of op → handler (the message format is gateway/admin_api.h).
#include <cstdint>
#include <functional>
#include <map>
#include <string>

#include "gateway/admin_api.h"
#include "gateway/config.h"
#include "gateway/repeated_failure.h"

namespace coap2mqtt::gateway {

class CommandRouter;
class Devices;
class MqttLink;
class MulticastSource;
class Stats;
struct MqttMessageMeta;

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
  // False when [admin] enabled = false: then nobody subscribes to requestFilter().
  bool enabled() const { return config_.admin.enabled; }
  // True when `topic` was an admin request (handled, or ignored: retained, the API off);
  // false for any other topic. An operation left out of [admin] allow gets an error
  // response; a retained request (the broker's stored copy, sent again at every
  // (re)subscription) is never run. Both are counted.
  bool onMessage(const std::string& topic, const std::string& payload, const MqttMessageMeta& meta);

  // The same operations for the web page (gateway/web_api.h): `op` and its JSON request
  // body run through the same table and the same [admin] allow as on MQTT; the response
  // (admin::response's JSON text) goes to `reply` instead of bridge/response/<op>, on the
  // loop thread, now or later (discover, device/read). The API turned off refuses too.
  using Reply = std::function<void(const std::string& response)>;
  void run(const std::string& op, const std::string& payload, Reply reply);

  std::uint64_t refused() const { return refused_; }  // turned off, or not in [admin] allow
  std::uint64_t retainedIgnored() const { return retained_ignored_; }

 private:
  // How a handler answers: on MQTT (bridge/response/<op>) or to the web page's Reply.
  using Respond =
      std::function<void(const admin::Request&, const admin::Json& data, const std::string& error)>;
  using Handler = std::function<void(const admin::Request&, const Respond&)>;
  void dispatch(admin::Request request, const Respond& respond);
  void respond(const admin::Request& request, const admin::Json& data, const std::string& error);
  void discover(const admin::Request& request, const Respond& respond);
  void rename(const admin::Request& request, const Respond& respond);
  void remove(const admin::Request& request, const Respond& respond);
  void read(const admin::Request& request, const Respond& respond);
  void reloadRules(const admin::Request& request, const Respond& respond);

  const GatewayConfig& config_;
  MqttLink& mqtt_;
  Devices& devices_;
  MulticastSource& multicast_;
  CommandRouter& commands_;
  const Stats& stats_;
  Reload reload_;
  std::string prefix_;  // <base>/bridge/request/
  std::map<std::string, Handler, std::less<>> handlers_;
  std::uint64_t refused_ = 0;
  std::uint64_t retained_ignored_ = 0;
  RepeatedFailure refused_log_;
};

}  // namespace coap2mqtt::gateway
