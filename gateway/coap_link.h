#pragma once
// The CoAP side: one libcoap context, one unicast client session per device, exchanges
// matched by token, and our own server resources. libcoap 4.3.1 is not thread-safe: every
// method runs on the loop thread, and says so when it does not (LoopThreadChecker).
// libcoap is included only by the link's own .cpp files (coap_link_internal.h).
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "bridge/rules.h"
#include "gateway/config.h"
#include "gateway/event_loop.h"
#include "gateway/loop_thread.h"

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
  std::uint64_t failures = 0;         // timeouts, RST, undeliverable
  std::uint64_t unknown_token = 0;    // answered with RST
  std::uint64_t session_resets = 0;   // sessions renewed after a timeout
  std::uint64_t extra_acks = 0;       // CON notifications ACKed again (see Device)
  std::uint64_t body_too_large = 0;   // responses beyond kMaxResponseBody, refused
  std::uint64_t malformed = 0;        // datagrams libcoap discarded as malformed
  std::uint64_t dtls_handshakes = 0;  // DTLS sessions to devices established
  std::uint64_t dtls_failures = 0;    // DTLS sessions to devices that failed (handshake, alert)
  std::uint64_t block1_refused = 0;   // Block1 uploads to us refused (too large, gaps, busy)
  // DTLS sessions kept after a request timed out: the device answered the probe on them.
  std::uint64_t dtls_sessions_kept = 0;
};

// The largest response body taken from a device (Block2 reassembled): a peer's Size2 or
// endless blocks must not choose how much memory the gateway spends.
inline constexpr std::size_t kMaxResponseBody = std::size_t{1} << 20;

// A request to one of our own server resources (the Resource Directory).
struct CoapServerRequest {
  bridge::Method method = bridge::Method::Get;
  std::string path;                   // with leading '/', e.g. "/rd/3"
  std::vector<std::string> segments;  // the Uri-Path options as sent, e.g. "rd", "3"
  std::vector<std::string> query;     // Uri-Query options as sent, e.g. "ep=node7"
  std::string payload;
  std::optional<unsigned> content_format;
  std::string source;  // coap://host:port of the requester (coaps:// over DTLS)
  // The PSK identity the requester proved in its DTLS handshake; empty over plain CoAP.
  std::string psk_identity;
  bool confirmable = false;              // a CON request (else NON)
  bool block1 = false;                   // it carries a Block1 option (one block of a larger body)
  std::optional<std::uint32_t> observe;  // its Observe option (0 registers, 1 deregisters)
  // Over DTLS with a certificate (verified against [coap].listen_pki's CA): the name in it,
  // its first DNS SAN, else its subject's CN.
  std::string cert_name;
};

struct CoapServerResponse {
  unsigned code = 205;  // class*100+detail
  std::string payload;
  std::optional<unsigned> content_format;
  std::string location;  // Location-Path for 2.01, e.g. "/rd/3"
  // For a CON request: an empty ACK now, and this response as a separate CON response
  // after the next releaseHeldAcks() (once what the handler queued is durable).
  bool after_release = false;
  // An empty ACK now; the request is handled again in a moment, by the resource the handler
  // has just created (serveObservable): libcoap's observe registration needs a resource.
  bool redispatch = false;
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
  using RequestId = std::uint64_t;

  // Throws std::runtime_error when libcoap cannot give it a context.
  CoapLink(EventLoop& loop, const CoapConfig& config);
  ~CoapLink();
  CoapLink(const CoapLink&) = delete;
  CoapLink& operator=(const CoapLink&) = delete;

  // Creates the device's session: plain UDP for coap://, DTLS for coaps:// (which needs
  // credentials). false and *error when the URI does not resolve or credentials are missing.
  bool addDevice(const std::string& name, const std::string& uri, std::string* error,
                 const DtlsCredentials& credentials = {});
  void removeDevice(const std::string& name);

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

  // Reachability probe: an empty CON ("CoAP ping"); true when the device answered (RST).
  void ping(const std::string& device, std::function<void(bool)> done);

  // Server side. listen() opens a UDP endpoint ("host:port", IPv6 in brackets), or a DTLS
  // one ("coaps://host:port") whose clients must know a key of config.psk_clients or show
  // a certificate chained to config.listen_pki's CA.
  bool listen(const std::string& host_port, std::string* error);
  // `path` without leading '/', e.g. "rd"; `attributes` are link attributes for our own
  // /.well-known/core, e.g. {{"rt", "\"core.rd\""}}. Handles GET, POST, PUT, DELETE.
  void serve(const std::string& path,
             const std::vector<std::pair<std::string, std::string>>& attributes,
             ServerHandler handler);
  // Every other path (e.g. the RD's registration resources "/rd/<n>").
  void serveUnknown(ServerHandler handler);
  // Paths below `segment` ("ps": "/ps/a/b"), taken before serveUnknown's handler.
  void servePrefix(const std::string& segment, ServerHandler handler);
  // An observable resource at `path` ("ps/cmd/attic"), created once (the caller bounds how
  // many); GET and its observers go to `handler`. /.well-known/core lists it (with obs).
  void serveObservable(const std::string& path, ServerHandler handler);
  bool serves(const std::string& path) const;
  // Its observers get a notification (the handler's answer to their GET) soon.
  void notifyObservers(const std::string& path);

  // Asked after the handler of a response that came in a CON message, before libcoap ACKs
  // it: true holds the ACK back until releaseHeldAcks(), e.g. until what the handler queued
  // is durable (once ACKed, the device will not send it again).
  void setHoldAck(std::function<bool()> hold_ack);
  // Sends the ACKs held back so far (to devices that still have the same session), and the
  // responses held back (after_release).
  void releaseHeldAcks();

  const CoapStats& stats() const;

  class Impl;  // coap_link_internal.h

 private:
  LoopThreadChecker loop_thread_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace coap2mqtt::gateway
