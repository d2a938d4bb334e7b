#pragma once
// CoapLink's state and what its .cpp files share; included by them only, since this is
// where libcoap comes in. The link is split by job:
//   coap_link.cpp          the contexts, requests and observations, libcoap's callbacks
//   coap_link_sessions.cpp a session per device, renewed after a timeout
//   coap_link_io.cpp       datagrams and libcoap's timer work, per context (and its shards)
//   coap_link_acks.cpp     ACKs held back until the outbox is durable, and re-ACKs
//   coap_link_ping.cpp     reachability probes on sessions of their own
//   coap_link_server.cpp   our own resources (listen/serve/serveUnknown)
//   coap_link_dtls.cpp     DTLS: sessions with a pre-shared key, libcoap's session events
//   coap_link_keep.cpp     a DTLS session kept across a request timeout (SessionKeeper)
#include <coap3/coap.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "gateway/block1_assembly.h"
#include "gateway/coap_link.h"
#include "gateway/coap_options.h"
#include "gateway/coap_shards.h"
#include "gateway/coap_timer_pacing.h"
#include "gateway/observe_freshness.h"
#include "gateway/session_keeper.h"

namespace coap2mqtt::gateway {

// Owners of libcoap's handles (libcoap 4.3.1, /usr/include/coap3).
struct CoapContextFree {
  void operator()(coap_context_t* context) const noexcept { coap_free_context(context); }
};
using CoapContextPtr = std::unique_ptr<coap_context_t, CoapContextFree>;
// coap_new_client_session() hands us one reference; libcoap's send queue may hold more
// (a session lives on until what it still retransmits is done; see discardSession).
struct CoapSessionRelease {
  void operator()(coap_session_t* session) const noexcept { coap_session_release(session); }
};
using CoapSessionPtr = std::unique_ptr<coap_session_t, CoapSessionRelease>;
// A PDU until coap_send() takes it (it always does, also when it fails: pdu.release()).
struct CoapPduDelete {
  void operator()(coap_pdu_t* pdu) const noexcept { coap_delete_pdu(pdu); }
};
using CoapPduPtr = std::unique_ptr<coap_pdu_t, CoapPduDelete>;

// The host of a coap(s):// URI as libcoap reads it ("" when it does not parse)
// (coap_link_sessions.cpp).
std::string uriHost(const std::string& uri);

// Helpers shared by the link's .cpp files (coap_link.cpp).
// One option per path segment ("/a/b" -> "a", "b"), percent-decoded as the wire wants.
bool coapAddPathOptions(coap_pdu_t* pdu, std::uint16_t option, std::string_view path);

// gateway/coap_link_log.cpp: libcoap's log handler (coap_set_log_handler), and the
// datagrams it has seen libcoap discard as malformed so far.
void libcoapLogHandler(coap_log_t level, const char* message) noexcept;
std::uint64_t libcoapMalformedCount();
// The last TLS alert or error libcoap logged ("decrypt error", "unknown psk identity"...),
// taken (cleared) by the caller: libcoap's events say that a handshake failed, only its
// log says why.
std::string takeLibcoapTlsReason();

// The name in the certificate a DTLS peer showed on `session` (its first DNS SAN, else its
// subject's CN, as libcoap's CN callback has it); "" when none (coap_link_dtls.cpp).
std::string peerCertificateName(const coap_session_t* session);

class CoapLink::Impl {
 public:
  using ResponseHandler = CoapLink::ResponseHandler;
  using ServerHandler = CoapLink::ServerHandler;

  Impl(EventLoop& loop, const CoapConfig& config);
  ~Impl();

  // The public operations (CoapLink forwards to them after its loop-thread check).
  bool addDevice(const std::string& name, const std::string& uri, std::string* error,
                 const DtlsCredentials& credentials);
  void removeDevice(const std::string& name);
  std::uint64_t startExchange(const std::string& device, bridge::Method method,
                              const std::string& path, const std::string& payload,
                              std::optional<unsigned> content_format, bool observe,
                              ResponseHandler handler,
                              std::optional<std::chrono::milliseconds> timeout = std::nullopt);
  void cancelRequest(std::uint64_t id);
  void cancelObserve(std::uint64_t id);
  void ping(const std::string& device, std::function<void(bool)> done);
  bool listen(const std::string& host_port, std::string* error);
  void serve(const std::string& path,
             const std::vector<std::pair<std::string, std::string>>& attributes,
             ServerHandler handler);
  void serveUnknown(ServerHandler handler);
  void servePrefix(const std::string& segment, ServerHandler handler);
  void serveObservable(const std::string& path, ServerHandler handler);
  bool serves(const std::string& path) const { return observable_.count(path) != 0; }
  void notifyObservers(const std::string& path);
  // CoapServerResponse::redispatch: false when libcoap cannot (then answered 5.03).
  bool redispatch(coap_session_t* session, const coap_pdu_t* request);
  // From the server trampoline (coap_link_server.cpp): the handler for a path.
  ServerHandler* prefixHandler(const std::string& first_segment);
  // A response held back until releaseHeldAcks() (CoapServerResponse::after_release): false
  // when libcoap cannot hold it (then it is answered at once).
  bool deferResponse(coap_session_t* session, const coap_pdu_t* request,
                     CoapServerResponse response);
  // A Block1 upload's block, from the server trampoline: held until the last one, which
  // leaves the whole body in `req` (true). False: `*res` answers this block now (2.31 for
  // the next one, or the refusal).
  bool assembleBlock1(coap_session_t* session, const coap_pdu_t* request, CoapServerRequest& req,
                      CoapServerResponse* res);
  // When libcoap hands back a request deferred before: its response, taken.
  std::optional<CoapServerResponse> takeDeferred(coap_session_t* session,
                                                 const coap_pdu_t* request);
  void setHoldAck(std::function<bool()> hold_ack) { hold_ack_ = std::move(hold_ack); }
  void releaseHeldAcks();
  void releaseDeferred();  // coap_link_server.cpp
  const CoapStats& stats() const { return stats_; }
  // libcoap says it only in its log (see gateway/coap_link_log.cpp).
  void setMalformed(std::uint64_t n) { stats_.malformed = n; }

  // From libcoap's callbacks (the noexcept trampolines in CoapCallbacks).
  bool onResponse(coap_session_t* session, const coap_pdu_t* received);
  bool holdAck(coap_session_t* session, coap_mid_t mid);
  void onNack(coap_session_t* session, const coap_pdu_t* sent, coap_nack_reason_t reason,
              coap_mid_t mid);
  void onEvent(coap_session_t* session, coap_event_t event);
  // The key of a DTLS client's identity (config.psk_clients); nullptr refuses it.
  const coap_bin_const_t* serverKey(const coap_bin_const_t* identity, coap_session_t* session);
  // The device's PSK when its DTLS handshake reaches the identity hint (it answered).
  const coap_dtls_cpsk_info_t* onIdentityHint(coap_session_t* session);
  // Whether a device certificate's name (`cn`: DNS SAN or CN) is the device's URI host.
  bool certificateNameMatches(const char* cn, coap_session_t* session);

 private:
  struct Device {
    std::string name;
    std::string uri;
    std::string host;             // of the URI: what a device certificate must name
    std::size_t shard = 0;        // the context of its sessions, for life (shards_)
    bool holds_slot = true;       // false once handed to its successor (addDevice again)
    DtlsCredentials credentials;  // coaps:// devices (the key is never logged)
    CoapSessionPtr session;       // null until a DTLS device's first exchange (ensureSession)
    // Numbers this device's sessions: a held ACK or a deferred reset names the session it
    // was for by this, never by a pointer that a later session may reuse.
    std::uint64_t session_id = 0;
    // libcoap 4.3.1 drops a retransmitted CON notification without ACKing it
    // (libcoap#1306). When our ACK is lost, the device retransmits into that silence,
    // holds back every newer notification (NSTART=1) and finally forgets the observation.
    // We cannot see the retransmission, so while the device stays quiet after a CON
    // notification we ACK it again, on a back-off, until the device would have given up
    // anyway. The same for a CON notification we rejected with a RST (an observation we no
    // longer know, e.g. the one a re-registration replaced): a lost RST leaves the device
    // retransmitting into the same silence, and NSTART=1 then holds back the notifications
    // of the new registration too. While it stays quiet we RST that notification again.
    std::optional<coap_mid_t> last_con_mid;
    bool last_con_rejected = false;  // last_con_mid was answered with a RST, not an ACK
    NotificationPace con_pace;       // of CON notifications; last() is when last_con_mid came
    unsigned reacks = 0;             // extra ACKs sent for last_con_mid
    EventLoop::TimerId reack_timer = 0;
    std::string dtls_failure;  // why the last DTLS session failed, as last logged ("" = none)
    bool dtls_hello = false;   // the device answered this session's handshake (its hint came)
    coap_dtls_cpsk_info_t psk_info{};  // into credentials.psk, for the identity hint callback
    std::string name_mismatch;         // why the certificate's name was refused ("" = it was not)
    // A DTLS session's requests that timed out, and the probe that decides whether the
    // session stays (coap_link_keep.cpp). Reset with every new session.
    SessionKeeper keeper;
    EventLoop::TimerId probe_timer = 0;   // the probe's verdict: no answer by then
    EventLoop::TimerId expiry_timer = 0;  // the next abandoned CON's bound
    // The tokens of its exchanges (exchanges_): a renewal or a removal finds them without a
    // walk over every device's (20,000 at 10,000 devices).
    std::vector<std::uint64_t> exchanges;
  };

  struct Exchange {
    std::string device;
    std::string path;
    bool observe = false;
    bool established = false;  // observe: first response seen
    ResponseHandler handler;
    EventLoop::TimerId timer = 0;
    std::optional<std::chrono::milliseconds> timeout;  // instead of request_timeout
    std::uint8_t token[8] = {};
    // A Block2 body arriving block by block (libcoap's block mode): what came so far, and
    // the Observe value of its first block (later blocks answer plain GETs).
    std::string body;
    std::optional<std::uint32_t> body_observe;
  };

  struct HeldAck {
    std::string device;
    std::uint64_t session_id;
    coap_mid_t mid;
  };

  struct Ping {
    std::string device;
    CoapSessionPtr probe;  // a session of its own (see ping())
    std::function<void(bool)> done;
  };

  // Sessions (coap_link_sessions.cpp), in the context of `shard`; DTLS ones from
  // coap_link_dtls.cpp.
  CoapSessionPtr newSession(std::size_t shard, const std::string& uri,
                            const DtlsCredentials& credentials, std::string* error);
  CoapSessionPtr newPskSession(coap_context_t* context, const coap_address_t& address,
                               const std::string& uri, const PskCredentials& psk,
                               std::string* error);
  CoapSessionPtr newPkiSession(coap_context_t* context, const coap_address_t& address,
                               const std::string& uri, const PkiCredentials& pki,
                               std::string* error);
  Device* deviceBySession(const coap_session_t* session);

  // A DTLS session of `device` that failed or never completed: counted, and said at warning
  // level once per device and reason. Returns the reason for the exchanges it fails.
  std::string dtlsFailed(Device& device, std::string reason);
  // Why `device`'s handshake has not completed (its session is not established).
  static std::string stalledHandshake(const Device& device);
  // The device's session, made now if it has none yet (a DTLS device's first exchange).
  bool ensureSession(Device& device, std::string* error);
  void resetSession(const std::string& name, const std::string& reason);
  static void discardSession(CoapSessionPtr session);
  // The device `name` if it still uses `session` (nullptr once removed or on a new session).
  Device* deviceOn(std::string_view name, const coap_session_t* session);
  Device* deviceOn(std::string_view name, std::uint64_t session_id);

  // A DTLS session kept across a request timeout (coap_link_keep.cpp).
  void onExchangeTimeout(std::uint64_t token);
  void startProbe(Device& device);
  void probeAnswered(const std::string& name, std::uint64_t session_id, bool answered);
  void applyKeeper(Device& device);
  // libcoap is done with `token` (answered on `session`, or nacked) if it was abandoned.
  // `observation`: the answer registered an observation that nobody wants any more.
  void settleAbandoned(std::uint64_t token, coap_session_t* session, bool observation);
  // A new session, or none: the keeper's state goes (timers, tokens).
  void forgetKept(Device& device);
  std::chrono::milliseconds probeWait() const;
  std::chrono::steady_clock::duration holdBound(const Device& device) const;

  // Requests (coap_link.cpp).
  std::uint64_t send(Device& device, bridge::Method method, const std::string& path,
                     const std::string& payload, std::optional<unsigned> content_format,
                     bool observe, std::unique_ptr<Exchange> exchange);
  void fail(std::uint64_t token, const std::string& reason);

  // Contexts (coap_link.cpp, coap_link_io.cpp). Paced contexts are numbered: kOwnContext
  // is context_, 1 + k is shards_[k].
  static constexpr std::size_t kOwnContext = 0;
  static std::size_t pacedOf(std::size_t shard) { return shard + 1; }
  // What every context gets: block mode, the handlers, app data; its fd watched.
  int setUpContext(coap_context_t* context, std::size_t paced);
  // The shard for a new device (made now when every shard is full); nullopt (*error says
  // why) when libcoap cannot make a context.
  std::optional<std::size_t> shardForNewDevice(std::string* error);
  coap_context_t* shardContext(std::size_t shard) const { return shards_[shard].context.get(); }
  // Our own I/O on a context (a request sent, a session made): its timer work follows.
  void noteIo(std::size_t paced) { pacing_.noteIo(paced, CoapTimerPacing::Clock::now()); }
  // Returns the number of ready sockets (and timerfd) it handled: 0 when nothing was there.
  std::size_t processIo(std::size_t paced);
  // processIo until nothing is ready or max_rounds (see the request timeout, coap_link.cpp).
  void drainIo(std::size_t paced, unsigned max_rounds);
  static constexpr unsigned kDrainRounds = 256;  // datagrams per socket, at most
  unsigned runTimers();                          // the loop's timeout provider

  // ACKs of CON notifications (coap_link_acks.cpp).
  void noteConNotification(Device& device, coap_mid_t mid);
  void forgetConNotification(Device& device);
  void armReack(Device& device);
  std::chrono::steady_clock::duration reackDelay(const Device& device) const;
  static void sendEmptyReply(coap_session_t* session, coap_mid_t mid, bool reset);  // ACK/RST

  // Probes (coap_link_ping.cpp); releaseLater also for deferred responses' sessions.
  bool onPingAnswer(coap_session_t* session, coap_mid_t mid, coap_nack_reason_t reason);
  std::vector<std::function<void(bool)>> takePings(const std::string& device);
  void releaseLater(CoapSessionPtr session);
  std::uint64_t newToken();
  // Adds one block of a Block2 body to `exchange`; the whole body when it is complete.
  // Refuses (nullopt, *refused set) a body beyond kMaxResponseBody.
  enum class BodyState { Partial, Complete, Refused };
  BodyState collectBlock(Exchange& exchange, const coap_pdu_t* received, const coap_opt_t* block2,
                         std::string& payload, std::optional<std::uint32_t>& observe);

  EventLoop& loop_;
  CoapConfig config_;
  // First, so they go last: the sessions below hold references into them. context_ has
  // our listeners and resources (and the server sessions of their clients); the devices'
  // client sessions are in shards (coap_shards.h).
  CoapContextPtr context_;
  int fd_ = -1;
  struct Shard {
    CoapContextPtr context;
    int fd = -1;
  };
  std::vector<Shard> shards_;
  CoapShardSlots slots_;
  CoapContextPacing pacing_;  // when coap_io_prepare_epoll runs, per context (see its header)
  // The host names sent as SNI by certificate sessions (coap_link_dtls.cpp): libcoap 4.3.1
  // keeps the setup's client_sni pointer in the context and reads it again when it
  // re-handshakes a session, so each text lives as long as we do. One entry per distinct
  // host ever reached with certificates.
  std::set<std::string, std::less<>> pki_sni_;
  std::map<std::string, std::unique_ptr<Device>, std::less<>> devices_;
  // By token: random (newToken), so hashed as they are; a notification's lookup among
  // 20,000 observations (10,000 devices) was a walk down a tree of cache misses.
  std::unordered_map<std::uint64_t, std::unique_ptr<Exchange>> exchanges_;
  using ExchangeIt = decltype(exchanges_)::iterator;
  // Every exchange is added and taken out through these, which keep Device::exchanges.
  void addExchange(Device& device, std::uint64_t token, std::unique_ptr<Exchange> exchange);
  std::unique_ptr<Exchange> takeExchange(ExchangeIt it);
  // Tokens of requests that timed out on a kept DTLS session, which libcoap may still hold:
  // by token, the device's name (its Device::keeper has the rest).
  std::map<std::uint64_t, std::string> abandoned_;
  std::array<std::uint64_t, 64> token_pool_{};
  std::size_t token_pool_used_ = token_pool_.size();  // empty: filled at the first request
  std::uint64_t next_session_id_ = 1;
  CoapStats stats_;
  std::function<bool()> hold_ack_;
  std::string responding_device_;  // of the response being handled ("" when unmatched)
  std::vector<HeldAck> held_acks_;
  std::map<std::pair<const coap_session_t*, coap_mid_t>, Ping> pings_;  // by (probe, MID)
  std::vector<CoapSessionPtr> to_release_;                              // finished probes
  EventLoop::TimerId release_timer_ = 0;
  std::vector<std::unique_ptr<ServerHandler>> server_handlers_;  // resources point here
  // The unknown resource's handlers: by first path segment (servePrefix), else the fallback.
  void ensureUnknownResource();
  bool unknown_resource_ = false;
  ServerHandler unknown_handler_;
  std::map<std::string, ServerHandler, std::less<>> prefix_handlers_;
  std::map<std::string, coap_resource_t*, std::less<>> observable_;  // owned by the context
  // Responses held back (after_release), each with a reference on its session; triggered by
  // releaseHeldAcks(), then answered when libcoap hands the request back (coap_async).
  struct Deferred {
    CoapSessionPtr session;
    std::string token;
    CoapServerResponse response;
    bool triggered = false;
  };
  std::vector<Deferred> deferred_;
  static constexpr std::size_t kMaxDeferred = 4096;  // beyond: answered at once
  // Block1 uploads to our resources (assembleBlock1). Bounds: an RD registration or a /ps
  // publish is far smaller than 64 KiB; 16 at once, 30 s idle (an EXCHANGE_LIFETIME's worth
  // of a slow peer): at most 1 MiB held.
  Block1Assembly block1_{64 * 1024, 16, std::chrono::seconds(30)};
  // Server DTLS (coap_link_dtls.cpp): set up at the first coaps:// listener. The keys point
  // into config_.psk_clients.
  bool setupServerPsk(std::string* error);
  bool server_psk_ready_ = false;
  // With config_.listen_pki: our certificate, and clients' ones checked against its CA.
  bool setupServerPki(std::string* error);
  bool server_pki_ready_ = false;
  std::map<std::string, coap_bin_const_t, std::less<>> server_keys_;  // by identity
  std::uint64_t unknown_identities_ = 0;
  std::chrono::steady_clock::time_point unknown_identity_logged_{};
};

}  // namespace coap2mqtt::gateway
