#pragma once
// The admin API's message format: <base>/bridge/request/<op> carries a JSON object (an
// empty payload counts as {}), <base>/bridge/response/<op> answers
// {"status":"ok"|"error","data":{...},"error":"...","transaction":<echoed>}. Pure; the
// gateway does the operations.
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace coap2mqtt::gateway::admin {

using Json = nlohmann::json;

// Every op the gateway answers (for "unknown request" messages and the README).
const std::vector<std::string>& operations();

struct Request {
  std::string op;
  Json body = Json::object();        // the request object (for fields and the transaction)
  std::optional<std::string> error;  // malformed: not JSON, or not an object
};

Request parseRequest(std::string_view op, std::string_view payload);

// The response JSON text; `error` empty for status "ok".
std::string response(const Request& request, const Json& data, std::string_view error);

// A required non-empty string field; nullopt and *error set otherwise.
std::optional<std::string> stringField(const Request& request, const char* key, std::string* error);

// "unknown request 'x'; expected one of: discover, ..."
std::string unknownOperation(std::string_view op);

}  // namespace coap2mqtt::gateway::admin
