#include "gateway/mqtt_link.h"

#include <MQTTAsync.h>
#include <mqtt/async_client.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <string_view>
#include <utility>

#include <spdlog/spdlog.h>

#include "gateway/outbox.h"

namespace coap2mqtt::gateway {
namespace {

// paho C 1.3 wants tcp:// and ssl://; ws:// and wss:// it speaks itself.
std::string pahoUri(const std::string& uri) {
  if (uri.rfind("mqtt://", 0) == 0) return "tcp://" + uri.substr(7);
  if (uri.rfind("mqtts://", 0) == 0) return "ssl://" + uri.substr(8);
  return uri;
}

bool isTlsUri(const std::string& uri) {
  return uri.rfind("mqtts://", 0) == 0 || uri.rfind("ssl://", 0) == 0 ||
         uri.rfind("wss://", 0) == 0;
}

// A stored message's paho context: its seq, and in the top 16 bits the number of the
// connection it was sent on. With a persistent session paho sends its own unacknowledged
// messages again after a reconnect, and the link sends them again from the outbox: an
// acknowledgement from an earlier connection must not open this one's window.
constexpr int kConnectionShift = 48;

void* sendContext(std::uint64_t seq, std::uint16_t connection) {
  return reinterpret_cast<void*>(
      static_cast<std::uintptr_t>(seq | (std::uint64_t{connection} << kConnectionShift)));
}

std::uint64_t contextId(void* context) {
  return static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(context));
}

std::uint64_t sentSeq(std::uint64_t sent_id) {
  return sent_id & ((std::uint64_t{1} << kConnectionShift) - 1);
}

std::uint16_t sentConnection(std::uint64_t sent_id) {
  return static_cast<std::uint16_t>(sent_id >> kConnectionShift);
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

constexpr auto kDropLogInterval = RepeatedFailure::kLogInterval;
constexpr auto kMinRetry = std::chrono::milliseconds(500);
constexpr int kPahoQueue = 65535;
constexpr auto kRefusedRetry = std::chrono::milliseconds(10);
constexpr auto kFlushRetry = std::chrono::milliseconds(1000);
// Acknowledgements nobody waits for are collected this often (with the outbox's group
// commit, whose batch interval is the same).
constexpr auto kAckSweep = std::chrono::milliseconds(5);
constexpr std::size_t kNoAckWake = SIZE_MAX;

}  // namespace

// Our own retries cover the first connect and every reconnect (paho's automatic reconnect
// is off): every failed attempt is logged with paho's reason.
class MqttLink::ConnectListener : public mqtt::iaction_listener {
 public:
  explicit ConnectListener(MqttLink& link) : link_(link) {}
  void on_success(const mqtt::token&) override {}
  void on_failure(const mqtt::token& token) override {
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
            t.cert_file.empty() ? "(none)" : t.cert_file,
            t.key_file.empty() ? "(none)" : t.key_file, t.verify, link_.retry_delay_.count());
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
    });
  }

 private:
  MqttLink& link_;
};

// PUBACK/PUBCOMP (or a failure) for a stored message; the user context is its seq.
class MqttLink::DeliveryListener : public mqtt::iaction_listener {
 public:
  explicit DeliveryListener(MqttLink& link) : link_(link) {}
  void on_success(const mqtt::token& token) override {
    link_.pushAck(contextId(token.get_user_context()), Ack::Delivered);
  }
  void on_failure(const mqtt::token& token) override {
    // MQTT 5: a PUBACK with a reason code >= 0x80 means the broker will not take it
    // (not authorized, quota, bad topic); sending it again would not help.
    const bool refused = token.get_reason_code() >= 0x80 && token.get_reason_code() != 0xFF;
    link_.pushAck(contextId(token.get_user_context()), refused ? Ack::Rejected : Ack::Failed);
  }

 private:
  MqttLink& link_;
};

std::unique_ptr<Outbox> MqttLink::openOutbox(const std::string& state_dir,
                                             const MqttConfig& config) {
  std::filesystem::create_directories(state_dir);
  OutboxLimits limits;
  limits.max_messages = config.buffer.max_messages;
  limits.max_bytes = config.buffer.max_bytes;
  return std::make_unique<Outbox>(state_dir + "/outbox.db", limits);
}

MqttLink::MqttLink(EventLoop& loop, const MqttConfig& config, std::unique_ptr<Outbox> outbox,
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
    MqttMessageMeta meta;
    const mqtt::properties& props = msg->get_properties();
    if (props.contains(mqtt::property::RESPONSE_TOPIC)) {
      meta.response_topic = mqtt::get<std::string>(props, mqtt::property::RESPONSE_TOPIC);
    }
    if (props.contains(mqtt::property::CORRELATION_DATA)) {
      meta.correlation_data = mqtt::get<std::string>(props, mqtt::property::CORRELATION_DATA);
    }
    loop_.post([this, alive, topic = msg->get_topic(), payload = msg->get_payload_str(),
                meta = std::move(meta)] {
      if (*alive && on_message_) on_message_(topic, payload, meta);
    });
  });
}

MqttLink::~MqttLink() {
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

void MqttLink::start() {
  if (outbox_->size() > 0) {
    spdlog::info("mqtt: {} message(s) from the last run wait in the outbox", outbox_->size());
  }
  // Opening it with smaller bounds may have dropped stored messages: their deletes wait for
  // a flush, and so would an ACK held back for it (flushPending()).
  scheduleFlush();
  connect();
}

void MqttLink::connect() {
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
  }
}

void MqttLink::scheduleRetry() {
  loop_.runAfter(retry_delay_, [this] {
    if (!stopping_ && !connected_) connect();
  });
  retry_delay_ = std::min(retry_delay_ * 2, std::max(config_.reconnect_max, kMinRetry));
}

void MqttLink::onConnected(const std::string& cause) {
  if (isTlsUri(config_.uri)) TlsAlerts::end();
  connecting_ = false;
  connected_ = true;
  ++stats_.connects;
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
  drainQos0();
  // Everything not acknowledged is sent again, from the oldest (what was acknowledged
  // before the connection went is not).
  takeAcks();
  ++connection_;
  inflight_.clear();
  send_cursor_ = outbox_->firstSeq().value_or(outbox_->nextSeq());
  pump();
}

void MqttLink::onConnectionLost(const std::string& cause) {
  connected_ = false;
  inflight_.clear();
  if (stopping_) return;
  spdlog::warn("mqtt: connection to {} lost{}; {} message(s) in the outbox; reconnecting in {} ms",
               config_.uri, cause.empty() ? "" : ": " + cause, outbox_->size(),
               retry_delay_.count());
  scheduleRetry();
}

void MqttLink::setSubscriptionsFile(std::string path) {
  subscriptions_file_ = std::move(path);
  if (config_.clean_session) return;  // nothing outlives a connection
  std::ifstream in(subscriptions_file_);
  for (std::string filter; std::getline(in, filter);) {
    if (!filter.empty()) stale_filters_.insert(filter);
  }
}

void MqttLink::rememberSubscriptions() {
  if (config_.clean_session || subscriptions_file_.empty()) return;
  // What the broker's session may hold: ours, and what is still to be unsubscribed.
  const std::string tmp = subscriptions_file_ + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    for (const auto& [filter, qos] : subscriptions_) out << filter << '\n';
    for (const auto& filter : stale_filters_) out << filter << '\n';
    if (!out.flush()) {
      spdlog::warn(
          "mqtt: cannot write {}: a filter dropped before a restart may stay "
          "subscribed in the broker's session",
          tmp);
      return;
    }
  }
  std::error_code ec;
  std::filesystem::rename(tmp, subscriptions_file_, ec);
}

void MqttLink::renewSubscriptions() {
  // A persistent session keeps what we subscribed before (also in an earlier run): drop
  // what the configuration no longer asks for.
  for (auto it = stale_filters_.begin(); it != stale_filters_.end();) {
    const bool wanted = std::any_of(subscriptions_.begin(), subscriptions_.end(),
                                    [&](const auto& s) { return s.first == *it; });
    try {
      if (!wanted) client_->unsubscribe(*it);
      it = stale_filters_.erase(it);
    } catch (const mqtt::exception& e) {
      spdlog::warn("mqtt: unsubscribe {} failed: {}; trying again on the next connect", *it,
                   e.what());
      ++it;
    }
  }
  for (const auto& [filter, qos] : subscriptions_) {
    try {
      // MQTT 5: no_local, so commands we publish ourselves do not come back to us.
      client_->subscribe(filter, qos,
                         mqtt::subscribe_options(config_.protocol == MqttProtocol::V5));
    } catch (const mqtt::exception& e) {
      spdlog::error("mqtt: subscribe {} failed: {}", filter, e.what());
    }
  }
  rememberSubscriptions();
}

void MqttLink::subscribe(const std::string& filter, int qos) {
  subscriptions_.emplace_back(filter, qos);
  rememberSubscriptions();
  if (!connected_) return;  // renewed on connect
  try {
    client_->subscribe(filter, qos, mqtt::subscribe_options(config_.protocol == MqttProtocol::V5));
  } catch (const mqtt::exception& e) {
    spdlog::error("mqtt: subscribe {} failed: {}", filter, e.what());
  }
}

void MqttLink::unsubscribeAll() {
  for (const auto& [filter, qos] : subscriptions_) {
    bool done = false;
    if (connected_) {
      try {
        client_->unsubscribe(filter);
        done = true;
      } catch (const mqtt::exception&) {
        // Not connected any more: see below.
      }
    }
    // A clean session forgets it with the connection; a persistent one keeps it until we
    // unsubscribe on the next connect.
    if (!done && !config_.clean_session) stale_filters_.insert(filter);
  }
  subscriptions_.clear();
  rememberSubscriptions();
}

std::shared_ptr<mqtt::message> MqttLink::makeMessage(std::string_view topic,
                                                     std::string_view payload, int qos, bool retain,
                                                     std::string_view correlation_data) const {
  auto msg = mqtt::make_message(mqtt::string_ref(topic.data(), topic.size()), payload.data(),
                                payload.size(), qos, retain);
  if (config_.protocol == MqttProtocol::V5 && !correlation_data.empty()) {
    mqtt::properties props;
    props.add(mqtt::property(mqtt::property::CORRELATION_DATA, std::string(correlation_data)));
    msg->set_properties(std::move(props));
  }
  return msg;
}

bool MqttLink::sendStored(std::uint64_t seq, std::string_view topic, std::string_view payload,
                          int qos, bool retain, std::string_view correlation_data) {
  try {
    client_->publish(makeMessage(topic, payload, qos, retain, correlation_data),
                     sendContext(seq, connection_), *delivery_listener_);
  } catch (const mqtt::exception& e) {
    // Not connected after all (the loss is on its way to us) or paho's queue is full: it
    // stays in the outbox.
    ++stats_.publish_failed;
    spdlog::debug("mqtt: publish to {} deferred: {}", topic, e.what());
    scheduleResend();
    return false;
  }
  inflight_.insert(seq);
  send_cursor_ = seq + 1;
  ++stats_.published;
  return true;
}

bool MqttLink::sendDirect(const std::string& topic, const std::string& payload, int qos,
                          bool retain, const std::string& correlation_data) {
  try {
    client_->publish(makeMessage(topic, payload, qos, retain, correlation_data));
  } catch (const mqtt::exception& e) {
    ++stats_.publish_failed;
    spdlog::debug("mqtt: publish to {} failed: {}", topic, e.what());
    return false;
  }
  ++stats_.published;
  return true;
}

void MqttLink::publish(const std::string& topic, const std::string& payload, int qos, bool retain,
                       const std::string& correlation_data) {
  if (qos <= 0) {
    // Behind queued ones, or straight to paho; refused by paho: queued and retried.
    if (!connected_ || !qos0_queue_.empty() ||
        !sendDirect(topic, payload, 0, retain, correlation_data)) {
      queueQos0(topic, payload, retain);
      if (connected_) scheduleResend();
    }
    return;
  }
  if (in_on_connected_) {
    sendDirect(topic, payload, qos, retain, correlation_data);
    return;
  }
  const std::uint64_t seq = outbox_->append(topic, payload, qos, retain, correlation_data);
  if (outbox_->stats().dropped != drops_reported_) reportDrops();
  scheduleFlush();
  // The common case, nothing waiting ahead of it: straight to paho, no read-back.
  if (connected_ && send_cursor_ == seq && inflight_.size() < config_.max_inflight) {
    if (sendStored(seq, topic, payload, qos, retain, correlation_data) && ack_sweep_timer_ == 0) {
      paceAcks();
    }
    return;
  }
  // The window looks full: take the acknowledgements that came in meanwhile first. Under a
  // flood of notifications one loop iteration can take tens of milliseconds; refilling the
  // window only from the posted drain then capped QoS 1 at a window per iteration, and the
  // backlog that built up made every iteration longer still (20k msg/s offered: 2k/s out).
  if (connected_) takeAcks();
  pump();
}

void MqttLink::pump() {
  fillWindow();
  paceAcks();
}

void MqttLink::fillWindow() {
  if (!connected_ || stopping_) return;
  while (inflight_.size() < config_.max_inflight && send_cursor_ < outbox_->nextSeq()) {
    // Straight from the outbox's memory or the file to paho, no copy of our own.
    bool refused = false;
    const std::size_t visited = outbox_->forEach(
        send_cursor_, config_.max_inflight - inflight_.size(), [&](const OutboxMessageView& m) {
          refused = !sendStored(m.seq, m.topic, m.payload, m.qos, m.retain, m.correlation_data);
          return !refused;
        });
    if (refused) return;
    if (visited == 0) {
      send_cursor_ = outbox_->nextSeq();
      return;
    }
  }
}

void MqttLink::queueQos0(const std::string& topic, const std::string& payload, bool retain) {
  if (config_.buffer.qos0_messages == 0) {
    ++stats_.qos0_dropped;
    return;
  }
  if (qos0_queue_.size() >= config_.buffer.qos0_messages) {
    qos0_queue_.pop_front();
    ++stats_.qos0_dropped;
  }
  qos0_queue_.push_back(Qos0{topic, payload, retain});
}

void MqttLink::drainQos0() {
  while (!qos0_queue_.empty() && connected_) {
    const Qos0& m = qos0_queue_.front();
    if (!sendDirect(m.topic, m.payload, 0, m.retain, {})) {
      scheduleResend();
      return;
    }
    qos0_queue_.pop_front();
  }
}

void MqttLink::scheduleResend() {
  if (resend_timer_ != 0 || !connected_ || stopping_) return;
  resend_timer_ = loop_.runAfter(kRefusedRetry, [this] {
    resend_timer_ = 0;
    drainQos0();
    pump();
  });
}

void MqttLink::pushAck(std::uint64_t sent_id, Ack ack) {
  if (!*alive_) return;
  bool wake = false;
  {
    std::lock_guard<std::mutex> lock(acks_mutex_);
    acks_.emplace_back(sent_id, ack);
    // One wake-up per batch (see paceAcks); a failure is news at once.
    if (!acks_wake_posted_ &&
        (acks_.size() >= acks_wake_at_.load(std::memory_order_relaxed) || ack != Ack::Delivered)) {
      acks_wake_posted_ = wake = true;
    }
  }
  if (wake) postDrainAcks();
}

std::size_t MqttLink::acknowledgementsWaiting() const {
  std::lock_guard<std::mutex> lock(acks_mutex_);
  return acks_.size();
}

void MqttLink::postDrainAcks() {
  auto alive = alive_;
  loop_.post([this, alive] {
    if (*alive) drainAcks();
  });
}

// Waking the loop for every PUBACK (an eventfd write on paho's receive thread, an epoll
// return and a read on ours) cost as much as the rest of the loop's work per QoS 1
// message. The loop needs acknowledgements promptly only while stored messages wait for
// room in the window: then paho's thread wakes it once a quarter of the window is
// acknowledged (the other three quarters keep the connection busy). Otherwise they only
// free outbox rows, and a sweep collects them every kAckSweep, with the group commit.
void MqttLink::paceAcks() {
  const bool waiting = connected_ && !stopping_ && send_cursor_ < outbox_->nextSeq();
  const std::size_t wake_at = waiting ? std::max<std::size_t>(1, inflight_.size() / 4) : kNoAckWake;
  acks_wake_at_.store(wake_at, std::memory_order_relaxed);
  if (waiting) {
    // Enough may have arrived before the threshold came down.
    bool wake = false;
    {
      std::lock_guard<std::mutex> lock(acks_mutex_);
      if (!acks_wake_posted_ && acks_.size() >= wake_at) acks_wake_posted_ = wake = true;
    }
    if (wake) postDrainAcks();
  }
  if (!inflight_.empty() && ack_sweep_timer_ == 0 && !stopping_) {
    ack_sweep_timer_ = loop_.runAfter(kAckSweep, [this] {
      ack_sweep_timer_ = 0;
      drainAcks();
    });
  }
}

void MqttLink::drainAcks() {
  takeAcks();
  pump();
}

void MqttLink::takeAcks() {
  if (applyAcks()) scheduleFlush();
}

bool MqttLink::applyAcks() {
  std::vector<std::pair<std::uint64_t, Ack>> acks;
  {
    std::lock_guard<std::mutex> lock(acks_mutex_);
    acks.swap(acks_);
    acks_wake_posted_ = false;
  }
  for (const auto& [sent_id, ack] : acks) {
    const std::uint64_t seq = sentSeq(sent_id);
    if (sentConnection(sent_id) == connection_) inflight_.erase(seq);
    // Both copies of a message sent again may be acknowledged: it counts once.
    switch (ack) {
      case Ack::Delivered:
        if (outbox_->remove(seq)) ++stats_.delivered;
        break;
      case Ack::Rejected:
        if (outbox_->remove(seq)) {
          ++stats_.rejected;
          spdlog::warn("mqtt: the broker refused message {} (MQTT 5 reason code); dropped", seq);
        }
        break;
      case Ack::Failed:
        // The connection went away with it: sent again after the reconnect.
        break;
    }
  }
  return !acks.empty();
}

void MqttLink::scheduleFlush() {
  const auto deadline = outbox_->flushDeadline();
  if (!deadline) return;
  const auto now = Outbox::Clock::now();
  if (*deadline <= now) {
    flushOutbox();
    return;
  }
  if (flush_timer_ != 0) return;
  flush_timer_ =
      loop_.runAfter(std::chrono::ceil<std::chrono::milliseconds>(*deadline - now), [this] {
        flush_timer_ = 0;
        flushOutbox();
      });
}

bool MqttLink::flushPending() const {
  return outbox_->hasPending() && flush_retry_at_ == std::chrono::steady_clock::time_point{};
}

void MqttLink::flushOutbox() {
  writeOutbox();
  if (on_flushed_) on_flushed_();
}

void MqttLink::writeOutbox() {
  if (flush_timer_ != 0) {
    loop_.cancel(flush_timer_);
    flush_timer_ = 0;
  }
  const auto now = std::chrono::steady_clock::now();
  if (now >= flush_retry_at_) {
    // PUBACKs that came since the last sweep first: what they acknowledge is never written
    // (at 1k msg/s spread out most PUBACKs arrive within the batch interval). The window
    // they open is filled from the loop, not from in here (publish() may be the caller).
    if (applyAcks() && connected_ && send_cursor_ < outbox_->nextSeq()) postDrainAcks();
    try {
      outbox_->flush();
      flush_retry_at_ = {};
      if (flush_failures_.failing()) {
        spdlog::info("mqtt: writing the outbox again, after {} failed attempt(s)",
                     flush_failures_.succeeded());
      }
      return;
    } catch (const std::exception& e) {
      // Kept in memory (the live messages only; see Outbox::flush). A full disk fails every
      // attempt: try again after a pause, and say so once per interval with a count.
      ++stats_.outbox_write_failures;
      flush_retry_at_ = now + kFlushRetry;
      if (flush_failures_.failed(now)) {
        spdlog::error(
            "mqtt: cannot write the outbox ({} failure(s) since the last report): {}; {} "
            "message(s) wait in memory, retrying every {} ms",
            flush_failures_.unreported(), e.what(), outbox_->pendingCount(), kFlushRetry.count());
        flush_failures_.reported();
      }
    }
  }
  if (!outbox_->hasPending()) return;
  flush_timer_ =
      loop_.runAfter(std::chrono::ceil<std::chrono::milliseconds>(flush_retry_at_ - now), [this] {
        flush_timer_ = 0;
        flushOutbox();
      });
}

void MqttLink::reportDrops() {
  const auto now = std::chrono::steady_clock::now();
  if (now - last_drop_log_ < kDropLogInterval) return;
  const std::uint64_t total = outbox_->stats().dropped;
  spdlog::warn(
      "mqtt: outbox full (max_messages={}, max_bytes={}): dropped {} oldest message(s), {} in "
      "total",
      outbox_->limits().max_messages, outbox_->limits().max_bytes, total - drops_reported_, total);
  drops_reported_ = total;
  last_drop_log_ = now;
}

std::size_t MqttLink::outboxSize() const {
  return outbox_->size();
}

const OutboxStats& MqttLink::outboxStats() const {
  return outbox_->stats();
}

void MqttLink::stop(const std::string& final_topic, const std::string& final_payload) {
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
  drainAcks();
  if (ack_sweep_timer_ != 0) {
    loop_.cancel(ack_sweep_timer_);
    ack_sweep_timer_ = 0;
  }
  flushOutbox();
  if (outbox_->size() > 0) {
    spdlog::info("mqtt: {} unacknowledged message(s) kept in the outbox for the next start",
                 outbox_->size());
  }
}

}  // namespace coap2mqtt::gateway
