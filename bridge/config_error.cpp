#include "bridge/config_error.h"

#include <utility>

namespace coap2mqtt::bridge {

namespace {

std::string joinErrors(const std::vector<ConfigError>& errors) {
  std::string out;
  for (const auto& e : errors) {
    if (!out.empty()) out += '\n';
    out += e.toString();
  }
  return out;
}

}  // namespace

std::string ConfigError::toString() const {
  std::string out = file;
  if (line != 0) {
    out += ':' + std::to_string(line);
    if (column != 0) out += ':' + std::to_string(column);
  }
  if (!out.empty()) out += ": ";
  if (!key.empty()) out += key + ": ";
  out += message;
  return out;
}

ConfigErrors::ConfigErrors(std::vector<ConfigError> errors)
    : std::runtime_error(joinErrors(errors)), errors_(std::move(errors)) {}

}  // namespace coap2mqtt::bridge
