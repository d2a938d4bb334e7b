#include "gateway/web_auth.h"

#include <algorithm>
#include <cctype>

namespace coap2mqtt::gateway::web {

namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool equalsIgnoreCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

}  // namespace

bool tokenMatches(std::string_view expected, std::string_view given) {
  if (expected.empty()) return false;
  // Every byte of `expected` is looked at whatever `given` is.
  unsigned char diff = expected.size() == given.size() ? 0 : 1;
  for (std::size_t i = 0; i < expected.size(); ++i) {
    const char g = i < given.size() ? given[i] : '\0';
    diff |= static_cast<unsigned char>(expected[i] ^ g);
  }
  return diff == 0;
}

std::string_view bearerToken(std::string_view authorization) {
  authorization = trim(authorization);
  const auto space = authorization.find(' ');
  if (space == std::string_view::npos) return {};
  if (!equalsIgnoreCase(authorization.substr(0, space), "bearer")) return {};
  return trim(authorization.substr(space + 1));
}

std::string_view cookieValue(std::string_view cookie_header, std::string_view name) {
  while (!cookie_header.empty()) {
    const auto semi = cookie_header.find(';');
    std::string_view pair = trim(cookie_header.substr(0, semi));
    cookie_header =
        semi == std::string_view::npos ? std::string_view() : cookie_header.substr(semi + 1);
    const auto eq = pair.find('=');
    if (eq != std::string_view::npos && trim(pair.substr(0, eq)) == name) {
      return trim(pair.substr(eq + 1));
    }
  }
  return {};
}

bool authorised(std::string_view token, std::string_view authorization,
                std::string_view cookie_header) {
  if (token.empty()) return true;
  const std::string_view bearer = bearerToken(authorization);
  if (!bearer.empty() && tokenMatches(token, bearer)) return true;
  const std::string_view cookie = cookieValue(cookie_header, kCookie);
  return !cookie.empty() && tokenMatches(token, cookie);
}

bool isJsonContentType(std::string_view content_type) {
  const auto semi = content_type.find(';');
  return equalsIgnoreCase(trim(content_type.substr(0, semi)), "application/json");
}

bool sameOrigin(std::string_view origin, std::string_view sec_fetch_site, std::string_view host) {
  if (!sec_fetch_site.empty() && sec_fetch_site != "same-origin" && sec_fetch_site != "none") {
    return false;
  }
  if (origin.empty()) return true;
  if (host.empty()) return false;
  return equalsIgnoreCase(origin, std::string("http://") + std::string(host));
}

}  // namespace coap2mqtt::gateway::web
