// Issue 22: the web page's pure parts — [web] in gateway.toml, who may use the page and
// which requests may change something (web_auth.h), the live stream's bounded queues
// (web_events.h). No sockets; the HTTP side is tests/integration/test_web.cpp.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "bridge/config_error.h"
#include "gateway/config.h"
#include "gateway/config_web.h"
#include "gateway/web_auth.h"
#include "gateway/web_events.h"

namespace {

namespace fs = std::filesystem;
using coap2mqtt::bridge::ConfigError;
using coap2mqtt::bridge::ConfigErrors;
using coap2mqtt::gateway::GatewayConfig;
using coap2mqtt::gateway::WebEventHub;
namespace web = coap2mqtt::gateway::web;
using namespace std::chrono_literals;

class Dir {
 public:
  Dir() {
    std::string tmpl = (fs::temp_directory_path() / "c2m-web-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~Dir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string write(const std::string& rel, const std::string& content) const {
    std::ofstream(path_ / rel, std::ios::binary) << content;
    return (path_ / rel).string();
  }

 private:
  fs::path path_;
};

const char* const kToken = "0123456789abcdef0123456789abcdef";

std::vector<ConfigError> load(const Dir& dir, const std::string& toml, GatewayConfig* out) {
  const std::string file = dir.write("gateway.toml", toml);
  try {
    *out = coap2mqtt::gateway::loadConfig(file);
    return {};
  } catch (const ConfigErrors& e) {
    return e.errors();
  }
}

TEST(WebConfig, OffByDefaultLoopbackWithoutToken) {
  Dir dir;
  GatewayConfig cfg;
  ASSERT_TRUE(load(dir, "[mqtt]\nbase_topic = \"x\"\n", &cfg).empty());
  EXPECT_EQ(cfg.web.listen, "");
  for (const char* listen : {"127.0.0.1:8080", "127.3.4.5:8080", "[::1]:8080", "localhost:8080"}) {
    ASSERT_TRUE(load(dir, std::string("[web]\nlisten = \"") + listen + "\"\n", &cfg).empty())
        << listen;
    EXPECT_EQ(cfg.web.listen, listen);
    EXPECT_EQ(cfg.web.token, "");
  }
}

TEST(WebConfig, OffLoopbackTheTokenFileIsRequired) {
  Dir dir;
  GatewayConfig cfg;
  const auto errors = load(dir, "[web]\nlisten = \"0.0.0.0:8080\"\n", &cfg);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].line, 2);
  EXPECT_EQ(errors[0].column, 10);
  EXPECT_EQ(errors[0].key, "web.listen");
  EXPECT_NE(errors[0].message.find("token_file is required"), std::string::npos)
      << errors[0].toString();

  dir.write("web.token", std::string(kToken) + "\nsecond line ignored\n");
  ASSERT_TRUE(
      load(dir, "[web]\nlisten = \"[::]:8080\"\ntoken_file = \"web.token\"\n", &cfg).empty());
  EXPECT_EQ(cfg.web.token, kToken);
}

TEST(WebConfig, BadValuesAreReportedAtTheirTextAndNeverShowTheToken) {
  Dir dir;
  GatewayConfig cfg;
  dir.write("short.token", "secret-short\n");
  struct Case {
    std::string toml;
    int line, column;
    std::string key, message;
  } cases[] = {
      {"[web]\nlisten = \"127.0.0.1\"\n", 2, 10, "web.listen", "expected \"host:port\""},
      {"[web]\nlisten = 8080\n", 2, 10, "web.listen", "expected"},
      {"[web]\nlisten = \"127.0.0.1:1\"\ntoken_file = \"missing\"\n", 3, 14, "web.token_file",
       "cannot read"},
      {"[web]\nlisten = \"127.0.0.1:1\"\ntoken_file = \"short.token\"\n", 3, 14, "web.token_file",
       "shorter than 16"},
      {"[web]\nport = 1\n", 2, 8, "web.port", "unknown key"},
  };
  for (const Case& c : cases) {
    const auto errors = load(dir, c.toml, &cfg);
    ASSERT_EQ(errors.size(), 1u) << c.toml;
    EXPECT_EQ(errors[0].line, c.line) << errors[0].toString();
    EXPECT_EQ(errors[0].column, c.column) << errors[0].toString();
    EXPECT_EQ(errors[0].key, c.key) << errors[0].toString();
    EXPECT_NE(errors[0].message.find(c.message), std::string::npos) << errors[0].toString();
    EXPECT_EQ(errors[0].toString().find("secret-short"), std::string::npos);
  }
}

TEST(WebConfig, Loopback) {
  using coap2mqtt::gateway::isLoopbackListen;
  EXPECT_TRUE(isLoopbackListen("127.0.0.1:1"));
  EXPECT_TRUE(isLoopbackListen("127.255.0.9:1"));
  EXPECT_TRUE(isLoopbackListen("[::1]:1"));
  EXPECT_TRUE(isLoopbackListen("localhost:1"));
  EXPECT_FALSE(isLoopbackListen("0.0.0.0:1"));
  EXPECT_FALSE(isLoopbackListen("[::]:1"));
  EXPECT_FALSE(isLoopbackListen("192.168.1.2:1"));
  EXPECT_FALSE(isLoopbackListen("128.0.0.1:1"));
  EXPECT_FALSE(isLoopbackListen("gateway.local:1"));
}

TEST(WebAuth, TokenFromBearerOrCookie) {
  EXPECT_TRUE(web::authorised("", "", ""));
  EXPECT_TRUE(web::authorised(kToken, std::string("Bearer ") + kToken, ""));
  EXPECT_TRUE(web::authorised(kToken, std::string("bearer  ") + kToken + " ", ""));
  EXPECT_TRUE(web::authorised(kToken, "", std::string("a=1; c2m_token=") + kToken + "; b=2"));
  EXPECT_FALSE(web::authorised(kToken, "", ""));
  EXPECT_FALSE(web::authorised(kToken, std::string("Basic ") + kToken, ""));
  EXPECT_FALSE(web::authorised(kToken, "Bearer 0123456789abcdef", ""));  // a prefix
  EXPECT_FALSE(web::authorised(kToken, std::string("Bearer ") + kToken + "0", ""));
  EXPECT_FALSE(web::authorised(kToken, "", std::string("other_c2m_token=") + kToken));
  EXPECT_FALSE(web::tokenMatches("", ""));
}

TEST(WebAuth, OnlySameOriginJsonMayChangeSomething) {
  EXPECT_TRUE(web::isJsonContentType("application/json"));
  EXPECT_TRUE(web::isJsonContentType("Application/JSON; charset=utf-8"));
  EXPECT_FALSE(web::isJsonContentType("application/x-www-form-urlencoded"));
  EXPECT_FALSE(web::isJsonContentType("text/plain"));
  EXPECT_FALSE(web::isJsonContentType("multipart/form-data; boundary=x"));
  EXPECT_FALSE(web::isJsonContentType(""));

  EXPECT_TRUE(web::sameOrigin("", "", "127.0.0.1:8080"));  // curl
  EXPECT_TRUE(web::sameOrigin("http://127.0.0.1:8080", "same-origin", "127.0.0.1:8080"));
  EXPECT_FALSE(web::sameOrigin("http://evil.example", "", "127.0.0.1:8080"));
  EXPECT_FALSE(web::sameOrigin("http://127.0.0.1:8081", "", "127.0.0.1:8080"));
  EXPECT_FALSE(web::sameOrigin("null", "", "127.0.0.1:8080"));
  EXPECT_FALSE(web::sameOrigin("", "cross-site", "127.0.0.1:8080"));
  EXPECT_FALSE(web::sameOrigin("", "same-site", "127.0.0.1:8080"));
}

TEST(WebEvents, AClientThatDoesNotReadLosesItsOldestEventsOnly) {
  WebEventHub hub(2, 3);
  auto slow = hub.connect();
  auto fast = hub.connect();
  ASSERT_TRUE(slow && fast);
  EXPECT_EQ(hub.connect(), nullptr) << "a third stream is refused";
  EXPECT_EQ(hub.counters().refused, 1u);
  for (int i = 0; i < 5; ++i) {
    hub.publish("v", std::to_string(i));
    if (i == 1) {
      EXPECT_EQ(fast->next(0ms), "event: v\ndata: 0\n\nevent: v\ndata: 1\n\n");
    }
  }
  EXPECT_EQ(fast->next(0ms), "event: v\ndata: 2\n\nevent: v\ndata: 3\n\nevent: v\ndata: 4\n\n");
  EXPECT_EQ(fast->dropped(), 0u);
  // The slow one holds the last three; the two oldest were dropped and counted.
  EXPECT_EQ(slow->next(0ms), "event: v\ndata: 2\n\nevent: v\ndata: 3\n\nevent: v\ndata: 4\n\n");
  EXPECT_EQ(slow->dropped(), 2u);
  EXPECT_EQ(hub.counters().dropped, 2u);
  EXPECT_EQ(hub.counters().published, 5u);

  hub.disconnect(slow);
  EXPECT_TRUE(slow->closed());
  EXPECT_EQ(hub.counters().clients, 1u);
  EXPECT_NE(hub.connect(), nullptr) << "a freed place can be taken";
}

TEST(WebEvents, AWaitingReaderWakesOnAnEventAndOnClose) {
  WebEventHub hub(4, 8);
  auto client = hub.connect();
  std::thread loop([&] {
    std::this_thread::sleep_for(50ms);
    hub.publish("tick", "{}");
  });
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(client->next(10s), "event: tick\ndata: {}\n\n");
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
  loop.join();
  std::thread closer([&] {
    std::this_thread::sleep_for(50ms);
    hub.closeAll();
  });
  EXPECT_EQ(client->next(10s), "");
  EXPECT_TRUE(client->closed());
  closer.join();
  EXPECT_FALSE(hub.hasClients());
  hub.publish("tick", "{}");  // nobody listens: nothing queued anywhere
  EXPECT_EQ(client->next(0ms), "");
}

}  // namespace
