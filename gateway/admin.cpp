#include "gateway/admin.h"

#include <algorithm>
#include <optional>

#include <spdlog/spdlog.h>

#include "bridge/uri_path.h"
#include "gateway/command_router.h"
#include "gateway/commands.h"
#include "gateway/devices.h"
#include "gateway/mqtt_link.h"
#include "gateway/multicast_source.h"
#include "gateway/stats.h"

namespace coap2mqtt::gateway {

using Json = admin::Json;

AdminApi::AdminApi(const GatewayConfig& config, MqttLink& mqtt, Devices& devices,
                   MulticastSource& multicast, CommandRouter& commands, const Stats& stats,
                   Reload reload)
    : config_(config),
      mqtt_(mqtt),
      devices_(devices),
      multicast_(multicast),
      commands_(commands),
      stats_(stats),
      reload_(std::move(reload)),
      prefix_(config.mqtt.base_topic + "/bridge/request/") {
  handlers_ = {
      {"discover", [this](const admin::Request& r, const Respond& out) { discover(r, out); }},
      {"device/rename", [this](const admin::Request& r, const Respond& out) { rename(r, out); }},
      {"device/remove", [this](const admin::Request& r, const Respond& out) { remove(r, out); }},
      {"device/read", [this](const admin::Request& r, const Respond& out) { read(r, out); }},
      {"rules/reload",
       [this](const admin::Request& r, const Respond& out) { reloadRules(r, out); }},
      {"health_check",
       [this](const admin::Request& r, const Respond& out) {
         out(r, Stats::healthJson(stats_.snapshot()), "");
       }},
      {"info",
       [this](const admin::Request& r, const Respond& out) { out(r, stats_.infoJson(), ""); }},
  };
}

std::string AdminApi::requestFilter() const {
  return prefix_ + "#";
}

bool AdminApi::onMessage(const std::string& topic, const std::string& payload,
                         const MqttMessageMeta& meta) {
  if (topic.rfind(prefix_, 0) != 0) return false;
  const std::string op = topic.substr(prefix_.size());
  const auto now = std::chrono::steady_clock::now();
  if (meta.retained || !config_.admin.enabled) {
    // Not answered: a retained request is not a request of now, and with the API off we
    // are not subscribed (only an overlapping [[command]] filter brings one here).
    (meta.retained ? retained_ignored_ : refused_)++;
    if (refused_log_.failed(now)) {
      spdlog::warn("admin request {} ignored ({} since the last report): {}", op,
                   refused_log_.unreported(),
                   meta.retained ? "retained (requests must not be retained)"
                                 : "the admin API is off ([admin] enabled = false)");
      refused_log_.reported();
    }
    return true;
  }
  dispatch(admin::parseRequest(op, payload),
           [this](const admin::Request& r, const Json& data, const std::string& error) {
             respond(r, data, error);
           });
  return true;
}

void AdminApi::run(const std::string& op, const std::string& payload, Reply reply) {
  Respond out = [reply = std::move(reply)](const admin::Request& r, const Json& data,
                                           const std::string& error) {
    reply(admin::response(r, data, error));
  };
  admin::Request request = admin::parseRequest(op, payload);
  if (!config_.admin.enabled) {
    ++refused_;
    out(request, Json::object(), "the admin API is off ([admin] enabled = false)");
    return;
  }
  dispatch(std::move(request), out);
}

void AdminApi::dispatch(admin::Request request, const Respond& out) {
  const std::string& op = request.op;
  if (request.error) {
    out(request, Json::object(), *request.error);
    return;
  }
  auto handler = handlers_.find(op);
  if (handler == handlers_.end()) {
    out(request, Json::object(), admin::unknownOperation(op));
  } else if (const auto& allow = config_.admin.allow;
             allow && std::find(allow->begin(), allow->end(), op) == allow->end()) {
    ++refused_;
    if (refused_log_.failed(std::chrono::steady_clock::now())) {
      spdlog::warn("admin request {} refused ({} since the last report): not in [admin] allow", op,
                   refused_log_.unreported());
      refused_log_.reported();
    }
    out(request, Json::object(), "operation '" + op + "' is not allowed here ([admin] allow)");
  } else {
    handler->second(request, out);
  }
}

void AdminApi::respond(const admin::Request& request, const Json& data, const std::string& error) {
  mqtt_.publish(config_.mqtt.base_topic + "/bridge/response/" + request.op,
                admin::response(request, data, error), 1, false);
}

void AdminApi::discover(const admin::Request& request, const Respond& respond) {
  if (!multicast_.enabled()) {
    respond(request, Json::object(),
            "multicast discovery is off (coap.discovery.multicast is empty)");
    return;
  }
  multicast_.runRound([respond, request](const std::vector<std::string>& names) {
    respond(request, Json{{"devices", names}}, "");
  });
}

void AdminApi::rename(const admin::Request& request, const Respond& respond) {
  std::string error;
  auto from = admin::stringField(request, "from", &error);
  auto to = from ? admin::stringField(request, "to", &error) : std::nullopt;
  if (from && to) error = devices_.rename(*from, *to);
  respond(request, Json{{"from", from.value_or("")}, {"to", to.value_or("")}}, error);
}

void AdminApi::remove(const admin::Request& request, const Respond& respond) {
  std::string error;
  auto name = admin::stringField(request, "device", &error);
  if (name) error = devices_.forget(*name);
  respond(request, name ? Json{{"device", *name}} : Json::object(), error);
}

// device/read {"device","path"}: a CoAP GET now, through the device's command queue, where
// a [[command]] with method = "GET" allows it (bridge::planRead), like a GET command.
void AdminApi::read(const admin::Request& request, const Respond& respond) {
  std::string error;
  auto device = admin::stringField(request, "device", &error);
  auto path = device ? admin::stringField(request, "path", &error) : std::nullopt;
  if (path && path->front() != '/') *path = "/" + *path;
  std::optional<CommandRequest> get;
  if (device && path) {
    auto planned = bridge::planRead(config_.rules, devices_.registry(), *device, *path);
    if (auto* refused = std::get_if<RefusedCommand>(&planned)) {
      error = refused->error;
      *path = refused->context.path;
    } else {
      get = std::get<CommandRequest>(std::move(planned));
      *path = bridge::percentDecode(get->path);  // the path as the device gets it
    }
  }
  if (!get) {
    Json data = Json::object();
    if (device) data["device"] = *device;
    if (path) data["path"] = *path;
    respond(request, data, error);
    return;
  }
  commands_.read(
      std::move(*get), [respond, request, device = *device, path = *path](const CommandOutcome& o) {
        Json data{{"device", device}, {"path", path}, {"latency_ms", o.latency.count()}};
        std::string problem;
        if (o.kind == CommandOutcome::Kind::Answered) {
          data["code"] = coapCodeString(o.reply.code);
          data["payload"] = Json::parse(
              responsePayloadJson(o.reply.content_format, o.reply.payload), nullptr, false);
          if (o.reply.code / 100 != 2) {
            problem = "device answered " + data["code"].get<std::string>();
          }
        } else {
          problem = o.error;
        }
        respond(request, data, problem);
      });
}

void AdminApi::reloadRules(const admin::Request& request, const Respond& respond) {
  ReloadResult result = reload_();
  respond(request, result.data, result.error);
}

}  // namespace coap2mqtt::gateway
