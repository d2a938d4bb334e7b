#pragma once
// MqttLink's state and what its .cpp files share; included by them only, since this is
// where paho comes in. The link is split by job:
//   mqtt_link.cpp                the connection: connect, retry, TLS alerts, start/stop
//   mqtt_link_delivery.cpp       publishing: the outbox, the send window, acknowledgements
//   mqtt_link_subscriptions.cpp  subscriptions, renewed on connect and remembered on disk
#include <MQTTAsync.h>
#include <mqtt/async_client.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "gateway/mqtt_link.h"
#include "gateway/repeated_failure.h"

namespace coap2mqtt::gateway {

// mqtt://, mqtts:// (ssl://, wss://): whether the URI asks for TLS.
bool isTlsUri(const std::string& uri);

class MqttLink::Impl {
 public:
  Impl(EventLoop& loop, const MqttConfig& config, std::unique_ptr<Outbox> outbox,
       std::string will_topic, std::string will_payload);
  ~Impl();

  // The public operations (MqttLink forwards to them after its loop-thread check).
  void setOnConnected(std::function<void()> handler) { on_connected_ = std::move(handler); }
  void setOnConnectFailed(std::function<void()> handler) {
    on_connect_failed_ = std::move(handler);
  }
  void setMessageHandler(MessageHandler handler) { on_message_ = std::move(handler); }
  void setOnFlushed(std::function<void()> handler) { on_flushed_ = std::move(handler); }
  void start();
  void stop(const std::string& final_topic, const std::string& final_payload);
  void setSubscriptionsFile(std::string path);
  void subscribe(const std::string& filter, int qos);
  void unsubscribeAll();
  void publish(const std::string& topic, const std::string& payload, int qos, bool retain,
               const std::string& correlation_data);
  bool connected() const { return connected_; }
  const MqttStats& stats() const { return stats_; }
  std::size_t outboxSize() const { return outbox_->size(); }
  std::size_t acknowledgementsWaiting() const;
  const OutboxStats& outboxStats() const { return outbox_->stats(); }
  void flushOutbox();
  bool flushPending() const;

 private:
  enum class Ack { Delivered, Rejected, Failed };

  // Our own retries cover the first connect and every reconnect (paho's automatic
  // reconnect is off): every failed attempt is logged with paho's reason.
  class ConnectListener : public mqtt::iaction_listener {
   public:
    explicit ConnectListener(Impl& link) : link_(link) {}
    void on_success(const mqtt::token&) override {}
    void on_failure(const mqtt::token& token) override;  // paho's thread

   private:
    Impl& link_;
  };

  // PUBACK/PUBCOMP (or a failure) for a stored message; the user context is its sent id
  // (see sendContext in mqtt_link_delivery.cpp). Paho's threads.
  class DeliveryListener : public mqtt::iaction_listener {
   public:
    explicit DeliveryListener(Impl& link) : link_(link) {}
    void on_success(const mqtt::token& token) override;
    void on_failure(const mqtt::token& token) override;

   private:
    Impl& link_;
  };

  // The connection (mqtt_link.cpp).
  void connect();
  void scheduleRetry();
  void onConnected(const std::string& cause);
  void onConnectionLost(const std::string& cause);

  // Subscriptions (mqtt_link_subscriptions.cpp).
  void renewSubscriptions();
  void rememberSubscriptions();  // writes subscriptions_file_

  // Delivery (mqtt_link_delivery.cpp).
  std::shared_ptr<mqtt::message> makeMessage(std::string_view topic, std::string_view payload,
                                             int qos, bool retain,
                                             std::string_view correlation_data) const;
  bool sendStored(std::uint64_t seq, std::string_view topic, std::string_view payload, int qos,
                  bool retain, std::string_view correlation_data);
  bool sendDirect(const std::string& topic, const std::string& payload, int qos, bool retain,
                  const std::string& correlation_data);
  void pump();  // fillWindow, then paceAcks
  void fillWindow();
  void queueQos0(const std::string& topic, const std::string& payload, bool retain);
  void drainQos0();
  void scheduleResend();  // paho refused a message while connected: try again soon
  void pushAck(std::uint64_t sent_id, Ack ack);  // paho's threads; see sendContext
  void postDrainAcks();                          // any thread
  void takeAcks();   // applies what paho acknowledged: outbox rows go, the window opens
  bool applyAcks();  // takeAcks without scheduling the flush; true when there were any
  void drainAcks();  // takeAcks, then fills the window again
  void paceAcks();
  void restartSending();  // after a (re)connect: everything unacknowledged goes again
  void stopSending();     // at stop(): the last acknowledgements, the last flush
  void scheduleFlush();
  void writeOutbox();  // flushOutbox() without on_flushed_
  void reportDrops();
  bool admissible(const std::string& topic, const std::string& payload,
                  const std::string& correlation_data, int qos);
  std::size_t windowSize() const { return probing_ ? 1 : config_.max_inflight; }
  void noteConnectionLost();  // a stored message that keeps ending the connection goes
  void noteAcknowledged(std::uint64_t seq);
  void reportIncomingDrops();  // loop thread

  EventLoop& loop_;
  const MqttConfig config_;
  std::unique_ptr<Outbox> outbox_;
  const std::string will_topic_;
  const std::string will_payload_;
  // Declared before client_ so they outlive it: paho may call them until the client is gone.
  std::unique_ptr<ConnectListener> connect_listener_;
  std::unique_ptr<DeliveryListener> delivery_listener_;
  std::unique_ptr<mqtt::ssl_options> ssl_;  // built at the first connect
  std::unique_ptr<mqtt::async_client> client_;
  std::function<void()> on_connected_;
  std::function<void()> on_connect_failed_;
  std::function<void()> on_flushed_;
  MessageHandler on_message_;
  std::vector<std::pair<std::string, int>> subscriptions_;
  std::string subscriptions_file_;
  // Persistent session only: filters it may still hold that we no longer want.
  std::set<std::string> stale_filters_;
  std::chrono::milliseconds retry_delay_{500};  // kMinRetry
  bool connected_ = false;                      // as the loop thread last heard
  bool in_on_connected_ = false;
  bool stopping_ = false;
  bool connecting_ = false;
  std::uint64_t send_cursor_ = 0;     // next outbox seq to hand to paho
  std::set<std::uint64_t> inflight_;  // handed to paho on this connection, not acknowledged
  std::uint16_t connection_ = 0;      // counts connects (wraps); tags what is sent
  struct Qos0 {
    std::string topic;
    std::string payload;
    bool retain;
  };
  std::deque<Qos0> qos0_queue_;
  EventLoop::TimerId flush_timer_ = 0;
  EventLoop::TimerId resend_timer_ = 0;
  std::uint64_t drops_reported_ = 0;
  std::chrono::steady_clock::time_point last_drop_log_{};
  // After a failed flush: no new attempt before this, and one log line per interval.
  std::chrono::steady_clock::time_point flush_retry_at_{};
  RepeatedFailure flush_failures_;  // logged once per interval
  RepeatedFailure refused_log_;     // publish() refusals (invalid topic, too large)
  // A message a broker refuses by disconnecting (one it deems malformed or too big) would
  // otherwise be sent again first after every reconnect, forever. After a connection
  // loss with stored messages, the oldest is sent alone until it is acknowledged (the
  // probe); a loss while the probe is out is counted against it, and after
  // kMaxDisconnectsPerMessage in a row it is dropped (broker_disconnects).
  bool probing_ = false;
  bool probe_out_ = false;  // the probe was sent on this connection and is unacknowledged
  std::uint64_t probe_seq_ = 0;
  std::uint64_t suspect_seq_ = 0;
  unsigned suspect_losses_ = 0;
  // Paho's thread -> loop: incoming messages posted and not yet handled, and their bytes.
  std::atomic<std::size_t> incoming_waiting_{0};
  std::atomic<std::size_t> incoming_bytes_{0};
  std::uint64_t incoming_drops_reported_ = 0;
  RepeatedFailure incoming_log_;

  mutable std::mutex acks_mutex_;                    // paho's threads -> loop
  std::vector<std::pair<std::uint64_t, Ack>> acks_;  // (sent id, outcome)
  bool acks_wake_posted_ = false;                    // under acks_mutex_: a drainAcks is on its way
  // How many acknowledgements paho's receive thread collects before it wakes the loop
  // (see paceAcks); the rest wait for the sweep timer.
  std::atomic<std::size_t> acks_wake_at_{1};
  EventLoop::TimerId ack_sweep_timer_ = 0;

  MqttStats stats_;
  // Paho callbacks may still be queued after destruction starts; they check this.
  std::shared_ptr<std::atomic<bool>> alive_ = std::make_shared<std::atomic<bool>>(true);
};

}  // namespace coap2mqtt::gateway
