#pragma once
// The Uri-Path of a request that an MQTT client asks for (a command's {path}, an admin
// read's "path"): percent-decoded once, into the segments the device will see, so that
// the allow-list judges exactly what is sent. Pure.
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace coap2mqtt::bridge {

// "%XX" (two hex digits, either case) becomes that byte; anything else, a lone '%'
// included, stays as it is. gateway/coap_link.cpp decodes outgoing paths with this too.
std::string percentDecode(std::string_view text);

struct UriPath {
  std::vector<std::string> segments;  // decoded: what each Uri-Path option carries
  std::string decoded;                // "/" + segments joined by '/', what `allow` matches
  // What to hand to the CoAP side, which decodes every segment once more: each '%' is
  // written as "%25", so that decoding gives back `segments` exactly.
  std::string encoded;
};

// Splits "/a/b%20c" at '/' (one leading '/' optional) and decodes each segment. nullopt,
// with *error saying why, for no segment at all, an empty segment ("a//b", a trailing
// '/'), a "." or ".." segment after decoding (no traversal, also not as "%2e%2E"), and a
// segment holding NUL or '/' after decoding ("%00", "%2F").
std::optional<UriPath> decodeUriPath(std::string_view path, std::string* error);

}  // namespace coap2mqtt::bridge
