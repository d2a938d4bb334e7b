#pragma once
// The web page's JSON API on the loop thread (issue 22). gateway/web_server.cpp (httplib's
// threads) posts each /api/ request here and waits for its reply; nothing here knows HTTP
// beyond a method, a path and a status.
//
// Reads build their JSON from the components as they are now: devices (gateway/devices.h),
// the watched resources and their latest values (ValueSlot), the rules, gateway/stats.h.
// Actions are the admin API's operations through AdminApi::run (the same table, the same
// [admin] allow) and commands through CommandRouter::submit (the same [[command]]
// allow-list as MQTT): the page can do nothing the MQTT API cannot.
//
// Live: typed events (gateway/events.h) become Server-Sent Events on a WebEventHub.
// Values are coalesced (the latest per resource, sent every kValueFlush), so a flood of
// notifications costs the loop one map write per value while a browser watches, nothing
// when none does. A 1 s timer samples the message counters into a ring of the last
// kRateSeconds seconds (the health page's chart).
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "gateway/config.h"
#include "gateway/events.h"
#include "gateway/web_events.h"

namespace coap2mqtt::gateway {

class AdminApi;
class CommandRouter;
class Devices;
class EventLoop;
class Observer;
class Stats;
class ValuePublisher;

struct WebRequest {
  std::string method;                         // GET | POST
  std::string path;                           // "/api/devices"
  std::map<std::string, std::string> params;  // query parameters
  std::string body;                           // POST: a JSON object
};
struct WebResponse {
  int status = 200;
  std::string body;  // JSON
};

class WebApi {
 public:
  using Json = nlohmann::json;
  using Reply = std::function<void(WebResponse)>;
  // The last failed reload's errors (file:line:col lines); empty when the last one worked.
  using ReloadError = std::function<std::string()>;

  static constexpr std::chrono::milliseconds kValueFlush{250};
  static constexpr std::size_t kRateSeconds = 300;
  static constexpr std::size_t kMaxValueBytes = 4096;  // longer values are cut for the page

  WebApi(const GatewayConfig& config, EventLoop& loop, Devices& devices, Observer& observer,
         const ValuePublisher& values, const Stats& stats, AdminApi& admin, CommandRouter& commands,
         Events& events, WebEventHub& hub, ReloadError reload_error);

  // Starts the 1 s sampling (only when the page is on).
  void start();
  void stop();
  // Loop thread. `reply` is called once, now or later (a command waits for its device).
  void handle(const WebRequest& request, Reply reply);

 private:
  struct Sample {
    std::int64_t t_ms = 0;
    std::uint64_t notifications = 0;  // in that second
    std::uint64_t published = 0;
  };
  struct PendingValue {
    std::string device;
    std::string path;
    std::optional<unsigned> ct;
    std::string payload;
    std::int64_t time_ms = 0;
  };

  void route(const WebRequest& request, const Reply& reply);
  Json deviceSummary(const registry::Device& device) const;
  Json devicesJson();
  std::optional<Json> deviceJson(const std::string& name);
  Json rulesJson();
  Json healthJson() const;
  Json rateJson() const;
  static Json valueJson(std::optional<unsigned> ct, const std::string& payload);
  void admin(const std::string& op, const std::string& body, const Reply& reply);
  void command(const WebRequest& request, const Reply& reply);
  void sample();
  void flushValues();
  void onValue(const ValueReceived& v);
  void publishDevice(const registry::Device& device);

  const GatewayConfig& config_;
  EventLoop& loop_;
  Devices& devices_;
  Observer& observer_;
  const ValuePublisher& values_;
  const Stats& stats_;
  AdminApi& admin_;
  CommandRouter& commands_;
  WebEventHub& hub_;
  ReloadError reload_error_;
  std::uint64_t sample_timer_ = 0;
  std::uint64_t flush_timer_ = 0;
  bool running_ = false;
  std::deque<Sample> rate_;
  std::uint64_t last_notifications_ = 0;
  std::uint64_t last_published_ = 0;
  std::map<std::string, PendingValue> pending_values_;  // by device + '\n' + path
  Json last_discovery_ = nullptr;
};

}  // namespace coap2mqtt::gateway
