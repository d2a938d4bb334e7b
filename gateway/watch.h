#pragma once
// One watched resource of one device: the observe registration (RFC 7641) and everything
// that keeps it alive, or the poll timer where the resource cannot be observed.
//
//  - freshness: stale and reordered notifications (§3.4) are dropped; a new registration
//    may start a new sequence (a device reboot);
//  - silence: a notification is fresh for Max-Age; a resource that has been notifying at a
//    steady pace and goes quiet for several of its intervals (but never before the device's
//    first retransmission is due) is registered again;
//  - re-registration keeps the quiet registration until the new one answers, and restores
//    it when the new one fails: under loss the old one is often alive, merely waiting for
//    a retransmission. Its notifications meanwhile are published, but the new registration
//    stays the one awaited: a device that received it has replaced the old one with it
//    (RFC 7641 §4.1);
//  - a re-registration's answer repeating the value already published is not published
//    again;
//  - a failed registration is retried after retry_interval, or at once (on the fresh
//    session the link opened) when it was delivering until a moment ago;
//  - a resource that answers without Observe is polled instead.
//
// Transport and clock are injected: the same class runs on CoapLink and EventLoop in the
// daemon and on fakes in tests/unit/test_watch.cpp.
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "bridge/bridge.h"
#include "gateway/coap_link.h"
#include "gateway/observe_freshness.h"
#include "gateway/timers.h"

namespace coap2mqtt::gateway {

// What a Watch needs of the CoAP side. CoapLink is adapted to it in the daemon (observer.cpp).
class WatchTransport {
 public:
  using Id = std::uint64_t;  // 0 = failed at once (the handler has been called already)
  using Handler = CoapLink::ResponseHandler;

  virtual ~WatchTransport() = default;
  // GET with Observe=0; the handler gets the answer and every notification, until an
  // error (response nullopt, error set) or cancel. `timeout` replaces the request timeout
  // for the registration's answer.
  virtual Id observe(const std::string& device, const std::string& path, Handler handler,
                     std::optional<std::chrono::milliseconds> timeout) = 0;
  // A plain GET; the handler is called once.
  virtual Id get(const std::string& device, const std::string& path, Handler handler) = 0;
  // Forgets a request or registration: its handler is not called again. No message.
  virtual void cancel(Id id) = 0;
  // Deregisters an observation (tells the device) and forgets it.
  virtual void deregister(Id id) = 0;
};

struct WatchSettings {
  std::chrono::milliseconds retry_interval{5000};
  std::chrono::milliseconds request_timeout{30000};
  std::chrono::milliseconds ack_timeout{2000};
  double ack_random_factor = 1.5;
  std::chrono::milliseconds default_poll_interval{30000};  // a non-observable resource
  static WatchSettings from(const CoapConfig& coap);
};

class Watch {
 public:
  enum class Count { Notification, Stale, Reregistration, Failure };
  struct Listener {
    std::function<void()> heard;                     // the device answered something
    std::function<void(const CoapResponse&)> value;  // a value to publish
    std::function<void(Count)> counted;              // for the observe counters
  };

  Watch(bridge::Watch plan, WatchTransport& transport, Timers& timers, WatchSettings settings,
        Listener listener);
  ~Watch();  // stop(false)
  Watch(const Watch&) = delete;
  Watch& operator=(const Watch&) = delete;

  // Registers (or starts polling). Call once.
  void start();
  // Cancels everything. `deregister` tells the device (GET with Observe=1); not when about
  // to register again at once: libcoap 4.3.1 then swallows the new registration's
  // notifications.
  void stop(bool deregister = true);
  // Before start(): this watch replaces `old` on the same resource (restart after a device
  // came back): a first value equal to what `old` last published is not published again.
  void continueFrom(const Watch& old);

  const bridge::Watch& plan() const { return plan_; }
  // Same resource, same mode and interval: only the rules it feeds change.
  void setRules(std::vector<std::size_t> rules) { plan_.rules = std::move(rules); }
  bool observing() const { return observe_id_ != 0; }
  bridge::Mode mode() const { return plan_.mode; }  // Poll once found not observable

 private:
  void registerObservation();
  void onObserved(WatchTransport::Id id, const std::optional<CoapResponse>& response,
                  const std::string& error);
  void onFailed(const std::optional<CoapResponse>& response, const std::string& error);
  void armSilence(std::uint32_t max_age_s, bool notified);
  void startSilenceTimer(std::chrono::milliseconds delay);
  void onSilence();
  void reregister(std::chrono::milliseconds waited);
  void retryLater();
  void poll();
  void pollLater();
  void cancelTimer(Timers::TimerId& id);
  void emit(const CoapResponse& response);

  bridge::Watch plan_;
  WatchTransport& transport_;
  Timers& timers_;
  WatchSettings settings_;
  Listener listener_;

  WatchTransport::Id observe_id_ = 0;
  WatchTransport::Id previous_id_ = 0;  // the quiet registration, kept while re-registering
  WatchTransport::Id poll_id_ = 0;
  Timers::TimerId timer_ = 0;          // retry or next poll
  Timers::TimerId silence_timer_ = 0;  // Max-Age / pace; 0 while nothing is watched for silence
  Timers::Clock::time_point silence_timer_at_{};  // when silence_timer_ fires
  Timers::Clock::time_point silence_due_{};       // silent until then: registering again
  std::chrono::milliseconds silence_wait_{0};     // the silence that deadline allows (logged)
  ObserveFreshness freshness_;
  NotificationPace pace_;
  std::uint32_t max_age_s_ = 60;
  bool awaiting_first_ = false;   // the current registration has not answered yet
  bool retried_at_once_ = false;  // a failed re-registration was repeated without delay
  bool reregistered_ = false;     // the next answer answers a re-registration
  std::string last_payload_;      // what was last handed to listener_.value
  // Handlers capture this token, not `this` alone: a handler that outlives stop() (the
  // transport may call it once more) finds it expired and returns.
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace coap2mqtt::gateway
