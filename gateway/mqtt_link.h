#pragma once
// The MQTT side: a paho async client plus our own outbox. Paho calls back on its own
// threads; every callback only post()s to the loop. Everything public runs on the loop
// thread (asserted: LoopThreadChecker), except stats() and acknowledgementsWaiting(). Paho
// is included only by the link's own .cpp files (mqtt_link_internal.h).
//
// Delivery:
// - QoS >= 1 messages go into the outbox (Outbox, SQLite, group-committed) and
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
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "gateway/config.h"
#include "gateway/event_loop.h"
#include "gateway/loop_thread.h"
#include "gateway/outbox.h"

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
  // Refused by publish() before the outbox: not a valid publish topic (a broker would
  // disconnect us for it), or larger than mqtt.buffer.max_bytes on its own.
  std::atomic<std::uint64_t> invalid_topic{0};
  std::atomic<std::uint64_t> too_large{0};
  // Stored messages dropped because the broker ended the connection every time one was
  // sent, alone, kMaxDisconnectsPerMessage times in a row (see mqtt_link_delivery.cpp).
  std::atomic<std::uint64_t> broker_disconnects{0};
  // Incoming messages dropped because kMaxIncomingWaiting (or their bytes) already waited
  // for the loop thread.
  std::atomic<std::uint64_t> incoming_queue_full{0};
};

// Incoming messages that may wait for the loop thread (mqtt_link.cpp says why so few).
inline constexpr std::size_t kMaxIncomingWaiting = 2000;

// What came with an incoming message besides topic and payload: the MQTT 5 properties
// (empty with 3.1.1 or when absent) and the RETAIN flag, which a broker sets only on a
// message it had stored, delivered because we (re)subscribed, never on a live one.
struct MqttMessageMeta {
  std::string response_topic;
  std::string correlation_data;
  bool retained = false;
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
  void setOnConnected(std::function<void()> handler);
  // Runs after every connect attempt that failed (the link retries by itself).
  void setOnConnectFailed(std::function<void()> handler);
  void setMessageHandler(MessageHandler handler);

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
  // answer a request that carried a response topic. A topic that is not a valid publish
  // topic (bridge::isValidPublishTopic) and a QoS >= 1 message larger than the outbox's
  // max_bytes are refused here, counted and logged at a limited rate: neither may reach
  // the broker or the outbox.
  void publish(const std::string& topic, const std::string& payload, int qos, bool retain,
               const std::string& correlation_data = {});
  bool connected() const;
  const MqttStats& stats() const;  // any thread
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
  void setOnFlushed(std::function<void()> handler);

  class Impl;  // mqtt_link_internal.h

 private:
  LoopThreadChecker loop_thread_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace coap2mqtt::gateway
