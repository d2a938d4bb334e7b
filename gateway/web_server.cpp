#include "gateway/web_server.h"

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <optional>
#include <stdexcept>

#include <httplib.h>
#include <spdlog/spdlog.h>

#include "gateway/event_loop.h"
#include "gateway/http_pool.h"
#include "gateway/web_api.h"
#include "gateway/web_assets.h"
#include "gateway/web_auth.h"
#include "gateway/web_events.h"

namespace coap2mqtt::gateway {

namespace {

// An idle keep-alive connection holds an HTTP thread: one second, not more.
constexpr http::ServerLimits kWebLimits{.threads = WebServer::kThreads,
                                        .max_waiting = 8,
                                        .io_timeout = std::chrono::seconds(5),
                                        .keep_alive_requests = 100,
                                        .keep_alive_idle = std::chrono::seconds(1),
                                        .max_body = 64 * 1024};
constexpr std::chrono::seconds kWebStopWait{3};
constexpr std::chrono::seconds kHeartbeat{15};
constexpr std::chrono::milliseconds kStreamPoll{500};

void securityHeaders(httplib::Response& res) {
  res.set_header("X-Content-Type-Options", "nosniff");
  res.set_header("X-Frame-Options", "DENY");
  res.set_header("Referrer-Policy", "no-referrer");
  res.set_header("Content-Security-Policy",
                 "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                 "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'");
}

void json(httplib::Response& res, int status, const std::string& body) {
  res.status = status;
  res.set_header("Cache-Control", "no-store");
  res.set_content(body, "application/json; charset=utf-8");
}

void jsonError(httplib::Response& res, int status, const std::string& message) {
  json(res, status, nlohmann::json{{"status", "error"}, {"error", message}}.dump());
}

bool isApi(const std::string& path) {
  return path.rfind("/api/", 0) == 0;
}

void serveAsset(httplib::Response& res, std::string_view path, int status = 200) {
  const WebAsset* asset = findWebAsset(path);
  if (asset == nullptr) {
    res.status = 404;
    res.set_content("not found\n", "text/plain");
    return;
  }
  res.status = status;
  res.set_header("Cache-Control", "no-cache");
  res.set_content(std::string(asset->body), std::string(asset->content_type).c_str());
}

}  // namespace

// What the HTTP threads and the loop thread share; kept alive by whichever ends last.
struct WebServer::Shared {
  std::mutex mutex;
  EventLoop* loop = nullptr;  // null once stop() began: no more tasks are posted
  WebApi* api = nullptr;
  std::shared_ptr<WebEventHub> hub;
  std::string token;

  // HTTP thread: runs `request` on the loop, waits up to `wait` for its reply.
  std::optional<WebResponse> call(const std::shared_ptr<Shared>& self, WebRequest request,
                                  std::chrono::milliseconds wait) {
    struct Pending {
      std::mutex mutex;
      std::condition_variable done;
      std::optional<WebResponse> response;
    };
    auto pending = std::make_shared<Pending>();
    {
      std::lock_guard<std::mutex> lock(mutex);
      if (loop == nullptr) return std::nullopt;
      loop->post([self, pending, request = std::move(request)] {
        WebApi* api = nullptr;
        {
          std::lock_guard<std::mutex> lock(self->mutex);
          if (self->loop == nullptr) return;
          api = self->api;
        }
        api->handle(request, [pending](WebResponse r) {
          std::lock_guard<std::mutex> lock(pending->mutex);
          pending->response = std::move(r);
          pending->done.notify_all();
        });
      });
    }
    std::unique_lock<std::mutex> lock(pending->mutex);
    pending->done.wait_for(lock, wait, [&] { return pending->response.has_value(); });
    return pending->response;
  }
};

WebServer::WebServer(EventLoop& loop, WebApi& api, std::shared_ptr<WebEventHub> hub)
    : loop_(loop), api_(api), hub_(std::move(hub)) {}

WebServer::~WebServer() {
  stop();
}

void WebServer::start(const std::string& listen, const std::string& token) {
  if (thread_) return;
  shared_ = std::make_shared<Shared>();
  shared_->loop = &loop_;
  shared_->api = &api_;
  shared_->hub = hub_;
  shared_->token = token;

  auto server = http::makeServer(kWebLimits);
  std::weak_ptr<Shared> weak = shared_;

  // Every request: the token (when there is one), then what an action must look like.
  server->set_pre_routing_handler([weak](const httplib::Request& req, httplib::Response& res) {
    securityHeaders(res);
    const std::shared_ptr<Shared> shared = weak.lock();
    if (!shared) {
      res.status = 503;
      return httplib::Server::HandlerResponse::Handled;
    }
    if (req.method != "GET" && req.method != "HEAD" && req.method != "POST") {
      res.status = 405;
      res.set_content("method not allowed\n", "text/plain");
      return httplib::Server::HandlerResponse::Handled;
    }
    // The login form and its style sheet are for everyone; nothing else is.
    const bool login = req.path == "/login";
    if (!login && req.path != "/app.css" &&
        !web::authorised(shared->token, req.get_header_value("Authorization"),
                         req.get_header_value("Cookie"))) {
      res.set_header("WWW-Authenticate", "Bearer realm=\"coap2mqtt\"");
      if (isApi(req.path)) {
        jsonError(res, 401, "a token is needed (Authorization: Bearer, or log in)");
      } else {
        serveAsset(res, "/login.html", 401);
      }
      return httplib::Server::HandlerResponse::Handled;
    }
    if (req.method == "POST" && !login) {
      if (!web::sameOrigin(req.get_header_value("Origin"), req.get_header_value("Sec-Fetch-Site"),
                           req.get_header_value("Host"))) {
        jsonError(res, 403, "cross-site request refused");
        return httplib::Server::HandlerResponse::Handled;
      }
      if (!web::isJsonContentType(req.get_header_value("Content-Type"))) {
        jsonError(res, 415, "actions take a JSON body (Content-Type: application/json)");
        return httplib::Server::HandlerResponse::Handled;
      }
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });

  server->Get(
      "/", [](const httplib::Request&, httplib::Response& res) { serveAsset(res, "/index.html"); });
  server->Get(R"(/(app\.js|app\.css))", [](const httplib::Request& req, httplib::Response& res) {
    serveAsset(res, req.path);
  });
  server->Get("/login", [](const httplib::Request&, httplib::Response& res) {
    serveAsset(res, "/login.html");
  });
  // The login form: the token as a form field; right, it becomes an HttpOnly cookie.
  server->Post("/login", [weak](const httplib::Request& req, httplib::Response& res) {
    const std::shared_ptr<Shared> shared = weak.lock();
    const std::string given = req.has_param("token") ? req.get_param_value("token") : "";
    if (!shared || shared->token.empty() || !web::tokenMatches(shared->token, given)) {
      serveAsset(res, "/login.html", shared && shared->token.empty() ? 200 : 401);
      return;
    }
    res.set_header("Set-Cookie", std::string(web::kCookie) + "=" + shared->token +
                                     "; Path=/; HttpOnly; SameSite=Strict");
    res.set_redirect("/", 303);
  });
  server->Post("/logout", [](const httplib::Request&, httplib::Response& res) {
    res.set_header("Set-Cookie", std::string(web::kCookie) + "=; Path=/; Max-Age=0");
    json(res, 200, "{}");
  });

  // The live stream: one hub client per browser, drained by this HTTP thread.
  server->Get("/api/events", [weak](const httplib::Request&, httplib::Response& res) {
    const std::shared_ptr<Shared> shared = weak.lock();
    std::shared_ptr<WebEventHub> hub = shared ? shared->hub : nullptr;
    std::shared_ptr<WebEventHub::Client> client = hub ? hub->connect() : nullptr;
    if (!client) {
      res.set_header("Connection", "close");
      jsonError(res, 503, "too many live streams open");
      return;
    }
    res.set_header("Cache-Control", "no-store");
    res.set_header("X-Accel-Buffering", "no");
    auto last_write = std::make_shared<std::chrono::steady_clock::time_point>();
    res.set_chunked_content_provider(
        "text/event-stream",
        [client, last_write](std::size_t offset, httplib::DataSink& sink) {
          std::string data;
          if (offset == 0) {
            data = "retry: 2000\n: connected\n\n";
          } else {
            data = client->next(kStreamPoll);
            if (client->closed()) return false;
            if (data.empty()) {
              if (std::chrono::steady_clock::now() - *last_write < kHeartbeat) return true;
              data = ": ping\n\n";
            }
          }
          *last_write = std::chrono::steady_clock::now();
          return sink.write(data.data(), data.size());
        },
        [hub, client](bool) { hub->disconnect(client); });
  });

  const auto api = [weak](const httplib::Request& req, httplib::Response& res) {
    const std::shared_ptr<Shared> shared = weak.lock();
    WebRequest request;
    request.method = req.method == "HEAD" ? "GET" : req.method;
    request.path = req.path;
    for (const auto& [key, value] : req.params) request.params.emplace(key, value);
    request.body = req.body;
    const auto wait = request.method == "POST" ? kActionWait : kReadWait;
    std::optional<WebResponse> r;
    if (shared) r = shared->call(shared, std::move(request), wait);
    if (!r) {
      jsonError(res, 503, "the gateway's loop did not answer in time");
      return;
    }
    json(res, r->status, r->body);
  };
  server->Get(R"(/api/.*)", api);
  server->Post(R"(/api/.*)", api);

  server->set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (res.status == 404 && res.body.empty()) res.set_content("not found\n", "text/plain");
  });
  http::answerExceptions(*server, "web",
                         [](httplib::Response& res) { jsonError(res, 500, "internal error"); });
  thread_ = std::make_unique<http::Listener>(server, listen, "web");
  spdlog::info("web: the page is at http://{}/ ({})", listen,
               token.empty() ? "no token: loopback only" : "a token is required");
}

void WebServer::stop() {
  if (!thread_) return;
  {
    std::lock_guard<std::mutex> lock(shared_->mutex);
    shared_->loop = nullptr;
    shared_->api = nullptr;
  }
  hub_->closeAll();
  thread_->stop(kWebStopWait);
  thread_.reset();
}

}  // namespace coap2mqtt::gateway
