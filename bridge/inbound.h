#pragma once
// Devices that speak first (issue 20): which device may publish to, read or observe which
// topic path under the gateway's /ps root ([[inbound]] entries of the rule files, default
// deny), and what a /ps request path may be. Pure: no sockets, no clocks.
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "bridge/glob.h"

namespace coap2mqtt::bridge {

// What a device asks of /ps/<topic path>: POST or PUT (publish), GET (read, observe).
enum class InboundMethod { Post, Put, Get };
const char* toString(InboundMethod);

// [[inbound]]: allow = { device = "<name glob>", path = "<path glob>" }, where path is the
// topic path below the /ps root with a leading '/' ("/sensors/*" allows POST
// /ps/sensors/attic). methods: a subset of ["POST", "PUT", "GET"] (GET includes observe);
// default all three. qos and retain apply to a publish that no [[rule]] routes (its topic is
// the topic path itself, as EMQX's CoAP gateway does).
struct InboundRule {
  std::string name;  // `name`, else "inbound[N]"
  std::string file;
  Glob allow_device;
  Glob allow_path;
  bool post = true;
  bool put = true;
  bool get = true;
  int qos = 1;
  bool retain = false;

  bool allows(InboundMethod method) const {
    return method == InboundMethod::Post ? post : method == InboundMethod::Put ? put : get;
  }
};

// The first entry that lets `device` do `method` on `path` ("/a/b"); nullptr = denied.
const InboundRule* findInbound(const std::vector<InboundRule>& rules, std::string_view device,
                               std::string_view path, InboundMethod method);

// The MQTT filter that covers every topic path `path` (an allow.path glob) matches, so that
// the gateway receives what devices may GET: "/cmd/**" -> "cmd/#", "/cmd/*" -> "cmd/+",
// "/cmd/a?" -> "cmd/+" (the glob then decides per message). "#" for "/**".
std::string mqttFilterFor(const Glob& path);

// Bounds of a topic path under /ps (hostile input: each request brings one).
inline constexpr std::size_t kMaxPsLevels = 16;
inline constexpr std::size_t kMaxPsPathBytes = 256;

// The topic path of a /ps request from its Uri-Path segments after the root ("a", "b" ->
// "a/b"). nullopt and *error (said to the device with 4.00) when there is no level, a level
// is empty, "." or "..", holds '+', '#', '/', a control character or invalid UTF-8, or the
// path has more than kMaxPsLevels levels or kMaxPsPathBytes bytes.
std::optional<std::string> psTopicPath(const std::vector<std::string>& segments,
                                       std::string* error);

}  // namespace coap2mqtt::bridge
