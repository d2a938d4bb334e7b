// CoapLink: the contexts, requests and observations matched by token, libcoap's callbacks.
// The other jobs of the link are in coap_link_{sessions,acks,io,ping,server,dtls}.cpp (see
// coap_link_internal.h).
#include "gateway/coap_link.h"

#include <sys/random.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>

#include <spdlog/spdlog.h>

#include "bridge/uri_path.h"
#include "gateway/coap_link_internal.h"

namespace coap2mqtt::gateway {
namespace {

// libcoap 4.3.1 has no context app data: every client session points back at its link.
// Server-side sessions (libcoap makes them) carry none.
CoapLink::Impl* linkOf(const coap_session_t* session) {
  return static_cast<CoapLink::Impl*>(coap_session_get_app_data(session));
}

// noexcept trampolines: no exception ever crosses into libcoap.
coap_response_t responseTrampoline(coap_session_t* session, const coap_pdu_t* /*sent*/,
                                   const coap_pdu_t* received, const coap_mid_t /*mid*/) noexcept {
  CoapLink::Impl* link = linkOf(session);
  if (link == nullptr) return COAP_RESPONSE_OK;
  try {
    const bool ok = link->onResponse(session, received);
    // libcoap ACKs a CON response when this returns, unless it is a NON by then
    // (coap_send_ack looks at the type): a held ACK is ours to send later.
    if (ok && coap_pdu_get_type(received) == COAP_MESSAGE_CON &&
        link->holdAck(session, coap_pdu_get_mid(received))) {
      coap_pdu_set_type(const_cast<coap_pdu_t*>(received), COAP_MESSAGE_NON);
    }
    return ok ? COAP_RESPONSE_OK : COAP_RESPONSE_FAIL;
  } catch (const std::exception& e) {
    spdlog::error("coap: response handler failed: {}", e.what());
    return COAP_RESPONSE_OK;
  }
}

int eventTrampoline(coap_session_t* session, const coap_event_t event) noexcept {
  CoapLink::Impl* link = linkOf(session);
  if (link == nullptr) return 0;
  try {
    link->onEvent(session, event);
  } catch (const std::exception& e) {
    spdlog::error("coap: event handler failed: {}", e.what());
  }
  return 0;
}

void nackTrampoline(coap_session_t* session, const coap_pdu_t* sent,
                    const coap_nack_reason_t reason, const coap_mid_t mid) noexcept {
  CoapLink::Impl* link = linkOf(session);
  if (link == nullptr) return;
  try {
    link->onNack(session, sent, reason, mid);
  } catch (const std::exception& e) {
    spdlog::error("coap: nack handler failed: {}", e.what());
  }
}

std::uint64_t tokenValue(const std::uint8_t* bytes) {
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | bytes[i];
  return v;
}

void tokenBytes(std::uint64_t v, std::uint8_t* out) {
  for (int i = 7; i >= 0; --i) {
    out[i] = static_cast<std::uint8_t>(v & 0xff);
    v >>= 8;
  }
}

coap_pdu_code_t methodCode(bridge::Method method) {
  switch (method) {
    case bridge::Method::Get:
      return COAP_REQUEST_CODE_GET;
    case bridge::Method::Put:
      return COAP_REQUEST_CODE_PUT;
    case bridge::Method::Post:
      return COAP_REQUEST_CODE_POST;
    case bridge::Method::Delete:
      return COAP_REQUEST_CODE_DELETE;
  }
  return COAP_REQUEST_CODE_GET;
}

const char* nackReason(coap_nack_reason_t reason) {
  switch (reason) {
    case COAP_NACK_TOO_MANY_RETRIES:
      return "timeout (no ACK after retransmissions)";
    case COAP_NACK_NOT_DELIVERABLE:
      return "not deliverable";
    case COAP_NACK_RST:
      return "reset by device";
    case COAP_NACK_TLS_FAILED:
      return "DTLS handshake failed (see the line before)";
    case COAP_NACK_ICMP_ISSUE:
      return "ICMP error (port unreachable?)";
  }
  return "failed";
}

// A request body for coap_add_data_large_request(), which takes it: libcoap 4.3.1 calls
// the release function exactly once on every path (block.c): at once when the body fits
// one PDU or the call fails, after the last Block1 block otherwise, or when the session
// goes first.
void releaseBody(coap_session_t* /*session*/, void* body) noexcept {
  delete static_cast<std::string*>(body);
}

}  // namespace

bool coapAddPathOptions(coap_pdu_t* pdu, std::uint16_t option, std::string_view path) {
  while (!path.empty()) {
    if (path.front() == '/') {
      path.remove_prefix(1);
      continue;
    }
    auto slash = path.find('/');
    // Decoded with the same function that decided a command's path (bridge/uri_path.h).
    std::string segment = bridge::percentDecode(path.substr(0, slash));
    if (coap_add_option(pdu, option, segment.size(),
                        reinterpret_cast<const std::uint8_t*>(segment.data())) == 0) {
      return false;
    }
    path = slash == std::string_view::npos ? std::string_view{} : path.substr(slash);
  }
  return true;
}

std::string CoapResponse::codeString() const {
  std::string detail = std::to_string(code % 100);
  return std::to_string(code / 100) + (detail.size() < 2 ? ".0" : ".") + detail;
}

// ---- CoapLink: the loop-thread check, then the state's own method.

CoapLink::CoapLink(EventLoop& loop, const CoapConfig& config)
    : loop_thread_(loop), impl_(std::make_unique<Impl>(loop, config)) {}

CoapLink::~CoapLink() = default;

bool CoapLink::addDevice(const std::string& name, const std::string& uri, std::string* error,
                         const DtlsCredentials& credentials) {
  loop_thread_.check();
  return impl_->addDevice(name, uri, error, credentials);
}

void CoapLink::removeDevice(const std::string& name) {
  loop_thread_.check();
  impl_->removeDevice(name);
}

CoapLink::RequestId CoapLink::request(const std::string& device, bridge::Method method,
                                      const std::string& path, const std::string& payload,
                                      std::optional<unsigned> content_format,
                                      ResponseHandler handler) {
  loop_thread_.check();
  return impl_->startExchange(device, method, path, payload, content_format, false,
                              std::move(handler));
}

CoapLink::ObserveId CoapLink::observe(const std::string& device, const std::string& path,
                                      ObserveHandler handler,
                                      std::optional<std::chrono::milliseconds> timeout) {
  loop_thread_.check();
  return impl_->startExchange(device, bridge::Method::Get, path, {}, std::nullopt, true,
                              std::move(handler), timeout);
}

void CoapLink::cancelRequest(RequestId id) {
  loop_thread_.check();
  impl_->cancelRequest(id);
}

void CoapLink::cancelObserve(ObserveId id) {
  loop_thread_.check();
  impl_->cancelObserve(id);
}

void CoapLink::ping(const std::string& device, std::function<void(bool)> done) {
  loop_thread_.check();
  impl_->ping(device, std::move(done));
}

bool CoapLink::listen(const std::string& host_port, std::string* error) {
  loop_thread_.check();
  return impl_->listen(host_port, error);
}

void CoapLink::serve(const std::string& path,
                     const std::vector<std::pair<std::string, std::string>>& attributes,
                     ServerHandler handler) {
  loop_thread_.check();
  impl_->serve(path, attributes, std::move(handler));
}

void CoapLink::serveUnknown(ServerHandler handler) {
  loop_thread_.check();
  impl_->serveUnknown(std::move(handler));
}

void CoapLink::setHoldAck(std::function<bool()> hold_ack) {
  loop_thread_.check();
  impl_->setHoldAck(std::move(hold_ack));
}

void CoapLink::releaseHeldAcks() {
  loop_thread_.check();
  impl_->releaseHeldAcks();
}

const CoapStats& CoapLink::stats() const {
  loop_thread_.check();
  impl_->setMalformed(libcoapMalformedCount());
  return impl_->stats();
}

// ---- The state.

CoapLink::Impl::Impl(EventLoop& loop, const CoapConfig& config)
    : loop_(loop), config_(config), slots_(kDevicesPerShard) {
  coap_set_log_handler(&libcoapLogHandler);
  coap_set_log_level(spdlog::get_level() <= spdlog::level::trace   ? LOG_DEBUG
                     : spdlog::get_level() <= spdlog::level::debug ? LOG_INFO
                                                                   : LOG_WARNING);
  context_.reset(coap_new_context(nullptr));
  if (!context_) throw std::runtime_error("coap: cannot create context");
  // Every client of our listeners (RD registrants, /ps) gets a server session; libcoap keeps
  // them without bound unless told: past the cap the least recently used idle one goes.
  coap_context_set_max_idle_sessions(context_.get(),
                                     static_cast<unsigned>(config_.limits.max_sessions));
  fd_ = setUpContext(context_.get(), pacing_.add());
  loop_.setTimeoutProvider([this] { return runTimers(); });
}

int CoapLink::Impl::setUpContext(coap_context_t* context, std::size_t paced) {
  // libcoap fetches Block2 blocks and sends Block1 for us. Not COAP_BLOCK_SINGLE_BODY:
  // in 4.3.1 that allocates whatever Size2 the peer claims and keeps every block until the
  // end; we take the blocks one by one and refuse a body beyond kMaxResponseBody.
  coap_context_set_block_mode(context, COAP_BLOCK_USE_LIBCOAP);
  coap_register_response_handler(context, &responseTrampoline);
  coap_register_nack_handler(context, &nackTrampoline);
  coap_register_event_handler(context, &eventTrampoline);
  coap_set_app_data(context, this);  // implOf(session), whichever context it is in
  const int fd = coap_context_get_coap_fd(context);
  if (fd < 0) throw std::runtime_error("coap: libcoap was built without epoll support");
  loop_.watchFd(fd, [this, paced] { processIo(paced); });
  return fd;
}

std::optional<std::size_t> CoapLink::Impl::shardForNewDevice(std::string* error) {
  const std::size_t shard = slots_.pick();
  if (shard < shards_.size()) return shard;
  Shard added;
  added.context.reset(coap_new_context(nullptr));  // client sessions only: no endpoint
  if (!added.context) {
    // libcoap said why in its log (epoll_create, timerfd_create: out of file descriptors?).
    *error = "cannot create a CoAP context for more devices";
    return std::nullopt;
  }
  const std::size_t paced = pacedOf(shards_.size());
  added.fd = setUpContext(added.context.get(), paced);
  if (pacing_.add() != paced) throw std::logic_error("coap: shard pacing out of step");
  shards_.push_back(std::move(added));
  spdlog::debug("coap: device context {} made ({} devices each at most)", shards_.size(),
                slots_.perShard());
  return shard;
}

CoapLink::Impl::~Impl() {
  loop_.setTimeoutProvider(nullptr);
  loop_.unwatchFd(fd_);
  for (const Shard& shard : shards_) loop_.unwatchFd(shard.fd);
  for (auto& [token, exchange] : exchanges_) {
    if (exchange->timer != 0) loop_.cancel(exchange->timer);
  }
  for (auto& [name, device] : devices_) {
    if (device->reack_timer != 0) loop_.cancel(device->reack_timer);
    forgetKept(*device);
  }
  if (release_timer_ != 0) loop_.cancel(release_timer_);
  // The members go next (sessions first, the contexts last). Freeing a session reports the
  // requests still in its queue to the nack handler (coap_session_mfree): nothing may call
  // into a link that is half gone.
  auto quiet = [](coap_context_t* context) {
    coap_register_response_handler(context, nullptr);
    coap_register_nack_handler(context, nullptr);
    coap_register_event_handler(context, nullptr);
  };
  quiet(context_.get());
  for (const Shard& shard : shards_) quiet(shard.context.get());
}

std::uint64_t CoapLink::Impl::startExchange(const std::string& device, bridge::Method method,
                                            const std::string& path, const std::string& payload,
                                            std::optional<unsigned> content_format, bool observe,
                                            ResponseHandler handler,
                                            std::optional<std::chrono::milliseconds> timeout) {
  auto it = devices_.find(device);
  if (it == devices_.end()) {
    handler(std::nullopt, "unknown device '" + device + "'");
    return 0;
  }
  auto exchange = std::make_unique<Exchange>();
  exchange->device = device;
  exchange->path = path;
  exchange->observe = observe;
  exchange->handler = std::move(handler);
  exchange->timeout = timeout;
  return send(*it->second, method, path, payload, content_format, observe, std::move(exchange));
}

void CoapLink::Impl::cancelRequest(std::uint64_t id) {
  auto it = exchanges_.find(id);
  if (it == exchanges_.end()) return;
  const std::unique_ptr<Exchange> exchange = takeExchange(it);
  if (exchange->timer != 0) loop_.cancel(exchange->timer);
}

void CoapLink::Impl::addExchange(Device& device, std::uint64_t token,
                                 std::unique_ptr<Exchange> exchange) {
  exchanges_[token] = std::move(exchange);
  device.exchanges.push_back(token);
}

std::unique_ptr<CoapLink::Impl::Exchange> CoapLink::Impl::takeExchange(ExchangeIt it) {
  std::unique_ptr<Exchange> exchange = std::move(it->second);
  if (auto d = devices_.find(exchange->device); d != devices_.end()) {
    std::vector<std::uint64_t>& tokens = d->second->exchanges;
    auto t = std::find(tokens.begin(), tokens.end(), it->first);
    if (t != tokens.end()) {
      *t = tokens.back();
      tokens.pop_back();
    }
  }
  exchanges_.erase(it);
  return exchange;
}

// Tokens are unpredictable (RFC 9175 §4.2): an off-path host that could guess the next
// one could inject a response to it. From the kernel's CSPRNG, 64 at a time; never one
// that is still in use.
std::uint64_t CoapLink::Impl::newToken() {
  for (;;) {
    if (token_pool_used_ == token_pool_.size()) {
      std::size_t got = 0;
      auto* bytes = reinterpret_cast<char*>(token_pool_.data());
      const std::size_t want = token_pool_.size() * sizeof token_pool_[0];
      while (got < want) {
        const ssize_t n = getrandom(bytes + got, want - got, 0);
        if (n < 0) {
          if (errno == EINTR) continue;
          throw std::system_error(errno, std::generic_category(), "coap: getrandom");
        }
        got += static_cast<std::size_t>(n);
      }
      token_pool_used_ = 0;
    }
    const std::uint64_t token = token_pool_[token_pool_used_++];
    if (exchanges_.count(token) == 0) return token;
  }
}

std::uint64_t CoapLink::Impl::send(Device& device, bridge::Method method, const std::string& path,
                                   const std::string& payload,
                                   std::optional<unsigned> content_format, bool observe,
                                   std::unique_ptr<Exchange> exchange) {
  if (std::string error; !ensureSession(device, &error)) {
    exchange->handler(std::nullopt, error);
    return 0;
  }
  const std::uint64_t token = newToken();
  tokenBytes(token, exchange->token);
  CoapPduPtr pdu(coap_new_pdu(COAP_MESSAGE_CON, methodCode(method), device.session.get()));
  if (!pdu) {
    exchange->handler(std::nullopt, "cannot allocate a CoAP PDU");
    return 0;
  }
  bool ok = coap_add_token(pdu.get(), sizeof exchange->token, exchange->token) != 0;
  std::uint8_t buf[4];
  if (observe) {
    ok = ok &&
         coap_add_option(pdu.get(), COAP_OPTION_OBSERVE,
                         coap_encode_var_safe(buf, sizeof buf, COAP_OBSERVE_ESTABLISH), buf) != 0;
  }
  if (ok) ok = coapAddPathOptions(pdu.get(), COAP_OPTION_URI_PATH, path);
  if (ok && content_format) {
    ok = coap_add_option(pdu.get(), COAP_OPTION_CONTENT_FORMAT,
                         coap_encode_var_safe(buf, sizeof buf, *content_format), buf) != 0;
  }
  if (ok && !payload.empty()) {
    // The last change to the PDU (libcoap's rule). libcoap keeps a pointer to the body
    // until the (possibly Block1) transfer is done, and releases it (releaseBody).
    auto body = std::make_unique<std::string>(payload);
    const auto* data = reinterpret_cast<const std::uint8_t*>(body->data());
    const std::size_t size = body->size();
    ok = coap_add_data_large_request(device.session.get(), pdu.get(), size, data, &releaseBody,
                                     body.release()) != 0;
  }
  if (!ok) {
    exchange->handler(std::nullopt, "cannot build the CoAP request");
    return 0;
  }
  if (coap_send(device.session.get(), pdu.release()) == COAP_INVALID_MID) {
    exchange->handler(std::nullopt, "cannot send the CoAP request");
    return 0;
  }
  ++stats_.requests_sent;
  noteIo(pacedOf(device.shard));  // e.g. Block1 timers only prepare sets
  // libcoap may still be retransmitting it: a new session, or a kept DTLS one that no
  // longer waits for it (coap_link_keep.cpp).
  exchange->timer = loop_.runAfter(exchange->timeout.value_or(config_.request_timeout),
                                   [this, token] { onExchangeTimeout(token); });
  spdlog::trace("coap: sent token {:016x} to {}{}", token, device.name, path);
  addExchange(device, token, std::move(exchange));
  return token;
}

void CoapLink::Impl::fail(std::uint64_t token, const std::string& reason) {
  auto it = exchanges_.find(token);
  if (it == exchanges_.end()) return;
  std::unique_ptr<Exchange> exchange = takeExchange(it);
  if (exchange->timer != 0) loop_.cancel(exchange->timer);
  ++stats_.failures;
  exchange->handler(std::nullopt, reason);
}

bool CoapLink::Impl::onResponse(coap_session_t* session, const coap_pdu_t* received) {
  coap_bin_const_t token_bin = coap_pdu_get_token(received);
  const ResponseOptions options = readResponseOptions(received);
  auto observe_value = options.observe;
  auto it = token_bin.length == 8 ? exchanges_.find(tokenValue(token_bin.s)) : exchanges_.end();
  spdlog::trace("coap: response token {:016x} observe {} {}",
                token_bin.length == 8 ? tokenValue(token_bin.s) : 0, observe_value.value_or(0),
                it == exchanges_.end() ? "unknown" : "matched");
  responding_device_.clear();
  if (!abandoned_.empty() && token_bin.length == 8) {  // a late answer (coap_link_keep.cpp)
    settleAbandoned(tokenValue(token_bin.s), session, observe_value && it == exchanges_.end());
  }
  if (it == exchanges_.end()) {
    ++stats_.unknown_token;
    if (!observe_value) return true;
    // A notification nobody wants: RST makes the device forget the observation.
    if (coap_pdu_get_type(received) == COAP_MESSAGE_CON) {
      for (auto& [name, device] : devices_) {
        if (device->session.get() != session) continue;
        noteConNotification(*device, coap_pdu_get_mid(received));
        device->last_con_rejected = true;
        break;
      }
    }
    return false;
  }
  Exchange& exchange = *it->second;
  responding_device_ = exchange.device;
  if (exchange.observe && observe_value && coap_pdu_get_type(received) == COAP_MESSAGE_CON) {
    if (Device* device = deviceOn(exchange.device, session)) {
      noteConNotification(*device, coap_pdu_get_mid(received));
    }
  }
  CoapResponse response;
  coap_pdu_code_t code = coap_pdu_get_code(received);
  response.code = COAP_RESPONSE_CLASS(code) * 100 + (code & 0x1f);
  response.content_format = options.content_format;
  response.max_age = options.max_age;
  switch (collectBlock(exchange, received, options.block2, response.payload, observe_value)) {
    case BodyState::Partial:
      return true;  // libcoap has asked for the next block already
    case BodyState::Refused: {
      ++stats_.body_too_large;
      // The blocks still coming find no exchange: dropped.
      std::unique_ptr<Exchange> refused = takeExchange(it);
      if (refused->timer != 0) loop_.cancel(refused->timer);
      // libcoap would go on asking for the rest of the body, block after block: its block
      // state goes with the session, renewed once libcoap is done with this callback.
      if (const Device* device = deviceOn(refused->device, session)) {
        loop_.runAfter(std::chrono::milliseconds(0),
                       [this, name = device->name, id = device->session_id] {
                         if (deviceOn(name, id) != nullptr) resetSession(name, "body too large");
                       });
      }
      ++stats_.failures;
      refused->handler(std::nullopt, "response body larger than " +
                                         std::to_string(kMaxResponseBody) + " bytes, refused");
      return true;
    }
    case BodyState::Complete:
      break;
  }
  response.observe = observe_value;

  const bool continues = exchange.observe && response.success() && response.observe.has_value();
  if (exchange.observe && exchange.established) {
    ++stats_.notifications;
  } else {
    ++stats_.responses;
  }
  if (continues) {
    exchange.established = true;
    if (exchange.timer != 0) {
      loop_.cancel(exchange.timer);
      exchange.timer = 0;
    }
    // Copy the handler: it may cancel this very observation.
    ResponseHandler handler = exchange.handler;
    handler(response, {});
    return true;
  }
  std::unique_ptr<Exchange> done = takeExchange(it);
  if (done->timer != 0) loop_.cancel(done->timer);
  done->handler(response, {});
  return true;
}

CoapLink::Impl::BodyState CoapLink::Impl::collectBlock(Exchange& exchange,
                                                       const coap_pdu_t* received,
                                                       const coap_opt_t* block2,
                                                       std::string& payload,
                                                       std::optional<std::uint32_t>& observe) {
  std::size_t length = 0;
  const std::uint8_t* data = nullptr;
  std::size_t offset = 0;
  std::size_t total = 0;
  if (coap_get_data_large(received, &length, &data, &offset, &total) == 0) length = 0;
  coap_block_t block{};
  const bool blockwise = blockFromOption(block2, &block);
  if (!blockwise || (block.num == 0 && block.m == 0)) {
    exchange.body.clear();
    if (length > kMaxResponseBody) return BodyState::Refused;
    payload.assign(reinterpret_cast<const char*>(data), length);
    return BodyState::Complete;
  }
  if (offset == 0) {  // a new body (also when libcoap restarted it after an ETag change)
    exchange.body.clear();
    exchange.body_observe = observe;
  }
  if (offset != exchange.body.size() || offset + length > kMaxResponseBody) {
    exchange.body.clear();
    exchange.body.shrink_to_fit();
    return BodyState::Refused;
  }
  exchange.body.append(reinterpret_cast<const char*>(data), length);
  if (block.m != 0) return BodyState::Partial;
  payload = std::move(exchange.body);
  exchange.body.clear();
  observe = exchange.body_observe;
  return BodyState::Complete;
}

void CoapLink::Impl::onNack(coap_session_t* session, const coap_pdu_t* sent,
                            coap_nack_reason_t reason, coap_mid_t mid) {
  if (sent == nullptr) return;
  if (coap_pdu_get_code(sent) == COAP_EMPTY_CODE) {
    onPingAnswer(session, mid, reason);
    return;
  }
  coap_bin_const_t token_bin = coap_pdu_get_token(sent);
  if (token_bin.length != 8) return;
  const std::uint64_t token = tokenValue(token_bin.s);
  if (!abandoned_.empty()) settleAbandoned(token, session, false);
  if (reason == COAP_NACK_ICMP_ISSUE) {
    // libcoap 4.3.1 keeps retransmitting a request that met an ICMP error. When the device
    // comes back, that stale registration would replace the current one on the device (same
    // session, same request): start the device over on a clean session instead. Not from
    // inside this callback: libcoap still uses the session.
    auto it = exchanges_.find(token);
    if (it != exchanges_.end()) {
      if (const Device* device = deviceOn(it->second->device, session)) {
        loop_.runAfter(std::chrono::milliseconds(0),
                       [this, name = device->name, id = device->session_id] {
                         if (deviceOn(name, id) != nullptr) resetSession(name, "ICMP error");
                       });
      }
    }
  }
  fail(token, nackReason(reason));
}

void CoapLink::Impl::cancelObserve(std::uint64_t id) {
  auto it = exchanges_.find(id);
  if (it == exchanges_.end()) return;
  std::unique_ptr<Exchange> exchange = takeExchange(it);
  if (exchange->timer != 0) loop_.cancel(exchange->timer);
  auto device = devices_.find(exchange->device);
  if (device == devices_.end() || !exchange->established || !device->second->session) return;
  coap_binary_t token{sizeof exchange->token, exchange->token};
  if (coap_cancel_observe(device->second->session.get(), &token, COAP_MESSAGE_CON) == 0) {
    spdlog::debug("coap: could not cancel observation of {}{}", exchange->device, exchange->path);
  }
  noteIo(pacedOf(device->second->shard));
}

}  // namespace coap2mqtt::gateway
