#pragma once
// Tells systemd how the daemon is doing (sd_notify, Type=notify): READY=1, RELOADING=1,
// STOPPING=1, a STATUS= line for `systemctl status`, and WATCHDOG=1. The watchdog is fed
// by a timer on the event loop itself, so a loop that stalls stops feeding it and systemd
// restarts the service. Without NOTIFY_SOCKET (not run by systemd) nothing is sent.
// The sending is injected so that the pacing is unit-tested on fake timers.
#include <chrono>
#include <cstddef>
#include <functional>
#include <string>

#include "gateway/timers.h"

namespace coap2mqtt::gateway {

// What STATUS= says (filled from the stats model, Stats::serviceStatus()).
struct ServiceStatus {
  std::size_t devices = 0;
  std::size_t devices_online = 0;
  std::size_t observations = 0;
  bool mqtt_connected = false;
  std::size_t outbox = 0;
};

// e.g. "2/3 devices online, 4 observations, broker connected, outbox 0"
std::string serviceStatusLine(const ServiceStatus& s);

class ServiceNotifier {
 public:
  using StatusSource = std::function<ServiceStatus()>;
  using Send = std::function<void(const std::string& state)>;

  // STATUS= is recomputed this often and sent only when it changed: at most one line per
  // period, however busy the gateway is.
  static constexpr std::chrono::milliseconds kStatusPeriod{2000};

  // `watchdog`: the interval systemd expects WATCHDOG=1 within (0: no watchdog); the
  // notifier pings at half of it.
  ServiceNotifier(Timers& timers, StatusSource source, Send send,
                  std::chrono::microseconds watchdog);
  ~ServiceNotifier();
  ServiceNotifier(const ServiceNotifier&) = delete;
  ServiceNotifier& operator=(const ServiceNotifier&) = delete;

  // sd_notify(), and sd_watchdog_enabled()'s interval (0 when WATCHDOG_USEC is unset or
  // WATCHDOG_PID names another process).
  static Send systemdSend();
  static std::chrono::microseconds systemdWatchdog();

  void start();      // the watchdog and STATUS= timers
  void ready();      // READY=1 with the current STATUS=
  void reloading();  // RELOADING=1
  void stopping();   // STOPPING=1; the watchdog keeps going until the loop ends
  // STATUS=<text> now; the next period's line replaces it.
  void status(const std::string& text);

 private:
  void pingWatchdog();
  void refreshStatus();

  Timers& timers_;
  StatusSource source_;
  Send send_;
  std::chrono::milliseconds ping_every_{0};
  std::string last_status_;
  Timers::TimerId watchdog_timer_ = 0;
  Timers::TimerId status_timer_ = 0;
};

}  // namespace coap2mqtt::gateway
