#include "gateway/watch.h"

#include <algorithm>
#include <utility>

#include <spdlog/spdlog.h>

#include "gateway/config.h"

namespace coap2mqtt::gateway {
namespace {

using std::chrono::milliseconds;

constexpr auto kMaxAgeMargin = std::chrono::seconds(2);
constexpr int kSilentIntervals = 4;           // this many missed notifications = lost observation
constexpr std::uint32_t kDefaultMaxAge = 60;  // RFC 7252 §5.10.5

// A handler or timer task of a Watch runs only while the Watch is alive and not stopped
// since the task was made (stop() replaces the token, the destructor drops it).
using Token = std::weak_ptr<bool>;

}  // namespace

WatchSettings WatchSettings::from(const CoapConfig& coap) {
  WatchSettings s;
  s.retry_interval = coap.retry_interval;
  s.request_timeout = coap.request_timeout;
  s.ack_timeout = coap.ack_timeout;
  s.ack_random_factor = coap.ack_random_factor;
  return s;  // default_poll_interval: not configurable (yet)
}

Watch::Watch(bridge::Watch plan, WatchTransport& transport, Timers& timers, WatchSettings settings,
             Listener listener)
    : plan_(std::move(plan)),
      transport_(transport),
      timers_(timers),
      settings_(settings),
      listener_(std::move(listener)) {}

Watch::~Watch() {
  stop(false);
}

void Watch::start() {
  if (plan_.mode == bridge::Mode::Observe) {
    registerObservation();
  } else {
    poll();
  }
}

void Watch::stop(bool deregister) {
  // Whatever the transport or the timers still hold of ours is dead from here on.
  alive_ = std::make_shared<bool>(true);
  if (observe_id_ != 0) {
    if (deregister) {
      transport_.deregister(observe_id_);
    } else {
      transport_.cancel(observe_id_);
    }
  }
  if (previous_id_ != 0) transport_.cancel(previous_id_);
  if (poll_id_ != 0) transport_.cancel(poll_id_);
  observe_id_ = 0;
  previous_id_ = 0;
  poll_id_ = 0;
  cancelTimer(timer_);
  cancelTimer(silence_timer_);
}

void Watch::continueFrom(const Watch& old) {
  // Restarted (the device came back): its current value may be the one already published
  // from the old registration.
  if (!old.last_payload_.empty()) {
    last_payload_ = old.last_payload_;
    reregistered_ = true;
  }
}

void Watch::registerObservation() {
  awaiting_first_ = true;
  // The handler learns which registration it serves (the id is known only after
  // observe() returns; an immediate failure reports 0, which is the current one).
  auto id = std::make_shared<WatchTransport::Id>(0);
  // A device that was delivering until a moment ago answers fast or the message was
  // lost: after two transmissions, start over on a fresh session rather than wait
  // out request_timeout while its notifications are missing.
  std::optional<milliseconds> timeout;
  if (reregistered_) {
    timeout = std::min(
        settings_.request_timeout,
        std::chrono::ceil<milliseconds>(settings_.ack_timeout * settings_.ack_random_factor * 1.5) +
            milliseconds(500));
  }
  const Token alive = alive_;
  const auto got = transport_.observe(
      plan_.device, plan_.path,
      [this, alive, id](const std::optional<CoapResponse>& response, const std::string& error) {
        if (alive.expired()) return;
        onObserved(*id, response, error);
      },
      timeout);
  if (alive.expired()) return;  // stopped or destroyed by an immediate failure's listener
  *id = got;
  if (got != 0) observe_id_ = got;
}

void Watch::onObserved(WatchTransport::Id id, const std::optional<CoapResponse>& response,
                       const std::string& error) {
  const Token alive = alive_;
  if (response && listener_.heard) {
    listener_.heard();
    if (alive.expired()) return;
  }
  if (id != 0 && id != observe_id_ && id != previous_id_) {
    // A registration this watch has since given up on: it must not count as current.
    transport_.cancel(id);
    return;
  }
  const bool delivers = response && response->success() && response->observe;
  // The answer to a registration is not a notification: it comes whenever we ask (every
  // few seconds while a device is stalled) and must not shorten the pace estimate.
  bool registration_answer = false;
  // The quiet registration spoke before the new one answered. Its value is published, but
  // the new registration stays the one awaited: a device that has received it replaced the
  // quiet one with it (RFC 7641 §4.1: one entry per client endpoint and resource; libcoap's
  // coap_add_observer), so this notification left before the new registration arrived,
  // and the quiet registration is gone there. Given up now, the new one's answer would be
  // reset (which ends it on the device too): nothing left until the next silence.
  const bool from_quiet = id != 0 && id == previous_id_;
  if (from_quiet) {
    if (!delivers) {
      previous_id_ = 0;  // it ended; the new one is still awaited
      return;
    }
  } else if (awaiting_first_ && delivers) {
    registration_answer = true;
    awaiting_first_ = false;
    retried_at_once_ = false;
    if (previous_id_ != 0) transport_.cancel(previous_id_);
    previous_id_ = 0;
    freshness_.reset();  // a new registration may start a new sequence (a reboot)
  }
  if (!response || !response->success()) {
    onFailed(response, error);
    return;
  }
  if (!response->observe) {
    // The device answered but does not observe this resource: poll it instead.
    observe_id_ = 0;
    // A re-registration answered so (RFC 7641 §4.1: a server unwilling to add another
    // observer answers without Observe) while the quiet one is kept: that one is dropped
    // too, or its next notification would make the watch observe and poll at once.
    if (previous_id_ != 0) transport_.cancel(previous_id_);
    previous_id_ = 0;
    cancelTimer(silence_timer_);
    plan_.mode = bridge::Mode::Poll;
    if (plan_.interval.count() == 0) plan_.interval = settings_.default_poll_interval;
    spdlog::info("{}{} is not observable; polling every {} ms", plan_.device, plan_.path,
                 plan_.interval.count());
    emit(*response);
    if (alive.expired()) return;
    pollLater();
    return;
  }
  if (!freshness_.accept(*response->observe, timers_.now())) {
    if (listener_.counted) listener_.counted(Count::Stale);
    spdlog::debug("{}{}: stale notification {} dropped", plan_.device, plan_.path,
                  *response->observe);
    return;
  }
  if (listener_.counted) listener_.counted(Count::Notification);
  if (alive.expired()) return;
  max_age_s_ = response->max_age.value_or(kDefaultMaxAge);
  armSilence(max_age_s_, !registration_answer);
  // A re-registration answers with the current value, which we may have published
  // already from the old registration: the same value is not published twice. (The quiet
  // registration's notification is a notification, published whatever its value.)
  if (!from_quiet) {
    const bool repeat = reregistered_ && response->payload == last_payload_;
    reregistered_ = false;
    if (repeat) return;
  }
  last_payload_ = response->payload;
  emit(*response);
}

void Watch::onFailed(const std::optional<CoapResponse>& response, const std::string& error) {
  if (previous_id_ != 0) {
    // The re-registration failed; the old registration stays until it is quiet again.
    spdlog::debug("{}{}: registering again failed: {}", plan_.device, plan_.path,
                  response ? response->codeString() : error);
    observe_id_ = previous_id_;
    previous_id_ = 0;
    awaiting_first_ = false;
    reregistered_ = false;
    armSilence(max_age_s_, false);
    return;
  }
  observe_id_ = 0;
  // An observation that fails without an answer while it is not yet silent (its silence
  // timer still armed) was delivering until a moment ago: what ended it is the device's
  // session being renewed (CoapLink::resetSession, after another exchange with the device
  // timed out, e.g. a command; or after its re-registration did, which fails the restored
  // quiet registration too, in no particular order). The device still notifies the old
  // session's socket, which is gone: every value until we register again is lost.
  const bool delivering = silence_timer_ != 0 && !response;
  const Token alive = alive_;
  if (listener_.counted) listener_.counted(Count::Failure);
  if (alive.expired()) return;
  // Nothing to watch for silence until a registration answers again.
  cancelTimer(silence_timer_);
  if (reregistered_ && response) {
    // The device answered a re-registration with an error (e.g. 4.04 after a
    // reconfiguration): that is worth the usual back-off.
    reregistered_ = false;
  } else if ((reregistered_ || delivering) && !retried_at_once_) {
    // It was delivering until a moment ago; the session has just been renewed
    // (see CoapLink::resetSession), so the next attempt goes out on a fresh one.
    spdlog::info("observe {}{} failed: {}; registering again at once", plan_.device, plan_.path,
                 error);
    retried_at_once_ = true;
    reregistered_ = true;  // its answer may repeat the value published last
    registerObservation();
    return;
  }
  spdlog::warn("observe {}{} failed: {}; retrying in {} ms", plan_.device, plan_.path,
               response ? response->codeString() : error, settings_.retry_interval.count());
  retryLater();
}

// RFC 7641 §3.3.1: a notification is fresh for Max-Age; if none follows by then the
// device may have dropped us. libcoap 4.3.1 does not ACK a retransmitted CON
// notification (libcoap#1306), so one lost ACK makes the device give up on us: waiting
// for Max-Age alone would leave a long gap. A resource that has been notifying at a
// steady pace is re-registered once it has been silent for several of its intervals.
void Watch::armSilence(std::uint32_t max_age_s, bool notified) {
  const auto now = timers_.now();
  if (notified) pace_.note(now);
  auto wait =
      std::chrono::duration_cast<milliseconds>(std::chrono::seconds(max_age_s) + kMaxAgeMargin);
  // Not before the device's first retransmission is due: a lost CON notification comes
  // again after ACK_TIMEOUT * ACK_RANDOM_FACTOR, and re-registering earlier only churns.
  const auto min_silence =
      std::chrono::ceil<milliseconds>(settings_.ack_timeout * settings_.ack_random_factor) +
      std::chrono::seconds(1);
  const auto pace = std::chrono::ceil<milliseconds>(pace_.pace());
  if (pace.count() > 0) wait = std::min(wait, std::max(pace * kSilentIntervals, min_silence));
  silence_due_ = now + wait;
  silence_wait_ = wait;
  // Not a timer per notification: one armed no later than the new deadline stays, and when
  // it fires it waits for the rest (onSilence).
  if (silence_timer_ != 0 && silence_timer_at_ <= silence_due_) return;
  cancelTimer(silence_timer_);
  startSilenceTimer(wait);
}

void Watch::startSilenceTimer(milliseconds delay) {
  const Token alive = alive_;
  silence_timer_at_ = timers_.now() + delay;
  silence_timer_ = timers_.runAfter(delay, [this, alive] {
    if (alive.expired()) return;
    silence_timer_ = 0;
    onSilence();
  });
}

void Watch::onSilence() {
  const auto now = timers_.now();
  if (now < silence_due_) {  // notified since the timer was armed
    startSilenceTimer(std::chrono::ceil<milliseconds>(silence_due_ - now));
    return;
  }
  reregister(silence_wait_);
}

void Watch::reregister(milliseconds waited) {
  const Token alive = alive_;
  if (listener_.counted) listener_.counted(Count::Reregistration);
  if (alive.expired()) return;
  spdlog::info("{}{}: no notification for {} ms; registering again", plan_.device, plan_.path,
               waited.count());
  // The quiet registration is kept until the new one answers or fails (see onObserved).
  if (previous_id_ == 0) {
    previous_id_ = observe_id_;
  } else if (observe_id_ != 0) {
    transport_.cancel(observe_id_);
  }
  observe_id_ = 0;
  reregistered_ = true;
  registerObservation();
}

void Watch::retryLater() {
  cancelTimer(timer_);
  const Token alive = alive_;
  timer_ = timers_.runAfter(settings_.retry_interval, [this, alive] {
    if (alive.expired()) return;
    timer_ = 0;
    registerObservation();
  });
}

void Watch::poll() {
  const Token alive = alive_;
  const auto id = transport_.get(
      plan_.device, plan_.path,
      [this, alive](const std::optional<CoapResponse>& response, const std::string& error) {
        if (alive.expired()) return;
        poll_id_ = 0;
        if (response && listener_.heard) {
          listener_.heard();
          if (alive.expired()) return;
        }
        if (response && response->success()) {
          emit(*response);
          if (alive.expired()) return;
        } else {
          spdlog::warn("poll {}{} failed: {}", plan_.device, plan_.path,
                       response ? response->codeString() : error);
        }
        pollLater();
      });
  if (alive.expired()) return;
  poll_id_ = id;
}

void Watch::pollLater() {
  cancelTimer(timer_);
  const Token alive = alive_;
  timer_ = timers_.runAfter(plan_.interval, [this, alive] {
    if (alive.expired()) return;
    timer_ = 0;
    poll();
  });
}

void Watch::cancelTimer(Timers::TimerId& id) {
  if (id != 0) timers_.cancel(id);
  id = 0;
}

void Watch::emit(const CoapResponse& response) {
  if (listener_.value) listener_.value(response);
}

}  // namespace coap2mqtt::gateway
