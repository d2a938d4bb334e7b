// CoapLink: our own CoAP server side (the Resource Directory): UDP endpoints and resources
// whose requests go to a ServerHandler.
#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>

#include <cstring>
#include <memory>
#include <stdexcept>

#include <spdlog/spdlog.h>

#include "gateway/coap_link_internal.h"

namespace coap2mqtt::gateway {
namespace {

coap_str_const_t strConst(const std::string& s) {
  return coap_str_const_t{s.size(), reinterpret_cast<const std::uint8_t*>(s.data())};
}

CoapServerRequest readRequest(coap_session_t* session, const coap_pdu_t* request) {
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
      req.segments.push_back(value);
    } else if (it.number == COAP_OPTION_URI_QUERY) {
      req.query.push_back(std::move(value));
    } else if (it.number == COAP_OPTION_OBSERVE) {
      req.observe = coap_decode_var_bytes(coap_opt_value(opt), coap_opt_length(opt));
    } else if (it.number == COAP_OPTION_BLOCK1) {
      req.block1 = true;
    } else if (it.number == COAP_OPTION_CONTENT_FORMAT) {
      req.content_format = coap_decode_var_bytes(coap_opt_value(opt), coap_opt_length(opt));
    }
  }
  if (req.path.empty()) req.path = "/";
  req.confirmable = coap_pdu_get_type(request) == COAP_MESSAGE_CON;
  std::size_t length = 0;
  const std::uint8_t* data = nullptr;
  if (coap_get_data(request, &length, &data) != 0) {
    req.payload.assign(reinterpret_cast<const char*>(data), length);
  }
  const coap_address_t* remote = coap_session_get_addr_remote(session);
  char host[INET6_ADDRSTRLEN] = {};
  std::uint16_t port = coap_address_get_port(remote);
  const bool dtls = coap_session_get_proto(session) == COAP_PROTO_DTLS;
  const std::string scheme = dtls ? "coaps://" : "coap://";
  if (remote->addr.sa.sa_family == AF_INET6) {
    inet_ntop(AF_INET6, &remote->addr.sin6.sin6_addr, host, sizeof host);
    req.source = scheme + "[" + std::string(host) + "]:" + std::to_string(port);
  } else {
    inet_ntop(AF_INET, &remote->addr.sin.sin_addr, host, sizeof host);
    req.source = scheme + std::string(host) + ":" + std::to_string(port);
  }
  if (dtls) {
    // The identity the handshake proved (libcoap keeps it with the session).
    if (const coap_bin_const_t* id = coap_session_get_psk_identity(session)) {
      req.psk_identity.assign(reinterpret_cast<const char*>(id->s), id->length);
    }
    if (req.psk_identity.empty()) req.cert_name = peerCertificateName(session);
  }
  return req;
}

void releasePayload(coap_session_t* /*session*/, void* payload) noexcept {
  delete static_cast<std::string*>(payload);
}

// A GET's answer may be bigger than one message (an RD lookup with many registrations):
// libcoap then sends it in Block2 blocks, keeping a copy until the last one has gone.
bool addLargeBody(const CoapServerResponse& res, coap_resource_t* resource, coap_session_t* session,
                  const coap_pdu_t* request, coap_pdu_t* response, const coap_string_t* query) {
  auto copy = std::make_unique<std::string>(res.payload);
  const auto* data = reinterpret_cast<const std::uint8_t*>(copy->data());
  const std::size_t size = copy->size();
  // libcoap calls releasePayload also when it fails.
  return coap_add_data_large_response(resource, session, request, response, query,
                                      static_cast<std::uint16_t>(res.content_format.value_or(0)),
                                      -1, 0, size, data, &releasePayload, copy.release()) != 0;
}

void writeResponse(const CoapServerResponse& res, coap_resource_t* resource,
                   coap_session_t* session, const coap_pdu_t* request, coap_pdu_t* response,
                   const coap_string_t* query) {
  coap_pdu_set_code(response, static_cast<coap_pdu_code_t>(COAP_RESPONSE_CODE(res.code)));
  std::uint8_t buf[4];
  bool ok = coapAddPathOptions(response, COAP_OPTION_LOCATION_PATH, res.location);
  const bool large = coap_pdu_get_code(request) == COAP_REQUEST_CODE_GET && res.code == 205 &&
                     !res.payload.empty();
  if (ok && res.content_format && !large) {
    ok = coap_add_option(response, COAP_OPTION_CONTENT_FORMAT,
                         coap_encode_var_safe(buf, sizeof buf, *res.content_format), buf) != 0;
  }
  if (ok && large) {
    ok = addLargeBody(res, resource, session, request, response, query);
  } else if (ok && !res.payload.empty()) {
    ok = coap_add_data(response, res.payload.size(),
                       reinterpret_cast<const std::uint8_t*>(res.payload.data())) != 0;
  }
  if (!ok) {
    spdlog::error("coap: our {} response does not fit a CoAP message", res.code);
    coap_pdu_set_code(response, COAP_RESPONSE_CODE_INTERNAL_ERROR);
  }
}

CoapLink::Impl* implOf(coap_session_t* session) {
  return static_cast<CoapLink::Impl*>(coap_get_app_data(coap_session_get_context(session)));
}

// One request to `handler`; a response it holds back (after_release) waits in the link, and
// libcoap hands the request back once it is released (coap_async): then it is answered.
void handle(CoapLink::Impl* impl, CoapLink::ServerHandler* handler, coap_resource_t* resource,
            coap_session_t* session, const coap_pdu_t* request, const coap_string_t* query,
            coap_pdu_t* response) {
  if (impl != nullptr) {
    if (auto held = impl->takeDeferred(session, request)) {
      held->after_release = false;
      writeResponse(*held, resource, session, request, response, query);
      return;
    }
  }
  if (handler == nullptr) {
    coap_pdu_set_code(response, COAP_RESPONSE_CODE_NOT_FOUND);
    return;
  }
  CoapServerRequest req = readRequest(session, request);
  if (req.block1 && impl != nullptr) {
    CoapServerResponse answer;
    if (!impl->assembleBlock1(session, request, req, &answer)) {
      writeResponse(answer, resource, session, request, response, query);
      return;
    }
  }
  CoapServerResponse res = (*handler)(req);
  if (res.after_release && req.confirmable && impl != nullptr &&
      impl->deferResponse(session, request, res)) {
    return;  // no code: libcoap sends an empty ACK now
  }
  if (res.redispatch) {
    if (impl != nullptr && impl->redispatch(session, request)) return;  // an empty ACK now
    res = CoapServerResponse{503, "busy", 0, {}};
  }
  writeResponse(res, resource, session, request, response, query);
}

// noexcept trampoline: no exception ever crosses into libcoap.
void requestTrampoline(coap_resource_t* resource, coap_session_t* session,
                       const coap_pdu_t* request, const coap_string_t* query,
                       coap_pdu_t* response) noexcept {
  try {
    auto* handler = static_cast<CoapLink::ServerHandler*>(coap_resource_get_userdata(resource));
    handle(implOf(session), handler, resource, session, request, query, response);
  } catch (const std::exception& e) {
    spdlog::error("coap: server handler failed: {}", e.what());
    coap_pdu_set_code(response, COAP_RESPONSE_CODE_INTERNAL_ERROR);
  }
}

// The unknown resource: a handler by the first path segment (servePrefix), else the fallback.
void unknownTrampoline(coap_resource_t* resource, coap_session_t* session,
                       const coap_pdu_t* request, const coap_string_t* query,
                       coap_pdu_t* response) noexcept {
  try {
    CoapLink::Impl* impl = implOf(session);
    std::string first;
    coap_opt_iterator_t it;
    if (coap_opt_t* opt = coap_check_option(request, COAP_OPTION_URI_PATH, &it)) {
      first.assign(reinterpret_cast<const char*>(coap_opt_value(opt)), coap_opt_length(opt));
    }
    handle(impl, impl != nullptr ? impl->prefixHandler(first) : nullptr, resource, session, request,
           query, response);
  } catch (const std::exception& e) {
    spdlog::error("coap: server handler failed: {}", e.what());
    coap_pdu_set_code(response, COAP_RESPONSE_CODE_INTERNAL_ERROR);
  }
}

void registerHandlers(coap_resource_t* resource, coap_method_handler_t trampoline) {
  for (coap_request_t method :
       {COAP_REQUEST_GET, COAP_REQUEST_POST, COAP_REQUEST_PUT, COAP_REQUEST_DELETE}) {
    coap_register_request_handler(resource, method, trampoline);
  }
}

}  // namespace

bool CoapLink::Impl::listen(const std::string& address_text, std::string* error) {
  const bool dtls = address_text.rfind("coaps://", 0) == 0;
  const std::string host_port = dtls ? address_text.substr(8) : address_text;
  if (dtls && (!config_.psk_clients.empty() || !config_.listen_pki) && !setupServerPsk(error)) {
    return false;
  }
  if (dtls && !setupServerPki(error)) return false;
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
  // The endpoint belongs to the context (freed with it).
  if (coap_new_endpoint(context_.get(), &address, dtls ? COAP_PROTO_DTLS : COAP_PROTO_UDP) ==
      nullptr) {
    *error = "cannot listen on " + address_text + " (address in use?)";
    return false;
  }
  return true;
}

// Strings go to libcoap without its RELEASE flags: it copies them, so nothing is handed
// over that a failed call could leak. coap_add_resource() takes the resource.
void CoapLink::Impl::serve(const std::string& path,
                           const std::vector<std::pair<std::string, std::string>>& attributes,
                           ServerHandler handler) {
  coap_str_const_t name = strConst(path);
  coap_resource_t* resource = coap_resource_init(&name, 0);
  if (resource == nullptr) throw std::runtime_error("coap: cannot create resource " + path);
  server_handlers_.push_back(std::make_unique<ServerHandler>(std::move(handler)));
  coap_resource_set_userdata(resource, server_handlers_.back().get());
  registerHandlers(resource, &requestTrampoline);
  coap_set_app_data(context_.get(), this);
  for (const auto& [key, value] : attributes) {
    coap_str_const_t k = strConst(key);
    coap_str_const_t v = strConst(value);
    if (coap_add_attr(resource, &k, &v, 0) == nullptr) {
      coap_delete_resource(nullptr, resource);  // not added yet: ours to delete
      throw std::runtime_error("coap: cannot add attribute " + key + " to " + path);
    }
  }
  coap_add_resource(context_.get(), resource);
}

void CoapLink::Impl::serveUnknown(ServerHandler handler) {
  unknown_handler_ = std::move(handler);
  ensureUnknownResource();
}

void CoapLink::Impl::servePrefix(const std::string& segment, ServerHandler handler) {
  prefix_handlers_[segment] = std::move(handler);
  ensureUnknownResource();
}

CoapLink::ServerHandler* CoapLink::Impl::prefixHandler(const std::string& first_segment) {
  if (auto it = prefix_handlers_.find(first_segment); it != prefix_handlers_.end()) {
    return &it->second;
  }
  return unknown_handler_ ? &unknown_handler_ : nullptr;
}

void CoapLink::Impl::ensureUnknownResource() {
  if (unknown_resource_) return;
  coap_resource_t* resource = coap_resource_unknown_init(&unknownTrampoline);
  if (resource == nullptr) throw std::runtime_error("coap: cannot create the unknown resource");
  registerHandlers(resource, &unknownTrampoline);
  coap_set_app_data(context_.get(), this);
  coap_add_resource(context_.get(), resource);
  unknown_resource_ = true;
}

void CoapLink::Impl::serveObservable(const std::string& path, ServerHandler handler) {
  if (observable_.count(path) != 0) return;
  coap_str_const_t name = strConst(path);
  // Notifications NON, every fifth CON (libcoap's COAP_OBS_MAX_NON), as RFC 7641 §4.5 asks.
  coap_resource_t* resource = coap_resource_init(&name, COAP_RESOURCE_FLAGS_NOTIFY_NON);
  if (resource == nullptr) throw std::runtime_error("coap: cannot create resource " + path);
  server_handlers_.push_back(std::make_unique<ServerHandler>(std::move(handler)));
  coap_resource_set_userdata(resource, server_handlers_.back().get());
  coap_register_request_handler(resource, COAP_REQUEST_GET, &requestTrampoline);
  coap_register_request_handler(resource, COAP_REQUEST_POST, &requestTrampoline);
  coap_register_request_handler(resource, COAP_REQUEST_PUT, &requestTrampoline);
  coap_resource_set_get_observable(resource, 1);
  coap_set_app_data(context_.get(), this);
  coap_add_resource(context_.get(), resource);
  observable_.emplace(path, resource);
}

void CoapLink::Impl::notifyObservers(const std::string& path) {
  auto it = observable_.find(path);
  if (it == observable_.end()) return;
  coap_resource_notify_observers(it->second, nullptr);
  noteIo(kOwnContext);  // sent by libcoap's timer work
}

bool CoapLink::Impl::assembleBlock1(coap_session_t* session, const coap_pdu_t* request,
                                    CoapServerRequest& req, CoapServerResponse* res) {
  coap_block_b_t block{};
  if (coap_get_block_b(session, request, COAP_OPTION_BLOCK1, &block) == 0) return true;
  std::size_t size1 = 0;
  coap_opt_iterator_t it;
  if (coap_opt_t* opt = coap_check_option(request, COAP_OPTION_SIZE1, &it)) {
    size1 = coap_decode_var_bytes(coap_opt_value(opt), coap_opt_length(opt));
  }
  const std::size_t offset = static_cast<std::size_t>(block.num) << (block.szx + 4);
  std::string body;
  switch (block1_.add(req.source + " " + req.path, offset, block.m != 0, req.payload, size1,
                      Block1Assembly::Clock::now(), &body)) {
    case Block1Assembly::Result::Complete:
      req.payload = std::move(body);
      req.block1 = false;  // a whole body now
      return true;
    case Block1Assembly::Result::More:
      *res = CoapServerResponse{231, {}, std::nullopt, {}};
      return false;
    case Block1Assembly::Result::TooLarge:
      *res = CoapServerResponse{413, "too large", std::nullopt, {}};
      break;
    case Block1Assembly::Result::Incomplete:
      *res = CoapServerResponse{408, "blocks missing or out of order", std::nullopt, {}};
      break;
    case Block1Assembly::Result::Busy:
      *res = CoapServerResponse{503, "busy", std::nullopt, {}};
      break;
  }
  ++stats_.block1_refused;
  return false;
}

bool CoapLink::Impl::redispatch(coap_session_t* session, const coap_pdu_t* request) {
  if (coap_register_async(session, request, 1) == nullptr) return false;  // 1 tick: at once
  noteIo(kOwnContext);
  return true;
}

bool CoapLink::Impl::deferResponse(coap_session_t* session, const coap_pdu_t* request,
                                   CoapServerResponse response) {
  if (deferred_.size() >= kMaxDeferred) return false;
  if (coap_register_async(session, request, 0) == nullptr) return false;  // 0: until triggered
  const coap_bin_const_t token = coap_pdu_get_token(request);
  Deferred d;
  d.session.reset(coap_session_reference(session));
  d.token.assign(reinterpret_cast<const char*>(token.s), token.length);
  d.response = std::move(response);
  deferred_.push_back(std::move(d));
  return true;
}

std::optional<CoapServerResponse> CoapLink::Impl::takeDeferred(coap_session_t* session,
                                                               const coap_pdu_t* request) {
  if (deferred_.empty()) return std::nullopt;
  const coap_bin_const_t token = coap_pdu_get_token(request);
  const std::string_view t(reinterpret_cast<const char*>(token.s), token.length);
  for (auto it = deferred_.begin(); it != deferred_.end(); ++it) {
    if (it->session.get() != session || it->token != t || !it->triggered) continue;
    std::optional<CoapServerResponse> out = std::move(it->response);
    releaseLater(std::move(it->session));  // libcoap is still using it
    deferred_.erase(it);
    return out;
  }
  return std::nullopt;
}

void CoapLink::Impl::releaseDeferred() {
  // Triggered at the last release and never handed back (the session went): forgotten.
  for (auto it = deferred_.begin(); it != deferred_.end();) {
    if (it->triggered) {
      releaseLater(std::move(it->session));
      it = deferred_.erase(it);
      continue;
    }
    const coap_bin_const_t token{it->token.size(),
                                 reinterpret_cast<const std::uint8_t*>(it->token.data())};
    if (coap_async_t* async = coap_find_async(it->session.get(), token)) {
      coap_async_trigger(async);
      it->triggered = true;
      ++it;
    } else {
      releaseLater(std::move(it->session));
      it = deferred_.erase(it);
    }
  }
  // libcoap sends what was triggered from its timer work (coap_io_prepare_epoll), which
  // walks every session: as after I/O, within CoapTimerPacing::kAfterIo, one walk for all
  // that was released meanwhile (forced at once on every flush it was a third of the CPU).
  if (!deferred_.empty()) noteIo(kOwnContext);
}

// The public /ps side of the server (issue 20), forwarded like the rest of CoapLink.
void CoapLink::servePrefix(const std::string& segment, ServerHandler handler) {
  loop_thread_.check();
  impl_->servePrefix(segment, std::move(handler));
}

void CoapLink::serveObservable(const std::string& path, ServerHandler handler) {
  loop_thread_.check();
  impl_->serveObservable(path, std::move(handler));
}

bool CoapLink::serves(const std::string& path) const {
  loop_thread_.check();
  return impl_->serves(path);
}

void CoapLink::notifyObservers(const std::string& path) {
  loop_thread_.check();
  impl_->notifyObservers(path);
}

}  // namespace coap2mqtt::gateway
