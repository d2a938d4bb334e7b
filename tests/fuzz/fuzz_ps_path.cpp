// libFuzzer target for what any host on the LAN sends to the gateway's /ps (issue 20): the
// Uri-Path options of a publish or subscribe (bridge/inbound.h psTopicPath) and the
// [[inbound]] allow-list deciding on them. Besides "no crash, no UB, no hang", it checks what
// psTopicPath promises: an accepted path has 1..kMaxPsLevels levels and at most
// kMaxPsPathBytes bytes, each level non-empty, not "." or "..", without '+', '#', '/' or
// control characters, valid UTF-8, and joined it is a topic the gateway may publish to
// (unless it starts with '$', which the gateway refuses on its own).
//
// Input: the segments, separated by the byte 0xFF (never part of valid UTF-8).
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "bridge/inbound.h"
#include "bridge/topic_template.h"
#include "registry/utf8.h"
#include "tests/fuzz/fuzz_check.h"

namespace coap2mqtt::bridge {
namespace {

using fuzz::check;

std::vector<InboundRule> rules() {
  std::vector<InboundRule> out(2);
  std::string error;
  out[0].allow_device = *Glob::compile("*", Glob::Kind::Name, &error);
  out[0].allow_path = *Glob::compile("/sensors/**", Glob::Kind::Path, &error);
  out[1].allow_device = *Glob::compile("coap-127-*", Glob::Kind::Name, &error);
  out[1].allow_path = *Glob::compile("/cmd/*/[a-z]?", Glob::Kind::Path, &error);
  out[1].post = out[1].put = false;
  return out;
}

}  // namespace
}  // namespace coap2mqtt::bridge

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace coap2mqtt::bridge;
  static const std::vector<InboundRule> kRules = rules();
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> segments;
  if (!input.empty()) {
    std::size_t start = 0;
    for (;;) {
      const std::size_t sep = input.find('\xff', start);
      segments.emplace_back(input.substr(start, sep - start));
      if (sep == std::string_view::npos) break;
      start = sep + 1;
    }
  }
  std::string error;
  const auto path = psTopicPath(segments, &error);
  if (!path) {
    check(!error.empty(), "a refusal says why");
    return 0;
  }
  check(!segments.empty() && segments.size() <= kMaxPsLevels, "levels within the bound");
  check(path->size() <= kMaxPsPathBytes, "bytes within the bound");
  check(coap2mqtt::registry::isValidUtf8(*path), "valid UTF-8");
  std::size_t levels = 1;
  for (char c : *path) {
    const auto u = static_cast<unsigned char>(c);
    check(c != '+' && c != '#' && u >= 0x20 && u != 0x7f, "no wildcard or control character");
    if (c == '/') ++levels;
  }
  check(levels == segments.size(), "one topic level per Uri-Path option");
  for (const std::string& s : segments) check(!s.empty() && s != "." && s != "..", "plain levels");
  check(path->front() == '$' || isValidPublishTopic(*path), "a topic we may publish to");
  for (auto method : {InboundMethod::Post, InboundMethod::Put, InboundMethod::Get}) {
    if (const InboundRule* r = findInbound(kRules, "coap-127-0-0-1", "/" + *path, method)) {
      check(r->allows(method), "the entry allows the method");
    }
  }
  return 0;
}
