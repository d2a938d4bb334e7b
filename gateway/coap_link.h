#pragma once
// The CoAP side: one libcoap context, one unicast client session per device, exchanges
// matched by token. Every method runs on the loop thread (libcoap 4.3.1 is not thread-safe).
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "bridge/rules.h"
#include "gateway/config.h"
#include "gateway/event_loop.h"

struct coap_context_t;
struct coap_session_t;

namespace coap2mqtt::gateway {

struct CoapResponse {
  unsigned code = 0;  // class * 100 + detail: 205 for 2.05
  std::optional<unsigned> content_format;
  std::optional<std::uint32_t> observe;  // Observe option value on notifications
  std::optional<std::uint32_t> max_age;
  std::string payload;  // whole body (libcoap reassembles Block2)
  bool success() const { return code / 100 == 2; }
  std::string codeString() const;  // "2.05"
};

struct CoapStats {
  std::uint64_t requests_sent = 0;
  std::uint64_t responses = 0;
  std::uint64_t notifications = 0;
  std::uint64_t failures = 0;        // timeouts, RST, undeliverable
  std::uint64_t unknown_token = 0;   // answered with RST
  std::uint64_t session_resets = 0;  // sessions renewed after a timeout
  std::uint64_t extra_acks = 0;      // CON notifications ACKed again (see Device)
};

// A request to one of our own server resources (the Resource Directory).
struct CoapServerRequest {
  bridge::Method method = bridge::Method::Get;
  std::string path;                // with leading '/', e.g. "/rd/3"
  std::vector<std::string> query;  // Uri-Query options as sent, e.g. "ep=node7"
  std::string payload;
  std::optional<unsigned> content_format;
  std::string source;  // coap://host:port of the requester
};

struct CoapServerResponse {
  unsigned code = 205;  // class*100+detail
  std::string payload;
  std::optional<unsigned> content_format;
  std::string location;  // Location-Path for 2.01, e.g. "/rd/3"
};

class CoapLink {
 public:
  using ServerHandler = std::function<CoapServerResponse(const CoapServerRequest&)>;

  // Called once: with the response, or with nullopt and a reason on failure.
  using ResponseHandler =
      std::function<void(const std::optional<CoapResponse>&, const std::string& error)>;
  // Called for the registration response and every notification; `error` set (and
  // response nullopt) when the observation failed and is gone.
  using ObserveHandler = ResponseHandler;
  using ObserveId = std::uint64_t;

  CoapLink(EventLoop& loop, const CoapConfig& config);
  ~CoapLink();
  CoapLink(const CoapLink&) = delete;
  CoapLink& operator=(const CoapLink&) = delete;

  // Creates the device's session. false and *error when the URI does not resolve.
  bool addDevice(const std::string& name, const std::string& uri, std::string* error);
  void removeDevice(const std::string& name);
  bool hasDevice(const std::string& name) const;

  using RequestId = std::uint64_t;
  // One request; `handler` is called exactly once, unless cancelRequest() or the link's
  // destruction comes first. Returns 0 when it failed at once (handler already called).
  RequestId request(const std::string& device, bridge::Method method, const std::string& path,
                    const std::string& payload, std::optional<unsigned> content_format,
                    ResponseHandler handler);

  // GET with Observe=0. The handler stays registered until an error or cancelObserve().
  // `timeout` replaces request_timeout for the registration's answer.
  ObserveId observe(const std::string& device, const std::string& path, ObserveHandler handler,
                    std::optional<std::chrono::milliseconds> timeout = std::nullopt);
  // Forgets a pending request: its handler will not be called.
  void cancelRequest(RequestId id);
  // Deregisters (GET with Observe=1 via libcoap) and drops the handler.
  void cancelObserve(ObserveId id);
  // Cancels every observation (at shutdown) so devices stop sending to us.
  void cancelAllObservations();

  // Reachability probe: an empty CON ("CoAP ping"); true when the device answered (RST).
  void ping(const std::string& device, std::function<void(bool)> done);

  // Server side. listen() opens a UDP endpoint ("host:port", IPv6 in brackets).
  bool listen(const std::string& host_port, std::string* error);
  // `path` without leading '/', e.g. "rd"; `attributes` are link attributes for our own
  // /.well-known/core, e.g. {{"rt", "\"core.rd\""}}. Handles GET, POST, PUT, DELETE.
  void serve(const std::string& path,
             const std::vector<std::pair<std::string, std::string>>& attributes,
             ServerHandler handler);
  // Every other path (e.g. the RD's registration resources "/rd/<n>").
  void serveUnknown(ServerHandler handler);

  // Asked after the handler of a response that came in a CON message, before libcoap ACKs
  // it: true holds the ACK back until releaseHeldAcks(), e.g. until what the handler queued
  // is durable (once ACKed, the device will not send it again).
  void setHoldAck(std::function<bool()> hold_ack) { hold_ack_ = std::move(hold_ack); }
  // Sends the ACKs held back so far (to devices that still have the same session).
  void releaseHeldAcks();

  const CoapStats& stats() const { return stats_; }

 private:
  struct Device;
  struct Exchange;

  // libcoap callbacks (noexcept trampolines into these).
  int onResponse(coap_session_t* session, const void* received);
  bool holdAck(coap_session_t* session, int mid);
  void onNack(coap_session_t* session, const void* sent, int reason, int mid);
  void processIo();
  void noteConNotification(Device& device, int mid);
  void forgetConNotification(Device& device);
  void armReack(Device& device);
  std::chrono::steady_clock::duration reackDelay(const Device& device) const;
  static void sendEmptyReply(coap_session_t* session, int mid, bool reset);  // ACK or RST
  // The device `name` if it still uses `session` (nullptr once removed or on a new session).
  Device* deviceOn(std::string_view name, const coap_session_t* session);
  std::vector<std::function<void(bool)>> takePings(const std::string& device);
  void releaseLater(coap_session_t* session);
  void discardSession(coap_session_t* session);

  coap_session_t* newSession(const std::string& uri, std::string* error);
  void resetSession(const std::string& name, const std::string& reason);
  std::uint64_t startExchange(const std::string& device, bridge::Method method,
                              const std::string& path, const std::string& payload,
                              std::optional<unsigned> content_format, bool observe,
                              ResponseHandler handler,
                              std::optional<std::chrono::milliseconds> timeout = std::nullopt);
  std::uint64_t send(Device& device, bridge::Method method, const std::string& path,
                     const std::string& payload, std::optional<unsigned> content_format,
                     bool observe, std::unique_ptr<Exchange> exchange);
  void fail(std::uint64_t token, const std::string& reason);

  EventLoop& loop_;
  CoapConfig config_;
  coap_context_t* context_ = nullptr;
  std::map<std::string, std::unique_ptr<Device>, std::less<>> devices_;
  std::map<std::uint64_t, std::unique_ptr<Exchange>> exchanges_;  // by token
  std::uint64_t next_token_;
  CoapStats stats_;
  std::function<bool()> hold_ack_;
  std::string responding_device_;  // of the response being handled ("" when unmatched)
  struct HeldAck {
    std::string device;
    coap_session_t* session;  // compared only, never used if the device has another now
    int mid;
  };
  std::vector<HeldAck> held_acks_;

  struct Ping {
    std::string device;
    std::function<void(bool)> done;
  };
  std::map<std::pair<coap_session_t*, int>, Ping> pings_;  // by (probe session, MID)
  std::vector<coap_session_t*> to_release_;                // finished probe sessions
  EventLoop::TimerId release_timer_ = 0;
  std::vector<std::unique_ptr<ServerHandler>> server_handlers_;  // owned; resources point here

  friend struct CoapCallbacks;
};

}  // namespace coap2mqtt::gateway
