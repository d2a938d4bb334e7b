#include "gateway/admin_api.h"

#include "bridge/json_parse.h"

namespace coap2mqtt::gateway::admin {

const std::vector<std::string>& operations() {
  static const std::vector<std::string> ops{"discover",    "device/remove", "device/rename",
                                            "device/read", "rules/reload",  "health_check",
                                            "info"};
  return ops;
}

Request parseRequest(std::string_view op, std::string_view payload) {
  Request r;
  r.op = std::string(op);
  const bool blank = payload.find_first_not_of(" \t\r\n") == std::string_view::npos;
  if (blank) return r;
  std::string parse_error;
  std::optional<Json> body = bridge::parseJson(payload, &parse_error);
  if (!body) {
    r.error = parse_error;
  } else if (!body->is_object()) {
    r.error = std::string("expected a JSON object, got ") + body->type_name();
  } else {
    r.body = std::move(*body);
  }
  return r;
}

std::string response(const Request& request, const Json& data, std::string_view error) {
  Json out{{"status", error.empty() ? "ok" : "error"},
           {"data", data.is_null() ? Json::object() : data}};
  if (!error.empty()) out["error"] = std::string(error);
  if (auto t = request.body.find("transaction"); t != request.body.end()) {
    out["transaction"] = *t;
  }
  return out.dump();
}

std::optional<std::string> stringField(const Request& request, const char* key,
                                       std::string* error) {
  auto it = request.body.find(key);
  if (it == request.body.end()) {
    *error = std::string("missing \"") + key + "\"";
    return std::nullopt;
  }
  if (!it->is_string() || it->get_ref<const std::string&>().empty()) {
    *error = std::string("\"") + key + "\" must be a non-empty string";
    return std::nullopt;
  }
  return it->get<std::string>();
}

std::string unknownOperation(std::string_view op) {
  std::string list;
  for (const auto& o : operations()) list += (list.empty() ? "" : ", ") + o;
  return "unknown request '" + std::string(op) + "'; expected one of: " + list;
}

}  // namespace coap2mqtt::gateway::admin
