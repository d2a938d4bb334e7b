// MqttLink: the connection to the broker (connect, retry with back-off, TLS diagnostics,
// start/stop). Publishing and subscriptions are in mqtt_link_{delivery,subscriptions}.cpp
// (see mqtt_link_internal.h).
#include "gateway/mqtt_link.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <string_view>
#include <utility>

#include <spdlog/spdlog.h>

#include "gateway/mqtt_link_internal.h"
#include "gateway/outbox.h"
#include "gateway/tcp_nodelay.h"
#include "registry/sqlite.h"

namespace coap2mqtt::gateway {
namespace {

// paho C 1.3 wants tcp:// and ssl://; ws:// and wss:// it speaks itself.
std::string pahoUri(const std::string& uri) {
  if (uri.rfind("mqtt://", 0) == 0) return "tcp://" + uri.substr(7);
  if (uri.rfind("mqtts://", 0) == 0) return "ssl://" + uri.substr(8);
  return uri;
}

// What a refused CONNECT means, by its CONNACK code (MQTT 3.1.1 §3.2.2.3 and the MQTT 5
// reason codes paho reports the same way); empty for codes that are not a refusal.
std::string connackRefusal(int code) {
  switch (code) {
    case 1:
    case 132:
      return "the broker does not accept this MQTT protocol version (try mqtt.protocol)";
    case 2:
    case 133:
      return "the broker rejected the client id (mqtt.client_id)";
    case 3:
    case 136:
      return "the broker is unavailable";
    case 4:
    case 134:
      return "bad user name or password";
    case 5:
    case 135:
      return "not authorized";
    case 138:
      return "the client is banned";
    default:
      return {};
  }
}

// Paho's default trace level (TRACE_MINIMUM) records every entry to and exit from its own
// functions in an in-memory ring, with a clock read, under a mutex: 4-10 % of the user CPU
// of a QoS 1 run of bench_outbox. ERROR is the least paho lets it trace; per process.
// Left alone when paho's own trace is asked for (MQTT_C_CLIENT_TRACE), e.g. to debug it.
void quietPahoTrace() {
  if (std::getenv("MQTT_C_CLIENT_TRACE") == nullptr) MQTTAsync_setTraceLevel(MQTTASYNC_TRACE_ERROR);
}

// Paho reports every failed TLS handshake as "TCP/TLS connect failure"; the TLS alert that
// says why ("unknown CA", "certificate required", ...) is only in its protocol trace. That
// level also traces every MQTT packet, so it is on only while a TLS connect is under way.
// Paho's trace settings are per process: so is this.
class TlsAlerts {
 public:
  static void begin() {
    std::lock_guard<std::mutex> lock(mutex());
    alerts().clear();
    MQTTAsync_setTraceCallback(&TlsAlerts::onTrace);
    MQTTAsync_setTraceLevel(MQTTASYNC_TRACE_PROTOCOL);
  }
  // What the handshake's alerts said, e.g. "we sent: unknown CA"; tracing stops.
  static std::string end() {
    quietPahoTrace();
    std::lock_guard<std::mutex> lock(mutex());
    return std::exchange(alerts(), {});
  }

 private:
  static std::mutex& mutex() {
    static std::mutex m;
    return m;
  }
  static std::string& alerts() {
    static std::string a;
    return a;
  }
  // "... SSL alert write:fatal:unknown CA" (write: we sent it; read: the broker did).
  static void onTrace(enum MQTTASYNC_TRACE_LEVELS, char* message) {
    const std::string_view line(message);
    const auto at = line.find("SSL alert ");
    if (at == std::string_view::npos) return;
    const std::string_view alert = line.substr(at + 10);
    const auto last_colon = alert.rfind(':');
    if (last_colon == std::string_view::npos) return;
    std::string what = alert.rfind("write", 0) == 0 ? "we sent: " : "the broker sent: ";
    what += alert.substr(last_colon + 1);
    std::lock_guard<std::mutex> lock(mutex());
    if (alerts().find(what) != std::string::npos || alerts().size() > 200) return;
    if (!alerts().empty()) alerts() += ", ";
    alerts() += what;
  }
};

constexpr auto kMinRetry = std::chrono::milliseconds(500);
constexpr int kPahoQueue = 65535;
// Incoming messages waiting for the loop thread (kMaxIncomingWaiting of them, or these
// bytes): beyond this a flood of commands or requests is dropped (counted) instead of
// growing memory while the loop is busy. A queued message costs far more than its topic and
// payload (paho's message, its properties, the posted task): with 10,000 and 64 MiB the
// flood test's gateway, starved of CPU by two busy loops, peaked at 88-111 MB of RSS (15 MB
// before the flood); with 2,000 and 16 MiB at 22-49 MB.
constexpr std::size_t kMaxQueuedBytes = std::size_t{16} * 1024 * 1024;

}  // namespace

bool isTlsUri(const std::string& uri) {
  return uri.rfind("mqtts://", 0) == 0 || uri.rfind("ssl://", 0) == 0 ||
         uri.rfind("wss://", 0) == 0;
}

// ---- MqttLink: the loop-thread check, then the state's own method.

MqttLink::MqttLink(EventLoop& loop, const MqttConfig& config, std::unique_ptr<Outbox> outbox,
                   std::string will_topic, std::string will_payload)
    : loop_thread_(loop),
      impl_(std::make_unique<Impl>(loop, config, std::move(outbox), std::move(will_topic),
                                   std::move(will_payload))) {}

MqttLink::~MqttLink() = default;

std::unique_ptr<Outbox> MqttLink::openOutbox(const std::string& state_dir,
                                             const MqttConfig& config) {
  std::filesystem::create_directories(state_dir);
  OutboxLimits limits;
  limits.max_messages = config.buffer.max_messages;
  limits.max_bytes = config.buffer.max_bytes;
  const std::string path = state_dir + "/outbox.db";
  try {
    return std::make_unique<Outbox>(path, limits);
  } catch (const registry::sqlite::Error& e) {
    if (!e.unusableFile()) throw;  // locked by another gateway, unreadable: say so, stop
    // Messages a device considers delivered may be in it: never deleted, only moved aside
    // where an operator can recover them, and said loudly.
    const std::string aside = registry::sqlite::moveAside(path);
    spdlog::error(
        "outbox: {}; MOVED IT ASIDE to {} (the messages in it are NOT sent; recover them from "
        "that file if needed) and starting with an empty outbox",
        e.what(), aside);
    return std::make_unique<Outbox>(path, limits);
  }
}

void MqttLink::setOnConnected(std::function<void()> handler) {
  loop_thread_.check();
  impl_->setOnConnected(std::move(handler));
}

void MqttLink::setOnConnectFailed(std::function<void()> handler) {
  loop_thread_.check();
  impl_->setOnConnectFailed(std::move(handler));
}

void MqttLink::setMessageHandler(MessageHandler handler) {
  loop_thread_.check();
  impl_->setMessageHandler(std::move(handler));
}

void MqttLink::start() {
  loop_thread_.check();
  impl_->start();
}

void MqttLink::stop(const std::string& final_topic, const std::string& final_payload) {
  loop_thread_.check();
  impl_->stop(final_topic, final_payload);
}

void MqttLink::setSubscriptionsFile(std::string path) {
  loop_thread_.check();
  impl_->setSubscriptionsFile(std::move(path));
}

void MqttLink::subscribe(const std::string& filter, int qos) {
  loop_thread_.check();
  impl_->subscribe(filter, qos);
}

void MqttLink::unsubscribeAll() {
  loop_thread_.check();
  impl_->unsubscribeAll();
}

void MqttLink::publish(const std::string& topic, const std::string& payload, int qos, bool retain,
                       const std::string& correlation_data) {
  loop_thread_.check();
  impl_->publish(topic, payload, qos, retain, correlation_data);
}

bool MqttLink::connected() const {
  loop_thread_.check();
  return impl_->connected();
}

const MqttStats& MqttLink::stats() const {
  return impl_->stats();  // atomics: any thread
}

std::size_t MqttLink::outboxSize() const {
  loop_thread_.check();
  return impl_->outboxSize();
}

std::size_t MqttLink::acknowledgementsWaiting() const {
  return impl_->acknowledgementsWaiting();  // under its mutex: any thread
}

const OutboxStats& MqttLink::outboxStats() const {
  loop_thread_.check();
  return impl_->outboxStats();
}

void MqttLink::flushOutbox() {
  loop_thread_.check();
  impl_->flushOutbox();
}

bool MqttLink::flushPending() const {
  loop_thread_.check();
  return impl_->flushPending();
}

void MqttLink::setOnFlushed(std::function<void()> handler) {
  loop_thread_.check();
  impl_->setOnFlushed(std::move(handler));
}

void MqttLink::Impl::reportIncomingDrops() {
  const std::uint64_t total = stats_.incoming_queue_full.load();
  incoming_drops_reported_ = total;  // news is looked at once, logged at most per interval
  if (incoming_log_.failed(std::chrono::steady_clock::now())) {
    spdlog::warn(
        "mqtt: incoming messages dropped, {} in total: more than {} messages or {} bytes "
        "waited for the gateway",
        total, kMaxIncomingWaiting, kMaxQueuedBytes);
    incoming_log_.reported();
  }
}

// ---- The connection.

void MqttLink::Impl::ConnectListener::on_failure(const mqtt::token& token) {
  auto alive = link_.alive_;
  if (!*alive) return;
  std::string reason;
  const int code = token.get_return_code();
  try {
    (void)token.get_connect_response();  // complete: throws paho's error with its message
    reason = mqtt::exception::error_str(code);
  } catch (const std::exception& e) {
    reason = e.what();
  }
  if (isTlsUri(link_.config_.uri)) {
    if (std::string alerts = TlsAlerts::end(); !alerts.empty()) reason += "; TLS alert " + alerts;
  }
  link_.loop_.post([this, alive, reason, code] {
    if (!*alive) return;
    link_.connecting_ = false;
    if (link_.stopping_) return;
    const MqttTlsConfig& t = link_.config_.tls;
    if (isTlsUri(link_.config_.uri)) {
      // Paho reports a failed handshake (wrong CA, host name, client certificate refused)
      // as a TCP/TLS connect failure; say what to check.
      spdlog::error(
          "mqtt: cannot connect to {}: {} (TLS: ca_file={}, cert_file={}, key_file={}, "
          "verify={}: check that the CA signed the broker's certificate, that the host name "
          "matches it and that the broker accepts the client certificate); retrying in {} ms",
          link_.config_.uri, reason, t.ca_file.empty() ? "(system store)" : t.ca_file,
          t.cert_file.empty() ? "(none)" : t.cert_file, t.key_file.empty() ? "(none)" : t.key_file,
          t.verify, link_.retry_delay_.count());
    } else if (const std::string refusal = connackRefusal(code); !refusal.empty()) {
      const MqttConfig& c = link_.config_;
      spdlog::error(
          "mqtt: cannot connect to {}: the broker refused it: {} ({}; user {}, password {}); "
          "retrying in {} ms",
          c.uri, refusal, reason, c.username.empty() ? "(none)" : "'" + c.username + "'",
          c.password_file.empty() ? "(none)" : "from " + c.password_file,
          link_.retry_delay_.count());
    } else {
      spdlog::warn("mqtt: cannot connect to {}: {}; retrying in {} ms", link_.config_.uri, reason,
                   link_.retry_delay_.count());
    }
    link_.scheduleRetry();
    if (link_.on_connect_failed_) link_.on_connect_failed_();
  });
}

MqttLink::Impl::Impl(EventLoop& loop, const MqttConfig& config, std::unique_ptr<Outbox> outbox,
                     std::string will_topic, std::string will_payload)
    : loop_(loop),
      config_(config),
      outbox_(std::move(outbox)),
      will_topic_(std::move(will_topic)),
      will_payload_(std::move(will_payload)) {
  if (!outbox_) outbox_ = std::make_unique<Outbox>(":memory:", OutboxLimits{});
  quietPahoTrace();
  // Nothing is handed to paho while disconnected (the outbox keeps QoS >= 1, the QoS 0
  // queue the rest), so paho's own offline buffer stays off.
  mqtt::create_options create(config_.protocol == MqttProtocol::V5 ? MQTTVERSION_5
                                                                   : MQTTVERSION_3_1_1);
  create.set_send_while_disconnected(false);
  // Paho also refuses publishes (MQTTASYNC_MAX_BUFFERED_MESSAGES) while connected when this
  // many commands wait in its queue, e.g. in a QoS 0 burst; refused ones are retried.
  create.set_max_buffered_messages(kPahoQueue);
  client_ = std::make_unique<mqtt::async_client>(pahoUri(config_.uri), config_.client_id, create,
                                                 nullptr);
  connect_listener_ = std::make_unique<ConnectListener>(*this);
  delivery_listener_ = std::make_unique<DeliveryListener>(*this);
  auto alive = alive_;
  client_->set_connected_handler([this, alive](const std::string& cause) {
    if (!*alive) return;
    loop_.post([this, alive, cause] {
      if (*alive) onConnected(cause);
    });
  });
  client_->set_connection_lost_handler([this, alive](const std::string& cause) {
    if (!*alive) return;
    loop_.post([this, alive, cause] {
      if (*alive) onConnectionLost(cause);
    });
  });
  client_->set_message_callback([this, alive](mqtt::const_message_ptr msg) {
    if (!*alive) return;
    ++stats_.received;
    // Paho calls this from one thread; the loop only ever lowers the counts.
    const std::size_t bytes = msg->get_topic().size() + msg->get_payload().size();
    if (incoming_waiting_.load() >= kMaxIncomingWaiting ||
        incoming_bytes_.load() + bytes > kMaxQueuedBytes) {
      ++stats_.incoming_queue_full;
      return;
    }
    ++incoming_waiting_;
    incoming_bytes_ += bytes;
    MqttMessageMeta meta;
    meta.retained = msg->is_retained();
    const mqtt::properties& props = msg->get_properties();
    if (props.contains(mqtt::property::RESPONSE_TOPIC)) {
      meta.response_topic = mqtt::get<std::string>(props, mqtt::property::RESPONSE_TOPIC);
    }
    if (props.contains(mqtt::property::CORRELATION_DATA)) {
      meta.correlation_data = mqtt::get<std::string>(props, mqtt::property::CORRELATION_DATA);
    }
    loop_.post([this, alive, topic = msg->get_topic(), payload = msg->get_payload_str(),
                meta = std::move(meta), bytes] {
      if (!*alive) return;
      --incoming_waiting_;
      incoming_bytes_ -= bytes;
      if (stats_.incoming_queue_full.load() != incoming_drops_reported_) reportIncomingDrops();
      if (on_message_) on_message_(topic, payload, meta);
    });
  });
}

MqttLink::Impl::~Impl() {
  *alive_ = false;
  if (ack_sweep_timer_ != 0) loop_.cancel(ack_sweep_timer_);
  try {
    if (client_->is_connected()) client_->disconnect(std::chrono::milliseconds(0))->wait_for(500);
  } catch (const std::exception&) {
    // Shutting down anyway.
  }
  client_.reset();  // no paho thread calls us any more
  try {
    outbox_->flush();
  } catch (const std::exception& e) {
    spdlog::error("mqtt: outbox flush failed: {}", e.what());
  }
}

void MqttLink::Impl::start() {
  if (outbox_->size() > 0) {
    spdlog::info("mqtt: {} message(s) from the last run wait in the outbox", outbox_->size());
  }
  // Opening it with smaller bounds may have dropped stored messages: their deletes wait for
  // a flush, and so would an ACK held back for it (flushPending()).
  scheduleFlush();
  connect();
}

void MqttLink::Impl::connect() {
  if (connecting_ || stopping_) return;
  mqtt::connect_options options;
  if (config_.protocol == MqttProtocol::V5) {
    options.set_mqtt_version(MQTTVERSION_5);
    options.set_clean_start(config_.clean_session);
    // Without it an MQTT 5 session ends with the connection: clean_session = false would
    // keep nothing (no subscriptions, no commands queued for us while we are away).
    const std::chrono::seconds expiry = config_.session_expiry.value_or(
        config_.clean_session ? std::chrono::seconds(0) : kSessionNeverExpires);
    if (expiry.count() > 0) {
      // paho-mqtt-cpp takes every integer property as int32_t and stores its bits as the
      // four-byte unsigned value: "never" (0xFFFFFFFF) goes in as -1.
      const auto bits = static_cast<std::uint32_t>(expiry.count());
      options.set_properties(mqtt::properties{mqtt::property(
          mqtt::property::SESSION_EXPIRY_INTERVAL, static_cast<std::int32_t>(bits))});
    }
  } else {
    options.set_mqtt_version(MQTTVERSION_3_1_1);
    options.set_clean_session(config_.clean_session);
  }
  options.set_keep_alive_interval(config_.keepalive);
  options.set_automatic_reconnect(false);
  options.set_connect_timeout(std::chrono::seconds(10));
  if (!config_.username.empty()) options.set_user_name(config_.username);
  if (!config_.password.empty()) options.set_password(config_.password);
  options.set_will(mqtt::will_options(will_topic_, will_payload_, 1, true));
  if (isTlsUri(config_.uri)) {
    if (!ssl_) {
      ssl_ = std::make_unique<mqtt::ssl_options>();
      if (!config_.tls.ca_file.empty()) ssl_->set_trust_store(config_.tls.ca_file);
      if (!config_.tls.cert_file.empty()) ssl_->set_key_store(config_.tls.cert_file);
      if (!config_.tls.key_file.empty()) ssl_->set_private_key(config_.tls.key_file);
      ssl_->set_enable_server_cert_auth(config_.tls.verify);
      ssl_->set_verify(config_.tls.verify);  // host name check
      if (!config_.tls.alpn.empty()) ssl_->set_alpn_protos(config_.tls.alpn);
      // No ssl error handler: paho C++ 1.2 registers the handler's context as the
      // connect_options copy that async_client::connect() takes by value and that is gone
      // when paho calls it (a use-after-free we hit). The handshake's alerts come from
      // paho's trace instead (TlsAlerts).
    }
    options.set_ssl(*ssl_);
    TlsAlerts::begin();
  }
  try {
    connecting_ = true;
    client_->connect(options, nullptr, *connect_listener_);
  } catch (const mqtt::exception& e) {
    connecting_ = false;
    spdlog::error("mqtt: connect to {} failed: {}; retrying in {} ms", config_.uri, e.what(),
                  retry_delay_.count());
    scheduleRetry();
    if (on_connect_failed_) on_connect_failed_();
  }
}

void MqttLink::Impl::scheduleRetry() {
  loop_.runAfter(retry_delay_, [this] {
    if (!stopping_ && !connected_) connect();
  });
  retry_delay_ = std::min(retry_delay_ * 2, std::max(config_.reconnect_max, kMinRetry));
}

void MqttLink::Impl::onConnected(const std::string& cause) {
  if (isTlsUri(config_.uri)) TlsAlerts::end();
  connecting_ = false;
  connected_ = true;
  ++stats_.connects;
  if (const auto port = brokerPort(config_.uri)) {
    spdlog::debug("mqtt: Nagle's algorithm off on {} connection(s) to port {}",
                  disableNagleTowards(*port), *port);
  }
  retry_delay_ = kMinRetry;
  spdlog::info(
      "mqtt: connected to {} with MQTT {}{}{}", config_.uri,
      config_.protocol == MqttProtocol::V5 ? "5" : "3.1.1", cause.empty() ? "" : " (" + cause + ")",
      outbox_->size() > 0 ? "; sending " + std::to_string(outbox_->size()) + " stored message(s)"
                          : std::string());
  renewSubscriptions();
  // State first: what the handler publishes goes out before the backlog (see the header).
  in_on_connected_ = true;
  try {
    if (on_connected_) on_connected_();
  } catch (...) {
    in_on_connected_ = false;
    throw;
  }
  in_on_connected_ = false;
  restartSending();
}

void MqttLink::Impl::onConnectionLost(const std::string& cause) {
  connected_ = false;
  noteConnectionLost();
  inflight_.clear();
  if (stopping_) return;
  spdlog::warn("mqtt: connection to {} lost{}; {} message(s) in the outbox; reconnecting in {} ms",
               config_.uri, cause.empty() ? "" : ": " + cause, outbox_->size(),
               retry_delay_.count());
  scheduleRetry();
}

void MqttLink::Impl::stop(const std::string& final_topic, const std::string& final_payload) {
  stopping_ = true;
  if (outbox_->stats().dropped != drops_reported_) {
    last_drop_log_ = {};
    reportDrops();
  }
  if (client_->is_connected()) {
    try {
      client_->publish(final_topic, final_payload.data(), final_payload.size(), 1, true)
          ->wait_for(std::chrono::seconds(2));
      // Gives in-flight messages a second to be acknowledged.
      client_->disconnect(std::chrono::milliseconds(1000))->wait_for(std::chrono::seconds(2));
    } catch (const mqtt::exception& e) {
      spdlog::warn("mqtt: clean disconnect failed: {}", e.what());
    }
  }
  connected_ = false;
  stopSending();
}

}  // namespace coap2mqtt::gateway
