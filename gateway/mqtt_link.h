#pragma once
// The MQTT side: a paho async client. Paho calls back on its own threads; every callback
// only post()s to the loop. publish() may be called from the loop thread.
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "gateway/config.h"
#include "gateway/event_loop.h"

namespace mqtt {
class async_client;
}

namespace coap2mqtt::gateway {

// MQTT 5 properties of a received message (empty with MQTT 3.1.1).
struct MqttMessageMeta {
  std::string response_topic;
  std::string correlation_data;  // binary, as received
};

struct MqttStats {
  std::atomic<std::uint64_t> published{0};
  std::atomic<std::uint64_t> publish_failed{0};  // rejected by paho (e.g. buffer full)
  std::atomic<std::uint64_t> received{0};
  std::atomic<std::uint64_t> connects{0};
};

class MqttLink {
 public:
  using MessageHandler = std::function<void(const std::string& topic, const std::string& payload,
                                            const MqttMessageMeta& meta)>;

  // `will_topic`/`will_payload`: retained, QoS 1, sent by the broker if we vanish.
  MqttLink(EventLoop& loop, const MqttConfig& config, std::string will_topic,
           std::string will_payload);
  ~MqttLink();
  MqttLink(const MqttLink&) = delete;
  MqttLink& operator=(const MqttLink&) = delete;

  // Both run on the loop thread. on_connected fires after every (re)connect.
  void setOnConnected(std::function<void()> handler) { on_connected_ = std::move(handler); }
  void setMessageHandler(MessageHandler handler) { on_message_ = std::move(handler); }

  void start();  // connects; retries with back-off until the broker answers
  // Publishes `final_topic`/`final_payload` (retained), then disconnects cleanly.
  void stop(const std::string& final_topic, const std::string& final_payload);

  // Remembered and renewed on every reconnect.
  void subscribe(const std::string& filter, int qos);
  void unsubscribeAll();
  // `correlation_data`: sent as the MQTT 5 Correlation Data property (ignored on 3.1.1).
  void publish(const std::string& topic, const std::string& payload, int qos, bool retain,
               const std::optional<std::string>& correlation_data = std::nullopt);
  bool connected() const;
  const MqttStats& stats() const { return stats_; }

 private:
  void connect();
  void scheduleRetry();
  void renewSubscriptions();
  class ConnectListener;

  EventLoop& loop_;
  MqttConfig config_;
  std::string will_topic_;
  std::string will_payload_;
  // Declared before client_ so it outlives it: paho may call it until the client is gone.
  std::unique_ptr<ConnectListener> connect_listener_;
  std::unique_ptr<mqtt::async_client> client_;
  std::function<void()> on_connected_;
  MessageHandler on_message_;
  std::vector<std::pair<std::string, int>> subscriptions_;
  std::chrono::milliseconds retry_delay_{500};
  bool stopping_ = false;
  MqttStats stats_;
  // Paho callbacks may still be queued after destruction starts; they check this.
  std::shared_ptr<std::atomic<bool>> alive_ = std::make_shared<std::atomic<bool>>(true);
};

}  // namespace coap2mqtt::gateway
