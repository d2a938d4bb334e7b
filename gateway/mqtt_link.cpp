#include "gateway/mqtt_link.h"

#include <mqtt/async_client.h>

#include <spdlog/spdlog.h>

namespace coap2mqtt::gateway {
namespace {

// paho wants tcp:// (mqtt:// is accepted by newer paho C only); ssl:// comes with TLS.
std::string pahoUri(const std::string& uri) {
  if (uri.rfind("mqtt://", 0) == 0) return "tcp://" + uri.substr(7);
  return uri;
}

constexpr int kMaxBufferedWhileDisconnected = 100000;

}  // namespace

// Paho only reconnects by itself after a first success; before that we retry ourselves.
class MqttLink::ConnectListener : public mqtt::iaction_listener {
 public:
  explicit ConnectListener(MqttLink& link) : link_(link) {}
  void on_success(const mqtt::token&) override {}
  void on_failure(const mqtt::token& token) override {
    auto alive = link_.alive_;
    if (!*alive) return;
    std::string reason = mqtt::exception::error_str(token.get_return_code());
    link_.loop_.post([this, alive, reason] {
      if (!*alive || link_.stopping_) return;
      spdlog::warn("mqtt: cannot connect to {}: {}; retrying in {} ms", link_.config_.uri, reason,
                   link_.retry_delay_.count());
      link_.scheduleRetry();
    });
  }

 private:
  MqttLink& link_;
};

MqttLink::MqttLink(EventLoop& loop, const MqttConfig& config, std::string will_topic,
                   std::string will_payload)
    : loop_(loop),
      config_(config),
      will_topic_(std::move(will_topic)),
      will_payload_(std::move(will_payload)) {
  mqtt::create_options create(config_.protocol_version == 5 ? MQTTVERSION_5 : MQTTVERSION_3_1_1);
  // Keep QoS >= 1 data while the broker is away (in memory for now; a durable outbox
  // replaces this). anyTime: also before the first connection succeeds.
  create.set_send_while_disconnected(true, true);
  create.set_max_buffered_messages(kMaxBufferedWhileDisconnected);
  create.set_delete_oldest_messages(true);
  client_ = std::make_unique<mqtt::async_client>(pahoUri(config_.uri), config_.client_id, create,
                                                 nullptr);
  auto alive = alive_;
  client_->set_connected_handler([this, alive](const std::string& cause) {
    if (!*alive) return;
    loop_.post([this, alive, cause] {
      if (!*alive) return;
      ++stats_.connects;
      retry_delay_ = std::chrono::milliseconds(500);
      spdlog::info("mqtt: connected to {}{}", config_.uri, cause.empty() ? "" : " (" + cause + ")");
      renewSubscriptions();
      if (on_connected_) on_connected_();
    });
  });
  client_->set_connection_lost_handler([this, alive](const std::string& cause) {
    if (!*alive) return;
    loop_.post([this, alive, cause] {
      if (!*alive || stopping_) return;
      spdlog::warn("mqtt: connection lost{}; reconnecting", cause.empty() ? "" : ": " + cause);
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
  try {
    if (client_->is_connected()) client_->disconnect(std::chrono::milliseconds(0))->wait_for(500);
  } catch (const std::exception&) {
    // Shutting down anyway.
  }
}

void MqttLink::start() {
  connect();
}

void MqttLink::connect() {
  mqtt::connect_options options;
  if (config_.protocol_version == 5) {
    options.set_mqtt_version(MQTTVERSION_5);
    options.set_clean_start(true);
  } else {
    options.set_clean_session(true);
  }
  options.set_keep_alive_interval(config_.keepalive);
  options.set_automatic_reconnect(std::chrono::seconds(1), std::chrono::seconds(30));
  options.set_connect_timeout(std::chrono::seconds(10));
  if (!config_.username.empty()) options.set_user_name(config_.username);
  if (!config_.password.empty()) options.set_password(config_.password);
  options.set_will(mqtt::will_options(will_topic_, will_payload_, 1, true));
  if (!connect_listener_) connect_listener_ = std::make_unique<ConnectListener>(*this);
  try {
    client_->connect(options, nullptr, *connect_listener_);
  } catch (const mqtt::exception& e) {
    spdlog::warn("mqtt: connect to {} failed: {}", config_.uri, e.what());
    scheduleRetry();
  }
}

void MqttLink::scheduleRetry() {
  loop_.runAfter(retry_delay_, [this] {
    if (!stopping_ && !client_->is_connected()) connect();
  });
  retry_delay_ = std::min(retry_delay_ * 2, std::chrono::milliseconds(30000));
}

void MqttLink::renewSubscriptions() {
  for (const auto& [filter, qos] : subscriptions_) {
    try {
      client_->subscribe(filter, qos);
    } catch (const mqtt::exception& e) {
      spdlog::error("mqtt: subscribe {} failed: {}", filter, e.what());
    }
  }
}

void MqttLink::subscribe(const std::string& filter, int qos) {
  subscriptions_.emplace_back(filter, qos);
  if (!client_->is_connected()) return;  // renewed on connect
  try {
    client_->subscribe(filter, qos);
  } catch (const mqtt::exception& e) {
    spdlog::error("mqtt: subscribe {} failed: {}", filter, e.what());
  }
}

void MqttLink::unsubscribeAll() {
  if (client_->is_connected()) {
    for (const auto& [filter, qos] : subscriptions_) {
      try {
        client_->unsubscribe(filter);
      } catch (const mqtt::exception&) {
        // Not connected any more: the clean session forgets them anyway.
      }
    }
  }
  subscriptions_.clear();
}

void MqttLink::publish(const std::string& topic, const std::string& payload, int qos, bool retain,
                       const std::optional<std::string>& correlation_data) {
  try {
    if (correlation_data && config_.protocol_version == 5) {
      auto msg = mqtt::make_message(topic, payload, qos, retain);
      msg->set_properties(
          mqtt::properties{mqtt::property(mqtt::property::CORRELATION_DATA, *correlation_data)});
      client_->publish(msg);
    } else {
      client_->publish(topic, payload.data(), payload.size(), qos, retain);
    }
    ++stats_.published;
  } catch (const mqtt::exception& e) {
    ++stats_.publish_failed;
    spdlog::debug("mqtt: publish to {} failed: {}", topic, e.what());
  }
}

bool MqttLink::connected() const {
  return client_->is_connected();
}

void MqttLink::stop(const std::string& final_topic, const std::string& final_payload) {
  stopping_ = true;
  if (!client_->is_connected()) return;
  try {
    client_->publish(final_topic, final_payload.data(), final_payload.size(), 1, true)
        ->wait_for(std::chrono::seconds(2));
    client_->disconnect(std::chrono::milliseconds(1000))->wait_for(std::chrono::seconds(2));
  } catch (const mqtt::exception& e) {
    spdlog::warn("mqtt: clean disconnect failed: {}", e.what());
  }
}

}  // namespace coap2mqtt::gateway
