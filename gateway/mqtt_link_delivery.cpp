// MqttLink: publishing. QoS >= 1 goes through the outbox and a window of unacknowledged
// messages; acknowledgements come from paho's threads and are applied on the loop, paced so
// that they wake it only when stored messages wait for room (see paceAcks). QoS 0 goes
// straight to paho, or waits in a bounded queue while disconnected.
#include <algorithm>
#include <cstdint>

#include <spdlog/spdlog.h>

#include "bridge/topic_template.h"
#include "gateway/mqtt_link_internal.h"
#include "gateway/outbox.h"

namespace coap2mqtt::gateway {
namespace {

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

constexpr auto kDropLogInterval = RepeatedFailure::kLogInterval;
constexpr auto kRefusedRetry = std::chrono::milliseconds(10);
constexpr auto kFlushRetry = std::chrono::milliseconds(1000);
// Acknowledgements nobody waits for are collected this often (with the outbox's group
// commit, whose batch interval is the same).
constexpr auto kAckSweep = std::chrono::milliseconds(5);
constexpr std::size_t kNoAckWake = SIZE_MAX;
// Connection losses in a row while one stored message was out alone, before it is dropped
// as one the broker will never take (see MqttLink::Impl::probing_).
constexpr unsigned kMaxDisconnectsPerMessage = 3;

}  // namespace

void MqttLink::Impl::DeliveryListener::on_success(const mqtt::token& token) {
  link_.pushAck(contextId(token.get_user_context()), Ack::Delivered);
}

void MqttLink::Impl::DeliveryListener::on_failure(const mqtt::token& token) {
  // MQTT 5: a PUBACK with a reason code >= 0x80 means the broker will not take it
  // (not authorized, quota, bad topic); sending it again would not help.
  const bool refused = token.get_reason_code() >= 0x80 && token.get_reason_code() != 0xFF;
  link_.pushAck(contextId(token.get_user_context()), refused ? Ack::Rejected : Ack::Failed);
}

std::shared_ptr<mqtt::message> MqttLink::Impl::makeMessage(
    std::string_view topic, std::string_view payload, int qos, bool retain,
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

bool MqttLink::Impl::sendStored(std::uint64_t seq, std::string_view topic, std::string_view payload,
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

bool MqttLink::Impl::sendDirect(const std::string& topic, const std::string& payload, int qos,
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

// A topic the broker would disconnect us for, or a message that can never fit the outbox,
// goes no further: refused alone, counted, logged at a limited rate.
bool MqttLink::Impl::admissible(const std::string& topic, const std::string& payload,
                                const std::string& correlation_data, int qos) {
  const char* problem = nullptr;
  if (!bridge::isValidPublishTopic(topic)) {
    ++stats_.invalid_topic;
    problem = "not a valid publish topic";
  } else if (qos > 0 && topic.size() + payload.size() + correlation_data.size() >
                            outbox_->limits().max_bytes) {
    ++stats_.too_large;
    problem = "larger than mqtt.buffer.max_bytes";
  } else {
    return true;
  }
  if (refused_log_.failed(std::chrono::steady_clock::now())) {
    spdlog::warn("mqtt: publish of {} bytes refused ({} since the last report): {}", payload.size(),
                 refused_log_.unreported(), problem);
    refused_log_.reported();
  }
  return false;
}

void MqttLink::Impl::publish(const std::string& topic, const std::string& payload, int qos,
                             bool retain, const std::string& correlation_data) {
  if (!admissible(topic, payload, correlation_data, qos)) return;
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
  if (connected_ && send_cursor_ == seq && inflight_.size() < windowSize()) {
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

void MqttLink::Impl::pump() {
  fillWindow();
  paceAcks();
}

void MqttLink::Impl::fillWindow() {
  if (!connected_ || stopping_) return;
  while (inflight_.size() < windowSize() && send_cursor_ < outbox_->nextSeq()) {
    // Straight from the outbox's memory or the file to paho, no copy of our own.
    bool refused = false;
    const std::size_t visited = outbox_->forEach(
        send_cursor_, windowSize() - inflight_.size(), [&](const OutboxMessageView& m) {
          refused = !sendStored(m.seq, m.topic, m.payload, m.qos, m.retain, m.correlation_data);
          if (!refused && probing_ && m.seq == probe_seq_) probe_out_ = true;
          return !refused;
        });
    if (refused) return;
    if (visited == 0) {
      send_cursor_ = outbox_->nextSeq();
      return;
    }
  }
}

void MqttLink::Impl::queueQos0(const std::string& topic, const std::string& payload, bool retain) {
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

void MqttLink::Impl::drainQos0() {
  while (!qos0_queue_.empty() && connected_) {
    const Qos0& m = qos0_queue_.front();
    if (!sendDirect(m.topic, m.payload, 0, m.retain, {})) {
      scheduleResend();
      return;
    }
    qos0_queue_.pop_front();
  }
}

void MqttLink::Impl::scheduleResend() {
  if (resend_timer_ != 0 || !connected_ || stopping_) return;
  resend_timer_ = loop_.runAfter(kRefusedRetry, [this] {
    resend_timer_ = 0;
    drainQos0();
    pump();
  });
}

void MqttLink::Impl::pushAck(std::uint64_t sent_id, Ack ack) {
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

std::size_t MqttLink::Impl::acknowledgementsWaiting() const {
  std::lock_guard<std::mutex> lock(acks_mutex_);
  return acks_.size();
}

void MqttLink::Impl::postDrainAcks() {
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
void MqttLink::Impl::paceAcks() {
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

void MqttLink::Impl::drainAcks() {
  takeAcks();
  pump();
}

void MqttLink::Impl::takeAcks() {
  if (applyAcks()) scheduleFlush();
}

bool MqttLink::Impl::applyAcks() {
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
    if (ack != Ack::Failed) noteAcknowledged(seq);
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

void MqttLink::Impl::noteAcknowledged(std::uint64_t seq) {
  if (seq == suspect_seq_) suspect_losses_ = 0;
  if (probing_ && seq == probe_seq_) {
    probing_ = false;  // the broker takes messages again: the whole window
    probe_out_ = false;
  }
}

// Runs before the in-flight set is forgotten. Only a loss while the probe was out alone
// counts against a message: a broker restart or a flaky network during a full window
// costs no message anything.
void MqttLink::Impl::noteConnectionLost() {
  if (probing_ && probe_out_) {
    if (suspect_seq_ != probe_seq_) {
      suspect_seq_ = probe_seq_;
      suspect_losses_ = 0;
    }
    if (++suspect_losses_ >= kMaxDisconnectsPerMessage && outbox_->remove(probe_seq_)) {
      ++stats_.broker_disconnects;
      spdlog::warn(
          "mqtt: dropped stored message {}: the broker closed the connection each of the {} "
          "times it was sent alone",
          probe_seq_, suspect_losses_);
      suspect_losses_ = 0;
      scheduleFlush();
    }
  }
  probe_out_ = false;
  // What goes first on the next connection goes alone, until the broker acknowledges it
  // (restartSending picks it).
  probing_ = outbox_->size() > 0;
}

void MqttLink::Impl::restartSending() {
  drainQos0();
  // Everything not acknowledged is sent again, from the oldest (what was acknowledged
  // before the connection went is not).
  takeAcks();
  ++connection_;
  inflight_.clear();
  send_cursor_ = outbox_->firstSeq().value_or(outbox_->nextSeq());
  probe_seq_ = send_cursor_;
  if (probing_ && !outbox_->firstSeq()) probing_ = false;
  pump();
}

void MqttLink::Impl::stopSending() {
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

void MqttLink::Impl::scheduleFlush() {
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

bool MqttLink::Impl::flushPending() const {
  return outbox_->hasPending() && flush_retry_at_ == std::chrono::steady_clock::time_point{};
}

void MqttLink::Impl::flushOutbox() {
  writeOutbox();
  if (on_flushed_) on_flushed_();
}

void MqttLink::Impl::writeOutbox() {
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

void MqttLink::Impl::reportDrops() {
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

}  // namespace coap2mqtt::gateway
