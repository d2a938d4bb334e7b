#include "gateway/commands.h"

#include <nlohmann/json.hpp>

#include "bridge/transform.h"

namespace coap2mqtt::gateway {
namespace {

using Json = nlohmann::json;

void addContext(Json& j, const CommandContext& c) {
  j["device"] = c.device;
  j["path"] = c.path;
  j["method"] = bridge::toString(c.method);
  if (c.transaction) j["transaction"] = Json::parse(*c.transaction, nullptr, false);
}

}  // namespace

std::string coapCodeString(unsigned code) {
  std::string detail = std::to_string(code % 100);
  return std::to_string(code / 100) + (detail.size() < 2 ? ".0" : ".") + detail;
}

std::string responsePayloadJson(std::optional<unsigned> content_format, std::string_view body) {
  if (body.empty()) return "null";
  bridge::TransformResult r =
      bridge::transformPayload(bridge::PayloadMode::Json, content_format, body);
  if (r.ok()) return r.payload;
  return bridge::transformPayload(bridge::PayloadMode::Json, bridge::content_format::kOctetStream,
                                  body)
      .payload;
}

std::string commandResultJson(const CommandContext& context, const CommandOutcome& outcome) {
  Json j = Json::object();
  if (outcome.kind == CommandOutcome::Kind::Answered) {
    j["code"] = coapCodeString(outcome.reply.code);
    j["payload"] = Json::parse(
        responsePayloadJson(outcome.reply.content_format, outcome.reply.payload), nullptr, false);
  } else {
    j["error"] = outcome.error;
    j["reason"] = toString(outcome.kind);
  }
  j["latency_ms"] = outcome.latency.count();
  addContext(j, context);
  return j.dump();
}

std::string commandRefusedJson(const RefusedCommand& refused) {
  Json j{{"error", refused.error}, {"reason", refused.reason}};
  addContext(j, refused.context);
  return j.dump();
}

}  // namespace coap2mqtt::gateway
