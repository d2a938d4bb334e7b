#include "gateway/coap_link.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>

#include <coap3/coap.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <utility>

#include <spdlog/spdlog.h>

#include "gateway/observe_freshness.h"

namespace coap2mqtt::gateway {

struct CoapLink::Device {
  std::string name;
  std::string uri;
  coap_session_t* session = nullptr;
  // libcoap 4.3.1 drops a retransmitted CON notification without ACKing it (libcoap#1306).
  // When our ACK is lost, the device retransmits into that silence, holds back every newer
  // notification (NSTART=1) and finally forgets the observation. We cannot see the
  // retransmission, so while the device stays quiet after a CON notification we ACK it
  // again, on a back-off, until the device would have given up anyway.
  // The same for a CON notification we rejected with a RST (an observation we no longer
  // know, e.g. the one a re-registration replaced): a lost RST leaves the device
  // retransmitting into the same silence, and NSTART=1 then holds back the notifications
  // of the new registration too. While it stays quiet we RST that notification again.
  std::optional<int> last_con_mid;
  bool last_con_rejected = false;  // last_con_mid was answered with a RST, not an ACK
  NotificationPace con_pace;       // of CON notifications; last() is when last_con_mid came
  unsigned reacks = 0;             // extra ACKs sent for last_con_mid
  EventLoop::TimerId reack_timer = 0;
};

struct CoapLink::Exchange {
  std::string device;
  std::string path;
  bool observe = false;
  bool established = false;  // observe: first response seen
  ResponseHandler handler;
  EventLoop::TimerId timer = 0;
  std::optional<std::chrono::milliseconds> timeout;  // instead of request_timeout
  std::uint8_t token[8] = {};
};

// noexcept trampolines: no exception ever crosses into libcoap.
struct CoapCallbacks {
  static CoapLink* link(coap_session_t* session) {
    return static_cast<CoapLink*>(coap_session_get_app_data(session));
  }
  static coap_response_t response(coap_session_t* session, const coap_pdu_t* /*sent*/,
                                  const coap_pdu_t* received, const coap_mid_t /*mid*/) noexcept {
    if (link(session) == nullptr) return COAP_RESPONSE_OK;  // a server-side session
    try {
      const bool ok = link(session)->onResponse(session, received);
      // libcoap ACKs a CON response when this returns, unless it is a NON by then
      // (coap_send_ack looks at the type): a held ACK is ours to send later.
      if (ok && coap_pdu_get_type(received) == COAP_MESSAGE_CON &&
          link(session)->holdAck(session, coap_pdu_get_mid(received))) {
        coap_pdu_set_type(const_cast<coap_pdu_t*>(received), COAP_MESSAGE_NON);
      }
      return ok ? COAP_RESPONSE_OK : COAP_RESPONSE_FAIL;
    } catch (const std::exception& e) {
      spdlog::error("coap: response handler failed: {}", e.what());
      return COAP_RESPONSE_OK;
    }
  }
  static void nack(coap_session_t* session, const coap_pdu_t* sent, const coap_nack_reason_t reason,
                   const coap_mid_t mid) noexcept {
    if (link(session) == nullptr) return;
    try {
      link(session)->onNack(session, sent, static_cast<int>(reason), mid);
    } catch (const std::exception& e) {
      spdlog::error("coap: nack handler failed: {}", e.what());
    }
  }
  static void serverRequest(coap_resource_t* resource, coap_session_t* session,
                            const coap_pdu_t* request, const coap_string_t* query,
                            coap_pdu_t* response) noexcept;
  static void log(coap_log_t level, const char* message) noexcept {
    std::string_view text(message);
    while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.remove_suffix(1);
    spdlog::level::level_enum mapped = spdlog::level::debug;
    // An RST answering our CoAP ping is the expected pong, not an alert.
    if (text.rfind("got RST for mid", 0) == 0) {
      mapped = spdlog::level::debug;
    } else if (level <= LOG_ERR) {
      mapped = spdlog::level::err;
    } else if (level == LOG_WARNING) {
      mapped = spdlog::level::warn;
    }
    spdlog::log(mapped, "libcoap: {}", text);
  }
};

namespace {

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

std::optional<std::uint32_t> uintOption(const coap_pdu_t* pdu, std::uint16_t number) {
  coap_opt_iterator_t it;
  coap_opt_t* opt = coap_check_option(pdu, number, &it);
  if (opt == nullptr) return std::nullopt;
  return coap_decode_var_bytes(coap_opt_value(opt), coap_opt_length(opt));
}

int hexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Uri-Path options carry decoded segments: "%20" in a link target is a space on the wire.
std::string percentDecode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && hexValue(s[i + 1]) >= 0 && hexValue(s[i + 2]) >= 0) {
      out.push_back(static_cast<char>(hexValue(s[i + 1]) * 16 + hexValue(s[i + 2])));
      i += 2;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

// One option per path segment ("/a/b" → "a", "b"), percent-decoded as the wire wants.
bool addPathOptions(coap_pdu_t* pdu, std::uint16_t option, std::string_view path) {
  while (!path.empty()) {
    if (path.front() == '/') {
      path.remove_prefix(1);
      continue;
    }
    auto slash = path.find('/');
    std::string segment = percentDecode(path.substr(0, slash));
    if (coap_add_option(pdu, option, segment.size(),
                        reinterpret_cast<const std::uint8_t*>(segment.data())) == 0) {
      return false;
    }
    path = slash == std::string_view::npos ? std::string_view{} : path.substr(slash);
  }
  return true;
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

const char* nackReason(int reason) {
  switch (static_cast<coap_nack_reason_t>(reason)) {
    case COAP_NACK_TOO_MANY_RETRIES:
      return "timeout (no ACK after retransmissions)";
    case COAP_NACK_NOT_DELIVERABLE:
      return "not deliverable";
    case COAP_NACK_RST:
      return "reset by device";
    case COAP_NACK_TLS_FAILED:
      return "DTLS failed";
    case COAP_NACK_ICMP_ISSUE:
      return "ICMP error (port unreachable?)";
  }
  return "failed";
}

bool resolve(const std::string& uri, coap_address_t* out, std::string* error) {
  coap_uri_t parsed;
  if (coap_split_uri(reinterpret_cast<const std::uint8_t*>(uri.data()), uri.size(), &parsed) != 0) {
    *error = "not a CoAP URI: " + uri;
    return false;
  }
  if (parsed.scheme != COAP_URI_SCHEME_COAP) {
    *error = "only coap:// is supported: " + uri;
    return false;
  }
  std::string host(reinterpret_cast<const char*>(parsed.host.s), parsed.host.length);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* result = nullptr;
  std::string port = std::to_string(parsed.port);
  if (int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &result); rc != 0) {
    *error = "cannot resolve '" + host + "': " + gai_strerror(rc);
    return false;
  }
  coap_address_init(out);
  out->size = result->ai_addrlen;
  std::memcpy(&out->addr, result->ai_addr, result->ai_addrlen);
  freeaddrinfo(result);
  return true;
}

}  // namespace

std::string CoapResponse::codeString() const {
  std::string detail = std::to_string(code % 100);
  return std::to_string(code / 100) + (detail.size() < 2 ? ".0" : ".") + detail;
}

CoapLink::CoapLink(EventLoop& loop, const CoapConfig& config)
    : loop_(loop), config_(config), next_token_(std::random_device{}()) {
  next_token_ = (next_token_ << 32) ^ std::random_device{}();
  coap_set_log_handler(&CoapCallbacks::log);
  coap_set_log_level(spdlog::get_level() <= spdlog::level::trace   ? LOG_DEBUG
                     : spdlog::get_level() <= spdlog::level::debug ? LOG_INFO
                                                                   : LOG_WARNING);
  context_ = coap_new_context(nullptr);
  if (context_ == nullptr) throw std::runtime_error("coap: cannot create context");
  // libcoap reassembles Block2 bodies and sends Block1 for us; handlers see whole bodies.
  coap_context_set_block_mode(context_, COAP_BLOCK_USE_LIBCOAP | COAP_BLOCK_SINGLE_BODY);
  coap_register_response_handler(context_, &CoapCallbacks::response);
  coap_register_nack_handler(context_, &CoapCallbacks::nack);

  int fd = coap_context_get_coap_fd(context_);
  if (fd < 0) throw std::runtime_error("coap: libcoap was built without epoll support");
  loop_.watchFd(fd, [this] { processIo(); });
  loop_.setTimeoutProvider([this] {
    coap_tick_t now;
    coap_ticks(&now);
    // Sends due retransmissions and says when the next one is due (0 = none).
    return coap_io_prepare_epoll(context_, now);
  });
}

CoapLink::~CoapLink() {
  loop_.setTimeoutProvider(nullptr);
  for (auto& [token, exchange] : exchanges_) {
    if (exchange->timer != 0) loop_.cancel(exchange->timer);
  }
  exchanges_.clear();
  for (auto& [name, device] : devices_) coap_session_release(device->session);
  devices_.clear();
  for (auto& [key, ping] : pings_) coap_session_release(key.first);
  pings_.clear();
  if (release_timer_ != 0) loop_.cancel(release_timer_);
  for (coap_session_t* s : to_release_) coap_session_release(s);
  if (context_ != nullptr) coap_free_context(context_);
}

void CoapLink::processIo() {
  coap_io_process(context_, COAP_IO_NO_WAIT);
}

coap_session_t* CoapLink::newSession(const std::string& uri, std::string* error) {
  coap_address_t address;
  if (!resolve(uri, &address, error)) return nullptr;
  coap_session_t* session = coap_new_client_session(context_, nullptr, &address, COAP_PROTO_UDP);
  if (session == nullptr) {
    *error = "cannot create a CoAP session to " + uri;
    return nullptr;
  }
  // libcoap 4.3.1 has no context app data: every session points back at us.
  coap_session_set_app_data(session, this);
  auto fixed = [](double seconds) {
    const auto ms = static_cast<unsigned>(seconds * 1000.0 + 0.5);
    return coap_fixed_point_t{static_cast<std::uint16_t>(ms / 1000),
                              static_cast<std::uint16_t>(ms % 1000)};
  };
  coap_session_set_ack_timeout(session, fixed(config_.ack_timeout.count() / 1000.0));
  coap_session_set_ack_random_factor(session, fixed(config_.ack_random_factor));
  coap_session_set_max_retransmit(session, config_.max_retransmit);
  return session;
}

bool CoapLink::addDevice(const std::string& name, const std::string& uri, std::string* error) {
  coap_session_t* session = newSession(uri, error);
  if (session == nullptr) return false;
  removeDevice(name);
  auto device = std::make_unique<Device>();
  device->name = name;
  device->uri = uri;
  device->session = session;
  devices_[name] = std::move(device);
  return true;
}

// libcoap 4.3.1 sends one CON at a time per session (NSTART=1) and keeps retransmitting a
// request we have given up on for up to a minute: every newer request (a ping, a new
// registration) waits behind it, and after a partition the whole backlog arrives at once,
// its answers unknown to us. A fresh session (new socket, empty queues) starts clean.
void CoapLink::resetSession(const std::string& name, const std::string& reason) {
  auto it = devices_.find(name);
  if (it == devices_.end()) return;
  std::string error;
  coap_session_t* fresh = newSession(it->second->uri, &error);
  if (fresh == nullptr) {
    spdlog::warn("coap: cannot renew the session of {}: {}", name, error);
    return;
  }
  coap_session_t* old = it->second->session;
  it->second->session = fresh;
  forgetConNotification(*it->second);  // its message id belonged to the old session
  std::vector<std::function<void(bool)>> pings = takePings(name);
  std::vector<std::uint64_t> tokens;
  for (const auto& [token, exchange] : exchanges_) {
    if (exchange->device == name) tokens.push_back(token);
  }
  ++stats_.session_resets;
  spdlog::debug("coap: new session for {} ({}); {} exchange(s) dropped", name, reason,
                tokens.size());
  for (std::uint64_t token : tokens) fail(token, reason);
  for (auto& done : pings) done(false);
  discardSession(old);
}

void CoapLink::discardSession(coap_session_t* session) {
  // Releasing alone is not enough: libcoap's send queue holds a reference and would keep
  // retransmitting what was queued (an abandoned registration reaching a device that came
  // back would replace the current one there). Disconnecting empties the queue; its nack
  // callbacks find no exchange left.
  coap_session_disconnected(session, COAP_NACK_NOT_DELIVERABLE);
  coap_session_release(session);
}

void CoapLink::removeDevice(const std::string& name) {
  auto it = devices_.find(name);
  if (it == devices_.end()) return;
  for (auto e = exchanges_.begin(); e != exchanges_.end();) {
    if (e->second->device == name) {
      if (e->second->timer != 0) loop_.cancel(e->second->timer);
      e = exchanges_.erase(e);
    } else {
      ++e;
    }
  }
  forgetConNotification(*it->second);
  coap_session_t* session = it->second->session;
  devices_.erase(it);
  discardSession(session);
  for (auto& done : takePings(name)) done(false);
}

std::vector<std::function<void(bool)>> CoapLink::takePings(const std::string& device) {
  std::vector<std::function<void(bool)>> taken;
  for (auto p = pings_.begin(); p != pings_.end();) {
    if (p->second.device == device) {
      taken.push_back(std::move(p->second.done));
      releaseLater(p->first.first);
      p = pings_.erase(p);
    } else {
      ++p;
    }
  }
  return taken;
}

void CoapLink::releaseLater(coap_session_t* session) {
  // Not from inside a libcoap callback that may still use the session.
  to_release_.push_back(session);
  if (release_timer_ != 0) return;
  release_timer_ = loop_.runAfter(std::chrono::milliseconds(0), [this] {
    release_timer_ = 0;
    for (coap_session_t* s : std::exchange(to_release_, {})) coap_session_release(s);
  });
}

bool CoapLink::hasDevice(const std::string& name) const {
  return devices_.count(name) != 0;
}

CoapLink::RequestId CoapLink::request(const std::string& device, bridge::Method method,
                                      const std::string& path, const std::string& payload,
                                      std::optional<unsigned> content_format,
                                      ResponseHandler handler) {
  return startExchange(device, method, path, payload, content_format, false, std::move(handler));
}

std::uint64_t CoapLink::startExchange(const std::string& device, bridge::Method method,
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

void CoapLink::cancelRequest(RequestId id) {
  auto it = exchanges_.find(id);
  if (it == exchanges_.end()) return;
  if (it->second->timer != 0) loop_.cancel(it->second->timer);
  exchanges_.erase(it);
}

CoapLink::ObserveId CoapLink::observe(const std::string& device, const std::string& path,
                                      ObserveHandler handler,
                                      std::optional<std::chrono::milliseconds> timeout) {
  return startExchange(device, bridge::Method::Get, path, {}, std::nullopt, true,
                       std::move(handler), timeout);
}

std::uint64_t CoapLink::send(Device& device, bridge::Method method, const std::string& path,
                             const std::string& payload, std::optional<unsigned> content_format,
                             bool observe, std::unique_ptr<Exchange> exchange) {
  const std::uint64_t token = next_token_++;
  tokenBytes(token, exchange->token);
  coap_pdu_t* pdu = coap_new_pdu(COAP_MESSAGE_CON, methodCode(method), device.session);
  if (pdu == nullptr) {
    exchange->handler(std::nullopt, "cannot allocate a CoAP PDU");
    return 0;
  }
  bool ok = coap_add_token(pdu, sizeof exchange->token, exchange->token) != 0;
  std::uint8_t buf[4];
  if (observe) {
    ok = ok &&
         coap_add_option(pdu, COAP_OPTION_OBSERVE,
                         coap_encode_var_safe(buf, sizeof buf, COAP_OBSERVE_ESTABLISH), buf) != 0;
  }
  if (ok) ok = addPathOptions(pdu, COAP_OPTION_URI_PATH, path);
  if (ok && content_format) {
    ok = coap_add_option(pdu, COAP_OPTION_CONTENT_FORMAT,
                         coap_encode_var_safe(buf, sizeof buf, *content_format), buf) != 0;
  }
  if (ok && !payload.empty()) {
    // libcoap keeps a pointer to the body until the (possibly Block1) transfer is done.
    auto* body = new std::string(payload);
    ok = coap_add_data_large_request(
             device.session, pdu, body->size(), reinterpret_cast<const std::uint8_t*>(body->data()),
             [](coap_session_t*, void* app) { delete static_cast<std::string*>(app); }, body) != 0;
  }
  if (!ok) {
    coap_delete_pdu(pdu);
    exchange->handler(std::nullopt, "cannot build the CoAP request");
    return 0;
  }
  if (coap_send(device.session, pdu) == COAP_INVALID_MID) {
    exchange->handler(std::nullopt, "cannot send the CoAP request");
    return 0;
  }
  ++stats_.requests_sent;
  exchange->timer =
      loop_.runAfter(exchange->timeout.value_or(config_.request_timeout), [this, token] {
        auto it = exchanges_.find(token);
        if (it == exchanges_.end()) return;
        it->second->timer = 0;
        // libcoap may still be retransmitting it: start the device over on a clean session.
        resetSession(it->second->device, "timeout");
      });
  spdlog::trace("coap: sent token {:016x} to {}{}", token, device.name, path);
  exchanges_[token] = std::move(exchange);
  return token;
}

void CoapLink::fail(std::uint64_t token, const std::string& reason) {
  auto it = exchanges_.find(token);
  if (it == exchanges_.end()) return;
  std::unique_ptr<Exchange> exchange = std::move(it->second);
  exchanges_.erase(it);
  if (exchange->timer != 0) loop_.cancel(exchange->timer);
  ++stats_.failures;
  exchange->handler(std::nullopt, reason);
}

int CoapLink::onResponse(coap_session_t* session, const void* received_ptr) {
  const auto* received = static_cast<const coap_pdu_t*>(received_ptr);
  coap_bin_const_t token_bin = coap_pdu_get_token(received);
  auto observe_value = uintOption(received, COAP_OPTION_OBSERVE);
  auto it = token_bin.length == 8 ? exchanges_.find(tokenValue(token_bin.s)) : exchanges_.end();
  spdlog::trace("coap: response token {:016x} observe {} {}",
                token_bin.length == 8 ? tokenValue(token_bin.s) : 0, observe_value.value_or(0),
                it == exchanges_.end() ? "unknown" : "matched");
  responding_device_.clear();
  if (it == exchanges_.end()) {
    ++stats_.unknown_token;
    if (!observe_value) return 1;
    // A notification nobody wants: RST makes the device forget the observation.
    if (coap_pdu_get_type(received) == COAP_MESSAGE_CON) {
      for (auto& [name, device] : devices_) {
        if (device->session != session) continue;
        noteConNotification(*device, coap_pdu_get_mid(received));
        device->last_con_rejected = true;
        break;
      }
    }
    return 0;
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
  response.content_format = uintOption(received, COAP_OPTION_CONTENT_FORMAT);
  response.observe = observe_value;
  response.max_age = uintOption(received, COAP_OPTION_MAXAGE);
  std::size_t length = 0;
  const std::uint8_t* data = nullptr;
  std::size_t offset = 0;
  std::size_t total = 0;
  if (coap_get_data_large(received, &length, &data, &offset, &total) != 0) {
    response.payload.assign(reinterpret_cast<const char*>(data), length);
  }

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
    return 1;
  }
  std::unique_ptr<Exchange> done = std::move(it->second);
  exchanges_.erase(it);
  if (done->timer != 0) loop_.cancel(done->timer);
  done->handler(response, {});
  return 1;
}

bool CoapLink::holdAck(coap_session_t* session, int mid) {
  if (!hold_ack_ || responding_device_.empty() || !hold_ack_()) return false;
  held_acks_.push_back(HeldAck{responding_device_, session, mid});
  return true;
}

void CoapLink::releaseHeldAcks() {
  for (const HeldAck& held : std::exchange(held_acks_, {})) {
    // A new session (a reset, the device removed): the device retransmits to it instead.
    if (deviceOn(held.device, held.session) != nullptr) {
      sendEmptyReply(held.session, held.mid, false);
    }
  }
}

void CoapLink::noteConNotification(Device& device, int mid) {
  device.con_pace.note(std::chrono::steady_clock::now());
  device.last_con_mid = mid;
  device.last_con_rejected = false;
  device.reacks = 0;
  if (device.reack_timer == 0) armReack(device);
}

void CoapLink::forgetConNotification(Device& device) {
  if (device.reack_timer != 0) loop_.cancel(device.reack_timer);
  device.reack_timer = 0;
  device.last_con_mid.reset();
  device.last_con_rejected = false;
  device.con_pace.reset();
  device.reacks = 0;
}

std::chrono::steady_clock::duration CoapLink::reackDelay(const Device& device) const {
  // Every twice the device's pace (at least 1 s) while it stays quiet: a device that is
  // merely slower than usual gets no extra ACK, a stalled one gets one soon, whatever the
  // point of its retransmission schedule (an ACK ends it at any point).
  const std::chrono::steady_clock::duration interval =
      std::max<std::chrono::steady_clock::duration>(std::chrono::seconds(1),
                                                    device.con_pace.pace() * 2);
  return interval * (device.reacks + 1);
}

void CoapLink::armReack(Device& device) {
  // MAX_TRANSMIT_SPAN (RFC 7252 §4.8.2): after that the device has given up on its
  // notification; re-registration takes over from there.
  const auto span = std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      config_.ack_timeout * (((1u << config_.max_retransmit) - 1) * config_.ack_random_factor));
  const auto delay = reackDelay(device);
  if (delay > span) return;
  const auto wait = std::max<std::chrono::steady_clock::duration>(
      std::chrono::steady_clock::duration::zero(),
      device.con_pace.last() + delay - std::chrono::steady_clock::now());
  device.reack_timer = loop_.runAfter(
      std::chrono::ceil<std::chrono::milliseconds>(wait), [this, name = device.name] {
        auto it = devices_.find(name);
        if (it == devices_.end()) return;
        Device& d = *it->second;
        d.reack_timer = 0;
        if (!d.last_con_mid) return;
        // A newer notification moved the deadline: nothing to do yet.
        if (std::chrono::steady_clock::now() >= d.con_pace.last() + reackDelay(d)) {
          spdlog::debug("coap: {} quiet since CON notification mid {}: {} again", d.name,
                        *d.last_con_mid, d.last_con_rejected ? "RST" : "ACK");
          sendEmptyReply(d.session, *d.last_con_mid, d.last_con_rejected);
          ++d.reacks;
          ++stats_.extra_acks;
        }
        armReack(d);
      });
}

void CoapLink::sendEmptyReply(coap_session_t* session, int mid, bool reset) {
  // coap_send_ack() / coap_send_rst() answer a CON with an empty ACK / RST of the same
  // message id; a stand-in CON carrying that id is all they read.
  coap_pdu_t* stand_in = coap_pdu_init(COAP_MESSAGE_CON, COAP_EMPTY_CODE, mid, 0);
  if (stand_in == nullptr) return;
  if (reset) {
    coap_send_rst(session, stand_in);
  } else {
    coap_send_ack(session, stand_in);
  }
  coap_delete_pdu(stand_in);
}

CoapLink::Device* CoapLink::deviceOn(std::string_view name, const coap_session_t* session) {
  auto it = devices_.find(name);
  return it != devices_.end() && it->second->session == session ? it->second.get() : nullptr;
}

void CoapLink::onNack(coap_session_t* session, const void* sent_ptr, int reason, int mid) {
  const auto* sent = static_cast<const coap_pdu_t*>(sent_ptr);
  if (sent == nullptr) return;
  if (coap_pdu_get_code(sent) == COAP_EMPTY_CODE) {
    // A ping: an RST means the device is there; running out of retries means it is not.
    auto it = pings_.find({session, mid});
    if (it == pings_.end()) return;
    auto done = std::move(it->second.done);
    pings_.erase(it);
    releaseLater(session);
    done(static_cast<coap_nack_reason_t>(reason) == COAP_NACK_RST);
    return;
  }
  coap_bin_const_t token_bin = coap_pdu_get_token(sent);
  if (token_bin.length != 8) return;
  const std::uint64_t token = tokenValue(token_bin.s);
  if (static_cast<coap_nack_reason_t>(reason) == COAP_NACK_ICMP_ISSUE) {
    // libcoap 4.3.1 keeps retransmitting a request that met an ICMP error. When the device
    // comes back, that stale registration would replace the current one on the device (same
    // session, same request): start the device over on a clean session instead. Not from
    // inside this callback: libcoap still uses the session.
    auto it = exchanges_.find(token);
    if (it != exchanges_.end()) {
      loop_.runAfter(std::chrono::milliseconds(0), [this, device = it->second->device, session] {
        if (deviceOn(device, session) != nullptr) resetSession(device, "ICMP error");
      });
    }
  }
  fail(token, nackReason(reason));
}

void CoapLink::cancelObserve(ObserveId id) {
  auto it = exchanges_.find(id);
  if (it == exchanges_.end()) return;
  std::unique_ptr<Exchange> exchange = std::move(it->second);
  exchanges_.erase(it);
  if (exchange->timer != 0) loop_.cancel(exchange->timer);
  auto device = devices_.find(exchange->device);
  if (device == devices_.end() || !exchange->established) return;
  coap_binary_t token{sizeof exchange->token, exchange->token};
  if (coap_cancel_observe(device->second->session, &token, COAP_MESSAGE_CON) == 0) {
    spdlog::debug("coap: could not cancel observation of {}{}", exchange->device, exchange->path);
  }
}

void CoapLink::cancelAllObservations() {
  std::vector<ObserveId> ids;
  for (const auto& [token, exchange] : exchanges_) {
    if (exchange->observe) ids.push_back(token);
  }
  for (ObserveId id : ids) cancelObserve(id);
}

}  // namespace coap2mqtt::gateway

namespace coap2mqtt::gateway {

void CoapLink::ping(const std::string& device, std::function<void(bool)> done) {
  auto it = devices_.find(device);
  if (it == devices_.end()) {
    done(false);
    return;
  }
  // On a session of its own: with NSTART=1 a ping on the device's session would hold back
  // every request behind it (a re-registration, a command) for as long as it goes
  // unanswered, which is exactly when the device is hard to reach.
  std::string error;
  coap_session_t* probe = newSession(it->second->uri, &error);
  if (probe == nullptr) {
    done(false);
    return;
  }
  coap_mid_t mid = coap_session_send_ping(probe);
  if (mid == COAP_INVALID_MID) {
    coap_session_release(probe);
    done(false);
    return;
  }
  pings_[{probe, mid}] = Ping{device, std::move(done)};
}

bool CoapLink::listen(const std::string& host_port, std::string* error) {
  auto colon = host_port.rfind(':');
  if (colon == std::string::npos) {
    *error = "expected host:port, got " + host_port;
    return false;
  }
  std::string host = host_port.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_DGRAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* result = nullptr;
  const std::string port = host_port.substr(colon + 1);
  if (int rc = getaddrinfo(host.empty() ? nullptr : host.c_str(), port.c_str(), &hints, &result);
      rc != 0) {
    *error = "cannot resolve " + host_port + ": " + gai_strerror(rc);
    return false;
  }
  coap_address_t address;
  coap_address_init(&address);
  address.size = result->ai_addrlen;
  std::memcpy(&address.addr, result->ai_addr, result->ai_addrlen);
  freeaddrinfo(result);
  if (coap_new_endpoint(context_, &address, COAP_PROTO_UDP) == nullptr) {
    *error = "cannot listen on " + host_port + " (address in use?)";
    return false;
  }
  return true;
}

namespace {

void registerHandlers(coap_resource_t* resource, coap_method_handler_t handler) {
  for (coap_request_t method :
       {COAP_REQUEST_GET, COAP_REQUEST_POST, COAP_REQUEST_PUT, COAP_REQUEST_DELETE}) {
    coap_register_request_handler(resource, method, handler);
  }
}

}  // namespace

void CoapLink::serve(const std::string& path,
                     const std::vector<std::pair<std::string, std::string>>& attributes,
                     ServerHandler handler) {
  coap_str_const_t* name =
      coap_new_str_const(reinterpret_cast<const std::uint8_t*>(path.data()), path.size());
  coap_resource_t* resource = coap_resource_init(name, COAP_RESOURCE_FLAGS_RELEASE_URI);
  for (const auto& [key, value] : attributes) {
    coap_add_attr(
        resource, coap_new_str_const(reinterpret_cast<const std::uint8_t*>(key.data()), key.size()),
        coap_new_str_const(reinterpret_cast<const std::uint8_t*>(value.data()), value.size()),
        COAP_ATTR_FLAGS_RELEASE_NAME | COAP_ATTR_FLAGS_RELEASE_VALUE);
  }
  server_handlers_.push_back(std::make_unique<ServerHandler>(std::move(handler)));
  coap_resource_set_userdata(resource, server_handlers_.back().get());
  registerHandlers(resource, &CoapCallbacks::serverRequest);
  coap_add_resource(context_, resource);
}

void CoapLink::serveUnknown(ServerHandler handler) {
  coap_resource_t* resource = coap_resource_unknown_init(&CoapCallbacks::serverRequest);
  server_handlers_.push_back(std::make_unique<ServerHandler>(std::move(handler)));
  coap_resource_set_userdata(resource, server_handlers_.back().get());
  registerHandlers(resource, &CoapCallbacks::serverRequest);
  coap_add_resource(context_, resource);
}

void CoapCallbacks::serverRequest(coap_resource_t* resource, coap_session_t* session,
                                  const coap_pdu_t* request, const coap_string_t* /*query*/,
                                  coap_pdu_t* response) noexcept {
  try {
    auto* handler = static_cast<CoapLink::ServerHandler*>(coap_resource_get_userdata(resource));
    CoapServerRequest req;
    switch (coap_pdu_get_code(request)) {
      case COAP_REQUEST_CODE_POST:
        req.method = bridge::Method::Post;
        break;
      case COAP_REQUEST_CODE_PUT:
        req.method = bridge::Method::Put;
        break;
      case COAP_REQUEST_CODE_DELETE:
        req.method = bridge::Method::Delete;
        break;
      default:
        req.method = bridge::Method::Get;
    }
    coap_opt_iterator_t it;
    coap_opt_t* opt;
    coap_option_iterator_init(request, &it, COAP_OPT_ALL);
    while ((opt = coap_option_next(&it)) != nullptr) {
      std::string value(reinterpret_cast<const char*>(coap_opt_value(opt)), coap_opt_length(opt));
      if (it.number == COAP_OPTION_URI_PATH) {
        req.path += "/" + value;
      } else if (it.number == COAP_OPTION_URI_QUERY) {
        req.query.push_back(std::move(value));
      } else if (it.number == COAP_OPTION_CONTENT_FORMAT) {
        req.content_format = coap_decode_var_bytes(coap_opt_value(opt), coap_opt_length(opt));
      }
    }
    if (req.path.empty()) req.path = "/";
    std::size_t length = 0;
    const std::uint8_t* data = nullptr;
    if (coap_get_data(request, &length, &data) != 0) {
      req.payload.assign(reinterpret_cast<const char*>(data), length);
    }
    const coap_address_t* remote = coap_session_get_addr_remote(session);
    char host[INET6_ADDRSTRLEN] = {};
    std::uint16_t port = coap_address_get_port(remote);
    if (remote->addr.sa.sa_family == AF_INET6) {
      inet_ntop(AF_INET6, &remote->addr.sin6.sin6_addr, host, sizeof host);
      req.source = "coap://[" + std::string(host) + "]:" + std::to_string(port);
    } else {
      inet_ntop(AF_INET, &remote->addr.sin.sin_addr, host, sizeof host);
      req.source = "coap://" + std::string(host) + ":" + std::to_string(port);
    }
    CoapServerResponse res = (*handler)(req);
    coap_pdu_set_code(response, static_cast<coap_pdu_code_t>(COAP_RESPONSE_CODE(res.code)));
    std::uint8_t buf[4];
    addPathOptions(response, COAP_OPTION_LOCATION_PATH, res.location);
    if (res.content_format) {
      coap_add_option(response, COAP_OPTION_CONTENT_FORMAT,
                      coap_encode_var_safe(buf, sizeof buf, *res.content_format), buf);
    }
    if (!res.payload.empty()) {
      coap_add_data(response, res.payload.size(),
                    reinterpret_cast<const std::uint8_t*>(res.payload.data()));
    }
  } catch (const std::exception& e) {
    spdlog::error("coap: server handler failed: {}", e.what());
    coap_pdu_set_code(response, COAP_RESPONSE_CODE_INTERNAL_ERROR);
  }
}

}  // namespace coap2mqtt::gateway
