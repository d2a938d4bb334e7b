#include "bridge/uri_path.h"

#include "bridge/hex.h"

namespace coap2mqtt::bridge {
namespace {

std::optional<UriPath> fail(std::string* error, std::string message) {
  if (error != nullptr) *error = std::move(message);
  return std::nullopt;
}

}  // namespace

std::string percentDecode(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '%' && i + 2 < text.size() && hexValue(text[i + 1]) >= 0 &&
        hexValue(text[i + 2]) >= 0) {
      out.push_back(static_cast<char>(hexValue(text[i + 1]) * 16 + hexValue(text[i + 2])));
      i += 2;
    } else {
      out.push_back(text[i]);
    }
  }
  return out;
}

std::optional<UriPath> decodeUriPath(std::string_view path, std::string* error) {
  if (!path.empty() && path.front() == '/') path.remove_prefix(1);
  if (path.empty()) return fail(error, "empty path");
  UriPath out;
  std::size_t index = 0;
  while (true) {
    ++index;
    const std::size_t slash = path.find('/');
    const std::string_view raw = path.substr(0, slash);
    const std::string at = "path segment " + std::to_string(index);
    if (raw.empty()) return fail(error, at + " is empty");
    std::string segment = percentDecode(raw);
    if (segment == "." || segment == "..") {
      return fail(error, at + " is '" + segment + "' after decoding (no relative paths)");
    }
    if (segment.find('\0') != std::string::npos) {
      return fail(error, at + " holds NUL after decoding");
    }
    if (segment.find('/') != std::string::npos) {
      return fail(error, at + " holds '/' after decoding (\"%2F\")");
    }
    out.decoded += '/';
    out.decoded += segment;
    out.encoded += '/';
    for (char c : segment) {
      if (c == '%') {
        out.encoded += "%25";
      } else {
        out.encoded += c;
      }
    }
    out.segments.push_back(std::move(segment));
    if (slash == std::string_view::npos) break;
    path.remove_prefix(slash + 1);
  }
  return out;
}

}  // namespace coap2mqtt::bridge
