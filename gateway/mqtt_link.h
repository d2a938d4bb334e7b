#pragma once
// The MQTT side: a paho async client plus our own outbox. Paho calls back on its own
// threads; every callback only post()s to the loop. Everything public runs on the loop
// thread.
//
// Delivery:
// - QoS >= 1 messages go into the outbox (gateway/outbox.h, SQLite, group-committed) and
//   are handed to paho in seq order, at most `max_inflight` unacknowledged at a time. An
//   entry is deleted only when its PUBACK/PUBCOMP arrives. Nothing is handed to paho while
//   disconnected; after every (re)connect sending restarts at the oldest unacknowledged
//   message (at-least-once: duplicates are possible, loss is not). After a restart the
//   outbox's messages from the last run go out first.
// - QoS 0 messages are sent at once when connected; while disconnected they wait in a
//   bounded in-memory queue (oldest dropped, counted).
// - On every (re)connect: subscriptions are renewed, then the on_connected handler runs,
//   then the QoS 0 queue and the outbox are drained. Whatever the handler publishes (the
//   bridge state, availability, device list) is sent at once, ahead of the stored backlog,
//   and is not stored: the handler publishes it again on the next connect anyway.
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
#include <vector>

#include "gateway/config.h"
#include "gateway/event_loop.h"
#include "gateway/outbox.h"
#include "gateway/repeated_failure.h"

namespace mqtt {
class async_client;
class message;
class ssl_options;
}  // namespace mqtt

namespace coap2mqtt::gateway {

struct MqttStats {
  std::atomic<std::uint64_t> published{0};       // handed to paho (resends included)
  std::atomic<std::uint64_t> publish_failed{0};  // paho refused to take a message
  std::atomic<std::uint64_t> delivered{0};       // QoS >= 1 acknowledged by the broker
  std::atomic<std::uint64_t> rejected{0};        // MQTT 5 PUBACK with an error reason: dropped
  std::atomic<std::uint64_t> qos0_dropped{0};    // QoS 0 queue full while disconnected
  std::atomic<std::uint64_t> received{0};
  std::atomic<std::uint64_t> connects{0};
  std::atomic<std::uint64_t> outbox_write_failures{0};  // failed flushes (e.g. disk full)
};

// MQTT 5 properties of an incoming message (empty with 3.1.1 or when absent).
struct MqttMessageMeta {
  std::string response_topic;
  std::string correlation_data;
};

class MqttLink {
 public:
  using MessageHandler = std::function<void(const std::string& topic, const std::string& payload,
                                            const MqttMessageMeta& meta)>;

  // `outbox`: where QoS >= 1 messages wait (see openOutbox). `will_topic`/`will_payload`:
  // retained, QoS 1, sent by the broker if we vanish.
  MqttLink(EventLoop& loop, const MqttConfig& config, std::unique_ptr<Outbox> outbox,
           std::string will_topic, std::string will_payload);
  ~MqttLink();
  MqttLink(const MqttLink&) = delete;
  MqttLink& operator=(const MqttLink&) = delete;

  // <state_dir>/outbox.db with config.buffer's bounds (creates state_dir). Throws
  // std::runtime_error when it cannot be opened.
  static std::unique_ptr<Outbox> openOutbox(const std::string& state_dir, const MqttConfig& config);

  // Both run on the loop thread. on_connected fires after every (re)connect.
  void setOnConnected(std::function<void()> handler) { on_connected_ = std::move(handler); }
  void setMessageHandler(MessageHandler handler) { on_message_ = std::move(handler); }

  void start();  // connects; retries with back-off until the broker answers
  // Publishes `final_topic`/`final_payload` (retained), then disconnects cleanly; what is
  // still unacknowledged stays in the outbox for the next start.
  void stop(const std::string& final_topic, const std::string& final_payload);

  // With clean_session = false the broker keeps our subscriptions across connections and
  // restarts: this file (call before start()) remembers them, so that filters the
  // configuration dropped meanwhile are unsubscribed on the next connect.
  void setSubscriptionsFile(std::string path);
  // Remembered and renewed on every reconnect (MQTT 5: with no_local).
  void subscribe(const std::string& filter, int qos);
  void unsubscribeAll();
  // `correlation_data`: MQTT 5 Correlation Data property (ignored with 3.1.1), e.g. to
  // answer a request that carried a response topic.
  void publish(const std::string& topic, const std::string& payload, int qos, bool retain,
               const std::string& correlation_data = {});
  bool connected() const { return connected_; }
  const MqttStats& stats() const { return stats_; }
  std::size_t outboxSize() const;
  // PUBACKs paho has reported that the loop has not taken yet (any thread).
  std::size_t acknowledgementsWaiting() const;
  const OutboxStats& outboxStats() const;
  // Writes the outbox's pending batch now (the link also does this by itself every few ms).
  void flushOutbox();
  // True while appended messages (or removals) wait for the next flush and the file is
  // writable; false while flushes fail (memory holds them until the file takes them).
  bool flushPending() const;
  // Runs after every flush attempt (also a failed one): what waited for it may go on.
  void setOnFlushed(std::function<void()> handler) { on_flushed_ = std::move(handler); }

 private:
  enum class Ack { Delivered, Rejected, Failed };
  class ConnectListener;
  class DeliveryListener;

  void connect();
  void scheduleRetry();
  void renewSubscriptions();
  void rememberSubscriptions();  // writes subscriptions_file_
  void onConnected(const std::string& cause);
  void onConnectionLost(const std::string& cause);
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
  void scheduleFlush();
  void writeOutbox();  // flushOutbox() without on_flushed_
  void reportDrops();

  EventLoop& loop_;
  MqttConfig config_;
  std::unique_ptr<Outbox> outbox_;
  std::string will_topic_;
  std::string will_payload_;
  // Declared before client_ so they outlive it: paho may call them until the client is gone.
  std::unique_ptr<ConnectListener> connect_listener_;
  std::unique_ptr<DeliveryListener> delivery_listener_;
  std::unique_ptr<mqtt::ssl_options> ssl_;  // built at the first connect
  std::unique_ptr<mqtt::async_client> client_;
  std::function<void()> on_connected_;
  std::function<void()> on_flushed_;
  MessageHandler on_message_;
  std::vector<std::pair<std::string, int>> subscriptions_;
  std::string subscriptions_file_;
  // Persistent session only: filters it may still hold that we no longer want.
  std::set<std::string> stale_filters_;
  std::chrono::milliseconds retry_delay_{500};
  bool connected_ = false;  // as the loop thread last heard
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
