#pragma once
// The web page (issue 22): [web] listen serves the page (HTML/CSS/JS compiled into the
// binary, gateway/web/), its JSON API under /api/ and the live stream /api/events
// (Server-Sent Events). The only file besides metrics_server.cpp that includes httplib.
//
// Threads, as in metrics_server.h: the HTTP threads never touch the components. An /api/
// request is posted to the loop thread (WebApi::handle) and waited for: reads at most
// kReadWait (a stalled loop answers 503), actions at most kActionWait (a command waits for
// its device, up to its [[command]] timeout). The stream is fed by WebApi through a
// WebEventHub: at most kMaxStreams browsers at once (more get 503), each with a queue of at
// most kStreamQueue events; one that does not read loses its oldest events, and once its
// socket stays full for the write timeout it is disconnected.
//
// Access (gateway/web_auth.h): with web.token_file every request needs the token (Bearer
// header or the login form's cookie), else 401 (the page itself shows the login form).
// POST only for actions, with a JSON body and a same-origin check; GET never changes
// anything. The token is never logged.
//
// Bounds: kThreads HTTP threads (kMaxStreams of them may be streaming), at most eight
// accepted connections waiting, 5 s read and write timeouts, 1 s keep-alive idle, request
// bodies of 64 KiB.
#include <chrono>
#include <memory>
#include <string>

namespace coap2mqtt::gateway {

namespace http {
class Listener;
}

class EventLoop;
class WebApi;
class WebEventHub;

class WebServer {
 public:
  static constexpr std::size_t kThreads = 24;
  static constexpr std::size_t kMaxStreams = 16;
  static constexpr std::size_t kStreamQueue = 256;
  static constexpr std::chrono::milliseconds kReadWait{5000};
  static constexpr std::chrono::milliseconds kActionWait{45000};

  // `api` runs on the loop thread; `hub` is shared with it.
  WebServer(EventLoop& loop, WebApi& api, std::shared_ptr<WebEventHub> hub);
  ~WebServer();  // stop()
  WebServer(const WebServer&) = delete;
  WebServer& operator=(const WebServer&) = delete;

  // Binds `listen` and serves; `token` empty = no token needed (a loopback listener).
  // Throws std::runtime_error saying what could not be bound.
  void start(const std::string& listen, const std::string& token);
  // Closes the streams, stops accepting, unbinds. Idempotent. Loop thread.
  void stop();

 private:
  struct Shared;
  EventLoop& loop_;
  WebApi& api_;
  std::shared_ptr<WebEventHub> hub_;
  std::shared_ptr<Shared> shared_;
  std::unique_ptr<http::Listener> thread_;
};

}  // namespace coap2mqtt::gateway
