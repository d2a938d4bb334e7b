#pragma once
// The web page's files (gateway/web/), compiled into the binary by cmake/embed_files.cmake.
#include <string_view>

namespace coap2mqtt::gateway {

struct WebAsset {
  std::string_view path;          // "/index.html"
  std::string_view content_type;  // "text/html; charset=utf-8"
  std::string_view body;
};

// nullptr when there is no such file.
const WebAsset* findWebAsset(std::string_view path);

}  // namespace coap2mqtt::gateway
