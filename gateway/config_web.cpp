#include "gateway/config_web.h"

#include <arpa/inet.h>

#include "gateway/config_files.h"
#include "gateway/config_values.h"

namespace coap2mqtt::gateway {

bool isLoopbackListen(std::string_view listen) {
  const auto colon = listen.rfind(':');
  std::string host(listen.substr(0, colon == std::string_view::npos ? listen.size() : colon));
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
    in6_addr a6{};
    return inet_pton(AF_INET6, host.c_str(), &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
  }
  if (host == "localhost") return true;
  in_addr a4{};
  if (inet_pton(AF_INET, host.c_str(), &a4) != 1) return false;
  return (ntohl(a4.s_addr) >> 24) == 127;
}

void parseWebSection(bridge::toml_reader::TableReader& root, bridge::toml_reader::Reporter& report,
                     const std::string& dir, WebConfig& out) {
  using bridge::toml_reader::TableReader;
  const bridge::toml_reader::Value* section = root.table("web");
  if (section == nullptr) return;
  TableReader r(report, *section, "web", {"listen", "token_file"});
  parseHttpListen(r, 8080, "the web page", out.listen);
  bool token_ok = false;
  if (auto file = r.string("token_file", false, "a file path")) {
    const std::string path = resolveSecretPath(dir, *file);
    std::string token;
    if (file->empty()) {
      r.invalid("token_file", "expected a file path, got an empty string");
    } else if (auto error = readFile(path, token)) {
      r.invalid("token_file", "cannot read \"" + path + "\": " + error->reason);
    } else {
      // The first line only, without its line end or surrounding blanks.
      if (const auto eol = token.find('\n'); eol != std::string::npos) token.resize(eol);
      while (!token.empty() &&
             (token.back() == '\r' || token.back() == ' ' || token.back() == '\t')) {
        token.pop_back();
      }
      const auto first = token.find_first_not_of(" \t");
      token.erase(0, first == std::string::npos ? token.size() : first);
      if (token.size() < kMinWebTokenLength) {
        r.invalid("token_file", "the token in \"" + path + "\" is shorter than " +
                                    std::to_string(kMinWebTokenLength) +
                                    " characters (make one with: openssl rand -hex 16)");
      } else {
        out.token_file = path;
        out.token = std::move(token);
        token_ok = true;
      }
    }
  }
  if (!out.listen.empty() && !isLoopbackListen(out.listen) && !token_ok &&
      r.find("token_file") == nullptr) {
    r.invalid("listen", "\"" + out.listen +
                            "\" is not a loopback address: web.token_file is required so that "
                            "only who has the token can use the page");
  }
}

}  // namespace coap2mqtt::gateway
