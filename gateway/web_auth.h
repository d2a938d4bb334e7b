#pragma once
// Who may use the web page, and which requests may change something (issue 22). Pure
// functions on header values; gateway/web_server.cpp applies them to every request.
//
// - With a token (web.token_file), every request needs it: "Authorization: Bearer <token>"
//   or the cookie the login form sets (kCookie). Compared in constant time.
// - A request that changes something is a POST with a JSON body (Content-Type
//   application/json, which an HTML form cannot send and a cross-site script cannot send
//   without a CORS preflight we never answer), and, when the browser says where it comes
//   from (Origin, Sec-Fetch-Site), from this very page.
#include <string>
#include <string_view>

namespace coap2mqtt::gateway::web {

inline constexpr const char* kCookie = "c2m_token";

// Constant-time comparison (the time does not tell how much of a guess was right).
bool tokenMatches(std::string_view expected, std::string_view given);

// The token of "Bearer <token>" (the scheme in any case); empty otherwise.
std::string_view bearerToken(std::string_view authorization);

// The value of cookie `name` in a Cookie header ("a=1; b=2"); empty when absent.
std::string_view cookieValue(std::string_view cookie_header, std::string_view name);

// Whether a request carrying these headers may be authorised by `token` (empty: no token
// configured, everyone may).
bool authorised(std::string_view token, std::string_view authorization,
                std::string_view cookie_header);

// "application/json", with or without parameters ("; charset=utf-8"), in any case.
bool isJsonContentType(std::string_view content_type);

// Whether a state-changing request comes from this page: Sec-Fetch-Site, when present, is
// "same-origin" (or "none": typed by the user); Origin, when present, is
// "http://<host>" with `host` the Host header the request was sent to. A client that sends
// neither (curl, scripts) is not a browser on another site and passes.
bool sameOrigin(std::string_view origin, std::string_view sec_fetch_site, std::string_view host);

}  // namespace coap2mqtt::gateway::web
