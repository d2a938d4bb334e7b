#include "gateway/service_notifier.h"

#include <time.h>

#include <algorithm>
#include <cstdint>

#include <spdlog/spdlog.h>
#include <systemd/sd-daemon.h>

namespace coap2mqtt::gateway {

std::string serviceStatusLine(const ServiceStatus& s) {
  return std::to_string(s.devices_online) + "/" + std::to_string(s.devices) + " devices online, " +
         std::to_string(s.observations) + " observations, broker " +
         (s.mqtt_connected ? "connected" : "not connected") + ", outbox " +
         std::to_string(s.outbox);
}

ServiceNotifier::ServiceNotifier(Timers& timers, StatusSource source, Send send,
                                 std::chrono::microseconds watchdog)
    : timers_(timers), source_(std::move(source)), send_(std::move(send)) {
  if (watchdog.count() > 0) {
    ping_every_ = std::max(std::chrono::milliseconds(1),
                           std::chrono::duration_cast<std::chrono::milliseconds>(watchdog / 2));
  }
}

ServiceNotifier::~ServiceNotifier() {
  timers_.cancel(watchdog_timer_);
  timers_.cancel(status_timer_);
}

ServiceNotifier::Send ServiceNotifier::systemdSend() {
  return [](const std::string& state) {
    // Without NOTIFY_SOCKET this returns 0; a failed send is worth a debug line only:
    // systemd then sees no READY/WATCHDOG and says so itself.
    if (int r = sd_notify(0, state.c_str()); r < 0) {
      spdlog::debug("sd_notify failed: {}", r);
    }
  };
}

std::chrono::microseconds ServiceNotifier::systemdWatchdog() {
  std::uint64_t usec = 0;
  if (sd_watchdog_enabled(0, &usec) <= 0) return std::chrono::microseconds(0);
  return std::chrono::microseconds(usec);
}

void ServiceNotifier::start() {
  if (ping_every_.count() > 0) {
    spdlog::info("systemd watchdog: pinging every {} ms", ping_every_.count());
    pingWatchdog();
  }
  status_timer_ = timers_.runAfter(kStatusPeriod, [this] { refreshStatus(); });
}

void ServiceNotifier::pingWatchdog() {
  send_("WATCHDOG=1");
  watchdog_timer_ = timers_.runAfter(ping_every_, [this] { pingWatchdog(); });
}

void ServiceNotifier::refreshStatus() {
  const std::string line = serviceStatusLine(source_());
  if (line != last_status_) status(line);
  status_timer_ = timers_.runAfter(kStatusPeriod, [this] { refreshStatus(); });
}

void ServiceNotifier::status(const std::string& text) {
  last_status_ = text;
  send_("STATUS=" + text);
}

void ServiceNotifier::ready() {
  last_status_ = serviceStatusLine(source_());
  send_("READY=1\nSTATUS=" + last_status_);
}

void ServiceNotifier::reloading() {
  // systemd >= 253 (Type=notify-reload) wants the time of the request with RELOADING=1.
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  const auto usec = std::int64_t(ts.tv_sec) * 1000000 + ts.tv_nsec / 1000;
  send_("RELOADING=1\nMONOTONIC_USEC=" + std::to_string(usec));
}

void ServiceNotifier::stopping() {
  send_("STOPPING=1");
}

}  // namespace coap2mqtt::gateway
