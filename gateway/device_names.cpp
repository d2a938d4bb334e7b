#include "gateway/device_names.h"

#include <cctype>

namespace coap2mqtt::gateway {
namespace {

bool isNameChar(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_' || c == '.' || c == '-';
}

std::string sanitize(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) out.push_back(isNameChar(c) && c != '.' ? c : '-');
  return out;
}

}  // namespace

bool isReservedDeviceName(std::string_view name) {
  return name == "bridge";
}

bool isValidDeviceName(std::string_view name) {
  if (name.empty() || name.size() > 64 || isReservedDeviceName(name)) return false;
  for (char c : name) {
    if (!isNameChar(c)) return false;
  }
  return true;
}

std::string deviceNameForAddress(std::string_view host, std::uint16_t port) {
  std::string name = "coap-" + sanitize(host);
  if (port != 5683) {
    // Not `"-" + std::to_string(port)`: GCC 12's -Wrestrict false positive (bug 105329).
    name += '-';
    name += std::to_string(port);
  }
  return name;
}

std::string deviceNameFromEndpoint(std::string_view ep) {
  std::string out;
  for (char c : ep.substr(0, 64)) out.push_back(isNameChar(c) ? c : '-');
  if (out.empty()) return "ep";
  if (isReservedDeviceName(out)) return "ep-" + out;
  return out;
}

}  // namespace coap2mqtt::gateway
